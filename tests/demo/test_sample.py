"""The sample PDI disc: a real ISO 9660 image whose DICOMDIR and files agree."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pycdlib
import pydicom
import pytest
from pydicom.fileset import is_conformant_file_id

from pdimport.demo.sample import JAPANESE_NAME, make_sample_disc, make_sample_pdf, write_sample_tree

N_CT, N_MR = 12, 3


@pytest.fixture(scope="module")
def disc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample_disc(tmp_path_factory.mktemp("sample") / "sample.iso", n_ct=N_CT)


def _files(iso: pycdlib.PyCdlib, namespace: str) -> dict[str, str]:
    """Map a plain relative path ('DICOM/PT000000/...') to its path in `namespace`."""
    out = {}
    for root, _dirs, names in iso.walk(**{namespace: "/"}):
        for name in names:
            path = f"{root.rstrip('/')}/{name}"
            plain = name.split(";")[0].rstrip(".") if namespace == "iso_path" else name
            out[str(PurePosixPath(root.lstrip("/"), plain))] = path
    return out


def _read(iso: pycdlib.PyCdlib, path: str, namespace: str = "rr_path") -> bytes:
    buf = io.BytesIO()
    iso.get_file_from_iso_fp(buf, **{namespace: path})
    return buf.getvalue()


@pytest.fixture(scope="module")
def opened(disc: Path):
    iso = pycdlib.PyCdlib()
    iso.open(str(disc))
    yield iso
    iso.close()


def test_names_agree_in_every_namespace(opened: pycdlib.PyCdlib) -> None:
    assert opened.has_rock_ridge() and opened.has_joliet()
    rr = _files(opened, "rr_path")
    assert set(rr) == set(_files(opened, "joliet_path")) == set(_files(opened, "iso_path"))
    for other in ("README.TXT", "IHE_PDI/INDEX.HTM", "REPORTS/REPORT01.PDF", "DICOMDIR"):
        assert other in rr


def test_dicomdir_lists_every_dicom_file(opened: pycdlib.PyCdlib) -> None:
    on_disc = _files(opened, "rr_path")
    dicom_files = {p for p in on_disc if p.startswith("DICOM/")}
    assert len(dicom_files) == N_CT + N_MR

    ds = pydicom.dcmread(io.BytesIO(_read(opened, "/DICOMDIR")))
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10"
    referenced = {}
    for record in ds.DirectoryRecordSequence:
        if "ReferencedFileID" in record:
            parts = record.ReferencedFileID
            parts = [parts] if isinstance(parts, str) else list(parts)
            assert is_conformant_file_id(Path(*parts))
            referenced["/".join(parts)] = record.ReferencedSOPInstanceUIDInFile
    assert set(referenced) == dicom_files

    for path, sop_instance_uid in referenced.items():
        instance = pydicom.dcmread(io.BytesIO(_read(opened, on_disc[path])))
        assert instance.SOPInstanceUID == sop_instance_uid


def test_dicom_files_share_one_patient(opened: pycdlib.PyCdlib) -> None:
    on_disc = _files(opened, "rr_path")
    datasets = [
        pydicom.dcmread(io.BytesIO(_read(opened, path)))
        for rel, path in on_disc.items()
        if rel.startswith("DICOM/")
    ]
    assert {ds.PatientID for ds in datasets} == {"DEMO001"}
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert sorted(ds.Modality for ds in datasets) == ["CT"] * N_CT + ["MR"] * N_MR
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    ct = next(ds for ds in datasets if ds.Modality == "CT")
    assert ct.pixel_array.shape == (64, 64)
    assert ct.pixel_array.max() > ct.pixel_array.min()  # a phantom, not a flat image
    assert str(ct.PatientName) == JAPANESE_NAME
    assert ct.PatientName.ideographic == "山田^太郎"


def test_other_content(opened: pycdlib.PyCdlib) -> None:
    pdf = _read(opened, "/REPORTS/REPORT01.PDF")
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    assert b"REPORT01.PDF" in _read(opened, "/IHE_PDI/INDEX.HTM")
    assert b"DEMO001" in _read(opened, "/README.TXT")


def test_fresh_uids_and_ascii_name(tmp_path: Path) -> None:
    a = write_sample_tree(tmp_path / "a", "P2", n_ct=1, n_mr=0, patient_name="Doe^John")
    b = write_sample_tree(tmp_path / "b", "P2", n_ct=1, n_mr=0, patient_name="Doe^John")
    da = pydicom.dcmread(next((a / "DICOM").rglob("IM*")))
    db = pydicom.dcmread(next((b / "DICOM").rglob("IM*")))
    assert da.SOPInstanceUID != db.SOPInstanceUID
    assert da.StudyInstanceUID != db.StudyInstanceUID
    assert da.SpecificCharacterSet == "ISO_IR 100" and da.PatientID == "P2"


def test_pdf_xref_offsets_point_at_objects() -> None:
    pdf = make_sample_pdf(["Title", "a (parenthesised) line"])
    start = int(pdf.rsplit(b"startxref", 1)[1].split()[0])
    assert pdf[start:].startswith(b"xref")
    entries = pdf[start:].split(b"\n")[3:8]
    for number, entry in enumerate(entries, start=1):
        offset = int(entry.split()[0])
        assert pdf[offset:].startswith(b"%d 0 obj" % number)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_objects_pass_dciodvfy(tmp_path: Path) -> None:
    root = write_sample_tree(tmp_path / "disc", n_ct=2, n_mr=1)
    for path in [root / "DICOMDIR", *sorted((root / "DICOM").rglob("IM*"))]:
        res = subprocess.run(["dciodvfy", str(path)], check=False, capture_output=True, text=True)
        errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, f"{path}: {errors}"


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
def test_pdf_is_readable_by_poppler(tmp_path: Path) -> None:
    path = tmp_path / "r.pdf"
    path.write_bytes(make_sample_pdf(["Radiology report (sample)", "Patient ID: DEMO001"]))
    res = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True)
    assert "Patient ID: DEMO001" in res.stdout and not res.stderr
