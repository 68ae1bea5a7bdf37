"""What the standard requires of a sender, repaired in a copy (PS3.5, PS3.10).

Files from other vendors break rules that a receiver may enforce by aborting
the association (dcmtk: "Odd Fragment Length"):

* every value length is even (PS3.5 7.1.1); an odd one is padded as PS3.5
  6.2 says: a trailing space for the text VRs, a NUL for UI and the binary
  VRs. Enclosing sequences and items of defined length grow with it, and a
  padded encapsulated fragment moves the Basic Offset Table entries behind
  it (PS3.5 A.4);
* a deflated data set's bitstream has an even length, a trailing NUL
  appended when it is odd (PS3.5 A.5);
* the File Meta Information names the SOP Class and Instance of the data set
  and its transfer syntax (PS3.10 7.1). The data set is authoritative: a
  missing or disagreeing Media Storage SOP Class / Instance UID is rebuilt
  from it, a missing Transfer Syntax UID from what the scan found.

:func:`plan` decides cheaply, from a memory map of the file and without
reading the values, whether anything needs repairing; :func:`write` then
writes a copy with the minimal change (the original is never touched, and a
file that needs nothing keeps being sent byte for byte). Bytes in, a list of
edits out: nothing here knows about the spool or the network.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

LOGGER = logging.getLogger(__name__)

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
#: Transfer syntaxes whose data set is one deflate bitstream (PS3.5 A.5).
DEFLATED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})
#: VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
#: VRs padded with a trailing space (PS3.5 6.2); every other VR takes a NUL.
_TEXT_VRS = frozenset(b"AE AS CS DA DS DT IS LO LT PN SH ST TM UC UR UT".split())
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xE000, 0xE00D, 0xE0DD
_PIXEL_DATA = 0x7FE00010
#: Nesting beyond this is hostile, not clinical; such a file is left as it is.
MAX_DEPTH = 64

_META_NAMES = {
    0x00020001: "FileMetaInformationVersion",
    0x00020002: "MediaStorageSOPClassUID",
    0x00020003: "MediaStorageSOPInstanceUID",
    0x00020010: "TransferSyntaxUID",
    0x00020012: "ImplementationClassUID",
}
#: What pdimport names as implementation when the source named none (PS3.10 7.1: type 1).
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.1"


class Unwalkable(Exception):
    """The data set cannot be walked; it is sent as it is (the scan accepted it)."""


@dataclass
class Repair:
    """What :func:`write` changes, and where.

    ``meta`` and ``lengths`` are the human-readable changes (the detail of
    ``meta_repaired`` / ``length_repaired``); the rest is for :func:`write`.
    """

    meta: list[str] = field(default_factory=list)
    lengths: list[str] = field(default_factory=list)
    dataset_offset: int = 0
    meta_bytes: bytes | None = None  # the new File Meta group, when rebuilt
    #: (position, bytes removed, bytes inserted), positions in the source file
    edits: list[tuple[int, int, bytes]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.meta or self.lengths)


# ====================================================================== plan
def plan(path: Path, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> Repair:
    """What the Part 10 file at `path` needs before it may be sent.

    Parameters
    ----------
    path : pathlib.Path
        A Part 10 file (preamble, ``DICM``, File Meta, data set).
    sop_class_uid, sop_instance_uid : str
        The data set's SOP Class / Instance UID (0008,0016) and (0008,0018),
        as the scan read them: the authority for the meta.
    transfer_syntax : str
        The syntax the data set is encoded in (from the scan).

    Returns
    -------
    Repair
        False when nothing needs repairing.
    """
    repair = Repair()
    with open(path, "rb", buffering=0) as fp:  # only mapped: no buffer, no isatty
        size = fp.seek(0, 2)
        if size < 140:
            return repair
        with mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                _plan_meta(buf, repair, sop_class_uid, sop_instance_uid, transfer_syntax)
                _plan_dataset(buf, repair, transfer_syntax)
            except (Unwalkable, struct.error, IndexError) as exc:
                LOGGER.info("%s: not checked for odd lengths: %s", path.name, exc)
                repair.lengths.clear()
                repair.edits.clear()
            finally:
                buf.release()
    return repair


def _plan_meta(buf: memoryview, repair: Repair, sop_class: str, sop_instance: str, ts: str) -> None:
    if bytes(buf[128:132]) != b"DICM":
        raise Unwalkable("no DICM prefix")
    elements: dict[int, tuple[bytes, bytes]] = {}
    pos = 132
    while pos + 8 <= len(buf) and struct.unpack_from("<H", buf, pos)[0] == 0x0002:
        group, elem = struct.unpack_from("<HH", buf, pos)
        vr = bytes(buf[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", buf, pos + 8)
            head = 12
        else:
            (length,) = struct.unpack_from("<H", buf, pos + 6)
            head = 8
        if length == _UNDEFINED or pos + head + length > len(buf):
            raise Unwalkable("File Meta element runs past the end")
        elements[(group << 16) | elem] = (vr, bytes(buf[pos + head : pos + head + length]))
        pos += head + length
    repair.dataset_offset = pos
    wanted = {
        0x00020002: sop_class,
        0x00020003: sop_instance,
    }
    changed: dict[int, tuple[bytes, bytes]] = {}
    for tag, value in wanted.items():
        have = _text(elements.get(tag))
        if value and have != value:
            why = "missing" if not have else f"{have!r} -> {value!r}"
            repair.meta.append(f"{_META_NAMES[tag]} {why}")
            changed[tag] = (b"UI", _ui(value))
    if not _text(elements.get(0x00020010)) and ts:
        repair.meta.append(f"TransferSyntaxUID missing -> {ts!r}")
        changed[0x00020010] = (b"UI", _ui(ts))
    if not repair.meta:
        return
    # Type 1 in PS3.10 7.1; only added alongside a repair, never alone.
    if 0x00020001 not in elements:
        changed[0x00020001] = (b"OB", b"\x00\x01")
        repair.meta.append("FileMetaInformationVersion missing")
    if not _text(elements.get(0x00020012)):
        changed[0x00020012] = (b"UI", _ui(IMPLEMENTATION_CLASS_UID))
        repair.meta.append("ImplementationClassUID missing")
    elements.pop(0x00020000, None)
    elements.update(changed)
    body = b"".join(_meta_element(tag, vr, v) for tag, (vr, v) in sorted(elements.items()))
    repair.meta_bytes = _meta_element(0x00020000, b"UL", struct.pack("<I", len(body))) + body


def _text(element: tuple[bytes, bytes] | None) -> str:
    if element is None:
        return ""
    return element[1].decode("ascii", "replace").rstrip("\x00 ")


def _ui(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _meta_element(tag: int, vr: bytes, value: bytes) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in _LONG_VRS:
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _plan_dataset(buf: memoryview, repair: Repair, ts: str) -> None:
    start = repair.dataset_offset
    if ts in DEFLATED:
        if (len(buf) - start) % 2:
            repair.edits.append((len(buf), 0, b"\x00"))
            repair.lengths.append(
                f"deflated bitstream {len(buf) - start} bytes: NUL appended (PS3.5 A.5)"
            )
        return
    walker = _Walker(buf, repair, little=ts != EXPLICIT_BE, explicit=ts != IMPLICIT_LE)
    walker.elements(start, len(buf), 0, until_item_end=False)


# ==================================================================== walker
@dataclass
class _Walker:
    """Walks element headers (never values) and records the padding edits.

    Each method returns ``(end position, bytes added inside)`` so that a
    container of defined length can have its length field corrected.
    """

    buf: memoryview
    repair: Repair
    little: bool
    explicit: bool

    def __post_init__(self) -> None:
        order = "<" if self.little else ">"
        self._tag = struct.Struct(order + "HH")
        self._u16 = struct.Struct(order + "H")
        self._u32 = struct.Struct(order + "I")

    def elements(self, pos: int, end: int, depth: int, until_item_end: bool) -> tuple[int, int]:
        if depth > MAX_DEPTH:
            raise Unwalkable("nested too deep")
        added = 0
        while pos < end:
            group, elem = self._tag.unpack_from(self.buf, pos)
            if group == 0xFFFE:
                if until_item_end and elem == _ITEM_END:
                    return pos + 8, added
                raise Unwalkable(f"unexpected delimiter (FFFE,{elem:04X}) at {pos}")
            pos, grown = self._element(pos, (group << 16) | elem, depth)
            added += grown
        if pos != end or until_item_end:
            raise Unwalkable("data set ends inside an element")
        return pos, added

    def _element(self, pos: int, tag: int, depth: int) -> tuple[int, int]:
        vr, head, len_at, len_size, length = self._header(pos, tag)
        value = pos + head
        if vr == b"SQ" or (length == _UNDEFINED and vr == b"UN"):
            end, added = self._sequence(value, length, depth, vr == b"UN")
            if added and length != _UNDEFINED:
                self._set_length(len_at, len_size, length + added, tag, "sequence")
            return end, added
        if length == _UNDEFINED:
            if vr in (b"OB", b"OW") or tag == _PIXEL_DATA:
                return self._fragments(value)
            raise Unwalkable(f"{_fmt(tag)} {vr.decode(errors='replace')} of undefined length")
        end = value + length
        if end > len(self.buf):
            raise Unwalkable(f"{_fmt(tag)} runs past the end of the file")
        if length % 2 == 0:
            return end, 0
        if len_size == 2 and length == 0xFFFF:
            raise Unwalkable(f"{_fmt(tag)}: odd length 65535 cannot grow")
        pad = b" " if vr in _TEXT_VRS else b"\x00"
        self.repair.edits.append((end, 0, pad))
        self._set_length(len_at, len_size, length + 1, tag, "")
        name = vr.decode(errors="replace") or "?"
        self.repair.lengths.append(
            f"{_fmt(tag)} {name} length {length} padded with {'space' if pad == b' ' else 'NUL'}"
        )
        return end, 1

    def _header(self, pos: int, tag: int) -> tuple[bytes, int, int, int, int]:
        """(VR, header size, length field position, its size, length)."""
        if self.explicit:
            vr = bytes(self.buf[pos + 4 : pos + 6])
            if vr in _LONG_VRS:
                return vr, 12, pos + 8, 4, self._u32.unpack_from(self.buf, pos + 8)[0]
            if not vr.isalpha() or not vr.isupper():
                raise Unwalkable(f"{_fmt(tag)}: no VR")
            return vr, 8, pos + 6, 2, self._u16.unpack_from(self.buf, pos + 6)[0]
        length = self._u32.unpack_from(self.buf, pos + 4)[0]
        return _implicit_vr(tag, length), 8, pos + 4, 4, length

    def _sequence(self, pos: int, length: int, depth: int, as_implicit: bool) -> tuple[int, int]:
        if as_implicit and (self.explicit or not self.little):
            # UN of undefined length: a sequence in Implicit VR LE (PS3.5 6.2.2).
            inner = _Walker(self.buf, self.repair, little=True, explicit=False)
            return inner._sequence(pos, length, depth, False)
        end = len(self.buf) if length == _UNDEFINED else pos + length
        added = 0
        while pos < end:
            group, elem = self._tag.unpack_from(self.buf, pos)
            item_len = self._u32.unpack_from(self.buf, pos + 4)[0]
            if group != 0xFFFE:
                raise Unwalkable(f"no item tag in a sequence at {pos}")
            if elem == _SEQ_END:
                if length != _UNDEFINED:
                    raise Unwalkable("sequence delimiter in a sequence of defined length")
                return pos + 8, added
            if elem != _ITEM:
                raise Unwalkable(f"(FFFE,{elem:04X}) in a sequence at {pos}")
            item_at = pos
            if item_len == _UNDEFINED:
                pos, grown = self.elements(pos + 8, end, depth + 1, until_item_end=True)
            else:
                pos, grown = self.elements(pos + 8, pos + 8 + item_len, depth + 1, False)
                if grown:
                    self._set_length(item_at + 4, 4, item_len + grown, 0, "item")
            added += grown
        if length == _UNDEFINED or pos != end:
            raise Unwalkable("sequence runs past its end")
        return pos, added

    def _fragments(self, pos: int) -> tuple[int, int]:
        """Encapsulated pixel data (PS3.5 A.4): pad odd fragments, move the
        Basic Offset Table entries behind them. Nothing is added to an
        enclosing container: the element itself is of undefined length."""
        items: list[tuple[int, int]] = []  # (item position, length)
        while True:
            group, elem = self._tag.unpack_from(self.buf, pos)
            length = self._u32.unpack_from(self.buf, pos + 4)[0]
            if group != 0xFFFE or elem not in (_ITEM, _SEQ_END):
                raise Unwalkable(f"no fragment item at {pos}")
            if elem == _SEQ_END:
                break
            if length == _UNDEFINED or pos + 8 + length > len(self.buf):
                raise Unwalkable(f"fragment at {pos} runs past the end")
            items.append((pos, length))
            pos += 8 + length
        if not items:
            return pos + 8, 0
        (bot_at, bot_len), fragments = items[0], items[1:]
        shift: list[tuple[int, int]] = []  # (offset of a fragment from the first, pad before it)
        padded = 0
        first = fragments[0][0] if fragments else 0
        for at, length in fragments:
            shift.append((at - first, padded))
            if length % 2:
                self.repair.edits.append((at + 8 + length, 0, b"\x00"))
                self._set_length(at + 4, 4, length + 1, 0, "fragment")
                padded += 1
        if padded:
            self.repair.lengths.append(
                f"{padded} odd pixel data fragment(s) padded with NUL (PS3.5 A.4)"
            )
            self._move_offsets(bot_at + 8, bot_len, dict(shift))
        return pos + 8, 0

    def _move_offsets(self, at: int, length: int, pad_before: dict[int, int]) -> None:
        for n in range(0, length - length % 4, 4):
            offset = self._u32.unpack_from(self.buf, at + n)[0]
            moved = offset + pad_before.get(offset, 0)
            if moved != offset:
                self.repair.edits.append((at + n, 4, self._u32.pack(moved)))

    def _set_length(self, at: int, size: int, value: int, tag: int, what: str) -> None:
        packer = self._u16 if size == 2 else self._u32
        self.repair.edits.append((at, size, packer.pack(value)))
        if what:
            LOGGER.debug("%s length at %d -> %d", what, at, value)


def _implicit_vr(tag: int, length: int) -> bytes:
    """The VR of an implicit VR element, from the data dictionary.

    pydicom's dictionary is the only table of VRs at hand; a private or
    unknown tag of undefined length is a sequence (PS3.5 7.1.3 / 6.2.2).
    """
    from pydicom.datadict import dictionary_VR

    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return b"SQ" if length == _UNDEFINED else b"UN"
    if length == _UNDEFINED and vr not in ("OB", "OW", "OB or OW"):
        return b"SQ"
    return vr[:2].encode()


def _fmt(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


# ===================================================================== write
def write(src: Path, dst: Path, repair: Repair, block: int = 1 << 20) -> None:
    """Write `src` with `repair` applied to `dst` (fsynced; `src` untouched)."""
    with open(src, "rb") as fp, open(dst, "wb") as out:
        if repair.meta_bytes is not None:
            out.write(b"\0" * 128 + b"DICM" + repair.meta_bytes)
            fp.seek(repair.dataset_offset)
            pos = repair.dataset_offset
        else:
            pos = 0
        for at, removed, inserted in sorted(repair.edits, key=lambda e: (e[0], -e[1])):
            out.writelines(_copy(fp, at - pos, block))
            out.write(inserted)
            fp.seek(removed, 1)
            pos = at + removed
        out.writelines(_copy(fp, -1, block))
        out.flush()
        os.fsync(out.fileno())


def _copy(fp: BinaryIO, count: int, block: int) -> Iterator[bytes]:
    """`count` bytes of `fp` (all that is left when negative), in blocks."""
    read = fp.read
    while count != 0:
        chunk = read(block if count < 0 else min(block, count))
        if not chunk:
            return
        count -= len(chunk) if count > 0 else 0
        yield chunk


def reencode_explicit(src: Path, dst: Path) -> None:
    """Write the data set of `src`, a Part 10 file whose body is implicit VR
    little endian although its transfer syntax declares explicit VR
    (``vr_form_mismatch``), in explicit VR little endian under that syntax
    (PS3.5 A.4: an encapsulated syntax encodes the data set in explicit VR LE).

    pydicom reads the body as implicit VR, as the scan did, taking each VR
    from its data dictionary (UN for a private element it does not know);
    The values themselves, fragments included, are unchanged. The file is
    held in memory once, as pydicom holds a file it writes.
    """
    import warnings

    from pydicom import dcmread

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Expected explicit VR, but found implicit VR"
        ds = dcmread(src, defer_size=1 << 16)
        for _elem in ds.iterall():
            pass  # converts every raw element, its VR from the dictionary
        ds.save_as(dst, implicit_vr=False, little_endian=True, enforce_file_format=True)


def summary(repair: Repair, limit: int = 5) -> tuple[str, str]:
    """The details for ``meta_repaired`` and ``length_repaired`` ("" if none)."""

    def words(items: list[str]) -> str:
        more = f"; and {len(items) - limit} more" if len(items) > limit else ""
        return "; ".join(items[:limit]) + more

    return words(repair.meta), words(repair.lengths)


__all__ = [
    "DEFLATED",
    "MAX_DEPTH",
    "Repair",
    "Unwalkable",
    "plan",
    "reencode_explicit",
    "summary",
    "write",
]
