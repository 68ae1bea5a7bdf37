"""How a file is encoded, from its first bytes: the encoding of a dataset
with or without a preamble (PS3.10 §7.1, PS3.5 §A.1–A.3) and the File Meta
Information group, always explicit VR Little Endian (PS3.10 §7.1); and the
probe that the body really is in the transfer syntax the meta declares.

Everything here only ever raises :class:`~pdimport.problems.FileProblem`.
"""

from __future__ import annotations

from typing import BinaryIO

from pdimport.problems import FileProblem
from pdimport.scan.syntax import (
    EXPLICIT_BE,
    IMPLICIT_LE,
    LONG_VRS,
    UNDEFINED,
    VRS,
    _clean_text,
    _fmt,
    _plausible_first_group,
    _tag,
    _u16,
    _u32,
)

#: File Meta values kept (PS3.10 §7.1).
META_TAGS = {
    0x00020002: "MediaStorageSOPClassUID",
    0x00020003: "MediaStorageSOPInstanceUID",
    0x00020010: "TransferSyntaxUID",
    0x00020012: "ImplementationClassUID",
    0x00020013: "ImplementationVersionName",
}
_MAX_META = 1 << 16  # no sane File Meta group is larger than 64 KiB


# -------------------------------------------------------- encoding detection
def _explicit_header_ok(b: bytes) -> bool:
    """Whether ``b`` (≥ 8 bytes) reads as a plausible explicit VR header."""
    return b[4:6] in VRS


def _probe_elements(
    prefix: bytes, little: bool, implicit: bool, count: int = 3, end: int | None = None
) -> bool:
    """Walk up to ``count`` elements of ``prefix``: tags ascending, VRs valid,
    lengths sane. True when nothing implausible was met (PS3.5 §7.1).

    ``end`` is the file's size when known: an element whose value would run
    past it is implausible too.
    """
    pos, last, seen = 0, -1, 0
    while seen < count and pos + 8 <= len(prefix):
        b = prefix[pos : pos + 8]
        tag = _tag(b, little)
        if tag <= last or tag >> 16 == 0xFFFE:
            return False
        if implicit:
            length, hdr = _u32(b[4:8], little), 8
        else:
            vr = b[4:6]
            if vr not in VRS:
                return False
            if vr in LONG_VRS:
                if pos + 12 > len(prefix):
                    return seen > 0
                length, hdr = _u32(prefix[pos + 8 : pos + 12], little), 12
            else:
                length, hdr = _u16(b[6:8], little), 8
        if length == UNDEFINED:
            return True  # a sequence: good enough evidence
        if length > 1 << 28 or (end is not None and pos + hdr + length > end):
            return False
        pos += hdr + length
        last = tag
        seen += 1
    return seen > 0


#: A prefix shorter than this is the whole file (every caller reads more).
_WHOLE_FILE_BELOW = 4096


def _first_element_fits(prefix: bytes, little: bool, implicit: bool, end: int | None) -> bool:
    """Positive evidence from the first element (PS3.5 §7.1): its value ends
    inside the file, and for implicit VR, which has no VR bytes to check,
    its tag is a group length (gggg,0000) or in the data dictionary (PS3.6)."""
    if implicit:
        from pydicom.datadict import dictionary_has_tag  # here: pydicom costs ~0.2 s to import

        tag = _tag(prefix[0:8], little)
        if tag & 0xFFFF and not dictionary_has_tag(tag):
            return False
        length, hdr = _u32(prefix[4:8], little), 8
    elif prefix[4:6] in LONG_VRS:
        if len(prefix) < 12:
            return False
        length, hdr = _u32(prefix[8:12], little), 12
    else:
        length, hdr = _u16(prefix[6:8], little), 8
    if length == UNDEFINED:
        return True  # a sequence: its items are probed
    return end is None or hdr + length <= end


def _evidence(prefix: bytes, little: bool, implicit: bool, end: int | None, count: int = 3) -> bool:
    """Whether ``prefix`` opens with plausible elements in this encoding."""
    return _first_element_fits(prefix, little, implicit, end) and _probe_elements(
        prefix, little, implicit, count, end
    )


def detect_encoding(prefix: bytes, size: int | None = None) -> str | None:
    """Tell how a file is encoded from its first bytes.

    A file without preamble counts as a dataset only on positive evidence
    (PS3.5 §7.1): a plausible first group; for explicit VR a known VR, for
    implicit VR a tag of the data dictionary; and lengths that end inside
    the file, the first element's above all. Random bytes seldom pass one of
    these and practically never all of them (a 64-byte ``.BIN`` file once
    passed as DICOM 8 times in 100,000 and then failed as
    ``length_exceeds_file``).

    Parameters
    ----------
    prefix : bytes
        The first bytes of the file (at least 132 for Part 10; 4 KiB is plenty).
    size : int, optional
        The file's size. When omitted, a prefix shorter than 4 KiB is taken
        to be the whole file; a longer one bounds nothing beyond itself.

    Returns
    -------
    str or None
        ``"part10"`` for a 128-byte preamble followed by ``"DICM"`` (PS3.10
        §7.1); for a dataset with no preamble, ``"implicit_le"``,
        ``"explicit_le"`` or ``"explicit_be"`` (PS3.5 §A.1–A.3), judged from
        the first tag's group in either byte order and the VR bytes; None
        when the bytes are not DICOM.
    """
    if len(prefix) >= 132 and prefix[128:132] == b"DICM":
        return "part10"
    if len(prefix) < 8:
        return None
    end = size if size is not None else len(prefix) if len(prefix) < _WHOLE_FILE_BELOW else None
    group_le = _u16(prefix[0:2], True)
    group_be = _u16(prefix[0:2], False)
    if group_le == 0x0002:
        # File Meta without a preamble (seen on old discs): the meta is
        # always explicit VR LE (PS3.10 §7.1); the body follows its TS.
        meta = _explicit_header_ok(prefix) and _evidence(prefix, True, False, end, 1)
        return "explicit_le" if meta else None
    if _plausible_first_group(group_le):
        if _explicit_header_ok(prefix) and _evidence(prefix, True, False, end):
            return "explicit_le"
        if _evidence(prefix, True, True, end):
            return "implicit_le"
        return None
    # Implicit VR Big Endian does not exist (PS3.5 §A.3 is explicit only).
    if (
        _plausible_first_group(group_be)
        and _explicit_header_ok(prefix)
        and _evidence(prefix, False, False, end)
    ):
        return "explicit_be"
    return None


# ------------------------------------------------------------- file meta
def read_file_meta(prefix: bytes, offset: int = 132) -> tuple[dict[str, str], int]:
    """Parse the File Meta Information group from a byte buffer.

    Parameters
    ----------
    prefix : bytes
        The file's first bytes (must hold the whole meta group).
    offset : int
        Where group 0x0002 starts: 132 after preamble + "DICM", or 0.

    Returns
    -------
    (dict, int)
        The :data:`META_TAGS` values found, and the offset where the dataset
        begins (the first element whose group is not 0x0002).

    Raises
    ------
    FileProblem
        ``bad_file_meta`` when the group is not explicit VR LE (PS3.10 §7.1),
        runs past the buffer, or lacks a Transfer Syntax UID.
    """
    meta: dict[str, str] = {}
    pos = offset
    while True:
        if pos + 8 > len(prefix):
            if pos == len(prefix) and len(prefix) < _MAX_META + offset:
                break  # the file holds nothing but meta: an empty dataset
            raise FileProblem("bad_file_meta", "File Meta runs past the end of the readable prefix")
        if _u16(prefix[pos : pos + 2], True) != 0x0002:
            break
        tag, hdr, length = _meta_element(prefix, pos)
        if tag in META_TAGS:
            meta[META_TAGS[tag]] = _clean_text(prefix[pos + hdr : pos + hdr + length])
        pos += hdr + length
    if not meta.get("TransferSyntaxUID"):
        raise FileProblem("bad_file_meta", "no Transfer Syntax UID in the File Meta")
    if not uid_ok(meta["TransferSyntaxUID"]):
        raise FileProblem(
            "bad_file_meta", f"Transfer Syntax UID {meta['TransferSyntaxUID']!r} is malformed"
        )
    return meta, pos


def _meta_element(prefix: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, header length, value length) of one File Meta element, which is
    always explicit VR Little Endian (PS3.10 §7.1)."""
    b = prefix[pos : pos + 8]
    tag = _tag(b, True)
    vr = b[4:6]
    if vr not in VRS:
        raise FileProblem("bad_file_meta", f"File Meta element {_fmt(tag)} is not explicit VR")
    if vr in LONG_VRS:
        if pos + 12 > len(prefix):
            raise FileProblem("bad_file_meta", "File Meta ends inside an element header")
        length, hdr = _u32(prefix[pos + 8 : pos + 12], True), 12
    else:
        length, hdr = _u16(b[6:8], True), 8
    if length == UNDEFINED or pos + hdr + length > len(prefix):
        raise FileProblem("bad_file_meta", f"File Meta element {_fmt(tag)} has a bad length")
    return tag, hdr, length


def uid_ok(uid: str) -> bool:
    """PS3.5 §9.1: components of digits separated by '.', none empty, at
    most 64 characters. (Leading zeros are tolerated: common and harmless.)"""
    if not uid or len(uid) > 64:
        return False
    return all(part.isdigit() and part.isascii() for part in uid.split("."))


def uid_usable(uid: str) -> bool:
    """Whether a UID, valid or not, still names one thing unambiguously.

    What storescp, dcmsend and Orthanc store: any non-empty value of
    printable ASCII without a value separator ('\\', PS3.5 §6.4), once its
    padding is gone. A UID that breaks only PS3.5 §9.1 (a letter, an empty
    component, more than 64 characters) is usable; one that is empty,
    multi-valued or holds control or non-ASCII bytes is not.
    """
    return bool(uid) and all("!" <= ch <= "~" and ch != "\\" for ch in uid)


def _read_meta_prefix(fp: BinaryIO, offset: int, size: int) -> bytes:
    fp.seek(0)
    return fp.read(min(size, offset + _MAX_META))


# ------------------------------------------------- transfer syntax probe
_PROBE = 256  # bytes of the body looked at by the transfer syntax probe


def _raw_encoding_for(ts: str) -> str:
    """Label for a dataset that has File Meta but no preamble."""
    if ts == IMPLICIT_LE:
        return "implicit_le"
    if ts == EXPLICIT_BE:
        return "explicit_be"
    return "explicit_le"


def _check_first_element(b: bytes, little: bool, implicit: bool, ts: str) -> bool:
    """Transfer-syntax plausibility probe (notes D8; PS3.5 §A.1–A.3).

    The first dataset element tells whether the body is in the declared
    byte order and VR form: its group must be a low even group in the
    declared order, and its VR bytes valid exactly when explicit VR is declared.

    Returns
    -------
    bool
        True when an explicit VR little endian syntax (an encapsulated one,
        typically: a vendor that wrote the body before compressing) is
        declared over a body whose elements read, at length, as implicit VR
        little endian. The body is then read as implicit VR, as pydicom and
        dcmtk do, and a copy in the declared syntax is sent
        (``vr_form_mismatch``). False when the body is as declared.
    """
    if len(b) < 8:
        return False  # an empty or tiny body: the walk reports it
    group = _u16(b[0:2], little)
    swapped = _u16(b[0:2], not little)
    if not _plausible_first_group(group) and _plausible_first_group(swapped):
        order = "little" if little else "big"
        raise FileProblem("ts_mismatch", f"{ts} declares {order} endian but the body is not")
    if group == 0xFFFE:
        return False
    has_vr = b[4:6] in VRS
    if not implicit and not has_vr:
        if little and _probe_elements(b, little, True, 3) and _implicit_count(b) >= 3:
            return True
        if _probe_elements(b, little, True, 1):
            raise FileProblem(
                "ts_mismatch", f"{ts} declares explicit VR but the body is implicit VR"
            )
        raise FileProblem(
            "bad_vr", f"first element {_fmt(_tag(b, little))} has VR bytes {b[4:6]!r}"
        )
    if implicit and has_vr and _probe_elements(b, little, False, 3) and _explicit_count(b) >= 2:
        # pydicom switches to explicit VR here with only a warning (D8).
        raise FileProblem("ts_mismatch", f"{ts} declares implicit VR but the body is explicit VR")
    return False


def _implicit_count(b: bytes) -> int:
    """How many whole implicit VR LE elements of even length, in ascending
    tag order, start ``b``, none of which reads as explicit VR (probe helper)."""
    pos = count = 0
    last = -1
    while pos + 8 <= len(b):
        tag = _tag(b[pos : pos + 8], True)
        length = _u32(b[pos + 4 : pos + 8], True)
        if tag <= last or length % 2 or b[pos + 4 : pos + 6] in VRS:
            break
        if pos + 8 + length > len(b):
            return count + 1  # runs past the probe: still a plausible element
        pos += 8 + length
        last = tag
        count += 1
    return count


def _explicit_count(b: bytes) -> int:
    """How many whole explicit VR LE elements start ``b`` (probe helper)."""
    pos = count = 0
    while pos + 8 <= len(b) and b[pos + 4 : pos + 6] in VRS:
        if b[pos + 4 : pos + 6] in LONG_VRS:
            if pos + 12 > len(b):
                break
            pos += 12 + _u32(b[pos + 8 : pos + 12], True)
        else:
            pos += 8 + _u16(b[pos + 6 : pos + 8], True)
        count += 1
    return count
