"""Re-encode a spooled object for a destination that refuses its transfer syntax.

Only used when no accepted presentation context matches the object's own
transfer syntax (PS3.4 B.5, PS3.8 9.3.2.2). The output is always uncompressed
(Explicit or Implicit VR Little Endian):

* uncompressed -> uncompressed: a pure re-encoding, no pixel value changes
  (big endian sources are byte-swapped, which pydicom does not do itself);
* compressed -> uncompressed: the pixel data are decoded (pydicom with the
  pylibjpeg plugins), colour YBR results are reported as RGB, and a lossy
  source keeps Lossy Image Compression = "01" (PS3.3 C.7.6.1.1.5) so nobody
  downstream mistakes the decoded pixels for an original.

The original stays in the spool; the converted file is a new, separate file.

This is the one implementation of "one file to uncompressed". The sender
calls it in-process for a handful of items; :mod:`pdimport.transcode.decode` runs the
same function in its worker processes for large series. Which pydicom
plugin decodes a transfer syntax is measured, not guessed:
:data:`DECODER_PREFERENCE`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pdimport.store.fsutil import atomic_write
from pdimport.transcode.codestream import CodestreamError, check_dataset
from pdimport.transcode.errors import TranscodeError

LOGGER = logging.getLogger(__name__)

#: What :func:`convert` can write.
TARGETS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

#: Transfer syntax UID -> pydicom decoding plugins, fastest first, as measured
#: by ``bench/bench_decode.py`` here (24 CT slices 512x512x16 bit, one core,
#: MB/s of decoded pixels; 2026-11-27). Plugins not installed are skipped.
DECODER_PREFERENCE: dict[str, tuple[str, ...]] = {
    # RLE: pylibjpeg-rle 777 vs pydicom numpy 152. A numba decoder reached
    # 0.81x pylibjpeg-rle (kernel only), so it is not used.
    "1.2.840.10008.1.2.5": ("pylibjpeg", "gdcm", "pydicom"),
    # JPEG lossless (Process 14, SV1): GDCM 147 vs pylibjpeg-libjpeg 60.
    "1.2.840.10008.1.2.4.57": ("gdcm", "pylibjpeg"),
    "1.2.840.10008.1.2.4.70": ("gdcm", "pylibjpeg"),
    # JPEG-LS: CharLS (pyjpegls) 125, GDCM 101, pylibjpeg-libjpeg 28.
    "1.2.840.10008.1.2.4.80": ("pyjpegls", "gdcm", "pylibjpeg"),
    "1.2.840.10008.1.2.4.81": ("pyjpegls", "gdcm", "pylibjpeg"),
    # JPEG 2000: GDCM shows 35 vs 20 in one process, but with 1.7 cores busy
    # (threaded OpenJPEG); per core pylibjpeg is cheaper, and the pool
    # already uses every core (pool-N 34 MB/s).
    "1.2.840.10008.1.2.4.90": ("pylibjpeg", "gdcm", "pillow"),
    "1.2.840.10008.1.2.4.91": ("pylibjpeg", "gdcm", "pillow"),
    # JPEG baseline 8-bit: Pillow (libjpeg-turbo) 297, GDCM 198, pylibjpeg 86.
    "1.2.840.10008.1.2.4.50": ("pillow", "gdcm", "pylibjpeg"),
    # JPEG extended 12-bit: pydicom refuses Pillow/GDCM for 12-bit samples
    # (performance notes §2); pylibjpeg-libjpeg first.
    "1.2.840.10008.1.2.4.51": ("pylibjpeg", "gdcm", "pillow"),
}

#: Transfer syntaxes whose pixel data are always lossy -> Lossy Image
#: Compression Method (0028,2114) defined terms (PS3.3 C.7.6.1.1.5.1).
_ALWAYS_LOSSY = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG Extended
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS near-lossless
}
#: Lossy or lossless depending on the codestream.
_J2K = {
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.93": "ISO_15444_2",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}
#: PS3.3 C.7.6.3.1.2: what a native (uncompressed) image may declare.
_NATIVE_PHOTOMETRIC = {
    "MONOCHROME1",
    "MONOCHROME2",
    "PALETTE COLOR",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "ARGB",
    "CMYK",
    "HSV",
}
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_ENCAPSULATED_ONLY = (0x7FE00001, 0x7FE00002)  # Extended Offset Table (+ lengths)


def convert(src: str | os.PathLike, dst: str | os.PathLike, target_ts: str) -> str:
    """Write `src` re-encoded in `target_ts` to `dst`.

    The SOP Instance UID is kept: a transfer syntax change is not a new
    instance (PS3.5 10; dcmtk's dcmdjpeg keeps it too).

    Parameters
    ----------
    src : path-like
        A Part 10 file (the spooled original; never modified).
    dst : path-like
        Where to write. Written to a temporary file in the same folder,
        fsynced and renamed, so `dst` either does not exist or is complete.
    target_ts : str
        Explicit VR Little Endian or Implicit VR Little Endian.

    Returns
    -------
    str
        The transfer syntax written.

    Raises
    ------
    TranscodeError
        When the target is not supported, the codestream's header disagrees
        with the dataset or its structure is broken (checked before any
        decoder runs), the pixel data cannot be decoded or the result cannot
        be written.
    """
    target = UID(target_ts)
    if target not in TARGETS:
        raise TranscodeError(f"cannot convert to {target.name}: only uncompressed little endian")
    try:
        ds = pydicom.dcmread(src)
        source = UID(ds.file_meta.TransferSyntaxUID)
        if source.is_encapsulated:
            _decompress(ds, source)
        elif source == ExplicitVRBigEndian:
            _swap_to_little_endian(ds)
        ds.file_meta.TransferSyntaxUID = target
        _write_atomic(ds, Path(dst))
    except TranscodeError:
        raise
    except CodestreamError as exc:
        raise TranscodeError(str(exc), exc.code) from None
    except Exception as exc:  # any codec or parser error is this file's failure
        raise TranscodeError(f"{type(exc).__name__}: {exc}") from exc
    LOGGER.info("converted %s (%s) to %s", Path(src).name, source.name, target.name)
    return str(target)


# ------------------------------------------------------------------ decoding
def decoder_for(ts: str) -> str:
    """The pydicom decoding plugin used for `ts` here ("" = pydicom's choice).

    The first plugin of :data:`DECODER_PREFERENCE` that is installed.
    """
    try:
        available = get_decoder(ts).available_plugins
    except NotImplementedError:
        return ""
    return next((p for p in DECODER_PREFERENCE.get(str(ts), ()) if p in available), "")


def _decompress(ds: Dataset, source: UID) -> None:
    check_dataset(ds)  # before a codec sizes its buffers from the codestream
    lossy_method = _lossy_method(ds, source)
    compressed = len(ds.PixelData) if lossy_method is not None else 0
    # Same SOP Instance UID: decoding changes the encoding, not the instance
    # (PS3.5 10: a transfer syntax change is not a new instance; dcmtk's
    # dcmdjpeg keeps it too). pydicom 3's Dataset.decompress() would mint one.
    ds.decompress(decoding_plugin=decoder_for(source), as_rgb=True, generate_instance_uid=False)
    for tag in _ENCAPSULATED_ONLY:  # they described frames that are gone
        if tag in ds:
            del ds[tag]
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric and photometric not in _NATIVE_PHOTOMETRIC:
        raise TranscodeError(f"decoded image still declares {photometric}")
    if lossy_method is not None:
        ratio = len(ds.PixelData) / compressed if compressed else 0.0
        mark_lossy(ds, lossy_method, ratio)


def _lossy_method(ds: Dataset, source: UID) -> str | None:
    """The Lossy Image Compression Method to record, or None when lossless."""
    if source in _ALWAYS_LOSSY:
        return _ALWAYS_LOSSY[source]
    if source in _J2K and _j2k_irreversible(ds):
        return _J2K[source]
    if ds.get("LossyImageCompression") == "01":
        return ""  # already marked by the source; keep what it says
    return None


def _j2k_irreversible(ds: Dataset) -> bool:
    """True if the first frame uses the 9-7 irreversible wavelet (ISO 15444-1 A.6.1)."""
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        frame = next(generate_frames(ds.PixelData, number_of_frames=frames))
    except Exception:  # noqa: BLE001 - unknown: leave the decision to the source's flag
        return False
    cod = frame.find(b"\xff\x52")
    # COD: marker(2) Lcod(2) Scod(1) SGcod(4) then SPcod: levels, cbw, cbh,
    # cbstyle, transformation (0 = 9-7 irreversible).
    offset = cod + 2 + 2 + 1 + 4 + 4
    return cod >= 0 and len(frame) > offset and frame[offset] == 0


def mark_lossy(ds: Dataset, method: str, ratio: float = 0.0) -> None:
    """Record that the pixels went through lossy compression (PS3.3 C.7.6.1.1.5).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The decoded dataset.
    method : str
        Lossy Image Compression Method (0028,2114) defined term, "" if unknown.
    ratio : float
        Decoded / compressed size; 0 when unknown.

    Notes
    -----
    Once lossy, always "01". Method and ratio (0028,2112) describe the
    original compression: kept when the source has them, added when not.
    """
    ds.LossyImageCompression = "01"
    if method and "LossyImageCompressionMethod" not in ds:
        ds.LossyImageCompressionMethod = method
    if ratio > 0 and "LossyImageCompressionRatio" not in ds:
        ds.LossyImageCompressionRatio = f"{ratio:.2f}"[:16]  # DS: 16 bytes at most


# ------------------------------------------------------------ byte order
def _swap_to_little_endian(ds: Dataset) -> None:
    """Byte-swap OW/OF/OL/OD/OV values, which pydicom keeps as raw bytes.

    Values with a numeric VR (US, FL, ...) are decoded by pydicom and written
    in the new byte order by itself; UN cannot be swapped without knowing its
    real VR, so a non-empty UN refuses the conversion rather than corrupt it.
    """
    for elem in ds.iterall():
        if elem.VR in _SWAP_WIDTH and elem.value:
            elem.value = _swap(bytes(elem.value), _SWAP_WIDTH[elem.VR])
        elif elem.VR == "UN" and elem.value:
            raise TranscodeError(f"cannot byte-swap UN element {elem.tag} of unknown type")


def _swap(data: bytes, width: int) -> bytes:
    import numpy as np

    if len(data) % width:
        raise TranscodeError(f"value length {len(data)} is not a multiple of {width}")
    return np.frombuffer(data, dtype=f">u{width}").astype(f"<u{width}").tobytes()


# ------------------------------------------------------------------ output
def _write_atomic(ds: Dataset, dst: Path) -> None:
    with atomic_write(dst) as fp:
        pydicom.dcmwrite(fp, ds, enforce_file_format=True)


__all__ = [
    "DECODER_PREFERENCE",
    "TARGETS",
    "TranscodeError",
    "convert",
    "decoder_for",
    "mark_lossy",
]
