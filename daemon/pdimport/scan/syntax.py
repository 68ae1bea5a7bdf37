"""The encoding vocabulary the walkers share (PS3.5): transfer syntax UIDs,
VRs, the item and delimiter tags, and the byte helpers that read element
headers. No I/O.
"""

from __future__ import annotations

import struct

# --------------------------------------------------------------- constants
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"

#: Transfer syntax assumed for a dataset that has no File Meta (PS3.5 §A.1–A.3).
RAW_TRANSFER_SYNTAX = {
    "implicit_le": IMPLICIT_LE,
    "explicit_le": EXPLICIT_LE,
    "explicit_be": EXPLICIT_BE,
}
ENCODINGS = ("part10", "implicit_le", "explicit_le", "explicit_be")

#: Transfer syntaxes whose Pixel Data is native (not encapsulated), PS3.5 §A.4.
NATIVE_TS = frozenset({IMPLICIT_LE, EXPLICIT_LE, DEFLATED_LE, EXPLICIT_BE})

#: Every VR of PS3.5 Table 6.2-1.
VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM "
    b"UC UI UL UN UR US UT UV".split()
)
#: VRs with a 2-byte reserved field and a 4-byte length (PS3.5 §7.1.2, Table 7.1-1).
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIM = 0xFFFEE00D
SEQ_DELIM = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
#: Float / Double Float Pixel Data are always native (PS3.5 §A.4 excludes them).
NATIVE_PIXEL_TAGS = (0x7FE00008, 0x7FE00009)


# ----------------------------------------------------------- small helpers
def _u16(b: bytes, little: bool) -> int:
    return struct.unpack("<H" if little else ">H", b)[0]


def _u32(b: bytes, little: bool) -> int:
    return struct.unpack("<I" if little else ">I", b)[0]


def _tag(b: bytes, little: bool) -> int:
    group, elem = struct.unpack("<HH" if little else ">HH", b[:4])
    return (group << 16) | elem


def _fmt(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _plausible_first_group(group: int) -> bool:
    """Whether ``group`` can open a dataset (PS3.5 §7.1: ascending order, and
    every IOD has group 0x0008; DICOMDIRs start at 0x0004; group-length and
    ACR-NEMA files may start at a low group). Byte-swapped 0x0008 is 0x0800."""
    return 0x0002 <= group <= 0x00FF and group % 2 == 0


def _clean_text(raw: bytes) -> str:
    """A UI/CS/SH value as text: strip the NUL/space padding (PS3.5 §6.2)."""
    return raw.decode("ascii", "replace").strip("\0 ")
