"""JPEG, PNG, BMP and TIFF -> Secondary Capture Image Storage (PS3.3 A.8.1).

JPEG files are encapsulated as they are, never decoded or recompressed: the
SOF segment gives the geometry (reliability.md N1: never decode a JPEG to
encapsulate it), and the bitstream is the single fragment of the Pixel Data.
PNG, BMP and TIFF are decoded by Pillow, after a header-only size check that
refuses decompression bombs, and stored as native pixels (lossless).

Multi-page TIFF becomes one single-frame SC per page, all in one series with
InstanceNumber = page number. The multi-frame SC IODs (A.8.2-A.8.5) each fix
one pixel format for every frame, but TIFF pages may differ in size and
colour; the single-frame SC Image IOD is also the one every PACS and viewer
displays.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    SecondaryCaptureImageStorage,
)

from pdimport.convert.context import (
    DEFAULT_LIMITS,
    ConversionError,
    Limits,
    PatientContext,
    base_name,
    clip,
    common_modules,
    da_tm,
    file_datetime,
    finish,
    read_capped,
    write_part10,
)

#: Pillow format names accepted for each Other Content subtype.
PILLOW_FORMATS = {"png": {"PNG"}, "bmp": {"BMP", "DIB"}, "tiff": {"TIFF"}}
_WHITE: dict[str, int | tuple[int, int, int]] = {"L": 255, "RGB": (255, 255, 255)}


# ================================================================== JPEG
@dataclass(frozen=True)
class JpegFrame:
    """What the JPEG header says (ITU-T T.81 B.2.2 frame header)."""

    sof: int  # the SOFn marker's second byte, 0xC0 = baseline
    precision: int
    rows: int
    columns: int
    components: int
    component_ids: tuple[int, ...]
    sampling: tuple[int, ...]  # Hi << 4 | Vi per component
    adobe_transform: int | None  # APP14 "Adobe" colour transform, if present
    jfif: bool


_STANDALONE = set(range(0xD0, 0xD8)) | {0x01}  # RSTn, TEM: no length field
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def parse_jpeg(data: bytes) -> JpegFrame:
    """Read the markers up to the first scan, without decoding anything.

    Raises ConversionError(``decode_failed``) for a stream that is not a
    complete JPEG interchange format file (T.81 B.2.1).
    """
    if data[:3] != b"\xff\xd8\xff":
        raise ConversionError("decode_failed", "no JPEG SOI marker")
    i, frame, adobe, jfif = 2, None, None, False
    while True:
        while i < len(data) and data[i] == 0xFF and data[i + 1 : i + 2] == b"\xff":
            i += 1  # fill bytes (B.1.1.2)
        if i + 4 > len(data) or data[i] != 0xFF:
            raise ConversionError("decode_failed", f"bad JPEG marker at offset {i}")
        marker = data[i + 1]
        if marker in _STANDALONE:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        segment = data[i + 4 : i + 2 + length]
        if length < 2 or len(segment) != length - 2:
            raise ConversionError("decode_failed", f"JPEG segment 0x{marker:02X} truncated")
        if marker in _SOF:
            frame = _sof(marker, segment)
        elif marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe = segment[11]
        elif marker == 0xE0 and segment[:5] == b"JFIF\x00":
            jfif = True
        elif marker == 0xDA:
            break
        elif marker == 0xD9:
            raise ConversionError("decode_failed", "JPEG ends before its first scan")
        i += 2 + length
    if frame is None:
        raise ConversionError("decode_failed", "JPEG scan before any frame header")
    # A copy cut short has no EOI after the scan; trailing bytes after EOI
    # (maker notes, second images) are common and kept as they are.
    if data.rfind(b"\xff\xd9") <= i:
        raise ConversionError("decode_failed", "JPEG has no EOI marker: truncated")
    return JpegFrame(
        frame[0], frame[1], frame[2], frame[3], frame[4], frame[5], frame[6], adobe, jfif
    )


def _sof(marker: int, seg: bytes) -> tuple:
    if len(seg) < 6:
        raise ConversionError("decode_failed", "JPEG frame header truncated")
    precision, rows, cols, count = (
        seg[0],
        int.from_bytes(seg[1:3], "big"),
        int.from_bytes(seg[3:5], "big"),
        seg[5],
    )
    if len(seg) < 6 + 3 * count or count == 0:
        raise ConversionError("decode_failed", "JPEG frame header truncated")
    ids = tuple(seg[6 + 3 * k] for k in range(count))
    sampling = tuple(seg[7 + 3 * k] for k in range(count))
    return marker, precision, rows, cols, count, ids, sampling


def jpeg_photometric(frame: JpegFrame) -> str:
    """Photometric Interpretation of a JPEG stream (PS3.5 8.2.1, PS3.3 C.7.6.3.1.2).

    Three components are YCbCr unless the stream says RGB (Adobe transform 0,
    or libjpeg's component IDs 'R','G','B' without JFIF). YCbCr is labelled
    YBR_FULL_422 whatever the chroma sampling (4:4:4, 4:2:2, 4:2:0): the JPEG
    frame header carries the real sampling factors, so for an encapsulated
    stream the label only tells a decoder "YCbCr, convert to RGB". YBR_FULL
    would be the finer label for 4:4:4, but dciodvfy rejects it in the SC
    Image IOD, and a label that fails validation is worse than a coarse one.
    """
    if frame.components == 1:
        return "MONOCHROME2"
    if frame.components != 3:
        raise ConversionError(
            "unsupported_content", f"JPEG with {frame.components} components (CMYK/YCCK)"
        )
    if frame.adobe_transform == 0 or (
        frame.component_ids == (0x52, 0x47, 0x42)
        and not frame.jfif
        and frame.adobe_transform is None
    ):
        return "RGB"
    return "YBR_FULL_422"


def jpeg_transfer_syntax(frame: JpegFrame) -> str | None:
    """The transfer syntax that carries this stream unchanged, or None.

    Baseline (SOF0, 8-bit) -> JPEG Baseline (Process 1); extended Huffman
    (SOF1, 8 or 12-bit) -> JPEG Extended (Process 2 & 4). Progressive,
    lossless and arithmetic-coded JPEG have no current transfer syntax
    (their Processes 10-29 are retired, PS3.5 A.4.1).
    """
    if frame.sof == 0xC0 and frame.precision == 8:
        return JPEGBaseline8Bit
    if frame.sof == 0xC1 and frame.precision in (8, 12):
        if frame.precision == 12 and frame.components != 1:
            return None
        return JPEGExtended12Bit
    return None


def convert_jpeg(
    path: Path,
    display_name: str,
    ctx: PatientContext,
    out_dir: Path,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Path]:
    """Encapsulate one JPEG file unchanged as a Secondary Capture image.

    A progressive JPEG (SOF2, common from web and messaging apps) has no
    current transfer syntax, so it alone is decoded (size-capped) and stored
    as native pixels, still flagged lossy. Other JPEG processes are refused
    with ``unsupported_content``.
    """
    data = read_capped(path, limits.max_bytes)
    frame = parse_jpeg(data)
    _check_size(frame.columns, frame.rows, limits)
    syntax = jpeg_transfer_syntax(frame)
    if syntax is None:
        if frame.sof == 0xC2:
            return _convert_decoded(
                path, display_name, "jpeg", {"JPEG"}, ctx, out_dir, limits, lossy=True
            )
        raise ConversionError(
            "unsupported_content", f"JPEG process SOF{frame.sof - 0xC0} not transferable"
        )
    photometric = jpeg_photometric(frame)
    content = exif_datetime(path) or file_datetime(path)
    ds = _sc_base(ctx, "jpeg", display_name, content, comment=base_name(display_name))
    _set_image_pixel(
        ds, frame.rows, frame.columns, frame.components, photometric, bits_stored=frame.precision
    )
    ds.LossyImageCompression = "01"  # the source is already lossy (C.7.6.1.1.5)
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ratio = frame.rows * frame.columns * frame.components * ds.BitsAllocated / 8 / len(data)
    ds.LossyImageCompressionRatio = f"{ratio:.4g}"
    # One fragment holding the file's bytes; encapsulate() pads an odd
    # length with one NUL after EOI, which decoders ignore (PS3.5 A.4).
    ds.PixelData = encapsulate([data], has_bot=False)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    finish(ds, ctx)
    return [write_part10(ds, out_dir, syntax)]


# ============================================================= PNG/BMP/TIFF
def convert_raster(
    path: Path,
    display_name: str,
    subtype: str,
    ctx: PatientContext,
    out_dir: Path,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Path]:
    """PNG, BMP or TIFF (every page) -> native-pixel Secondary Capture images."""
    return _convert_decoded(
        path, display_name, subtype, PILLOW_FORMATS[subtype], ctx, out_dir, limits, lossy=False
    )


def _convert_decoded(
    path: Path,
    display_name: str,
    kind: str,
    formats: set[str],
    ctx: PatientContext,
    out_dir: Path,
    limits: Limits,
    *,
    lossy: bool,
) -> list[Path]:
    with _open_image(path, formats) as img:
        pages = getattr(img, "n_frames", 1)
        if pages > limits.max_pages:
            raise ConversionError("too_large", f"{pages} pages exceeds the cap {limits.max_pages}")
        content = exif_datetime(path, img) or file_datetime(path)
        written = []
        for page in range(pages):
            img.seek(page)
            _check_size(img.width, img.height, limits)
            pixels, photometric = pillow_pixels(img)
            comment = base_name(display_name)
            if pages > 1:
                comment += f" (page {page + 1} of {pages})"
            ds = _sc_base(ctx, kind, display_name, content, comment=comment)
            _set_native_pixels(ds, pixels, photometric)
            if lossy or _page_is_lossy(img):
                ds.LossyImageCompression = "01"
                ds.LossyImageCompressionMethod = "ISO_10918_1"
            else:
                ds.LossyImageCompression = "00"
            finish(ds, ctx)
            written.append(write_part10(ds, out_dir, ExplicitVRLittleEndian))
    return written


def _open_image(path: Path, formats: set[str]) -> Image.Image:
    """Open (headers only) with Pillow's bomb warning turned into a refusal."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path, formats=sorted(formats))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ConversionError("too_large", f"decompression bomb: {exc}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ConversionError(
                "decode_failed", f"not a readable {'/'.join(sorted(formats))} image: {exc}"
            ) from None
    return img


def _check_size(columns: int, rows: int, limits: Limits) -> None:
    """Refuse before decoding: declared geometry is all a bomb needs to lie about."""
    if rows <= 0 or columns <= 0:
        raise ConversionError("decode_failed", f"image declares {columns}x{rows} pixels")
    if rows > 0xFFFF or columns > 0xFFFF:  # Rows/Columns are US (PS3.5 6.2)
        raise ConversionError("too_large", f"{columns}x{rows} pixels does not fit Rows/Columns")
    if rows * columns > limits.max_pixels:
        raise ConversionError(
            "too_large",
            f"decompression bomb: {columns}x{rows} pixels exceeds the cap of {limits.max_pixels}",
        )


def _page_is_lossy(img: Image.Image) -> bool:
    # A TIFF page may hold JPEG-compressed strips: decoded, still lossy.
    return str(img.info.get("compression", "")).lower() in ("jpeg", "tiff_jpeg")


def pillow_pixels(img: Image.Image) -> tuple[np.ndarray, str]:
    """Decode the current page to (array, Photometric Interpretation).

    8-bit grey -> MONOCHROME2; 16-bit grey -> MONOCHROME2 uint16; colour and
    palette -> RGB. Alpha cannot be stored (C.7.6.3.1.2 has no alpha), so it
    is composited over white, as viewers show a transparent image.
    Raises ConversionError for modes with no DICOM equivalent (float).
    """
    mode = img.mode
    try:
        if mode.startswith("I;16"):
            return np.asarray(img).astype("<u2", copy=False), "MONOCHROME2"
        if mode == "I":
            arr = np.asarray(img)
            if arr.size and (arr.min() < 0 or arr.max() > 0xFFFF):
                raise ConversionError("unsupported_content", "32-bit integer pixels")
            return arr.astype("<u2"), "MONOCHROME2"
        if mode == "F":
            raise ConversionError("unsupported_content", "floating-point pixels")
        if mode in ("1", "L"):
            return np.asarray(img.convert("L")), "MONOCHROME2"
        if "A" in mode or "a" in mode or "transparency" in img.info:
            target = "L" if mode in ("LA", "La") else "RGB"
            return np.asarray(_over_white(img, target)), _photometric(target)
        return np.asarray(img.convert("RGB")), "RGB"
    except ConversionError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ConversionError("decode_failed", f"image data: {exc}") from None


def _over_white(img: Image.Image, target: str) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new(target, img.size, _WHITE[target])
    background.paste(rgba.convert(target), mask=rgba.getchannel("A"))
    return background


def _photometric(mode: str) -> str:
    return "MONOCHROME2" if mode == "L" else "RGB"


# ================================================================ builders
def _sc_base(
    ctx: PatientContext, kind: str, display_name: str, content: _dt.datetime, *, comment: str
) -> Dataset:
    """Modules of the SC Image IOD (A.8.1) other than Image Pixel."""
    ds = common_modules(
        ctx,
        kind=kind,
        display_name=display_name,
        modality="OT",
        sop_class_uid=SecondaryCaptureImageStorage,
        content=content,
    )
    # General Series (C.7.3.1): Laterality is 2C on a paired body part; what
    # a photo or scan shows is unknown, so it is present and empty.
    ds.Laterality = ""
    # General Image (C.7.6.1): no Image Orientation here, so Type 2 applies.
    ds.PatientOrientation = ""
    ds.ImageComments = f"Converted from {clip(comment, 'ST')}"
    # SC Image (C.8.6.2)
    ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = da_tm(_dt.datetime.now())
    return ds


def _set_image_pixel(
    ds: Dataset, rows: int, columns: int, samples: int, photometric: str, *, bits_stored: int
) -> None:
    """Image Pixel Module (C.7.6.3) description of unsigned pixels."""
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if samples > 1:
        ds.PlanarConfiguration = 0  # colour-by-pixel, as JPEG and Pillow lay it out


def _set_native_pixels(ds: Dataset, pixels: np.ndarray, photometric: str) -> None:
    samples = 1 if pixels.ndim == 2 else pixels.shape[2]
    bits = pixels.dtype.itemsize * 8
    _set_image_pixel(ds, pixels.shape[0], pixels.shape[1], samples, photometric, bits_stored=bits)
    raw = np.ascontiguousarray(pixels).astype("<u2" if bits == 16 else "u1", copy=False).tobytes()
    if len(raw) % 2:
        raw += b"\x00"  # values are even length (PS3.5 7.1.1)
    ds.add_new(0x7FE00010, "OW" if bits == 16 else "OB", raw)


# ================================================================= metadata
_EXIF_IFD, _DATETIME_ORIGINAL, _DATETIME = 0x8769, 0x9003, 0x0132


def exif_datetime(path: Path, img: Image.Image | None = None) -> _dt.datetime | None:
    """EXIF DateTimeOriginal, else TIFF/EXIF DateTime ('YYYY:MM:DD HH:MM:SS').

    Reads tags only; a file whose tags do not parse simply has no date.
    """
    try:
        if img is None:
            with _open_image(path, {"JPEG"}) as opened:
                return _exif_datetime(opened)
        return _exif_datetime(img)
    except (ConversionError, OSError, ValueError, SyntaxError, KeyError, TypeError):
        return None


def _exif_datetime(img: Image.Image) -> _dt.datetime | None:
    exif = img.getexif()
    for value in (exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL), exif.get(_DATETIME)):
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if isinstance(value, str):
            try:
                return _dt.datetime.strptime(value.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
            except ValueError:
                continue
    return None
