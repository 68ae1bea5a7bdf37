"""C-STORE request framing: bytes in, bytes out (PS3.7 9.3.1.1, PS3.8 9.3.5).

pynetdicom 3.0.4 turns every P-DATA-TF PDU of a message into a primitive,
queues it to its DUL thread, runs it through the state machine and encodes
it there: a 512 KiB CT image is 33 such round trips at a 16 KiB peer
maximum, and that Python work, not the network, capped one association at
~150-280 images/s here (performance.md §3c). :mod:`pdimport.send.dicom`
writes the PDUs of a C-STORE request itself, in one ``sendmsg()`` per
block, from the buffers built here. Nothing in this module touches a socket.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

#: PS3.7 9.1.1.1: C-STORE-RQ command field.
C_STORE_RQ = 0x0001
#: PS3.7 9.1.1.1 Table 9.1-1: priority MEDIUM (what dcmtk's storescu sends).
PRIORITY_MEDIUM = 0x0000
#: PS3.7 E.2: any value but 0x0101 says "a data set follows".
DATASET_PRESENT = 0x0001
#: Fragment cap when the peer announces 0 (unlimited, PS3.8 D.1): one PDV
#: per read block keeps memory bounded whatever the object size.
UNLIMITED_FRAGMENT = 4 << 20
#: Linux IOV_MAX is 1024; stay below it per sendmsg() call.
MAX_IOV = 1000

_PDATA_HEADER = struct.Struct(">BBIIBB")  # PDU type, reserved, PDU length, PDV length, ID, MCH
_ELEMENT = struct.Struct("<HHI")  # implicit VR little endian: group, element, length


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0x0000, element, len(value)) + value


def _ui(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw  # PS3.5 6.2: UI padded with NUL


def encode_store_rq(
    sop_class_uid: str, sop_instance_uid: str, msg_id: int, priority: int = PRIORITY_MEDIUM
) -> bytes:
    """The command set of a C-STORE-RQ, Implicit VR Little Endian (PS3.7 6.3.1).

    Parameters
    ----------
    sop_class_uid, sop_instance_uid : str
        Affected SOP Class / Instance UID (0000,0002) and (0000,1000).
    msg_id : int
        Message ID (0000,0110), 1..65535.
    priority : int
        (0000,0700): 0 medium, 1 high, 2 low.

    Returns
    -------
    bytes
        Elements in ascending tag order, led by Command Group Length (0000,0000).
    """
    body = b"".join(
        (
            _element(0x0002, _ui(sop_class_uid)),
            _element(0x0100, struct.pack("<H", C_STORE_RQ)),
            _element(0x0110, struct.pack("<H", msg_id)),
            _element(0x0700, struct.pack("<H", priority)),
            _element(0x0800, struct.pack("<H", DATASET_PRESENT)),
            _element(0x1000, _ui(sop_instance_uid)),
        )
    )
    return _element(0x0000, struct.pack("<I", len(body))) + body


def pdata_header(context_id: int, is_command: bool, is_last: bool, size: int) -> bytes:
    """The 12 bytes before a PDV fragment of `size` bytes in its own P-DATA-TF.

    PS3.8 9.3.5 (PDU: type 04H, length) and E.2 (message control header: bit 0
    command, bit 1 last fragment). One PDV per PDU, as dcmtk and pynetdicom send.
    """
    control = (0x01 if is_command else 0x00) | (0x02 if is_last else 0x00)
    return _PDATA_HEADER.pack(0x04, 0x00, size + 6, size + 2, context_id, control)


def fragment_size(peer_max_pdu: int) -> int:
    """Largest PDV value the peer accepts in one PDU (PS3.8 D.1.1).

    The peer's Maximum Length counts the PDV item header (4 + 2 bytes);
    0 means unlimited, capped at :data:`UNLIMITED_FRAGMENT`. Always even:
    a message fragment of odd length is refused (dcmtk aborts with "Odd
    Fragment Length"), and a peer may well announce an odd maximum.
    """
    if peer_max_pdu <= 0:
        return UNLIMITED_FRAGMENT
    return max(2, min(peer_max_pdu - 6, UNLIMITED_FRAGMENT)) & ~1


def command_buffers(context_id: int, command: bytes, fragment: int) -> list[bytes]:
    """Header/value buffers carrying a command set, last fragment flagged."""
    out: list[bytes] = []
    for start in range(0, len(command), fragment):
        piece = command[start : start + fragment]
        out += [pdata_header(context_id, True, start + fragment >= len(command), len(piece)), piece]
    return out


def dataset_buffers(
    context_id: int, block: memoryview, fragment: int, is_final_block: bool
) -> Iterator[list[bytes | memoryview]]:
    """Header/value buffers for one read block of the data set.

    Yields lists of at most :data:`MAX_IOV` buffers (one ``sendmsg()`` each).
    The values are views into `block`: nothing is copied.
    """
    batch: list[bytes | memoryview] = []
    size = len(block)
    for start in range(0, size, fragment):
        piece = block[start : start + fragment]
        last = is_final_block and start + fragment >= size
        batch += [pdata_header(context_id, False, last, len(piece)), piece]
        if len(batch) >= MAX_IOV:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = [
    "command_buffers",
    "dataset_buffers",
    "encode_store_rq",
    "fragment_size",
    "pdata_header",
]
