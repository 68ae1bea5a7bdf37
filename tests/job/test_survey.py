"""``pdimport scan`` of a folder reads headers in place (job/survey.py): the
same report as the inventory of the spooled copy, nothing in the spool.

The oracle is ``Importer.run(mode="scan")``, which copies every file into
the spool and takes the inventory from there. Both run on one hostile
folder: a DICOMDIR, raw data sets in three encodings, Other Content, a
viewer and what sits beside it, OS litter, broken files, a deflated file,
identical and clashing copies of one SOP Instance UID, two patients.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fixtures_dicom import (
    make_ct,
    make_deflated,
    make_dicomdir,
    make_empty,
    make_noise_dcm,
    make_raw,
    make_truncated_header,
    make_uid_mismatch,
)
from test_import import run_cli

from pdimport.job.importer import Importer
from pdimport.job.survey import Survey
from pdimport.settings import defaults
from pdimport.store.journal import open_journal

#: What only the spooled inventory knows: content hashes, and the repairs a
#: send would make (the survey leaves those to ``pdimport import``).
_SPOOL_ONLY = {"meta_repaired", "length_repaired"}


def hostile_folder(root: Path) -> Path:
    make_dicomdir(root, n=3)
    make_ct(root / "EXTRA" / "CT1.dcm", patient_id="PAT001")
    first = make_ct(root / "EXTRA" / "CT2", patient_id="PAT001")
    shutil.copyfile(first, root / "EXTRA" / "CT2 copy")  # identical copy
    clash = make_ct(root / "EXTRA" / "CT3", patient_id="PAT001")
    data = bytearray(clash.read_bytes())
    data[-1] ^= 0xFF  # same header, other pixels: not the same instance
    (root / "EXTRA" / "CT3 clash").write_bytes(data)
    for enc in ("implicit_le", "explicit_le", "explicit_be"):
        make_raw(root / "RAW" / f"{enc}.raw", enc)
    make_deflated(root / "EXTRA" / "deflated.dcm")
    make_uid_mismatch(root / "EXTRA" / "mismatch.dcm")
    make_truncated_header(root / "BROKEN" / "short.dcm")
    make_empty(root / "BROKEN" / "empty.dcm")
    make_noise_dcm(root / "BROKEN" / "noise.dcm")
    (root / "REPORT.PDF").write_bytes(
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n%%EOF\n"
    )
    (root / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)
    (root / "notes.bin").write_bytes(b"\x01\x02 not a known type" * 10)
    (root / "VIEWER").mkdir()
    (root / "VIEWER" / "view.exe").write_bytes(b"MZ" + b"\0" * 100)
    (root / "VIEWER" / "data.dat").write_bytes(b"\x00viewer data")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "autorun.inf").write_text("[autorun]\n")
    make_ct(root / "OTHER" / "B1.dcm", patient_id="PAT002", patient_name="Other^Patient")
    return root


def _comparable(rep: dict) -> dict:
    rep = {k: v for k, v in rep.items() if k not in ("job", "finished")}
    rep["instances"] = [{k: v for k, v in i.items() if k != "sha256"} for i in rep["instances"]]
    rep["problems"] = sorted(
        (p["code"], p["path"], p["detail"]) for p in rep["problems"] if p["code"] not in _SPOOL_ONLY
    )
    rep["counts"] = {**rep["counts"], "problems": len(rep["problems"])}
    return rep


@pytest.fixture
def medium(tmp_path: Path) -> Path:
    return hostile_folder(tmp_path / "medium")


def _settings(state: Path, scanner: str):
    return defaults().replace(state_dir=str(state), scanner=scanner)


@pytest.mark.parametrize("scanner", ["numba", "pydicom"])
def test_the_survey_reports_what_the_spooled_inventory_reports(
    medium: Path, tmp_path: Path, scanner: str
) -> None:
    spooled = Importer(_settings(tmp_path / "spooled", scanner))
    try:
        want = spooled.run(str(medium), [], mode="scan").report
    finally:
        spooled.close()
    got = Survey(_settings(tmp_path / "in-place", scanner)).run(str(medium))
    assert got is not None
    a, b = _comparable(got), _comparable(want)
    assert a["problems"] == b["problems"]
    assert a["instances"] == b["instances"]
    assert a == b
    # the cases the medium was built for are in it
    codes = {p[0] for p in a["problems"]}
    assert {"uid_conflict", "multi_patient", "unsupported_content"} <= codes
    assert a["counts"]["other_content"] == 2 and a["counts"]["skipped"] == 1
    assert {i["encoding"] for i in a["instances"]} == {
        "part10",
        "implicit_le",
        "explicit_le",
        "explicit_be",
    }


def test_the_survey_copies_nothing_and_keeps_the_job(medium: Path, tmp_path: Path, capsys) -> None:
    state = tmp_path / "state"
    rc, rep = run_cli(capsys, "scan", str(medium), "--state-dir", str(state))
    assert rc == 1 and rep["status"] == "held" and rep["mode"] == "scan"  # two patients
    spool = state / "spool"
    assert not spool.exists() or not any(p.is_file() for p in spool.rglob("*"))
    journal = open_journal(defaults(), state)
    try:
        job = journal.job(rep["job"])
        assert job is not None and job.state == "scanned"
        assert journal.files(rep["job"]) == []  # no file rows: nothing was read into the spool
    finally:
        journal.close()
    assert (state / "reports" / f"{rep['job']}.json").is_file()
    # the copies of one UID were hashed to be judged; the rest were not read whole
    hashed = {i["path"] for i in rep["instances"] if i["sha256"]}
    assert hashed == {"EXTRA/CT2", "EXTRA/CT2 copy", "EXTRA/CT3", "EXTRA/CT3 clash"}


def test_a_file_that_became_a_link_is_not_followed(tmp_path: Path) -> None:
    medium = tmp_path / "medium"
    make_ct(medium / "A.dcm")
    make_raw(medium / "B.raw", "implicit_le")
    secret = make_ct(tmp_path / "outside.dcm", patient_id="SECRET")
    survey = Survey(_settings(tmp_path / "state", "numba"))
    from pdimport.job import survey as survey_mod
    from pdimport.media import open_medium

    folder = open_medium(str(medium), survey.settings)
    try:
        entries = folder.entries()
        for name in ("A.dcm", "B.raw"):  # swapped after listing
            (medium / name).unlink()
            os.symlink(secret, medium / name)
        inv = survey_mod.InPlace(survey.settings, folder).take(entries)
    finally:
        folder.close()
    assert inv.instances == []
    assert {p.code for p in inv.problems} <= {"link_ignored", "unreadable_sector", "unparsable"}
    assert {p.path for p in inv.problems} == {"A.dcm", "B.raw"}


def test_media_that_are_not_folders_keep_the_spooled_scan(tmp_path: Path) -> None:
    archive = tmp_path / "disc.zip"
    import zipfile

    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(make_ct(tmp_path / "ct.dcm"), "ct.dcm")
    assert Survey(_settings(tmp_path / "state", "numba")).run(str(archive)) is None
