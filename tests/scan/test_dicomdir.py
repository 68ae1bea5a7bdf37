"""Our DICOMDIR reader: valid indexes, loops that must end fast, hostile File IDs."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from fixtures_dicom import (
    make_ct_series,
    make_dicomdir,
    make_dicomdir_dangling,
    make_dicomdir_escape,
    make_dicomdir_lower_cycle,
    make_dicomdir_self_loop,
    pydicom_test_file,
)
from pydicom import dcmread

from pdimport.scan.dicomdir import (
    DicomdirIndex,
    indexed_by,
    match_path,
    read_dicomdir,
    unsafe_file_id,
)
from pdimport.scan.identify import identify
from pdimport.settings import defaults


def _read_within(path: Path, seconds: float = 10.0, settings=None) -> DicomdirIndex:
    """Read in a daemon thread so a regression to a hang fails instead of
    blocking the test run (pydicom FileSet hangs on these, notes M1)."""
    box: list = []
    worker = threading.Thread(target=lambda: box.append(read_dicomdir(path, settings)), daemon=True)
    start = time.monotonic()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "read_dicomdir hung"
    assert time.monotonic() - start < seconds
    return box[0]


# ------------------------------------------------------------------ valid
@pytest.mark.skipif(shutil.which("dcmmkdir") is None, reason="dcmtk dcmmkdir not installed")
def test_dcmmkdir_dicomdir(tmp_path: Path):
    files = make_ct_series(tmp_path / "DICOM", 4, patient_id="MKDIR1", patient_name="Mk^Dir")
    subprocess.run(
        ["dcmmkdir", "+r", "DICOM"], cwd=tmp_path, check=True, capture_output=True, timeout=60
    )
    dicomdir = tmp_path / "DICOMDIR"
    assert identify("DICOMDIR", dicomdir).kind == "dicomdir"
    index = _read_within(dicomdir)
    assert index.valid and index.problems == []
    assert sorted(f.path for f in index.files) == [f"DICOM/IM000{i}" for i in range(1, 5)]
    by_path = {f.path: f for f in index.files}
    for path in files:
        ds = dcmread(path)
        entry = by_path[f"DICOM/{path.name}"]
        assert entry.file_id == ("DICOM", path.name)
        assert entry.record_type == "IMAGE"
        assert entry.sop_instance_uid == ds.SOPInstanceUID
        assert entry.sop_class_uid == ds.SOPClassUID
        assert entry.transfer_syntax == ds.file_meta.TransferSyntaxUID
        assert entry.patient_id == "MKDIR1"
        assert entry.study_uid == ds.StudyInstanceUID
        assert entry.series_uid == ds.SeriesInstanceUID
    medium = [f"DICOM/{p.name}" for p in files] + ["DICOMDIR"]
    assert all(match_path(f.path, medium) == f.path for f in index.files)


def test_pydicom_written_dicomdir(tmp_path: Path):
    index = _read_within(make_dicomdir(tmp_path / "medium", n=3))
    assert index.valid
    assert len(index.files) == 3
    assert all(f.path.startswith("PT000000/ST000000/SE000000/IM") for f in index.files)
    assert {f.patient_id for f in index.files} == {"DIRPAT"}


def test_pydicom_reference_dicomdirs():
    for name in ("DICOMDIR", "DICOMDIR-bigEnd", "DICOMDIR-implicit", "DICOMDIR-reordered"):
        index = _read_within(pydicom_test_file(name))
        assert index.valid, (name, index.problems)
        assert len(index.files) == 31
    assert _read_within(pydicom_test_file("DICOMDIR-empty.dcm")).files == []


def test_inconsistent_item_length_is_invalid():
    index = _read_within(pydicom_test_file("DICOMDIR-nooffset"))
    assert not index.valid
    assert [p.code for p in index.problems] == ["dicomdir_invalid"]


# ----------------------------------------------------------------- loops
@pytest.mark.parametrize(
    "maker",
    [make_dicomdir_self_loop, make_dicomdir_lower_cycle, make_dicomdir_dangling],
    ids=["self_loop", "lower_cycle", "dangling"],
)
def test_broken_record_tree_ends_fast_and_invalid(tmp_path: Path, maker):
    path = maker(tmp_path / "medium")
    index = _read_within(path, seconds=5)
    assert not index.valid
    assert [p.code for p in index.problems] == ["dicomdir_invalid"]


def test_record_cap(tmp_path: Path):
    path = make_dicomdir(tmp_path / "medium", n=3)
    index = _read_within(path, settings=defaults().replace(limits__max_dicomdir_records=2))
    assert not index.valid
    assert "more than 2" in index.problems[0].detail


def test_not_a_dicomdir_at_all(tmp_path: Path):
    path = tmp_path / "DICOMDIR"
    path.write_bytes(b"\0" * 50)
    index = _read_within(path)
    assert not index.valid and index.problems[0].code == "dicomdir_invalid"


# ------------------------------------------------------------- File IDs
def test_escaping_file_id_is_refused(tmp_path: Path):
    path = make_dicomdir_escape(tmp_path / "medium")
    index = _read_within(path)
    assert [p.code for p in index.problems] == ["dicomdir_unsafe_path"]
    assert len(index.files) == 2  # the other records still count
    assert all(".." not in f.file_id for f in index.files)


@pytest.mark.parametrize(
    "parts",
    [
        [],
        [""],
        ["DICOM", ""],
        [".."],
        ["DICOM", "..", "..", "etc"],
        ["."],
        ["/etc", "passwd"],
        ["C:", "WINDOWS"],
        ["A/B"],
        ["IM\0001"],
        ["IM\n1"],
        ["..;1"],
    ],
)
def test_unsafe_file_ids(parts):
    assert unsafe_file_id(parts)


@pytest.mark.parametrize(
    "parts",
    [
        ["DICOM", "IM0001"],
        ["dicom", "im_0001.dcm"],
        ["PT000000", "ST000000", "SE000000", "IM000000"],
    ],
)
def test_ordinary_file_ids(parts):
    assert unsafe_file_id(parts) == ""


# --------------------------------------------------------------- matching
def test_match_path_like_real_discs():
    medium = [
        "DICOM/PAT1/IM0001;1",
        "dicom/pat1/im0002.",
        "Disc/DICOM/IM0003",
        "DICOM/IM0004",
        "dicom/im0004",
    ]
    assert match_path("DICOM/PAT1/IM0001", medium) == "DICOM/PAT1/IM0001;1"
    assert match_path("DICOM/PAT1/IM0002", medium) == "dicom/pat1/im0002."
    assert match_path("DICOM/IM0003", medium, base="Disc") == "Disc/DICOM/IM0003"
    assert match_path("Disc/DICOM/IM0003", medium) == "Disc/DICOM/IM0003"
    assert match_path("dicom/im0004", medium) == "dicom/im0004"  # exact spelling wins
    assert match_path("DICOM/IM0004", medium) == "DICOM/IM0004"
    assert match_path("DICOM/IM0005", medium) is None
    assert match_path("DICOM/IM0003", medium) is None  # not relative to another folder


def test_match_path_sees_a_new_listing():
    assert match_path("A/B", ["A/B"]) == "A/B"
    assert match_path("A/B", ["X/Y"]) is None


def test_a_dicomdir_indexes_its_own_folder_and_below():
    assert indexed_by("LOOSE/CT1.DCM", ["DICOMDIR"])  # the root one: the whole medium
    assert indexed_by("Copy/Disc1/IM1", ["COPY/DISC1/DICOMDIR;1"])  # case, ISO version
    assert indexed_by("COPY/DISC1/A/B/IM1", ["COPY/DISC1/DICOMDIR"])
    assert not indexed_by("LOOSE/CT1.DCM", ["COPY/DISC1/DICOMDIR"])
    assert not indexed_by("COPY/DISC10/IM1", ["COPY/DISC1/DICOMDIR"])  # a sibling, not below
    assert not indexed_by("COPY/IM1", ["COPY/DISC1/DICOMDIR"])
    assert not indexed_by("IM1", [])
