"""Association PDUs of a Storage SCU: bytes in, bytes out (PS3.8 9.3).

:mod:`pdimport.send.association` runs the association over a socket; this
module encodes what it sends (A-ASSOCIATE-RQ, A-RELEASE-RQ, A-ABORT) and
decodes what the peer answers (A-ASSOCIATE-AC/RJ, A-ABORT). Nothing here
touches a socket. The A-ASSOCIATE-RQ is byte for byte the one pynetdicom
3.0.4 sends for the same contexts (a test holds it), so a PACS that was
configured for pdimport sees no difference; the words for rejections and
aborts are pynetdicom's too, so reports and logs keep reading the same.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

#: PS3.8 9.3.1: PDU types.
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07
#: PS3.7 A.2.1: the DICOM application context.
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
#: What pynetdicom 3.0.4 announces (``pynetdicom.PYNETDICOM_IMPLEMENTATION_*``).
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.9.3811.3.0.4"
IMPLEMENTATION_VERSION_NAME = "PYNETDICOM_304"
#: PS3.8 9.3.3.2: result of a presentation context in an A-ASSOCIATE-AC.
ACCEPTANCE = 0
#: PS3.8 9.3.8: A-ABORT source 0 (service-user), 2 (service-provider) and
#: the provider's reasons.
SOURCE_USER, SOURCE_PROVIDER = 0, 2
UNRECOGNISED_PDU, UNEXPECTED_PDU, INVALID_PARAMETER = 1, 2, 6

_HEADER = struct.Struct(">BBI")  # PDU type, reserved, PDU length
_ITEM = struct.Struct(">BBH")  # item type, reserved, item length

_RJ_SOURCES = {
    1: "DUL service-user",
    2: "DUL service-provider (ACSE related)",
    3: "DUL service-provider (presentation related)",
}
_RJ_REASONS = {
    1: {1: "No reason given", 2: "Application context name not supported"}
    | {3: "Calling AE title not recognised", 7: "Called AE title not recognised"},
    2: {1: "No reason given", 2: "Protocol version not supported"},
    3: {1: "Temporary congestion", 2: "Local limit exceeded"},
}
_ABORT_SOURCES = {0: "DUL service-user", 1: "Reserved", 2: "DUL service-provider"}
_ABORT_REASONS = {
    0: "No reason given",
    1: "Unrecognised PDU",
    2: "Unexpected PDU",
    3: "Reserved",
    4: "Unrecognised PDU parameter",
    5: "Unexpected PDU parameter",
    6: "Invalid PDU parameter value",
}


class PDUError(ValueError):
    """A PDU from the peer that cannot be decoded (PS3.8 9.3)."""


def header(pdu_type: int, length: int) -> bytes:
    """The 6 bytes that lead every PDU (PS3.8 9.3.1)."""
    return _HEADER.pack(pdu_type, 0, length)


def pdu_length(head: bytes) -> tuple[int, int]:
    """(PDU type, length of what follows) of a 6-byte PDU header."""
    pdu_type, _reserved, length = _HEADER.unpack(head)
    return pdu_type, length


def _item(item_type: int, value: bytes) -> bytes:
    return _ITEM.pack(item_type, 0, len(value)) + value


def _ae(title: str) -> bytes:
    raw = title.encode("ascii")
    if not 1 <= len(raw) <= 16:
        raise ValueError(f"AE title {title!r} is not 1-16 characters")
    return raw.ljust(16, b" ")


def encode_associate_rq(
    calling_aet: str,
    called_aet: str,
    contexts: Sequence[tuple[int, str, Sequence[str]]],
    max_pdu: int,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2, Annex D.1, D.3.3.2).

    Parameters
    ----------
    calling_aet, called_aet : str
        Our AE title and the peer's, 1-16 characters (space padded).
    contexts : sequence of (context ID, abstract syntax, transfer syntaxes)
        Presentation contexts; IDs odd, 1-255 (PS3.8 9.3.2.2).
    max_pdu : int
        Maximum Length we receive (0 = unlimited).
    """
    items = [_item(0x10, APPLICATION_CONTEXT.encode("ascii"))]
    for cx_id, abstract, syntaxes in contexts:
        sub = [_item(0x30, abstract.encode("ascii"))]
        sub += [_item(0x40, ts.encode("ascii")) for ts in syntaxes]
        items.append(_item(0x20, bytes((cx_id, 0, 0, 0)) + b"".join(sub)))
    user = (
        _item(0x51, struct.pack(">I", max_pdu))
        + _item(0x52, IMPLEMENTATION_CLASS_UID.encode("ascii"))
        + _item(0x55, IMPLEMENTATION_VERSION_NAME.encode("ascii"))
    )
    items.append(_item(0x50, user))
    body = (
        struct.pack(">HH", 0x0001, 0)  # protocol version 1, reserved
        + _ae(called_aet)
        + _ae(calling_aet)
        + bytes(32)
        + b"".join(items)
    )
    return header(ASSOCIATE_RQ, len(body)) + body


@dataclass(frozen=True)
class Acceptance:
    """What an A-ASSOCIATE-AC says (PS3.8 9.3.3).

    ``contexts``: context ID -> (result, transfer syntax); the syntax is
    only meaningful for result 0 (acceptance). ``max_pdu``: the peer's
    Maximum Length (0 = unlimited).
    """

    contexts: dict[int, tuple[int, str]]
    max_pdu: int


def _items(data: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    pos = start
    while pos + 4 <= len(data):
        item_type, _reserved, length = _ITEM.unpack_from(data, pos)
        if pos + 4 + length > len(data):
            raise PDUError(f"item 0x{item_type:02X} runs past the end of its PDU")
        yield item_type, data[pos + 4 : pos + 4 + length]
        pos += 4 + length


def _uid(raw: bytes) -> str:
    # PS3.8 9.3.2.2.1: not padded, but be tolerant of a NUL or space.
    return raw.decode("ascii", "replace").rstrip("\x00 ")


def parse_associate_ac(body: bytes) -> Acceptance:
    """Decode the body of an A-ASSOCIATE-AC (after its 6-byte header)."""
    if len(body) < 68:
        raise PDUError(f"A-ASSOCIATE-AC of {len(body)} bytes")
    contexts: dict[int, tuple[int, str]] = {}
    max_pdu = 0
    for item_type, value in _items(body, 68):
        if item_type == 0x21 and len(value) >= 4:
            syntax = next((_uid(v) for t, v in _items(value, 4) if t == 0x40), "")
            contexts[value[0]] = (value[2], syntax)
        elif item_type == 0x50:
            for sub_type, sub in _items(value, 0):
                if sub_type == 0x51 and len(sub) == 4:
                    max_pdu = struct.unpack(">I", sub)[0]
    return Acceptance(contexts, max_pdu)


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ (PS3.8 9.3.4): result 1 permanent, 2 transient."""

    result: int
    source: int
    reason: int

    @property
    def source_str(self) -> str:
        return _RJ_SOURCES.get(self.source, f"source {self.source}")

    @property
    def reason_str(self) -> str:
        return _RJ_REASONS.get(self.source, {}).get(self.reason, "Reserved")


def parse_associate_rj(body: bytes) -> Rejection:
    """Decode the 4-byte body of an A-ASSOCIATE-RJ."""
    if len(body) < 4:
        raise PDUError(f"A-ASSOCIATE-RJ of {len(body)} bytes")
    return Rejection(body[1], body[2], body[3])


def release_rq() -> bytes:
    """An A-RELEASE-RQ PDU (PS3.8 9.3.6)."""
    return header(RELEASE_RQ, 4) + bytes(4)


def abort(source: int = SOURCE_USER, reason: int = 0) -> bytes:
    """An A-ABORT PDU (PS3.8 9.3.8); the reason only counts for source 2."""
    return header(ABORT, 4) + bytes((0, 0, source, reason if source == SOURCE_PROVIDER else 0))


def abort_cause(body: bytes) -> str:
    """Why the peer aborted, in words, from the body of its A-ABORT."""
    source, reason = (body[2], body[3]) if len(body) >= 4 else (-1, -1)
    words = _ABORT_SOURCES.get(source, "(no value available)")
    why = _ABORT_REASONS.get(reason, "(no value available)") if source == 2 else "no reason given"
    return f"A-ABORT from the {words} (source {source}): {why}"


__all__ = [
    "ABORT",
    "ACCEPTANCE",
    "ASSOCIATE_AC",
    "ASSOCIATE_RJ",
    "P_DATA_TF",
    "RELEASE_RP",
    "Acceptance",
    "PDUError",
    "Rejection",
    "abort",
    "abort_cause",
    "encode_associate_rq",
    "header",
    "parse_associate_ac",
    "parse_associate_rj",
    "pdu_length",
    "release_rq",
]
