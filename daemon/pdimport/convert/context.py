"""Where a converted object goes, and the modules every converted object shares.

A :class:`PatientContext` names the medium's one patient and the study that
converted Other Content joins. The helpers below build the modules common to
the Secondary Capture Image IOD (PS3.3 A.8.1) and the Encapsulated PDF IOD
(PS3.3 A.45.1): Patient (C.7.1.1), General Study (C.7.2.1), the series module,
SC Equipment (C.8.6.1) and SOP Common (C.12.1), then check the finished
dataset and write it as a Part 10 file.

Builders here are strict (STYLE.md, after highdicom): every value is checked
against its VR before a file is written, and anything that does not fit is a
:class:`ConversionError`, never a silently nonconforming object.
"""

from __future__ import annotations

import datetime as _dt
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import config as _pydicom_config
from pydicom.charset import convert_encodings, decode_bytes, encode_string
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import validate_value

from pdimport.model import Header
from pdimport.problems import FileProblem
from pdimport.store.fsutil import atomic_write

#: StudyDescription of the study made when the medium has no single study.
NEW_STUDY_DESCRIPTION = "Documents from external media"
#: Our identity in SC Equipment (C.8.6.1) and Original Attributes (C.12.1.1.9).
SYSTEM_NAME = "pdimport"
#: Series numbers of converted content start here, well above the numbers
#: modalities use, so a converted series never looks like part of a scan.
FIRST_SERIES_NUMBER = 9001
#: DICOM defined term for UTF-8 (PS3.3 C.12.1.1.2); it cannot be combined.
UTF8 = "ISO_IR 192"

# Value length limits in characters (PS3.5 Table 6.2-1) for values we create.
_MAX_LEN = {"LO": 64, "SH": 16, "CS": 16, "ST": 1024}


class ConversionError(FileProblem):
    """A file could not be converted; ``code`` is a problem code.

    ``unsupported_content`` for a file kind or variant we do not convert,
    ``decode_failed`` for a file that does not parse as what it claims to be,
    ``too_large`` for a file over a cap (decompression bombs included).
    """


def check_values(owner: str, checks: list[tuple[str, str, str]], sex: tuple[str, str]) -> None:
    """Strict when building (highdicom's principle): each ``(field, VR,
    value)`` must be valid for its VR, and the sex field ``M``, ``F``, ``O``
    or empty; otherwise a ValueError naming ``owner.field``."""
    for name, vr, value in checks:
        try:
            validate_value(vr, value, _pydicom_config.RAISE)
        except ValueError as exc:
            raise ValueError(f"{owner}.{name}: {exc}") from None
    if sex[1] not in ("", "M", "F", "O"):
        raise ValueError(f"{owner}.{sex[0]}: {sex[1]!r} not M, F or O")


@dataclass(frozen=True)
class Limits:
    """Caps on hostile Other Content (reliability.md row N1)."""

    max_pixels: int = 64 << 20  # per image / page; below Pillow's own 89 Mpx warning
    max_pages: int = 256  # TIFF pages, rendered text pages
    max_bytes: int = 256 << 20  # one source file (PDF, JPEG, text)
    max_text_bytes: int = 4 << 20  # plain text to render


DEFAULT_LIMITS = Limits()


@dataclass
class _Series:
    SeriesInstanceUID: str
    SeriesNumber: int
    SeriesDescription: str
    next_instance: int = 1


@dataclass(frozen=True)
class PatientContext:
    """The patient and study a converted object is filed with.

    Attribute names are the DICOM keywords of the Patient Module (PS3.3
    C.7.1.1) and General Study Module (C.7.2.1). ``SpecificCharacterSet`` is
    the character set the source names were encoded in; new objects keep it
    when every value they carry fits it, else they use UTF-8 (ISO_IR 192).

    ``series_by_kind`` chooses the series layout: False (default) makes one
    series per source file, so the series-level SeriesDescription can name
    that file; True puts all files of one source kind (pdf, jpeg, ...) in one
    series with a generic description, and names each file in the instance
    (DocumentTitle, ImageComments).

    Build it with :meth:`from_dataset`, :meth:`from_header` or
    :meth:`from_headers`; the constructor validates every value.
    """

    PatientName: str
    PatientID: str
    IssuerOfPatientID: str = ""
    PatientBirthDate: str = ""
    PatientSex: str = ""
    SpecificCharacterSet: str = ""
    StudyInstanceUID: str = ""
    StudyDate: str = ""
    StudyTime: str = ""
    AccessionNumber: str = ""
    ReferringPhysicianName: str = ""
    StudyID: str = ""
    StudyDescription: str = ""
    new_study: bool = False
    series_by_kind: bool = False
    # series allocated so far; the one mutable part, shared by every
    # conversion of one medium so a kind's files can share a series
    _series: dict[tuple[str, str], _Series] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if not self.StudyInstanceUID:
            raise ValueError("PatientContext needs a StudyInstanceUID (use new_study())")
        checks = {
            "PatientName": "PN",
            "PatientID": "LO",
            "IssuerOfPatientID": "LO",
            "PatientBirthDate": "DA",
            "PatientSex": "CS",
            "StudyInstanceUID": "UI",
            "StudyDate": "DA",
            "StudyTime": "TM",
            "AccessionNumber": "SH",
            "ReferringPhysicianName": "PN",
            "StudyID": "SH",
            "StudyDescription": "LO",
        }
        check_values(
            "PatientContext",
            [(keyword, vr, getattr(self, keyword)) for keyword, vr in checks.items()],
            ("PatientSex", self.PatientSex),
        )

    # ---------------------------------------------------------- construction
    @classmethod
    def from_dataset(
        cls, ds: Dataset, *, single_study: bool = True, series_by_kind: bool = False
    ) -> PatientContext:
        """Context from one instance of the medium's patient.

        ``single_study`` says whether the medium holds exactly one study; when
        False the context names a new study (:data:`NEW_STUDY_DESCRIPTION`).
        """

        def get(keyword: str) -> str:
            value = ds.get(keyword, "")
            return "" if value is None else str(value)

        charset = ds.get("SpecificCharacterSet", "")
        if not isinstance(charset, str):
            charset = "\\".join(charset)
        values = {k: get(k) for k in _PATIENT_KEYS}
        study = {k: get(k) for k in _STUDY_KEYS}
        return cls._make(values, study, charset, single_study, series_by_kind)

    @classmethod
    def from_header(
        cls, header: Header, *, single_study: bool = True, series_by_kind: bool = False
    ) -> PatientContext:
        """Context from a scanner :class:`~pdimport.model.Header`."""
        values = {
            "PatientName": header.patient_name,
            "PatientID": header.patient_id,
            "IssuerOfPatientID": header.issuer_of_patient_id,
            "PatientBirthDate": header.patient_birth_date,
            "PatientSex": header.patient_sex,
        }
        study = {
            "StudyInstanceUID": header.study_uid,
            "StudyDate": header.study_date,
            "StudyTime": header.study_time,
            "AccessionNumber": header.accession_number,
            "StudyDescription": header.study_description,
            "ReferringPhysicianName": header.extra.get("ReferringPhysicianName", ""),
            "StudyID": header.extra.get("StudyID", ""),
        }
        return cls._make(values, study, header.specific_character_set, single_study, series_by_kind)

    @classmethod
    def from_headers(
        cls, headers: Iterable[Header], *, series_by_kind: bool = False
    ) -> PatientContext:
        """Context for a whole medium: one patient, its study when there is one.

        Raises ``ValueError`` for no headers or more than one patient: the
        one-patient rule holds such a medium before anything is converted.
        """
        headers = list(headers)
        if not headers:
            raise ValueError("no DICOM instance to take the patient from")
        patients = {(h.patient_id, h.issuer_of_patient_id) for h in headers}
        if len(patients) != 1:
            raise ValueError(f"{len(patients)} patients on the medium; convert nothing")
        studies = {h.study_uid for h in headers if h.study_uid}
        first = next(h for h in headers if not studies or h.study_uid in studies)
        return cls.from_header(first, single_study=len(studies) == 1, series_by_kind=series_by_kind)

    @classmethod
    def _make(
        cls,
        patient: dict[str, str],
        study: dict[str, str],
        charset: str,
        single_study: bool,
        series_by_kind: bool,
    ) -> PatientContext:
        # Values read from a disc are trimmed of the padding some writers leave.
        patient = {k: v.strip() for k, v in patient.items()}
        new_study = not single_study or not study.get("StudyInstanceUID")
        study = _new_study() if new_study else {k: v.strip() for k, v in study.items()}
        return cls(
            **patient,
            **study,
            SpecificCharacterSet=charset.strip(),
            new_study=new_study,
            series_by_kind=series_by_kind,
        )

    # ------------------------------------------------------------ series
    def series_for(self, kind: str, display_name: str) -> tuple[str, int, str, int]:
        """Allocate the next instance in the series for ``kind`` / file.

        Returns ``(SeriesInstanceUID, SeriesNumber, SeriesDescription,
        InstanceNumber)``. Not thread-safe: one context serves one medium,
        converted in one worker.
        """
        key = (kind, "" if self.series_by_kind else display_name)
        series = self._series.get(key)
        if series is None:
            if self.series_by_kind:
                description = f"{kind.upper()} from external media"
            else:
                description = f"{kind.upper()}: {base_name(display_name)}"
            series = _Series(
                generate_uid(), FIRST_SERIES_NUMBER + len(self._series), clip(description, "LO")
            )
            self._series[key] = series
        number = series.next_instance
        series.next_instance += 1
        return series.SeriesInstanceUID, series.SeriesNumber, series.SeriesDescription, number


_PATIENT_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
_STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
    "StudyDescription",
)


def _new_study() -> dict[str, str]:
    # A new study is dated when it is made: the documents' own dates go in
    # ContentDate, and an empty StudyDate sorts badly in most PACS.
    now = _dt.datetime.now()
    return {
        "StudyInstanceUID": generate_uid(),
        "StudyDate": now.strftime("%Y%m%d"),
        "StudyTime": now.strftime("%H%M%S"),
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "StudyID": "",
        "StudyDescription": NEW_STUDY_DESCRIPTION,
    }


# ---------------------------------------------------------------- values
def base_name(display_name: str) -> str:
    """The last component of a medium path label ('/'-separated)."""
    return display_name.rsplit("/", 1)[-1] or display_name


_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")


def clip(value: str, vr: str) -> str:
    """Make text we derive (file names, PDF titles) fit a VR: no control
    characters or backslashes (the VM delimiter), at most the VR's length."""
    value = _CONTROL.sub(" ", value).strip()
    return value[: _MAX_LEN[vr]].rstrip()


def da_tm(moment: _dt.datetime) -> tuple[str, str]:
    """DICOM DA and TM strings of a (naive, local) datetime."""
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S")


def file_datetime(path: Path) -> _dt.datetime:
    """The file's modification time, local: the fallback content date."""
    return _dt.datetime.fromtimestamp(path.stat().st_mtime)


def read_capped(path: Path, cap: int) -> bytes:
    """Read a whole source file, refusing it before reading when over ``cap``."""
    size = path.stat().st_size
    if size > cap:
        raise ConversionError("too_large", f"{size} bytes exceeds the cap of {cap}")
    with path.open("rb") as fp:
        data = fp.read(cap + 1)
    if len(data) > cap:  # grew while we read it
        raise ConversionError("too_large", f"more than {cap} bytes")
    return data


# --------------------------------------------------------------- charset
def _fits(value: str, charset: str) -> bool:
    terms = charset.split("\\")
    if len(terms) > 1 and terms[0] in ("", "ISO 2022 IR 6"):
        # Code extensions over the default repertoire (PS3.5 6.1.2.5.3): G0 is
        # ASCII and nothing else is designated, but pydicom encodes that first
        # value as Latin-1, so "é" would pass as a byte no escape sequence
        # announces. Each other character must fit one of the extensions.
        others = "\\".join(terms[1:])
        return all(c.isascii() or _fits(c, others) for c in value)
    encodings = convert_encodings(terms)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns, then replaces, on a miss
        try:
            raw = encode_string(value, encodings)
            return decode_bytes(raw, encodings, set()) == value
        except (UnicodeError, ValueError, LookupError, UserWarning):
            return False


def choose_character_set(source: str, texts: Iterable[str]) -> str:
    """Specific Character Set for a new object (PS3.3 C.12.1.1.2).

    Keep the source's character set when every text value fits it, so the
    converted objects match the patient's existing instances byte for byte;
    otherwise use UTF-8. An empty result means the default repertoire.
    """
    texts = [t for t in texts if t]
    if all(t.isascii() for t in texts):
        return source if source and _fits("", source) else ""
    if source and all(_fits(t, source) for t in texts):
        return source
    return UTF8


# --------------------------------------------------------------- modules
def common_modules(
    ctx: PatientContext,
    *,
    kind: str,
    display_name: str,
    modality: str,
    sop_class_uid: str,
    content: _dt.datetime,
) -> Dataset:
    """Patient, General Study, series, SC Equipment and SOP Common attributes.

    The series attributes satisfy both the General Series Module (C.7.3.1,
    SC Image IOD) and the Encapsulated Document Series Module (C.24.1,
    Encapsulated PDF IOD, where SeriesNumber is Type 1).
    """
    ds = Dataset()
    # SOP Common (C.12.1)
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    now = _dt.datetime.now()
    ds.InstanceCreationDate, ds.InstanceCreationTime = da_tm(now)
    # Patient (C.7.1.1)
    ds.PatientName = ctx.PatientName
    ds.PatientID = ctx.PatientID
    if ctx.IssuerOfPatientID:
        ds.IssuerOfPatientID = ctx.IssuerOfPatientID
    ds.PatientBirthDate = ctx.PatientBirthDate
    ds.PatientSex = ctx.PatientSex
    # General Study (C.7.2.1)
    ds.StudyInstanceUID = ctx.StudyInstanceUID
    ds.StudyDate = ctx.StudyDate
    ds.StudyTime = ctx.StudyTime
    ds.ReferringPhysicianName = ctx.ReferringPhysicianName
    ds.StudyID = ctx.StudyID
    ds.AccessionNumber = ctx.AccessionNumber
    if ctx.StudyDescription:
        ds.StudyDescription = ctx.StudyDescription
    # Series
    uid, number, description, instance = ctx.series_for(kind, display_name)
    ds.Modality = modality
    ds.SeriesInstanceUID = uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.InstanceNumber = instance
    # General Equipment (C.7.5.1) is about the source device: unknown here.
    ds.Manufacturer = ""
    # SC Equipment (C.8.6.1): WSD = workstation, the conversion is ours.
    ds.ConversionType = "WSD"
    ds.SecondaryCaptureDeviceManufacturer = SYSTEM_NAME
    ds.SecondaryCaptureDeviceManufacturerModelName = SYSTEM_NAME
    ds.ContentDate, ds.ContentTime = da_tm(content)
    return ds


def _text_values(ds: Dataset) -> Iterable[str]:
    for elem in ds.iterall():
        if elem.VR in ("PN", "LO", "SH", "ST", "LT", "UT", "UC") and elem.value is not None:
            values = elem.value if elem.VM > 1 else [elem.value]
            yield from (str(v) for v in values)


_TEXT_VRS = frozenset(
    (
        "AE",
        "AS",
        "CS",
        "DA",
        "DS",
        "DT",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "ST",
        "TM",
        "UC",
        "UI",
        "UR",
        "UT",
    )
)


def finish(ds: Dataset, ctx: PatientContext) -> None:
    """Set the character set, then validate every value against its VR.

    Raises ConversionError(``internal_error``) when a value does not conform:
    derived values are clipped before this point, so a failure here is a
    defect in pdimport, not in the source file.
    """
    charset = choose_character_set(ctx.SpecificCharacterSet, _text_values(ds))
    if charset:
        ds.SpecificCharacterSet = charset
    for elem in ds.iterall():
        if elem.VR not in _TEXT_VRS or elem.value is None:
            continue  # binary VRs are typed by construction
        values = elem.value if elem.VM > 1 else [elem.value]
        for value in values:
            try:
                validate_value(elem.VR, str(value), _pydicom_config.RAISE)
            except ValueError as exc:
                raise ConversionError("internal_error", f"{elem.keyword}: {exc}") from None


def write_part10(ds: Dataset, out_dir: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    """Write ``ds`` as a Part 10 file named after its SOP Instance UID.

    Written to a temporary name in ``out_dir`` and renamed, so a crash never
    leaves a half-written object that a later run would send.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{ds.SOPInstanceUID}.dcm"
    with atomic_write(target) as fp:
        ds.save_as(fp, enforce_file_format=True)
    return target


def empty_sequence() -> Sequence:
    """A zero-item sequence, for Type 2 sequence attributes."""
    return Sequence([])
