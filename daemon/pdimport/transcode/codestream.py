"""The codestream's own header, checked against the dataset before any decode.

A codec sizes its buffers from the codestream, not from Rows and Columns: a
6 KB JPEG 2000 frame whose SIZ declares 30000x30000 made OpenJPEG ask for
1.8 GB. So before a frame reaches a decoder its header is read here, in
pure Python, and compared with the dataset: a disagreement is
:class:`Refused` (problem ``decode_refused``). The same walk checks the
structure a decoder would only warn about, or not notice at all: a
codestream whose marker segments or tile-parts do not chain to its end
marker is :class:`Damaged` (``decode_failed``). OpenJPEG reports a stream
without EOC only as a warning, and pylibjpeg-openjpeg 2.6 installs its
message handlers before it creates the codec, so even that warning is lost;
pylibjpeg-libjpeg decodes a JPEG whose second half is zeros without a word.

What is checked, per syntax:

* JPEG 2000 (ISO 15444-1 A.5.1 SIZ, A.4.2 SOT): image and tile grid, number
  of components and their precision; every tile-part's length lands on the
  next SOT or on EOC, every tile is present.
* JPEG (ISO 10918-1 B.2.2 SOFn) and JPEG-LS (ISO 14495-1 C.2.2 SOF55):
  lines, samples per line, components, precision; marker segments chain,
  restart markers run in sequence, the stream ends with EOI.
* RLE (PS3.5 G.3.1, G.5): segment count is samples x bytes per sample,
  offsets start at 64 and increase, unused offsets are 0, each segment's
  length can encode exactly Rows x Columns bytes (the decoders check the
  decoded length itself).

Nothing here decodes entropy-coded data: damage inside it that keeps the
structure (bytes zeroed in the middle of a JPEG 2000 tile-part) is not
detectable without error-resilience markers, by us or by the codecs.
Everything raises only :class:`CodestreamError` subclasses, whatever the
bytes (fuzzed: ``tests/fuzz/``).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

#: PS3.5 A.4: a fragment has an even length, so one padding byte (0x00, or
#: 0xFF from some encoders, as in pydicom's JPGExtended.dcm) may follow the
#: end marker; longer runs of padding are accepted too, other bytes are not.
_PAD = 1
#: ISO 15444-1 A.4.2: Isot is 0..65534.
MAX_TILES = 65535
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


class CodestreamError(ValueError):
    """The pixel data cannot be decoded safely; ``code`` is the problem code."""

    code = "decode_failed"


class Refused(CodestreamError):
    """The codestream's own header disagrees with the dataset."""

    code = "decode_refused"


class Damaged(CodestreamError):
    """The codestream is truncated or its structure is broken."""

    code = "decode_failed"


@dataclass(frozen=True)
class Expected:
    """What the dataset says the pixel data are (PS3.3 C.7.6.3)."""

    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    frames: int

    @classmethod
    def of(cls, ds: Any) -> Expected:
        """From a pydicom Dataset; :class:`Refused` when an attribute is missing or absurd."""
        try:
            values = cls(
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                samples=int(ds.get("SamplesPerPixel", 1) or 1),
                bits_allocated=int(ds.BitsAllocated),
                bits_stored=int(ds.get("BitsStored", ds.BitsAllocated) or ds.BitsAllocated),
                frames=int(ds.get("NumberOfFrames", 1) or 1),
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise Refused(f"image attributes unusable: {exc}") from None
        if min(values.rows, values.columns, values.samples, values.frames) < 1:
            raise Refused(f"image attributes unusable: {values}")
        if not 1 <= values.bits_stored <= values.bits_allocated <= 64:
            raise Refused(
                f"Bits Stored {values.bits_stored} / Bits Allocated {values.bits_allocated}"
            )
        return values

    @property
    def sample_bytes(self) -> int:
        return (self.bits_allocated + 7) // 8

    @property
    def frame_bytes(self) -> int:
        """Size of one decoded frame."""
        return self.rows * self.columns * self.samples * self.sample_bytes

    @property
    def decoded_bytes(self) -> int:
        """Size of all decoded frames."""
        return self.frame_bytes * self.frames


@dataclass(frozen=True)
class FrameHeader:
    """What a frame's codestream declares."""

    rows: int
    columns: int
    samples: int
    precision: int


# ------------------------------------------------------------------ bytes
def _u8(data: bytes, pos: int) -> int:
    if pos >= len(data):
        raise Damaged(f"codestream ends at byte {len(data)}, inside a header")
    return data[pos]


def _u16(data: bytes, pos: int) -> int:
    if pos + 2 > len(data):
        raise Damaged(f"codestream ends at byte {len(data)}, inside a header")
    value: int = struct.unpack_from(">H", data, pos)[0]
    return value


def _u32(data: bytes, pos: int, order: str = ">") -> int:
    if pos + 4 > len(data):
        raise Damaged(f"codestream ends at byte {len(data)}, inside a header")
    value: int = struct.unpack_from(order + "I", data, pos)[0]
    return value


def _ends_after(data: bytes, pos: int, what: str) -> None:
    """After the end marker at `pos` only padding may follow."""
    tail = data[pos:]
    if len(tail) > _PAD and tail.strip(b"\x00\xff"):
        raise Damaged(f"{len(tail)} bytes after the {what} marker")


# --------------------------------------------------------------- JPEG 2000
def _jp2_codestream(data: bytes) -> bytes:
    """The contiguous codestream box of a JP2 file (ISO 15444-1 I.4, I.5.4)."""
    pos = 0
    while pos + 8 <= len(data):
        length, kind, header = _u32(data, pos), data[pos + 4 : pos + 8], 8
        if length == 1:  # XLBox: a 64-bit length follows
            if pos + 16 > len(data):
                break
            length, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif length == 0:  # the last box runs to the end
            length = len(data) - pos
        if length < header or pos + length > len(data):
            raise Damaged(f"JP2 box {kind!r} at byte {pos} has length {length}")
        if kind == b"jp2c":
            return data[pos + header : pos + length]
        pos += length
    raise Damaged("JP2 file without a codestream box")


def j2k_header(data: bytes, expected: Expected | None = None) -> FrameHeader:
    """Read and walk one JPEG 2000 codestream (or JP2 file); its header.

    Raises
    ------
    Refused
        The SIZ disagrees with `expected` (checked before anything else is read).
    Damaged
        No SOC/SIZ, an impossible SIZ, or tile-parts that do not chain to EOC.
    """
    data = bytes(data)
    if data.startswith(_JP2_SIGNATURE):
        data = _jp2_codestream(data)
    if data[:4] != b"\xff\x4f\xff\x51":
        raise Damaged("no JPEG 2000 SOC and SIZ markers at the start")
    lsiz, csiz = _u16(data, 4), _u16(data, 40)
    if not 1 <= csiz <= 16384 or lsiz != 38 + 3 * csiz:
        raise Damaged(f"SIZ length {lsiz} for {csiz} components")
    if len(data) < 4 + lsiz:
        raise Damaged("codestream ends inside SIZ")
    xsiz, ysiz, xo, yo, xt, yt, xto, yto = struct.unpack_from(">8I", data, 8)
    if not (xsiz > xo and ysiz > yo and xt and yt and xto <= xo and yto <= yo):
        raise Damaged(f"SIZ grid {xsiz}x{ysiz} offset {xo},{yo} tiles {xt}x{yt} at {xto},{yto}")
    if xto + xt <= xo or yto + yt <= yo:
        raise Damaged("SIZ: the first tile does not reach the image")
    precision = 0
    for c in range(csiz):
        ssiz, dx, dy = data[42 + 3 * c : 45 + 3 * c]
        if (ssiz & 0x7F) + 1 > 38 or not dx or not dy:
            raise Damaged(f"SIZ component {c}: Ssiz {ssiz:#x}, subsampling {dx}x{dy}")
        precision = max(precision, (ssiz & 0x7F) + 1)
    header = FrameHeader(ysiz - yo, xsiz - xo, csiz, precision)
    if expected is not None:
        agree(header, expected)
    tiles = -(-(xsiz - xto) // xt) * -(-(ysiz - yto) // yt)
    if tiles > MAX_TILES:
        raise Damaged(f"SIZ declares {tiles} tiles (at most {MAX_TILES})")
    _walk_tiles(data, _main_header_end(data, 4 + lsiz), tiles)
    return header


def _segments(data: bytes, pos: int, stop: int) -> Iterator[tuple[int, int]]:
    """(marker, position) of the marker segments from `pos` until marker `stop`
    (yielded last, its length not read); every other one has a length."""
    while True:
        if _u8(data, pos) != 0xFF:
            raise Damaged(f"no marker at byte {pos}")
        marker = _u8(data, pos + 1)
        yield marker, pos
        if marker == stop:
            return
        length = _u16(data, pos + 2)
        if length < 2:
            raise Damaged(f"marker {marker:#04x} at byte {pos} has length {length}")
        pos += 2 + length


def _main_header_end(data: bytes, pos: int) -> int:
    """Position of the first SOT: the main header's marker segments chain to it."""
    for marker, at in _segments(data, pos, 0x90):
        if marker == 0xD9:
            raise Damaged("JPEG 2000 codestream without tiles")
        pos = at
    return pos


def _walk_tiles(data: bytes, pos: int, tiles: int) -> None:
    """Tile-parts from `pos`: each SOT's Psot reaches the next SOT or EOC."""
    # TNsot is not checked: GDCM writes 5 where it wrote 6 tile-parts
    # (pydicom's GDCMJ2K_TextGBR.dcm) and OpenJPEG decodes it.
    seen: set[int] = set()
    end = len(data)
    while data[pos : pos + 2] == b"\xff\x90":
        if _u16(data, pos + 2) != 10:
            raise Damaged(f"SOT at byte {pos} has length {_u16(data, pos + 2)}")
        isot, psot = _u16(data, pos + 4), _u32(data, pos + 6)
        if isot >= tiles:
            raise Damaged(f"tile-part of tile {isot}; the image has {tiles}")
        if psot == 0:  # the last tile-part runs to EOC (A.4.2)
            stripped = end - (1 if data.endswith(b"\x00") else 0)
            if data[stripped - 2 : stripped] != b"\xff\xd9":
                raise Damaged("last tile-part runs to the end, which is not an EOC marker")
            psot = stripped - 2 - pos
        if psot < 14 or pos + psot > end:
            raise Damaged(
                f"tile-part at byte {pos} declares {psot} bytes, {end - pos} remain: truncated"
            )
        for marker, at in _segments(data, pos + 12, 0x93):  # tile-part header up to SOD
            if marker in (0x90, 0xD9) or at + 2 > pos + psot:
                raise Damaged(f"tile-part at byte {pos} has no SOD")
        seen.add(isot)
        pos += psot
    if data[pos : pos + 2] != b"\xff\xd9":
        raise Damaged(
            f"tile-parts end at byte {pos} without EOC: truncated or damaged "
            "(OpenJPEG: 'Stream does not end with EOC')"
        )
    _ends_after(data, pos + 2, "EOC")
    if len(seen) != tiles:
        raise Damaged(f"{tiles - len(seen)} of {tiles} tiles missing")


# ---------------------------------------------------------- JPEG, JPEG-LS
#: Frame header markers (ISO 10918-1 B.1.1.3; DHT C4, JPG C8 and DAC CC are not).
_SOF_10918 = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_SOF_LS = frozenset({0xF7})  # SOF55, ISO 14495-1 C.2.2
_SOF_ANY = _SOF_10918 | _SOF_LS


def jpeg_header(data: bytes, expected: Expected | None = None) -> FrameHeader:
    """Read and walk one JPEG (ISO 10918-1) stream; its frame header (see :func:`j2k_header`)."""
    return _jpeg_walk(bytes(data), _SOF_10918, False, expected)


def jpegls_header(data: bytes, expected: Expected | None = None) -> FrameHeader:
    """Read and walk one JPEG-LS (ISO 14495-1) stream; its frame header."""
    return _jpeg_walk(bytes(data), _SOF_LS, True, expected)


def _jpeg_walk(
    data: bytes, sofs: frozenset[int], ls: bool, expected: Expected | None
) -> FrameHeader:
    if data[:2] != b"\xff\xd8":
        raise Damaged("no SOI marker at the start")
    header: FrameHeader | None = None
    scans = 0
    pos = 2
    while True:
        if _u8(data, pos) != 0xFF:
            raise Damaged(f"no marker at byte {pos}")
        while _u8(data, pos + 1) == 0xFF:  # fill bytes (B.1.1.2)
            pos += 1
        marker = data[pos + 1]
        if marker == 0xD9:
            break
        if marker == 0x01:
            pos += 2
            continue
        if marker == 0xD8 or 0xD0 <= marker <= 0xD7 or marker == 0x00:
            raise Damaged(f"marker {marker:#04x} at byte {pos} out of place")
        length = _u16(data, pos + 2)
        if length < 2 or pos + 2 + length > len(data):
            raise Damaged(f"marker {marker:#04x} at byte {pos}: length {length}, truncated")
        if marker in _SOF_ANY:
            if marker not in sofs or header is not None:
                raise Damaged(f"frame header {marker:#04x} at byte {pos} unexpected")
            header = _sof(data, pos, length)
            if expected is not None:
                agree(header, expected)
        pos += 2 + length
        if marker == 0xDA:
            if header is None:
                raise Damaged("scan before any frame header")
            scans += 1
            pos = _entropy_end(data, pos, ls)
    if header is None or not scans:
        raise Damaged("stream without a frame header or a scan")
    _ends_after(data, pos + 2, "EOI")
    return header


def _sof(data: bytes, pos: int, length: int) -> FrameHeader:
    if length < 8:
        raise Damaged(f"frame header length {length}")
    precision, lines, samples, components = struct.unpack_from(">BHHB", data, pos + 4)
    if length != 8 + 3 * components or not components:
        raise Damaged(f"frame header length {length} for {components} components")
    return FrameHeader(lines, samples, components, precision)


def _entropy_end(data: bytes, pos: int, ls: bool) -> int:
    """Position of the marker that ends the entropy-coded data from `pos`.

    In ISO 10918 an 0xFF data byte is followed by 0x00; in JPEG-LS by a byte
    below 0x80 (A.1 bit stuffing). RSTn markers run 0..7 in turn (B.2.1).
    """
    expected_rst = 0
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            raise Damaged("entropy-coded data run to the end without EOI: truncated or damaged")
        following = data[pos + 1]
        if following == 0xFF:
            pos += 1
        elif following == 0x00 or ls and following < 0x80:
            pos += 2
        elif 0xD0 <= following <= 0xD7:
            if following - 0xD0 != expected_rst:
                raise Damaged(f"restart marker RST{following - 0xD0} at byte {pos} out of order")
            expected_rst = (expected_rst + 1) % 8
            pos += 2
        else:
            return pos


# -------------------------------------------------------------------- RLE
def rle_header(data: bytes, expected: Expected) -> FrameHeader:
    """Check one RLE frame's header (PS3.5 G.5) and its segment lengths."""
    data = bytes(data)
    if len(data) < 64:
        raise Damaged(f"RLE frame of {len(data)} bytes, shorter than its header")
    count, *offsets = struct.unpack_from("<16I", data, 0)
    if not 1 <= count <= 15:
        raise Damaged(f"RLE header declares {count} segments")
    wanted = expected.samples * expected.sample_bytes
    if count != wanted:
        raise Refused(
            f"RLE frame has {count} segments, {expected.samples} samples of "
            f"{expected.bits_allocated} bits need {wanted}"
        )
    used, unused = offsets[:count], offsets[count:]
    if used[0] != 64 or any(b <= a for a, b in itertools.pairwise(used)):
        raise Damaged(f"RLE segment offsets {used} do not start at 64 and increase")
    if used[-1] >= len(data) or any(unused):
        raise Damaged(f"RLE segment offsets {offsets} beyond the frame or unused ones set")
    pixels = expected.rows * expected.columns
    runs = -(-pixels // 128)
    # PackBits: at least one 2-byte run per 128 bytes; at most a header per
    # byte (literal runs of one), and a padding byte (G.3.1).
    lo, hi = 2 * runs, 2 * pixels + 1
    for n, (start, stop) in enumerate(zip(used, [*used[1:], len(data)], strict=True)):
        if not lo <= stop - start <= hi:
            raise Damaged(
                f"RLE segment {n} has {stop - start} bytes; {pixels} pixels need {lo} to {hi}"
            )
    return FrameHeader(expected.rows, expected.columns, count, 8)


# ---------------------------------------------------------------- checks
_J2K = {
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.201",  # HTJ2K: the same SIZ and tile-parts (ISO 15444-15)
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
}
_JPEG = {
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
}
_JPEG_LS = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
RLE = "1.2.840.10008.1.2.5"


def parser_for(ts: str) -> Callable[[bytes, Expected], FrameHeader] | None:
    """The header check of transfer syntax `ts`; None where there is none."""
    ts = str(ts)
    if ts == RLE:
        return rle_header
    if ts in _JPEG:
        return jpeg_header
    if ts in _JPEG_LS:
        return jpegls_header
    if ts in _J2K:
        return j2k_header
    return None


def agree(header: FrameHeader, expected: Expected) -> None:
    """:class:`Refused` unless a JPEG/JPEG-LS/JPEG 2000 header fits the dataset.

    Rows, Columns and components must be equal; the precision must fit in
    Bits Allocated (it may differ from Bits Stored: PS3.5 8.2.4 lets a JPEG
    2000 precision exceed it, and decoders mask to Bits Stored).
    """
    if (header.rows, header.columns) != (expected.rows, expected.columns):
        raise Refused(
            f"codestream declares {header.columns}x{header.rows} pixels, "
            f"the dataset {expected.columns}x{expected.rows} (Columns x Rows)"
        )
    if header.samples != expected.samples:
        raise Refused(
            f"codestream has {header.samples} components, "
            f"the dataset {expected.samples} samples per pixel"
        )
    if not 1 <= header.precision <= expected.bits_allocated:
        raise Refused(
            f"codestream precision {header.precision} bits does not fit "
            f"Bits Allocated {expected.bits_allocated}"
        )


def check_frame(ts: str, data: bytes, expected: Expected) -> FrameHeader | None:
    """Parse one frame of transfer syntax `ts` against the dataset's `expected`.

    None when `ts` has no header check here.

    Raises
    ------
    Refused
        Dimensions, components, precision or RLE segments disagree with the dataset.
    Damaged
        The codestream is unreadable or broken.
    """
    parse = parser_for(ts)
    return None if parse is None else parse(data, expected)


def check_frames(ts: str, frames: Iterator[bytes], expected: Expected) -> int:
    """Check every frame of `frames`; their number must be Number of Frames.

    Returns the number of frames checked.
    """
    count = 0
    try:
        for frame in frames:
            count += 1
            if count > expected.frames:
                break
            check_frame(ts, frame, expected)
    except CodestreamError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom's item parser on hostile bytes
        raise Damaged(f"encapsulated pixel data unreadable: {type(exc).__name__}: {exc}") from None
    if count != expected.frames:
        more = "more than" if count > expected.frames else f"only {count} of"
        raise Refused(f"pixel data hold {more} the {expected.frames} frames declared")
    return count


def check_dataset(ds: Any) -> Expected | None:
    """Check the encapsulated pixel data of `ds` before decoding it.

    Returns what the dataset declares (None when its transfer syntax has no
    header check here, or it is not encapsulated).
    """
    from pydicom.encaps import generate_frames

    ts = str(ds.file_meta.TransferSyntaxUID)
    if parser_for(ts) is None or "PixelData" not in ds:
        return None
    expected = Expected.of(ds)
    offsets = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    frames = generate_frames(
        ds.PixelData, number_of_frames=expected.frames, extended_offsets=offsets
    )
    check_frames(ts, frames, expected)
    return expected


__all__ = [
    "CodestreamError",
    "Damaged",
    "Expected",
    "FrameHeader",
    "Refused",
    "agree",
    "check_dataset",
    "check_frame",
    "check_frames",
    "j2k_header",
    "jpeg_header",
    "jpegls_header",
    "parser_for",
    "rle_header",
]
