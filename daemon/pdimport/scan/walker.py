"""Bounded, iterative DICOM structure walker: the gatekeeper before any parse.

pydicom silently accepts truncated Pixel Data, a body in another transfer
syntax than the meta declares, undefined-length OB without a delimiter, and it
allocates whatever length an element declares (pydicom 3.0).
This module checks the *structure* of a file from its bytes alone:

* every element header is read (PS3.5 §7.1), every value is *seeked over*
  except the few small ones needed (meta UIDs, image geometry), so a 500 MB
  file costs its element count, not its size;
* every declared length is compared with the bytes left before anything is
  read or allocated;
* sequences and items (PS3.5 §7.5) are followed with an explicit stack, never
  recursion, and their depth is capped (``limits.max_nesting``);
* a deflated dataset (PS3.5 §A.5) is inflated in bounded chunks and capped
  (``limits.max_inflate``).

The walker only ever raises :class:`~pdimport.problems.FileProblem`. It reads
through :mod:`~pdimport.scan.sources`, learns the encoding and the File Meta
from :mod:`~pdimport.scan.encoding`, and shares the PS3.5 vocabulary and
byte helpers of :mod:`~pdimport.scan.syntax`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pdimport.problems import FileProblem
from pdimport.scan.encoding import (
    _PROBE,
    _check_first_element,
    _raw_encoding_for,
    _read_meta_prefix,
    read_file_meta,
)
from pdimport.scan.sources import _INFLATE_CHUNK, _FileSource, _InflateSource
from pdimport.scan.syntax import (
    DEFLATED_LE,
    ENCODINGS,
    EXPLICIT_BE,
    IMPLICIT_LE,
    ITEM,
    ITEM_DELIM,
    LONG_VRS,
    NATIVE_TS,
    PIXEL_DATA,
    RAW_TRANSFER_SYNTAX,
    SEQ_DELIM,
    UNDEFINED,
    VRS,
    _clean_text,
    _fmt,
    _tag,
    _u16,
    _u32,
)

log = logging.getLogger(__name__)

#: Top-level values the walker reads (all short): image geometry for the
#: native Pixel Data length check (PS3.3 C.7.6.3).
GEOMETRY_TAGS = {
    0x00280002: "SamplesPerPixel",
    0x00280004: "PhotometricInterpretation",
    0x00280008: "NumberOfFrames",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280100: "BitsAllocated",
}
_SMALL_VALUE = 256  # values kept only when at most this long
#: Most element headers walked in one file: a real CT header has a few hundred.
MAX_ELEMENTS = 1_000_000
_DEFAULT_NESTING = 64
_DEFAULT_INFLATE = 2 << 30


# ----------------------------------------------------------------- results
@dataclass
class WalkResult:
    """What the walker learnt about one file.

    Offsets are byte offsets into the file. For a deflated dataset
    (``inflated`` is True) the offsets of dataset elements are
    ``dataset_offset`` + the position in the *inflated* stream.
    """

    encoding: str
    transfer_syntax: str
    dataset_offset: int
    pixel_data_offset: int = -1  # start of the top-level Pixel Data element (its tag)
    pixel_data_length: int = -1  # declared value length; UNDEFINED when encapsulated
    encapsulated: bool = False
    inflated: bool = False
    meta: dict[str, str] = field(default_factory=dict)
    tags: list[tuple[int, int]] = field(default_factory=list)  # top-level (tag, offset)
    values: dict[str, int | str] = field(default_factory=dict)  # GEOMETRY_TAGS values
    element_count: int = 0
    end_offset: int = 0  # where the last element ends (stream coordinates)
    warnings: list[str] = field(default_factory=list)  # warning problem codes


@dataclass
class _Frame:
    """One open container on the walker's explicit stack (PS3.5 §7.5)."""

    kind: str  # "top" | "sq" | "item" | "pixel"
    end: int | None  # absolute end (stream coordinates); None = undefined length
    implicit: bool  # how the elements inside are encoded
    depth: int  # sequence nesting depth of this frame


def _limit(limits: Any, name: str, default: int) -> int:
    """A limit from a Settings object, a mapping or None (tests)."""
    if limits is None:
        return default
    key = f"limits.{name}"
    if isinstance(limits, dict):
        return int(limits.get(key, limits.get(name, default)) or default)
    try:
        return int(limits.get(key))
    except (AttributeError, KeyError, TypeError):
        return int(getattr(limits, name, default))


# --------------------------------------------------------------- the walk
def walk(path: Path, encoding: str, limits: Any = None) -> WalkResult:
    """Check the structure of one DICOM file without parsing its values.

    Parameters
    ----------
    path : Path
        A local (spooled) file; its bytes are hostile.
    encoding : str
        From :func:`detect_encoding`: ``part10`` or a raw encoding.
    limits : Settings, optional
        Supplies ``limits.max_nesting`` and ``limits.max_inflate``.

    Returns
    -------
    WalkResult

    Raises
    ------
    FileProblem
        With one of the structural codes: ``empty_file``, ``not_dicom``,
        ``truncated``, ``length_exceeds_file``, ``bad_vr``,
        ``undefined_length_misuse``, ``nesting_too_deep``, ``tag_order``,
        ``ts_mismatch``, ``bad_file_meta``, ``deflate_bomb``,
        ``pixel_length_mismatch``, ``bad_structure``, ``too_large``, and
        ``unparsable`` should the walker itself fail. Nothing else escapes.
    """
    try:
        with open(path, "rb") as fp:
            return _walk_open(fp, os.fstat(fp.fileno()).st_size, encoding, limits)
    except FileProblem:
        raise
    except Exception as exc:  # noqa: BLE001 - even a walker bug must be a value
        # The file is refused rather than passed on unchecked.
        log.warning("walker failed on %s: %r", path, exc)
        raise FileProblem("unparsable", f"structure walk failed: {exc!r}") from None


def _walk_open(fp: BinaryIO, size: int, encoding: str, limits: Any) -> WalkResult:
    if size == 0:
        raise FileProblem("empty_file")
    if encoding not in ENCODINGS:
        raise FileProblem("not_dicom", f"unknown encoding {encoding!r}")
    prefix = _read_meta_prefix(fp, 0, size)
    if encoding == "part10":
        if len(prefix) < 132 or prefix[128:132] != b"DICM":
            raise FileProblem("not_dicom", "no DICM prefix after the 128-byte preamble")
        meta, ds_offset = read_file_meta(prefix, 132)
        ts = meta["TransferSyntaxUID"]
    elif len(prefix) >= 8 and _u16(prefix[0:2], True) == 0x0002:
        meta, ds_offset = read_file_meta(prefix, 0)
        ts = meta["TransferSyntaxUID"]
        encoding = _raw_encoding_for(ts)
    else:
        meta, ds_offset, ts = {}, 0, RAW_TRANSFER_SYNTAX[encoding]
    res = WalkResult(encoding=encoding, transfer_syntax=ts, dataset_offset=ds_offset, meta=meta)
    little = ts != EXPLICIT_BE
    implicit = ts == IMPLICIT_LE
    src: _FileSource | _InflateSource
    if ts == DEFLATED_LE:
        cap = _limit(limits, "max_inflate", _DEFAULT_INFLATE)
        first = _InflateSource(fp, ds_offset, cap).read(_PROBE)
        src = _InflateSource(fp, ds_offset, cap)  # restart: the probe consumed bytes
        res.inflated = True
    else:
        fp.seek(ds_offset)
        first = fp.read(_PROBE)
        src = _FileSource(fp, size, ds_offset)
    if _check_first_element(first, little, implicit, ts):
        if res.inflated:
            raise FileProblem(
                "ts_mismatch", f"{ts} declares explicit VR but the body is implicit VR"
            )
        implicit = True
        res.warnings.append("vr_form_mismatch")
    _Walker(src, res, little, implicit, size, limits).run()
    _check_pixel_data(res)
    return res


class _Walker:
    """The main loop: an explicit stack of open containers (PS3.5 §7.5).

    Every iteration consumes at least one 8-byte header, so the loop ends
    within size / 8 iterations (and :data:`MAX_ELEMENTS`).
    """

    def __init__(
        self, src: Any, res: WalkResult, little: bool, implicit: bool, size: int, limits: Any
    ) -> None:
        self.src = src
        self.res = res
        self.little = little
        self.size = size
        self.max_nesting = _limit(limits, "max_nesting", _DEFAULT_NESTING)
        self.stack = [_Frame("top", None, implicit, 0)]
        self.last_top = -1

    def run(self) -> None:
        src, res = self.src, self.res
        while True:
            frame = self.stack[-1]
            if frame.end is not None and src.pos >= frame.end:
                self.stack.pop()  # a defined-length item or sequence is complete
                continue
            start = src.pos
            head = src.read(8)
            if not head:
                if frame.kind == "top":
                    break
                what = "sequence" if frame.kind == "sq" else frame.kind
                raise FileProblem(
                    "undefined_length_misuse",
                    f"the file ends before the delimiter of an undefined-length {what}",
                )
            if len(head) < 8:
                self._end_inside_header(head, frame)
                break
            res.element_count += 1
            if res.element_count > MAX_ELEMENTS:
                raise FileProblem("too_large", f"more than {MAX_ELEMENTS} elements")
            tag = _tag(head, self.little)
            if frame.kind == "top" and tag == 0 and self.last_top >= 0 and self._rest_is_zero(head):
                res.warnings.append("trailing_data")
                break
            if frame.kind in ("sq", "pixel") or tag >> 16 == 0xFFFE:
                self._delimiter_or_item(tag, _u32(head[4:8], self.little), start)
                continue
            vr, length = self._element_header(head, frame.implicit, tag)
            if frame.kind == "top":
                self._check_order(tag, start)
            self._element_value(tag, vr, length, start)
        res.end_offset = src.pos

    # ------------------------------------------------------------ headers
    def _end_inside_header(self, head: bytes, frame: _Frame) -> None:
        if frame.kind == "top" and not head.strip(b"\0"):
            self.res.warnings.append("trailing_data")  # a few NUL bytes after the last element
            return
        raise FileProblem("truncated", "the file ends inside an element header")

    def _rest_is_zero(self, head: bytes) -> bool:
        """Whether everything from here to EOF is NUL padding (seen after the
        last element on some media); reads the tail in bounded chunks."""
        if head.strip(b"\0"):
            return False
        while True:
            chunk = self.src.read(_INFLATE_CHUNK)
            if not chunk:
                return True
            if chunk.strip(b"\0"):
                raise FileProblem("bad_structure", "a zero tag followed by data after the dataset")

    def _element_header(self, head: bytes, implicit: bool, tag: int) -> tuple[bytes | None, int]:
        """VR and length of a data element (PS3.5 §7.1.1–7.1.3)."""
        if implicit:
            return None, _u32(head[4:8], self.little)
        vr = head[4:6]
        if vr not in VRS:
            raise FileProblem("bad_vr", f"element {_fmt(tag)} has VR bytes {vr!r}")
        if vr in LONG_VRS:
            ext = self.src.read(4)
            if len(ext) < 4:
                raise FileProblem("truncated", "the file ends inside an element header")
            return vr, _u32(ext, self.little)
        return vr, _u16(head[6:8], self.little)

    def _check_order(self, tag: int, start: int) -> None:
        """PS3.5 §7.1: data elements in ascending tag order, each tag once.

        A repeated tag is an error: parsers disagree on which copy wins
        (pydicom keeps the last), so identity attributes become ambiguous.
        Unique but unsorted tags only warn: the bytes are forwarded unchanged
        and receivers sort them.
        """
        res = self.res
        res.tags.append((tag, start))
        if tag == self.last_top:
            raise FileProblem("tag_order", f"tag {_fmt(tag)} appears twice")
        if tag < self.last_top:
            if any(t == tag for t, _ in res.tags[:-1]):
                raise FileProblem("tag_order", f"tag {_fmt(tag)} appears twice")
            if "tag_unsorted" not in res.warnings:
                res.warnings.append("tag_unsorted")
            return
        self.last_top = tag

    # ------------------------------------------------------------ lengths
    def _check_length(self, length: int, tag: int) -> None:
        """A declared length must fit in the file and in its enclosing item."""
        remaining = self.src.remaining()
        if remaining is not None and length > remaining:
            if length > self.size:
                raise FileProblem(
                    "length_exceeds_file",
                    f"{_fmt(tag)} declares {length} bytes in a {self.size}-byte file",
                )
            raise FileProblem("truncated", f"{_fmt(tag)} declares {length} bytes, {remaining} left")
        for frame in reversed(self.stack):
            if frame.end is not None:
                if self.src.pos + length > frame.end:
                    raise FileProblem("bad_structure", f"{_fmt(tag)} overruns its enclosing item")
                break

    def _skip(self, length: int, tag: int) -> None:
        if self.src.skip(length) < length:
            raise FileProblem("truncated", f"the file ends inside the value of {_fmt(tag)}")

    # ------------------------------------------------ items and delimiters
    def _delimiter_or_item(self, tag: int, length: int, start: int) -> None:
        """Items and delimiters (PS3.5 §7.5.1–7.5.2; fragments §A.4)."""
        frame = self.stack[-1]
        if frame.kind in ("sq", "pixel") and tag == SEQ_DELIM:
            if frame.end is not None or length != 0:
                raise FileProblem("bad_structure", f"unexpected sequence delimiter at {start}")
            self.stack.pop()
            return
        if frame.kind == "item" and tag == ITEM_DELIM:
            if frame.end is not None or length != 0:
                raise FileProblem("bad_structure", f"unexpected item delimiter at {start}")
            self.stack.pop()
            return
        if tag != ITEM or frame.kind not in ("sq", "pixel"):
            where = "a sequence" if frame.kind in ("sq", "pixel") else "a dataset"
            raise FileProblem(
                "bad_structure", f"{_fmt(tag)} at offset {start} cannot appear in {where}"
            )
        if frame.kind == "pixel":
            if length == UNDEFINED:
                raise FileProblem(
                    "undefined_length_misuse", "a Pixel Data fragment has undefined length"
                )
            self._check_length(length, tag)
            self._skip(length, tag)
            return
        if length == UNDEFINED:
            self.stack.append(_Frame("item", None, frame.implicit, frame.depth))
            return
        self._check_length(length, tag)
        self.stack.append(_Frame("item", self.src.pos + length, frame.implicit, frame.depth))

    # ------------------------------------------------------------- values
    def _element_value(self, tag: int, vr: bytes | None, length: int, start: int) -> None:
        frame = self.stack[-1]
        top = frame.kind == "top"
        res = self.res
        if top and tag == PIXEL_DATA and res.pixel_data_offset < 0:
            res.pixel_data_offset = start
            res.pixel_data_length = length
        if length == UNDEFINED:
            self._undefined(tag, vr, top)
            return
        self._check_length(length, tag)
        if vr == b"SQ" or (vr is None and _implicit_is_sequence(tag)):
            self._push_sequence(frame.implicit, self.src.pos + length)
            return
        if top and tag in GEOMETRY_TAGS and length <= _SMALL_VALUE:
            raw = self.src.read(length)
            if len(raw) < length:
                raise FileProblem("truncated", f"the file ends inside the value of {_fmt(tag)}")
            res.values[GEOMETRY_TAGS[tag]] = self._geometry_value(raw, tag)
            return
        self._skip(length, tag)

    def _undefined(self, tag: int, vr: bytes | None, top: bool) -> None:
        """Undefined length is allowed on SQ, on UN holding a sequence (PS3.5
        §6.2.2: then encoded as implicit VR LE) and on encapsulated Pixel Data
        (§A.4). pydicom also accepts it on OB/OW and drops the data (D4)."""
        implicit = self.stack[-1].implicit
        if vr == b"SQ":
            self._push_sequence(implicit, None)
        elif vr == b"UN" and tag != PIXEL_DATA:
            self._push_sequence(True, None)
        elif tag == PIXEL_DATA and vr in (b"OB", b"OW", b"UN", None):
            if top:
                self.res.encapsulated = True
            self.stack.append(_Frame("pixel", None, implicit, self.stack[-1].depth))
        elif vr is None and ((tag >> 16) % 2 == 1 or _implicit_is_sequence(tag)):
            self._push_sequence(implicit, None)  # implicit VR: private or SQ by dictionary
        else:
            kind = vr.decode("ascii") if vr else "implicit VR"
            raise FileProblem(
                "undefined_length_misuse", f"{_fmt(tag)} ({kind}) has undefined length"
            )

    def _push_sequence(self, implicit: bool, end: int | None) -> None:
        depth = self.stack[-1].depth + 1
        if depth > self.max_nesting:
            raise FileProblem(
                "nesting_too_deep", f"sequences nested deeper than {self.max_nesting}"
            )
        self.stack.append(_Frame("sq", end, implicit, depth))

    def _geometry_value(self, raw: bytes, tag: int) -> int | str:
        """US (PS3.5 Table 6.2-1), IS text for Number of Frames, CS text for
        Photometric Interpretation."""
        if tag == 0x00280004:
            return _clean_text(raw)
        if tag == 0x00280008:
            try:
                return int(raw.decode("ascii").strip("\0 ").split("\\")[0] or "1")
            except (ValueError, UnicodeDecodeError):
                return -1
        if len(raw) < 2:
            return -1
        return _u16(raw[:2], self.little)


def _implicit_is_sequence(tag: int) -> bool:
    """Implicit VR: the data dictionary gives the VR (PS3.5 §7.1.3)."""
    from pydicom.datadict import dictionary_VR

    try:
        return bool(dictionary_VR(tag) == "SQ")
    except KeyError:
        return False


# ----------------------------------------------------- Pixel Data checks
def _check_pixel_data(res: WalkResult) -> None:
    """Native Pixel Data must hold Rows × Columns × Frames × Samples ×
    Bits Allocated / 8 bytes, padded to even (PS3.5 §8.1.1, PS3.3 C.7.6.3.1);
    encapsulated Pixel Data only in an encapsulated TS (PS3.5 §A.4)."""
    ts = res.transfer_syntax
    known_native = ts in NATIVE_TS
    if res.encapsulated:
        if res.encoding != "part10" and not res.meta:
            raise FileProblem(
                "ts_mismatch",
                "encapsulated Pixel Data in a dataset without File Meta: "
                "its transfer syntax is unknown",
            )
        if known_native:
            raise FileProblem("ts_mismatch", f"encapsulated Pixel Data in native {ts}")
        return
    if res.pixel_data_offset < 0:
        return
    if not known_native and _is_encapsulated_ts(ts):
        raise FileProblem("ts_mismatch", f"native Pixel Data in encapsulated {ts}")
    expected = expected_pixel_length(res.values)
    if expected is None:
        return
    actual = res.pixel_data_length
    if actual < expected:
        raise FileProblem(
            "pixel_length_mismatch", f"Pixel Data holds {actual} bytes, geometry needs {expected}"
        )
    if actual > expected + 1:
        res.warnings.append("pixel_length_excess")


def _is_encapsulated_ts(ts: str) -> bool:
    from pydicom.uid import UID

    uid = UID(ts)
    return uid.is_transfer_syntax and uid.is_encapsulated


def expected_pixel_length(values: dict[str, int | str]) -> int | None:
    """Bytes of native Pixel Data the geometry asks for (PS3.3 C.7.6.3.1), or
    None when an element is missing or unusable."""
    nums = [
        values.get(k, d)
        for k, d in (
            ("Rows", -1),
            ("Columns", -1),
            ("BitsAllocated", -1),
            ("SamplesPerPixel", 1),
            ("NumberOfFrames", 1),
        )
    ]
    if not all(isinstance(v, int) for v in nums):
        return None
    rows, cols, bits, samples, frames = (int(v) for v in nums)
    if min(rows, cols, bits, samples, frames) < 0 or bits == 0:
        return None
    frames = max(frames, 1)
    if bits == 1:
        # PS3.5 §8.1.1: bits are packed across frames, rounded up to whole bytes.
        return (rows * cols * frames * samples + 7) // 8
    if str(values.get("PhotometricInterpretation", "")) in ("YBR_FULL_422", "YBR_PARTIAL_422"):
        # C.7.6.3.1.2: two luminance and one pair of chrominance samples per
        # two pixels, i.e. two samples per pixel.
        samples = 2
    return rows * cols * frames * samples * ((bits + 7) // 8)
