"""C-STORE framing: bytes in, bytes out (PS3.7 9.3.1, PS3.8 9.3.5).

pynetdicom 3.0.4 turns every P-DATA-TF PDU of a message into a primitive,
queues it to its DUL thread, runs it through the state machine and encodes
it there: a 512 KiB CT image is 33 such round trips at a 16 KiB peer
maximum, and that Python work, not the network, capped one association at
~150-280 images/s here (performance.md §3c). :mod:`pdimport.send.dicom`
writes the PDUs of a C-STORE request itself, in one ``sendmsg()`` per
block, from the buffers built here, and decodes the C-STORE-RSP command set
with :func:`decode_store_rsp`. Nothing in this module touches a socket.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

#: PS3.7 9.1.1.1: C-STORE-RQ command field.
C_STORE_RQ = 0x0001
#: PS3.7 9.3.1.2: C-STORE-RSP command field.
C_STORE_RSP = 0x8001
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


#: PS3.5 7.1.2: explicit VRs with a reserved field and a 4-byte length.
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_EXPLICIT = struct.Struct("<HH2sH")  # group, element, VR, 2-byte length


def meta_end(head: bytes) -> int | None:
    """Where the data set starts in a Part 10 file that begins with `head`.

    Walks the File Meta Information (PS3.10 7.1: preamble, "DICM", group
    0002 in Explicit VR Little Endian) to the first element outside group
    0002, as pydicom does: the Group Length is not trusted. None when `head`
    is not such a start or too short to tell (then ask pydicom).
    """
    if len(head) < 132 or head[128:132] != b"DICM":
        return None
    pos, size = 132, len(head)
    while pos + 8 <= size:
        group, _element, vr, length = _EXPLICIT.unpack_from(head, pos)
        if group != 0x0002:
            return pos
        if not vr.isalpha() or not vr.isupper():
            return None
        if vr in _LONG_VRS:
            if pos + 12 > size:
                return None
            (length,) = struct.unpack_from("<I", head, pos + 8)
            pos += 12 + length
        else:
            pos += 8 + length
    return None


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


@dataclass(frozen=True)
class StoreResponse:
    """The elements of a C-STORE-RSP command set that say how it went.

    PS3.7 9.3.1.2 (Table 9.3-2) and Annex C: ``status`` (0000,0900);
    ``comment`` Error Comment (0000,0902); ``offending`` Offending Element
    (0000,0901) tags; ``sop_instance_uid`` Affected SOP Instance UID
    (0000,1000), "" when the peer left it out (it is optional).
    """

    msg_id: int
    status: int
    comment: str = ""
    offending: tuple[int, ...] = ()
    sop_instance_uid: str = ""


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace").strip("\x00 ")


def decode_store_rsp(command: bytes) -> StoreResponse:
    """Decode a C-STORE-RSP command set, Implicit VR Little Endian (PS3.7 6.3.1).

    Raises
    ------
    ValueError
        Not a C-STORE-RSP, truncated, or without Status or Message ID Being
        Responded To (both mandatory, PS3.7 Table 9.3-2).
    """
    values: dict[int, bytes] = {}
    pos, size = 0, len(command)
    while pos + 8 <= size:
        group, element, length = _ELEMENT.unpack_from(command, pos)
        pos += 8
        if group != 0x0000 or length == 0xFFFFFFFF or pos + length > size:
            raise ValueError(f"bad command element ({group:04X},{element:04X})")
        values[element] = command[pos : pos + length]
        pos += length
    if pos != size:
        raise ValueError("command set ends inside an element")
    if values.get(0x0100) != struct.pack("<H", C_STORE_RSP):
        raise ValueError(f"command field {values.get(0x0100)!r}: not a C-STORE-RSP")
    try:
        (msg_id,) = struct.unpack("<H", values[0x0120])
        (status,) = struct.unpack("<H", values[0x0900])
    except (KeyError, struct.error):
        raise ValueError("no Message ID Being Responded To or Status") from None
    raw = values.get(0x0901, b"")
    offending = tuple((g << 16) | e for g, e in struct.iter_unpack("<HH", raw[: len(raw) // 4 * 4]))
    return StoreResponse(
        msg_id,
        status,
        _text(values.get(0x0902, b"")),
        offending,
        _text(values.get(0x1000, b"")),
    )


__all__ = [
    "StoreResponse",
    "command_buffers",
    "dataset_buffers",
    "decode_store_rsp",
    "encode_store_rq",
    "fragment_size",
    "meta_end",
    "pdata_header",
]
