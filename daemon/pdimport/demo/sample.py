"""A realistic sample IHE PDI disc image, made in pure Python for the demo and tests.

The disc holds what a patient CD from another hospital usually holds (IHE RAD TF-3
§4.47.4.1, Portable Data for Imaging):

* ``DICOMDIR`` at the root (PS3.10 §8.6, Basic Directory IOD, PS3.3 Annex F), written
  by :class:`pydicom.fileset.FileSet`;
* ``DICOM/PT000000/ST000000/SE00000n/IM00000n``: a synthetic CT series (a simple chest
  phantom) and a three-image MR series of the same patient and study, Explicit VR
  Little Endian Part 10 files with PS3.10 conformant File IDs (8 characters, upper
  case, no extension);
* ``README.TXT``, ``IHE_PDI/INDEX.HTM`` (the web content PDI asks for) and
  ``REPORTS/REPORT01.PDF``, a one-page report (non-DICOM "Other Content").

The ISO 9660 image carries Joliet and Rock Ridge names too, as mastering software
does. No external tool is needed: the image is built with pycdlib, which streams
file data from a staging folder.

The objects are made here, from our own constants: this is the one place where
pdimport *writes* a DICOMDIR, never one read from a medium.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycdlib
from pydicom.charset import convert_encodings, encode_string
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.fileset import FileSet
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

__all__ = [
    "JAPANESE_NAME",
    "SampleStudy",
    "make_sample_datasets",
    "make_sample_disc",
    "make_sample_pdf",
    "write_iso",
    "write_sample_tree",
]

#: PS3.5 Annex H example: a person name with alphabetic and ideographic groups,
#: encoded with ISO 2022 IR 87 (JIS X 0208) code extensions.
JAPANESE_NAME = "Yamada^Taro=山田^太郎"

#: Folder on the disc that holds the DICOM files (IHE PDI keeps them out of the root).
DICOM_FOLDER = "DICOM"

_PDF_PATH = ("REPORTS", "REPORT01.PDF")
_INDEX_PATH = ("IHE_PDI", "INDEX.HTM")


@dataclass(frozen=True)
class SampleStudy:
    """Identifying values shared by every instance on the sample disc."""

    PatientID: str = "DEMO001"
    PatientName: str = JAPANESE_NAME
    IssuerOfPatientID: str = "SAMPLE_HOSPITAL"
    PatientBirthDate: str = "19700401"
    PatientSex: str = "M"
    StudyDate: str = "20240315"
    StudyTime: str = "101500"
    StudyDescription: str = "CT CHEST / MR"
    AccessionNumber: str = "A20240315001"
    InstitutionName: str = "Sample Hospital"


def _character_set(name: str) -> list[str] | str:
    """Return the Specific Character Set (0008,0005) that encodes `name`.

    ASCII needs none beyond the default repertoire; an ideographic group needs the
    ISO 2022 IR 87 code extension with ASCII as the initial G0 set (PS3.3 C.12.1.1.2).
    """
    if name.isascii():
        return "ISO_IR 100"
    return ["", "ISO 2022 IR 87"]


def _check_encodable(name: str, charset: list[str] | str) -> None:
    """Be strict when building: refuse a name the declared charset cannot carry."""
    encode_string(name, convert_encodings(charset))


def _phantom_ct(size: int, z: float) -> np.ndarray:
    """A chest-like phantom in Hounsfield units at table position `z` (mm from centre).

    Air outside, a soft tissue body ellipse, two lungs, a vertebra and a small
    spherical nodule in the right lung whose section changes from slice to slice.
    """
    y, x = np.mgrid[-1.0 : 1.0 : size * 1j, -1.0 : 1.0 : size * 1j]
    hu = np.full((size, size), -1000.0)
    hu[(x / 0.85) ** 2 + (y / 0.62) ** 2 <= 1.0] = 40.0  # body, soft tissue
    for cx in (-0.38, 0.38):  # lungs
        hu[((x - cx) / 0.28) ** 2 + ((y + 0.05) / 0.40) ** 2 <= 1.0] = -820.0
    hu[(x**2 + (y - 0.45) ** 2) <= 0.11**2] = 700.0  # vertebral body
    hu[(x**2 + (y + 0.45) ** 2) <= 0.06**2] = 60.0  # mediastinum / aorta
    radius = 0.12**2 - (z / 120.0) ** 2  # nodule: a sphere of 0.12 in image units
    if radius > 0:
        hu[((x + 0.38) ** 2 + (y + 0.10) ** 2) <= radius] = 30.0
    return hu


def _phantom_mr(size: int, z: float) -> np.ndarray:
    """A T2-like appearance of the same anatomy: fluid and tissue bright, air and lung dark."""
    hu = _phantom_ct(size, z)
    signal = np.zeros_like(hu)
    signal[hu > -900] = 900.0
    signal[hu < -500] = 0.0
    signal[(hu > -900) & (hu < -500)] = 60.0
    signal[hu >= 600] = 250.0  # cortical bone is dark on MR
    signal[(hu >= 20) & (hu < 50)] = 1400.0  # the nodule and soft tissue
    return signal


def _base_dataset(study: SampleStudy, StudyInstanceUID: str, when: _dt.datetime) -> Dataset:
    """Patient, General Study, General Equipment and SOP Common values (PS3.3 C.7, C.12)."""
    ds = Dataset()
    ds.SpecificCharacterSet = _character_set(study.PatientName)
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S")
    ds.PatientName = study.PatientName
    ds.PatientID = study.PatientID
    ds.IssuerOfPatientID = study.IssuerOfPatientID
    ds.PatientBirthDate = study.PatientBirthDate
    ds.PatientSex = study.PatientSex
    ds.StudyInstanceUID = StudyInstanceUID
    ds.StudyDate = study.StudyDate
    ds.StudyTime = study.StudyTime
    ds.StudyDescription = study.StudyDescription
    ds.StudyID = "1"
    ds.AccessionNumber = study.AccessionNumber
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "pdimport"
    ds.ManufacturerModelName = "sample disc"
    ds.InstitutionName = study.InstitutionName
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    # Naming the body part settles General Series' Laterality condition (PS3.3
    # C.7.3.1): the chest is not a paired structure.
    ds.BodyPartExamined = "CHEST"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    return ds


def set_series(ds: Dataset, modality: str, series_uid: str, number: int, desc: str) -> None:
    """The General Series attributes (PS3.3 C.7.3.1), dated as the study."""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = desc
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime


def _finish(ds: Dataset, pixels: np.ndarray) -> Dataset:
    """Attach native pixels and PS3.10 file meta information."""
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.astype("<u2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def make_sample_datasets(
    patient_id: str = "DEMO001",
    n_ct: int = 12,
    n_mr: int = 3,
    *,
    size: int = 64,
    patient_name: str = JAPANESE_NAME,
) -> list[Dataset]:
    """Return the CT and MR instances of one patient and one study, with fresh UIDs.

    Parameters
    ----------
    patient_id : str
        Patient ID (0010,0020) of every instance.
    n_ct, n_mr : int
        Number of CT (CT Image Storage, PS3.3 A.3) and MR (MR Image Storage, A.4)
        instances, one axial slice each, 5 mm apart.
    size : int
        Rows and Columns of every image (16-bit unsigned, MONOCHROME2).
    patient_name : str
        Patient's Name (0010,0010); a name that is not ASCII is encoded with
        ISO 2022 IR 87, which covers the Japanese ideographic group.

    Returns
    -------
    list of pydicom.dataset.Dataset
        Datasets with file meta, ready for ``FileSet.add`` or ``save_as``.
    """
    if n_ct < 1 or n_mr < 0 or size < 16:
        raise ValueError("need n_ct >= 1, n_mr >= 0 and size >= 16")
    study = SampleStudy(PatientID=patient_id, PatientName=patient_name)
    _check_encodable(study.PatientName, _character_set(study.PatientName))
    when = _dt.datetime(2024, 3, 15, 10, 15, 0)
    StudyInstanceUID = generate_uid()
    spacing = 320.0 / size  # a 32 cm field of view whatever the matrix
    out: list[Dataset] = []

    series = (
        ("CT", n_ct, CTImageStorage, "CHEST 5mm", _phantom_ct),
        ("MR", n_mr, MRImageStorage, "AX T2 TSE", _phantom_mr),
    )
    for SeriesNumber, (Modality, count, SOPClassUID, description, phantom) in enumerate(
        series, start=1
    ):
        if count == 0:
            continue
        SeriesInstanceUID = generate_uid()
        FrameOfReferenceUID = generate_uid()
        for i in range(count):
            z = (i - (count - 1) / 2.0) * 5.0
            ds = _base_dataset(study, StudyInstanceUID, when)
            ds.SOPClassUID = SOPClassUID
            ds.SOPInstanceUID = generate_uid()
            set_series(ds, Modality, SeriesInstanceUID, SeriesNumber, description)
            ds.FrameOfReferenceUID = FrameOfReferenceUID
            ds.InstanceNumber = i + 1
            ds.AcquisitionNumber = 1
            ds.ContentDate = study.StudyDate
            ds.ContentTime = study.StudyTime
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.PixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
            ds.SliceThickness = "5.0"
            ds.ImagePositionPatient = [
                f"{-spacing * (size - 1) / 2:.3f}",
                f"{-spacing * (size - 1) / 2:.3f}",
                f"{z:.3f}",
            ]
            ds.SliceLocation = f"{z:.3f}"
            image = phantom(size, z)
            if Modality == "CT":
                ds.KVP = "120"
                ds.RescaleIntercept = "-1024"
                ds.RescaleSlope = "1"
                ds.RescaleType = "HU"
                ds.WindowCenter = "-600"
                ds.WindowWidth = "1600"
                stored = np.clip(image + 1024.0, 0, 4095)
                ds.BitsStored, ds.HighBit = 12, 11
            else:
                ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
                ds.ScanningSequence = "SE"
                ds.SequenceVariant = ["SK", "SP"]
                ds.ScanOptions = ""
                ds.MRAcquisitionType = "2D"
                ds.RepetitionTime = "4000"
                ds.EchoTime = "100"
                ds.EchoTrainLength = "16"
                ds.MagneticFieldStrength = "1.5"
                ds.ImagedNucleus = "1H"
                ds.WindowCenter = "700"
                ds.WindowWidth = "1400"
                stored = np.clip(image, 0, 4095)
                ds.BitsStored, ds.HighBit = 12, 11
            out.append(_finish(ds, stored))
    return out


def make_sample_pdf(lines: list[str]) -> bytes:
    """Return a minimal valid one-page PDF (ISO 32000-1) showing `lines` in Helvetica.

    Only ASCII text is drawn (the standard 14 fonts have no Japanese glyphs); the
    cross-reference table carries the exact byte offsets a reader checks.
    """

    def escape(s: str) -> str:
        s = s.encode("ascii", "replace").decode("ascii")
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    text = ["BT", "/F1 12 Tf", "14 TL", "72 760 Td"]
    for n, line in enumerate(lines):
        if n == 0:
            text += ["/F1 16 Tf", f"({escape(line)}) Tj", "/F1 12 Tf", "T*", "T*"]
        else:
            text += [f"({escape(line)}) Tj", "T*"]
    text.append("ET")
    stream = "\n".join(text).encode("ascii")

    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>"
        ),
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # binary comment: marks the file as binary
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _readme(study: SampleStudy, n_files: int) -> str:
    return (
        "SAMPLE PATIENT MEDIA (IHE PDI)\r\n"
        "\r\n"
        "This disc was generated by pdimport for demonstration and testing.\r\n"
        "It contains synthetic images only; no real patient data.\r\n"
        "\r\n"
        f"Patient ID:   {study.PatientID}\r\n"
        f"Study date:   {study.StudyDate}\r\n"
        f"DICOM files:  {n_files} (see DICOMDIR)\r\n"
        "Report:       REPORTS\\REPORT01.PDF\r\n"
        "Web content:  IHE_PDI\\INDEX.HTM\r\n"
    )


def _index_htm(study: SampleStudy, datasets: list[Dataset]) -> str:
    rows = []
    seen: dict[str, tuple[str, str, int]] = {}
    for ds in datasets:
        key = ds.SeriesInstanceUID
        modality, desc, count = seen.get(key, (ds.Modality, ds.SeriesDescription, 0))
        seen[key] = (modality, desc, count + 1)
    for modality, desc, count in seen.values():
        rows.append(f"<tr><td>{modality}</td><td>{desc}</td><td>{count}</td></tr>")
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        "<title>Patient media</title></head>\n<body>\n"
        "<h1>Patient media (IHE PDI)</h1>\n"
        f"<p>Patient ID {study.PatientID}, study of {study.StudyDate}: "
        f"{study.StudyDescription}</p>\n"
        "<table><tr><th>Modality</th><th>Series</th><th>Images</th></tr>\n"
        + "\n".join(rows)
        + '\n</table>\n<p><a href="../REPORTS/REPORT01.PDF">Report (PDF)</a></p>\n'
        "</body></html>\n"
    )


def _write_pdi_dicomdir(fs: FileSet, root: Path) -> None:
    """Move the file-set written at `root` under ``DICOM/`` and rewrite its DICOMDIR.

    FileSet.write() always lays instances out as ``PTxxxxxx/...`` directly below
    the DICOMDIR; PDI media keep them under ``DICOM/``. pydicom has no public way
    to prefix the File IDs, so this sets each leaf record's Referenced File ID
    and lets pydicom re-encode the DICOMDIR (it recomputes every record offset,
    which a plain dcmwrite of an edited DICOMDIR would leave wrong). The
    caller reloads the result with ``raise_orphans=True`` and checks every
    referenced file exists, so a change in pydicom's internals fails loudly.
    """
    (root / DICOM_FOLDER).mkdir()
    for instance in fs:
        parts = list(Path(instance.FileID).parts)
        src = root.joinpath(*parts)
        dst = root.joinpath(DICOM_FOLDER, *parts)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        instance.node._record.ReferencedFileID = [DICOM_FOLDER, *parts]
    for top in root.iterdir():  # now empty PTxxxxxx folders
        if top.is_dir() and top.name != DICOM_FOLDER:
            shutil.rmtree(top)
    with open(root / "DICOMDIR", "wb") as fp:
        fs._write_dicomdir(DicomFileLike(fp))


def write_sample_tree(
    root: Path,
    patient_id: str = "DEMO001",
    n_ct: int = 12,
    n_mr: int = 3,
    *,
    size: int = 64,
    patient_name: str = JAPANESE_NAME,
) -> Path:
    """Write the sample PDI file-set into the empty or new folder `root`; return `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    study = SampleStudy(PatientID=patient_id, PatientName=patient_name)
    datasets = make_sample_datasets(patient_id, n_ct, n_mr, size=size, patient_name=patient_name)

    fs = FileSet()
    fs.ID = "PDI_SAMPLE"
    for ds in datasets:
        fs.add(ds)
    fs.write(root)
    _write_pdi_dicomdir(fs, root)

    # Verify what we wrote, as a reader would: every record resolves to a file.
    check = FileSet()
    check.load(root / "DICOMDIR", raise_orphans=True)
    missing = [ii.path for ii in check if not Path(ii.path).is_file()]
    outside = [ii.path for ii in check if Path(ii.path).relative_to(root).parts[0] != DICOM_FOLDER]
    missing += outside
    if len(check) != len(datasets) or missing:
        raise RuntimeError(f"sample DICOMDIR is inconsistent: missing {missing}")

    (root / "README.TXT").write_text(_readme(study, len(datasets)), encoding="ascii")
    (root / _INDEX_PATH[0]).mkdir()
    (root.joinpath(*_INDEX_PATH)).write_text(_index_htm(study, datasets), encoding="utf-8")
    (root / _PDF_PATH[0]).mkdir()
    ct = sum(ds.Modality == "CT" for ds in datasets)
    mr = len(datasets) - ct
    pdf = make_sample_pdf(
        [
            "Radiology report (sample)",
            f"Patient ID: {study.PatientID}    Study date: {study.StudyDate}",
            f"Accession: {study.AccessionNumber}",
            f"Examination: {study.StudyDescription} ({ct} CT, {mr} MR images)",
            "",
            "Findings: synthetic phantom; a small nodule in the right lung.",
            "This document was generated by pdimport. It contains no real patient data.",
        ]
    )
    (root.joinpath(*_PDF_PATH)).write_bytes(pdf)
    return root


def _iso_name(name: str, is_dir: bool) -> str:
    """ISO 9660 identifier for a name that already is 8.3 upper case (PS3.12 Annex F)."""
    ident = name.upper()
    if is_dir:
        return ident
    return ident + ("" if "." in ident else ".") + ";1"


def make_sample_disc(
    out_iso: Path,
    patient_id: str = "DEMO001",
    n_ct: int = 12,
    n_mr: int = 3,
    *,
    size: int = 64,
    patient_name: str = JAPANESE_NAME,
    vol_ident: str = "PDI_SAMPLE",
) -> Path:
    """Build a sample IHE PDI disc image at `out_iso` and return its path.

    The image is ISO 9660 level 3 with Joliet and Rock Ridge 1.09 names, read-only
    modes, and the layout described in the module docstring. It is written to a
    temporary name next to `out_iso` and renamed, so a reader never sees half an
    image. Every call makes fresh UIDs.
    """
    with tempfile.TemporaryDirectory(prefix="pdi-sample-") as tmp:
        root = write_sample_tree(
            Path(tmp) / "disc", patient_id, n_ct, n_mr, size=size, patient_name=patient_name
        )
        return write_iso(root, out_iso, vol_ident)


def write_iso(root: Path, out_iso: Path, vol_ident: str) -> Path:
    """Master the folder `root` (8.3 upper-case names) as an ISO 9660 level 3
    image with Joliet and Rock Ridge names at `out_iso`; return `out_iso`.

    Written to a temporary name next to `out_iso` and renamed, so a reader
    never sees half an image.
    """
    out_iso = Path(out_iso)
    out_iso.parent.mkdir(parents=True, exist_ok=True)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=vol_ident)
    try:
        # Sorted walk: parents before children, a stable on-disc order.
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = Path(dirpath).relative_to(root)
            for d in dirnames:
                parts = [*rel.parts, d]
                iso.add_directory(
                    iso_path="/" + "/".join(_iso_name(p, True) for p in parts),
                    rr_name=d,
                    joliet_path="/" + "/".join(parts),
                    file_mode=0o040555,
                )
            for f in sorted(filenames):
                parts = [*rel.parts, f]
                iso.add_file(
                    str(Path(dirpath) / f),
                    iso_path="/"
                    + "/".join([*(_iso_name(p, True) for p in rel.parts), _iso_name(f, False)]),
                    rr_name=f,
                    joliet_path="/" + "/".join(parts),
                    file_mode=0o100444,
                )
        partial = out_iso.with_name(out_iso.name + ".part")
        iso.write(str(partial))
    finally:
        iso.close()
    os.replace(partial, out_iso)
    return out_iso
