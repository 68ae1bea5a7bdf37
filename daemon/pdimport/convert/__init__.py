"""Other Content -> DICOM: PDF, JPEG, PNG, BMP, TIFF and text become objects
filed with the medium's one patient (issue 5).

- PDF and text -> Encapsulated PDF Storage (PS3.3 A.45.1), see :mod:`.pdf`,
  :mod:`.text`;
- JPEG -> Secondary Capture (A.8.1), bitstream encapsulated unchanged;
  PNG/BMP/TIFF -> Secondary Capture, native pixels, see :mod:`.image`;
- :func:`mark_ai` marks AI results (C.12.1.1.9), see :mod:`.coerce`.

Every function here is a unit of work in STYLE.md's sense: a file that cannot
be converted raises :class:`ConversionError` (a
:class:`~pdimport.problems.FileProblem` with a problem code) for the caller
to record; nothing is half-written.
"""

from __future__ import annotations

from pathlib import Path

from pdimport.convert.coerce import mark_ai
from pdimport.convert.context import DEFAULT_LIMITS, ConversionError, Limits, PatientContext
from pdimport.convert.image import convert_jpeg, convert_raster
from pdimport.convert.pdf import convert_pdf
from pdimport.convert.text import convert_text

__all__ = [
    "SUBTYPES",
    "ConversionError",
    "Limits",
    "PatientContext",
    "convert_file",
    "mark_ai",
]

#: Identity subtypes of ``other_content`` that are converted.
SUBTYPES = ("pdf", "jpeg", "png", "bmp", "tiff", "txt")


def convert_file(
    path: Path,
    display_name: str,
    subtype: str,
    ctx: PatientContext,
    out_dir: Path,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Path]:
    """Convert one Other Content file; returns the Part 10 files written.

    Parameters
    ----------
    path
        The spooled local copy of the file.
    display_name
        Its path on the medium (a label only; names the series/document).
    subtype
        ``pdf``, ``jpeg``, ``png``, ``bmp``, ``tiff`` or ``txt``, as the
        identifier found it.
    ctx
        Patient and target study; also allocates series across calls, so
        use one context per medium.
    out_dir
        Where the new files go, named ``<SOPInstanceUID>.dcm``.

    Raises
    ------
    ConversionError
        ``unsupported_content`` (unknown subtype or unsupported variant),
        ``decode_failed`` (the file is not what it claims), ``too_large``
        (over a cap; decompression bombs).
    """
    if subtype == "pdf":
        return convert_pdf(path, display_name, ctx, out_dir, limits)
    if subtype == "jpeg":
        return convert_jpeg(path, display_name, ctx, out_dir, limits)
    if subtype in ("png", "bmp", "tiff"):
        return convert_raster(path, display_name, subtype, ctx, out_dir, limits)
    if subtype == "txt":
        return convert_text(path, display_name, ctx, out_dir, limits)
    raise ConversionError("unsupported_content", f"no converter for {subtype or 'unknown'!r}")
