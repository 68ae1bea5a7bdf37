"""The corpus of DICOM files written by other software, and the media built from it.

The corpus is pydicom's own test files plus the ``pydicom-data`` package
(``pydicom.data.get_testdata_files()`` finds both): every file pydicom can read
(``force=True``, so data sets without file meta count) that has a SOP Class UID
and a SOP Instance UID. DICOMDIRs are not inputs.

The media are built under a temporary folder, never in the repository:

* ``folder``: every corpus file under odd names (spaces, non-ASCII, mixed case,
  no extension) a few directories deep;
* ``iso``: that folder mastered by genisoimage (Joliet long names + Rock Ridge);
* ``zip``: that folder as a zip package;
* ``dicomdir``: the files pydicom's ``FileSet`` accepts, written with a
  DICOMDIR (FileSet rewrites them, so this medium has its own originals).

:func:`originals` reads a medium's files the way the comparisons need them:
pydicom's values, and the bytes of the data set without preamble and file meta.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

#: Patient attributes that must agree (when both are non-empty) within one patient.
PATIENT_KEYWORDS = (
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
)

#: Directory names for the folder medium: what referral discs and exports use.
_DIRS = (
    "Überweisung Dr. Müller",
    "STUDY 01 (CT+MR)",
    "se ries.v2",
    "深圳 医院",
    "[brackets] & more",
    "#1 %20 a",
)

#: Explicit VRs with a 4-byte length field (PS3.5 Table 7.1-1).
_LONG_VRS = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)


def read_quietly(path: Path | str, **kwargs) -> Dataset:
    """``dcmread(force=True)`` with the warnings vendor files cause kept local.

    pydicom converts (and checks) an element when it is first used, so every
    element is converted here, inside the ``catch_warnings`` block.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path, force=True, **kwargs)
        ds.walk(lambda _ds, _elem: None)
        return ds


def try_read(path: Path, whole: bool = False) -> Dataset | None:
    """A DICOM instance (not a DICOMDIR), its header only unless ``whole``, or
    None when pydicom cannot read the file or it names no SOP Instance UID."""
    try:
        ds = read_quietly(path, stop_before_pixels=not whole)
    except Exception:  # noqa: BLE001  pydicom raises many kinds on non-DICOM files
        return None
    if "DirectoryRecordSequence" in ds or not ds.get("SOPInstanceUID"):
        return None
    return ds


def corpus_files() -> list[Path]:
    """Every file of the corpus, in a stable order."""
    from pydicom.data import get_testdata_files

    found = []
    for name in sorted(set(get_testdata_files())):
        path = Path(name)
        if not path.is_file():
            continue
        # whole: a file whose pixel data never ends reads as an empty data set
        ds = try_read(path, whole=True)
        if ds is not None and ds.get("SOPClassUID"):
            found.append(path)
    return found


def pydicom_data_installed() -> bool:
    """Is the ``pydicom-data`` package (the bulk of the corpus) installed?"""
    try:
        import data_store  # noqa: F401  (pydicom-data's import name)
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------- media
def folder_name(index: int, source: Path) -> str:
    """A '/'-relative odd path for corpus file ``index``: 1 to 5 directories deep
    (Rock Ridge relocation of deeper trees is not what this test is about)."""
    depth = 1 + index % 5
    dirs = [_DIRS[(index + k) % len(_DIRS)] for k in range(depth)]
    stem = source.stem.replace("+", "_")
    name = {
        0: f"{index:03d} {stem}.dcm",
        1: f"IM{index:06d}",
        2: f"{index:03d}_{stem.upper()}.DCM",
        3: f"Bild {index:03d} ü",
        4: f"{index:03d}.{stem.lower()}",
    }[index % 5]
    return "/".join([*dirs, name])


def build_folder(root: Path, sources: Iterable[Path]) -> Path:
    for index, source in enumerate(sources):
        target = root / folder_name(index, source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return root


def build_zip(folder: Path, out_path: Path) -> Path:
    from fixtures_media import make_zip

    members = [
        (path.relative_to(folder).as_posix(), path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    ]
    return make_zip(out_path, members)


def build_dicomdir(root: Path, sources: Iterable[Path]) -> tuple[Path, list[str]]:
    """A FileSet of every source it accepts, written under ``root``; returns
    the DICOMDIR and the sources FileSet refused (with the reason)."""
    from pydicom.fileset import FileSet

    refused = []
    fs = FileSet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for source in sources:
            try:
                fs.add(dcmread(source, force=True))
            except Exception as exc:  # noqa: BLE001  FileSet refuses with several kinds
                refused.append(f"{source.name}: {type(exc).__name__}: {exc}")
        root.mkdir(parents=True, exist_ok=True)
        fs.write(root)
    return root / "DICOMDIR", refused


def extract_iso(image: Path, out_dir: Path) -> Path:
    """What a reader sees on the image (Rock Ridge names), for dcmsend."""
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(image), "-extract", "/", str(out_dir)],
        check=True,
        capture_output=True,
    )
    for path in out_dir.rglob("*"):  # xorriso keeps the image's read-only modes
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out_dir


def extract_zip(package: Path, out_dir: Path) -> Path:
    with zipfile.ZipFile(package) as zf:
        zf.extractall(out_dir)
    return out_dir


# ----------------------------------------------------------------- originals
@dataclass(frozen=True)
class Original:
    """One file of a medium as pydicom reads it."""

    rel: str
    path: Path
    SOPInstanceUID: str
    SOPClassUID: str
    StudyInstanceUID: str
    SeriesInstanceUID: str
    transfer_syntax: str
    patient: dict[str, str]
    dataset: bytes


def transfer_syntax_of(ds: Dataset) -> str:
    """The transfer syntax as pydicom read the file: the file meta's, or the
    encoding pydicom found when there is none."""
    meta_ts = ds.file_meta.get("TransferSyntaxUID") if ds.file_meta is not None else None
    if meta_ts:
        return str(meta_ts)
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def dataset_bytes(data: bytes) -> bytes:
    """The data set of a Part 10 file (or of a bare data set): what follows the
    preamble and the group 0002 elements, which are explicit VR little endian
    (PS3.10 7.1) but written implicit by some software."""
    pos = 132 if data[128:132] == b"DICM" else 0
    while pos + 8 <= len(data) and data[pos : pos + 2] == b"\x02\x00":
        vr = data[pos + 4 : pos + 6]
        if vr.isalpha() and vr.isupper():
            if vr in _LONG_VRS:
                pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "little")
            else:
                pos += 8 + int.from_bytes(data[pos + 6 : pos + 8], "little")
        else:
            pos += 8 + int.from_bytes(data[pos + 4 : pos + 8], "little")
    return data[pos:]


def normalized(keyword: str, value: object) -> str:
    """A patient attribute as text, without padding; a Person Name without its
    empty trailing components (PS3.5 6.2.1.1: ``^^^^`` is an empty name)."""
    text = str(value or "").strip(" \0")
    return text.rstrip("^= ") if keyword == "PatientName" else text


def read_original(root: Path, path: Path) -> Original | None:
    ds = try_read(path)
    if ds is None:
        return None
    return Original(
        rel=path.relative_to(root).as_posix(),
        path=path,
        SOPInstanceUID=str(ds.SOPInstanceUID),
        SOPClassUID=str(ds.get("SOPClassUID", "")),
        StudyInstanceUID=str(ds.get("StudyInstanceUID", "")),
        SeriesInstanceUID=str(ds.get("SeriesInstanceUID", "")),
        transfer_syntax=transfer_syntax_of(ds),
        patient={kw: normalized(kw, ds.get(kw, "")) for kw in PATIENT_KEYWORDS},
        dataset=dataset_bytes(path.read_bytes()),
    )


def originals(root: Path) -> list[Original]:
    """Every DICOM instance under ``root`` (a medium's folder form)."""
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != "DICOMDIR":
            original = read_original(root, path)
            if original is not None:
                found.append(original)
    return found


# ------------------------------------------------------------ lossy syntaxes
#: Transfer syntaxes whose decoding may differ between conformant decoders:
#: JPEG baseline/extended (ITU-T T.83 allows IDCT rounding differences),
#: JPEG-LS near-lossless, JPEG 2000 / HTJ2K "may be lossy" (a lossy stream in the
#: corpus decodes to slightly different values in OpenJPEG and GDCM).
LOSSY = frozenset(
    UID(uid)
    for uid in (
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.203",
        "1.2.840.10008.1.2.4.100",
        "1.2.840.10008.1.2.4.101",
        "1.2.840.10008.1.2.4.102",
        "1.2.840.10008.1.2.4.103",
        "1.2.840.10008.1.2.4.104",
        "1.2.840.10008.1.2.4.105",
        "1.2.840.10008.1.2.4.106",
    )
)
