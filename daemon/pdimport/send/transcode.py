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
"""

from __future__ import annotations

import logging
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

from ..fsutil import atomic_write

LOGGER = logging.getLogger(__name__)

#: What :func:`convert` can write.
TARGETS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

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
_NATIVE_PHOTOMETRIC = {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL",
                       "YBR_FULL_422", "ARGB", "CMYK", "HSV"}
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


class TranscodeError(Exception):
    """The object could not be re-encoded; maps to problem ``decode_failed``."""

    code = "decode_failed"


def convert(src: Path, dst: Path, target_ts: str) -> str:
    """Write `src` re-encoded in `target_ts` to `dst`.

    Parameters
    ----------
    src : pathlib.Path
        A Part 10 file (the spooled original; never modified).
    dst : pathlib.Path
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
        When the target is not supported, the pixel data cannot be decoded or
        the result cannot be written.
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
        _write_atomic(ds, dst)
    except TranscodeError:
        raise
    except Exception as exc:
        raise TranscodeError(f"{type(exc).__name__}: {exc}") from exc
    LOGGER.info("converted %s (%s) to %s", src.name, source.name, target.name)
    return str(target)


# ------------------------------------------------------------------ decoding
def _decompress(ds: Dataset, source: UID) -> None:
    lossy_method = _lossy_method(ds, source)
    # pylibjpeg first: measured faster than the alternatives for RLE and as
    # good as any for the JPEG family here (notes/performance.md §2).
    plugin = "pylibjpeg" if "pylibjpeg" in get_decoder(source).available_plugins else ""
    # Same SOP Instance UID: decoding changes the encoding, not the instance
    # (PS3.5 10: a transfer syntax change is not a new instance; dcmtk's
    # dcmdjpeg keeps it too). pydicom 3's Dataset.decompress() would mint one.
    ds.decompress(decoding_plugin=plugin, as_rgb=True, generate_instance_uid=False)
    # An encapsulated-only element would now describe frames that are gone.
    for tag in (0x7FE00001, 0x7FE00002):
        if tag in ds:
            del ds[tag]
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric and photometric not in _NATIVE_PHOTOMETRIC:
        raise TranscodeError(f"decoded image still declares {photometric}")
    if lossy_method is not None:
        _mark_lossy(ds, lossy_method)


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
        frame = next(generate_frames(ds.PixelData, number_of_frames=ds.get("NumberOfFrames", 1)))
    except Exception:  # noqa: BLE001 - unknown: leave the decision to the source's flag
        return False
    cod = frame.find(b"\xff\x52")
    # COD: marker(2) Lcod(2) Scod(1) SGcod(4) then SPcod: levels, cbw, cbh,
    # cbstyle, transformation (0 = 9-7 irreversible).
    offset = cod + 2 + 2 + 1 + 4 + 4
    return cod >= 0 and len(frame) > offset and frame[offset] == 0


def _mark_lossy(ds: Dataset, method: str) -> None:
    # PS3.3 C.7.6.1.1.5: once lossy, always "01". Keep an existing method and
    # ratio (they describe the original compression); add the method if absent.
    ds.LossyImageCompression = "01"
    if method and "LossyImageCompressionMethod" not in ds:
        ds.LossyImageCompressionMethod = method


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
