"""File identification: DICOM by bytes, other content by magic, the rest by place."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from fixtures_dicom import (
    make_ct,
    make_dicomdir,
    make_empty,
    make_noise_dcm,
    make_raw,
    pydicom_test_file,
)

from pdimport.scan.identify import identify, medium_context, normalise_path, sniff_content

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\0" * 64
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\0" * 64
TIFF_LE = b"II*\x00\x08\x00\x00\x00" + b"\0" * 64
TIFF_BE = b"MM\x00*\x00\x00\x00\x08" + b"\0" * 64
BMP = b"BM" + struct.pack("<IHHI", 90, 0, 0, 54) + struct.pack("<I", 40) + b"\0" * 64
TEXT = "Befund: unauffällig.\r\nKein Nachweis.\r\n".encode("cp1252")


def _write(tmp_path: Path, data: bytes, name: str = "f") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------- DICOM
@pytest.mark.parametrize(
    "display",
    [
        "DICOM/IM_0001",
        "DICOM/00000001",
        "DICOM/PA000001/ST000001/SE000001/IM000001",
        "IMAGES/CT.DCM",
        "x/y/slice.dic",
        "noext",
        "DICOM/I0001;1",
        "report.pdf",
    ],
)
def test_dicom_is_known_by_its_bytes_whatever_the_name(tmp_path: Path, display: str):
    path = make_ct(tmp_path / "spooled")
    ident = identify(display, path)
    assert (ident.kind, ident.subtype) == ("dicom", "part10")
    assert ident.problem is None


@pytest.mark.parametrize("encoding", ["implicit_le", "explicit_le", "explicit_be"])
def test_raw_datasets_get_their_encoding(tmp_path: Path, encoding: str):
    path = make_raw(tmp_path / "spooled", encoding)
    ident = identify("DICOM/00000001", path)
    assert (ident.kind, ident.subtype) == ("dicom", encoding)


def test_pydicom_raw_implicit_file():
    ident = identify("RT/RS0001", pydicom_test_file("rtstruct.dcm"))
    assert (ident.kind, ident.subtype) == ("dicom", "implicit_le")


def test_dicomdir_by_sop_class_even_with_another_name(tmp_path: Path):
    path = make_dicomdir(tmp_path / "medium")
    assert identify("DICOMDIR", path).kind == "dicomdir"
    assert identify("DICOMDIR;1", path).kind == "dicomdir"
    assert identify("backup/INDEX", path).kind == "dicomdir"


def test_pydicom_dicomdirs_are_dicomdirs():
    for name in ("DICOMDIR", "DICOMDIR-bigEnd", "DICOMDIR-implicit"):
        assert identify(name, pydicom_test_file(name)).kind == "dicomdir"


# ----------------------------------------------------------- other content
@pytest.mark.parametrize(
    "data, display, subtype",
    [
        (PDF, "REPORT/BEFUND.PDF", "pdf"),
        (b"\r\n" + PDF, "doc", "pdf"),
        (JPEG, "PHOTOS/IMG_0001.JPG", "jpeg"),
        (PNG, "scan.png", "png"),
        (TIFF_LE, "A.TIF", "tiff"),
        (TIFF_BE, "B.TIFF", "tiff"),
        (BMP, "C.BMP", "bmp"),
        (TEXT, "NOTES/BEFUND.TXT", "txt"),
        ("所見なし\r\n".encode("cp932") * 10, "NOTES/JP.txt", "txt"),
    ],
)
def test_other_content_by_magic(tmp_path: Path, data: bytes, display: str, subtype: str):
    ident = identify(display, _write(tmp_path, data))
    assert (ident.kind, ident.subtype) == ("other_content", subtype)


def test_binary_named_txt_is_not_text(tmp_path: Path):
    ident = identify("x.txt", _write(tmp_path, bytes(range(256)) * 4))
    assert ident.kind == "unknown"


def test_bm_without_a_bitmap_header_is_not_bmp():
    assert sniff_content(b"BM" + b"\0" * 40) == ""


# ------------------------------------------------------------------ ignored
@pytest.mark.parametrize(
    "display, subtype",
    [
        ("VIEWER/VIEWER.EXE", "viewer"),
        ("Viewer.exe", "viewer"),
        ("bin/libdcm.so", "viewer"),
        ("Program/Qt5Core.dll", "viewer"),
        ("tools/setup.msi", "viewer"),
        ("jre/lib/rt.jar", "viewer"),
        ("Mac/Viewer.app/Contents/Info.plist", "viewer"),
        ("DICOMViewer/help/manual.pdf", "viewer"),
        ("DICOMViewer/config.xml", "viewer"),
        ("drivers/x.inf", "viewer"),
        ("AUTORUN.INF", "autorun"),
        ("autorun.inf;1", "autorun"),
        ("run.bat", "autorun"),
        ("AUTORUN.EXE", "autorun"),
        ("IHE_PDI/INDEX.HTM", "ihe_pdi_web"),
        ("IHE_PDI/STUDY1/IMG1.JPG", "ihe_pdi_web"),
        ("INDEX.HTM", "ihe_pdi_web"),
        ("index.html", "ihe_pdi_web"),
        (".DS_Store", "os_junk"),
        ("DICOM/Thumbs.db", "os_junk"),
        ("desktop.ini", "os_junk"),
        ("DICOM/._IM0001", "os_junk"),
        ("__MACOSX/DICOM/._IM0001", "os_junk"),
        ("System Volume Information/IndexerVolumeGuid", "os_junk"),
        ("$RECYCLE.BIN/S-1-5/desktop.ini", "os_junk"),
        ("README.TXT", "pdi_info"),
        ("README.TXT;1", "pdi_info"),
    ],
)
def test_ignored_files(tmp_path: Path, display: str, subtype: str):
    ident = identify(
        display, _write(tmp_path, PDF if display.endswith(".pdf") else b"MZ\x90\x00junk")
    )
    assert (ident.kind, ident.subtype) == ("ignored", subtype)


def test_unknown_file_beside_a_viewer_executable_is_viewer(tmp_path: Path):
    paths = ["MyView/MyView.exe", "MyView/strings.res", "MyView/data/skin.res", "DICOM/IM1"]
    ctx = medium_context(paths)
    path = _write(tmp_path, b"\x01\x02binary resource")
    assert identify("MyView/strings.res", path, ctx).subtype == "viewer"
    assert identify("MyView/data/skin.res", path, ctx).subtype == "viewer"
    assert identify("other/strings.res", path, ctx).kind == "unknown"


def test_report_pdf_beside_a_root_viewer_is_kept(tmp_path: Path):
    ctx = medium_context(["START.EXE", "REPORT.PDF"])
    ident = identify("REPORT.PDF", _write(tmp_path, PDF), ctx)
    assert (ident.kind, ident.subtype) == ("other_content", "pdf")


def test_readme_below_root_is_text_not_pdi_info(tmp_path: Path):
    ident = identify("DOCS/README.TXT", _write(tmp_path, b"Read me.\r\n"))
    assert (ident.kind, ident.subtype) == ("other_content", "txt")


# ------------------------------------------------------------- broken/unknown
def test_zero_bytes_is_broken_empty(tmp_path: Path):
    ident = identify("DICOM/IM0001", make_empty(tmp_path / "e"))
    assert ident.kind == "broken"
    assert ident.problem is not None and ident.problem.code == "empty_file"


@pytest.mark.parametrize("display", ["DICOM/IM0001", "scan/x.dcm", "A/B.DCM;1", "DICOMDIR"])
def test_non_dicom_where_dicom_belongs_is_broken(tmp_path: Path, display: str):
    ident = identify(display, make_noise_dcm(tmp_path / "n"))
    assert ident.kind == "broken"
    assert ident.problem is not None and ident.problem.code == "not_dicom"


def test_named_in_dicomdir_but_not_dicom_is_broken(tmp_path: Path):
    ctx = medium_context([], dicomdir_paths=["PAT1/STU1/IMG1"])
    ident = identify("pat1/stu1/img1;1", make_noise_dcm(tmp_path / "n"), ctx)
    assert ident.kind == "broken" and ident.problem.code == "not_dicom"


def test_unrecognised_file_is_unknown(tmp_path: Path):
    ident = identify("misc/data.bin", make_noise_dcm(tmp_path / "n"))
    assert ident.kind == "unknown"
    assert ident.problem is not None and ident.problem.code == "unsupported_content"


def test_only_a_prefix_is_read(tmp_path: Path):
    big = tmp_path / "big"
    with open(big, "wb") as fp:
        fp.write(PDF)
        fp.truncate(200 << 20)  # sparse: reading it all would be slow and large
    assert identify("x.pdf", big).subtype == "pdf"


def test_normalise_path():
    assert normalise_path("DICOM/IM0001.;1") == "dicom/im0001"
    assert normalise_path("A\\B\\C;2") == "a/b/c"
