"""The reference header scanner: :mod:`~pdimport.scan.walker` first, then
pydicom ``dcmread(stop_before_pixels=True)``.

pydicom is the oracle for attribute values (every faster scanner must return
the same :class:`~pdimport.model.Header`), but it is never the gatekeeper: it
accepts truncated and mis-declared files silently,
so it only reads files the walker has already passed. Its warnings that mean
lost data become problems.
"""

from __future__ import annotations

import io
import logging
import warnings
import zlib
from pathlib import Path
from typing import Any

from pdimport.model import Header
from pdimport.problems import FileProblem, Problem
from pdimport.scan import walker
from pdimport.scan.encoding import uid_ok, uid_usable
from pdimport.scan.walker import WalkResult

log = logging.getLogger(__name__)

#: Header field -> DICOM keyword (PS3.6). Values are decoded text, "" when absent.
HEADER_KEYWORDS: dict[str, str] = {
    "patient_id": "PatientID",
    "issuer_of_patient_id": "IssuerOfPatientID",
    "patient_name": "PatientName",
    "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex",
    "study_uid": "StudyInstanceUID",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "study_description": "StudyDescription",
    "accession_number": "AccessionNumber",
    "series_uid": "SeriesInstanceUID",
    "series_number": "SeriesNumber",
    "series_description": "SeriesDescription",
    "modality": "Modality",
    "instance_number": "InstanceNumber",
    "specific_character_set": "SpecificCharacterSet",
    "institution_name": "InstitutionName",
    "manufacturer": "Manufacturer",
    "model_name": "ManufacturerModelName",
    "image_type": "ImageType",
    "lossy_compression": "LossyImageCompression",
}

#: pydicom warnings while *reading* that mean the dataset it returns is not
#: the file's content (notes D4, D8): refuse rather than import a guess.
_DATA_LOSS_WARNINGS = (
    "delimiter",
    "expected explicit vr",
    "expected implicit vr",
    "end of file",
    "truncat",
    "unexpected end",
)
#: pydicom warnings while *decoding text* (PS3.5 §6.1): the bytes are kept
#: and forwarded, but a person should check the names.
_CHARSET_WARNINGS = ("encoding", "decode", "character set", "charset")

#: Largest inflated header (everything before Pixel Data) handed to pydicom.
_MAX_DEFLATED_HEADER = 256 << 20
#: Values longer than this are not loaded by pydicom (seeked over instead).
_DEFER_SIZE = 1 << 16


class PydicomScanner:
    """Header scanner backed by pydicom (the reference implementation).

    Parameters
    ----------
    limits : Settings, optional
        Supplies ``limits.max_nesting`` and ``limits.max_inflate`` to the walker.
    """

    name = "pydicom"

    def __init__(self, limits: Any = None) -> None:
        self.limits = limits

    def is_available(self) -> bool:
        try:
            import pydicom  # noqa: F401
        except ImportError:  # pragma: no cover - a hard dependency
            return False
        return True

    def scan(self, paths: list[Path], encodings: list[str]) -> list[Header | Problem]:
        """One :class:`Header` or :class:`Problem` per path, in order; one bad
        file never stops the batch."""
        return [self.scan_one(p, e) for p, e in zip(paths, encodings, strict=True)]

    def scan_one(self, path: Path, encoding: str) -> Header | Problem:
        try:
            return scan_file(Path(path), encoding, self.limits)
        except FileProblem as exc:
            return Problem(exc.code, "", exc.detail)
        except Exception as exc:  # noqa: BLE001 - failure is a value per file
            log.info("pydicom could not read %s: %r", path, exc)
            return Problem("unparsable", "", f"{type(exc).__name__}: {exc}")


# --------------------------------------------------------------- one file
def scan_file(path: Path, encoding: str, limits: Any = None) -> Header:
    """Walk, read and check one file.

    Raises
    ------
    FileProblem
        A walker code, or ``missing_attribute``, ``unparsable``
        (``invalid_uid`` and ``uid_mismatch`` are warnings of the Header).
    """
    res = walker.walk(path, encoding, limits)
    ds = _read_dataset(path, res)
    suspect = charset_suspect(ds)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = {field: element_text(ds, kw) for field, kw in HEADER_KEYWORDS.items()}
        sop_class = element_text(ds, "SOPClassUID")
        sop_instance = element_text(ds, "SOPInstanceUID")
    if any(_matches(w, _CHARSET_WARNINGS) for w in caught):
        suspect = True
    quirks = _check_identity(res, sop_class, sop_instance, values)
    header = Header(
        encoding=res.encoding,
        transfer_syntax=res.transfer_syntax,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        dataset_offset=res.dataset_offset,
        pixel_data_offset=-1 if res.inflated else res.pixel_data_offset,
        **values,  # type: ignore[arg-type]  # HEADER_KEYWORDS names str fields only
    )
    for key in ("ImplementationClassUID", "ImplementationVersionName"):
        if res.meta.get(key):
            header.extra[key] = res.meta[key]
    header.warnings.extend(res.warnings)
    if suspect:
        header.warnings.append("charset_suspect")
    for code, detail in quirks:
        header.warn(code, detail)
    return header


def _matches(w: warnings.WarningMessage, needles: tuple[str, ...]) -> bool:
    text = str(w.message).lower()
    return any(n in text for n in needles)


def _read_dataset(path: Path, res: WalkResult) -> Any:
    """pydicom ``dcmread`` of a walked file, without Pixel Data.

    ``force=True`` is used only for datasets without a preamble, which the
    walker has just validated (notes D9). A deflated body is inflated here,
    bounded, and handed over as a raw explicit VR LE dataset, because pydicom
    itself would inflate it with no cap (D11).
    """
    from pydicom import dcmread

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if res.inflated:
            data = _inflate_header(path, res)
            ds = dcmread(
                io.BytesIO(data), force=True, stop_before_pixels=True, defer_size=_DEFER_SIZE
            )
        else:
            ds = dcmread(
                path,
                force=res.encoding != "part10",
                stop_before_pixels=True,
                defer_size=_DEFER_SIZE,
            )
    lost = [str(w.message) for w in caught if _matches(w, _DATA_LOSS_WARNINGS)]
    if "vr_form_mismatch" in res.warnings:
        # The walker has read the whole body as implicit VR: so does pydicom.
        lost = [m for m in lost if "expected explicit vr" not in m.lower()]
    if lost:
        raise FileProblem("unparsable", f"pydicom: {lost[0]}")
    return ds


def _inflate_header(path: Path, res: WalkResult) -> bytes:
    """The inflated dataset up to Pixel Data (PS3.5 §A.5), bounded."""
    end = res.pixel_data_offset if res.pixel_data_offset >= 0 else res.end_offset
    want = end - res.dataset_offset
    if want > _MAX_DEFLATED_HEADER:
        raise FileProblem("deflate_bomb", f"inflated header of {want} bytes")
    z = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    with open(path, "rb") as fp:
        fp.seek(res.dataset_offset)
        tail = b""
        while len(out) < want:
            data = tail or fp.read(1 << 16)
            if not data:
                break
            out += z.decompress(data, want - len(out))
            tail = z.unconsumed_tail
            if z.eof:
                break
    return bytes(out[:want])


# ------------------------------------------------------------ values
def element_text(ds: Any, keyword: str) -> str:
    """An element's value as pydicom gives it, as text: multiple values
    joined with '\\' (PS3.5 §6.4), PN in full with its '=' component groups."""
    if keyword not in ds:
        return ""
    elem = ds[keyword]
    value = elem.value
    if value is None or elem.VR == "SQ":
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip(" \0")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(_one(v) for v in value)
    return _one(value)


def _one(v: Any) -> str:
    # pydicom has already removed the padding of the whole value; spaces
    # inside a multi-valued string ('DERIVED \\PRIMARY') are data: keep them.
    if isinstance(v, bytes):
        return v.decode("latin-1").rstrip(" \0")
    return str(v)


# ------------------------------------------------------------ checks
def _check_identity(
    res: WalkResult, sop_class: str, sop_instance: str, values: dict[str, str]
) -> list[tuple[str, str]]:
    """The identifying attributes (PS3.3 C.12.1, PS3.10 §7.1).

    Be tolerant when reading: a PACS (storescp, dcmsend, Orthanc) stores a
    file whose UIDs break PS3.5 §9.1 or whose File Meta disagrees with the
    dataset, so do we. Only an object without a usable SOP Class or SOP
    Instance UID cannot be filed and is refused.

    Returns
    -------
    list of (code, detail)
        ``invalid_uid`` and ``uid_mismatch`` warnings, in a fixed order.

    Raises
    ------
    FileProblem
        ``missing_attribute``: SOP Class or SOP Instance UID absent or
        unusable (:func:`~pdimport.scan.encoding.uid_usable`).
    """
    unusable = [
        f"{k} {v[:80]!r}" if v else k
        for k, v in (("SOPClassUID", sop_class), ("SOPInstanceUID", sop_instance))
        if not uid_usable(v)
    ]
    if unusable:
        raise FileProblem("missing_attribute", ", ".join(unusable))
    found: list[tuple[str, str]] = []
    checks = {
        "SOPClassUID": sop_class,
        "SOPInstanceUID": sop_instance,
        "StudyInstanceUID": values["study_uid"],
        "SeriesInstanceUID": values["series_uid"],
        "MediaStorageSOPInstanceUID": res.meta.get("MediaStorageSOPInstanceUID", ""),
    }
    for keyword, uid in checks.items():
        if uid and not uid_ok(uid):
            found.append(("invalid_uid", f"{keyword} {uid[:80]!r}"))
    meta_instance = res.meta.get("MediaStorageSOPInstanceUID", "")
    if meta_instance and meta_instance != sop_instance:
        found.append(("uid_mismatch", f"meta {meta_instance!r} != dataset {sop_instance!r}"))
    meta_class = res.meta.get("MediaStorageSOPClassUID", "")
    if meta_class and meta_class != sop_class:
        found.append(("uid_mismatch", f"meta SOP Class {meta_class!r} != dataset {sop_class!r}"))
    return found


# ------------------------------------------------------------ charsets
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
_DEFAULT_TERMS = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})
#: Single-byte ISO 8859 repertoires (PS3.3 C.12.1.1.2, Table C.12-2): the
#: C1 range 0x80–0x9F holds no characters, so bytes there mean another
#: encoding (typically Shift-JIS or CP1252 written by a careless device).
_ISO8859_TERMS = frozenset(
    {
        "ISO_IR 100",
        "ISO_IR 101",
        "ISO_IR 109",
        "ISO_IR 110",
        "ISO_IR 144",
        "ISO_IR 127",
        "ISO_IR 126",
        "ISO_IR 138",
        "ISO_IR 148",
        "ISO_IR 203",
        "ISO_IR 166",
    }
)


def _charset_terms(ds: Any) -> list[str]:
    raw = ds.get_item(0x00080005) if 0x00080005 in ds else None
    if raw is None or raw.value is None:
        return [""]
    value = raw.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        terms = value.split("\\")
    else:
        terms = list(value)
    return [str(t).strip(" \0") for t in terms] or [""]


def charset_suspect(ds: Any) -> bool:
    """Whether any top-level text value does not fit the declared Specific
    Character Set (PS3.5 §6.1, notes C2–C4). Looks at raw bytes, before
    pydicom decodes them (Latin-1 decodes anything, silently)."""
    from pydicom.datadict import dictionary_VR

    terms = _charset_terms(ds)
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        value = getattr(raw, "value", None)
        if not isinstance(value, bytes) or not value:
            continue
        vr = raw.VR
        if vr is None:
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
        if vr in _TEXT_VRS and not _text_fits(value, terms, vr == "PN"):
            return True
    return False


def _text_fits(value: bytes, terms: list[str], is_pn: bool) -> bool:
    if all(t in _DEFAULT_TERMS for t in terms):
        return value.isascii()  # default repertoire: ISO 646 (PS3.5 §6.1.2.1)
    if len(terms) == 1 and terms[0] in _ISO8859_TERMS:
        return not any(0x80 <= b <= 0x9F for b in value)
    if len(terms) == 1 and terms[0] == "ISO_IR 192":
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True
    return _decodes_cleanly(value, terms, is_pn)


def _decodes_cleanly(value: bytes, terms: list[str], is_pn: bool) -> bool:
    """ISO 2022 and other multi-byte sets: pydicom's decoder, strictly."""
    from pydicom import charset
    from pydicom.valuerep import PN_DELIMS, TEXT_VR_DELIMS

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            encodings = charset.convert_encodings(terms)
            # PN: escape sequences also reset at '=' (PS3.5 §6.1.2.5.3, H.3).
            delims = (PN_DELIMS | {0x3D}) if is_pn else TEXT_VR_DELIMS
            text = charset.decode_bytes(value, encodings, delims)
        except (UnicodeDecodeError, LookupError, ValueError):
            return False
    return not caught and "\ufffd" not in text
