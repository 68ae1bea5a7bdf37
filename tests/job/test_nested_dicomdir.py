"""DICOMDIRs that are not the medium's own (field fault: DICOMDIRs in
sub-folders, a copied file-set inside the medium, resolved against the
medium's root: 175 ``missing_file`` errors).

A DICOMDIR below the root describes its own folder (PS3.10 §8.2: File IDs
are relative to the folder of the DICOMDIR): its File IDs resolve there and
its missing files are reported there. It indexes its folder: a file it names
is not ``unindexed_file``, a file in its folder it does not name is. The root
DICOMDIR covers the whole medium. Media are built by pydicom's FileSet
(fixtures_dicom.make_dicomdir) and read with ``pdimport scan``.
"""

from __future__ import annotations

from pathlib import Path

from fixtures_dicom import make_ct, make_dicomdir
from pydicom import dcmread
from test_import import problems, run_cli

FIRST = "PT000000/ST000000/SE000000"


def dicomdir_files(dicomdir: Path) -> list[Path]:
    """The files a DICOMDIR names, in record order."""
    return [
        dicomdir.parent.joinpath(*item.ReferencedFileID)
        for item in dcmread(dicomdir).DirectoryRecordSequence
        if "ReferencedFileID" in item
    ]


def scan(capsys, medium: Path, state: Path) -> dict:
    rc, rep = run_cli(capsys, "scan", str(medium), "--state-dir", str(state))
    assert rc in (0, 1), rep
    return rep


def test_a_copied_file_set_resolves_against_its_own_folder(tmp_path: Path, capsys) -> None:
    medium = tmp_path / "medium"
    root = make_dicomdir(medium, n=2)
    # The copy has more images than the root set: IM000002 and IM000003 of its
    # series exist only below SUB, so resolving them at the root fails.
    nested = make_dicomdir(medium / "SUB", n=4)
    rep = scan(capsys, medium, tmp_path / "state")
    assert problems(rep, "missing_file") == []
    assert problems(rep, "unindexed_file") == []
    named = {str(p.relative_to(medium)) for p in dicomdir_files(root) + dicomdir_files(nested)}
    assert {i["path"] for i in rep["instances"]} == named
    assert len(named) == 6 and rep["counts"]["dicom"] == 6


def test_a_file_missing_from_a_nested_set_is_reported_in_its_folder(tmp_path: Path, capsys) -> None:
    medium = tmp_path / "medium"
    make_dicomdir(medium, n=3)
    nested = make_dicomdir(medium / "SUB", n=3)
    gone = dicomdir_files(nested)[1]
    gone.unlink()
    # The root set has a file at the same relative path: found there, it
    # would hide the missing one.
    assert (medium / gone.relative_to(medium / "SUB")).is_file()
    rep = scan(capsys, medium, tmp_path / "state")
    [missing] = problems(rep, "missing_file")
    assert missing["path"] == str(gone.relative_to(medium))
    assert missing["path"].startswith(f"SUB/{FIRST}/")
    assert "SUB/DICOMDIR" in missing["detail"]
    assert problems(rep, "unindexed_file") == []
    assert rep["counts"]["dicom"] == 5


def test_a_medium_with_only_a_nested_dicomdir(tmp_path: Path, capsys) -> None:
    medium = tmp_path / "medium"
    nested = make_dicomdir(medium / "COPY" / "DISC1", n=3, patient_id="DIRPAT")
    loose = make_ct(medium / "LOOSE" / "CT1.DCM", patient_id="DIRPAT")  # outside the file-set
    stray = make_ct(medium / "COPY" / "DISC1" / "EXTRA.DCM", patient_id="DIRPAT")  # inside it
    rep = scan(capsys, medium, tmp_path / "state")
    assert problems(rep, "missing_file") == []
    # The nested DICOMDIR indexes its own folder only: the stray file in it
    # is unindexed; the loose file elsewhere is no DICOMDIR's business.
    assert [p["path"] for p in problems(rep, "unindexed_file")] == [str(stray.relative_to(medium))]
    paths = {i["path"] for i in rep["instances"]}
    assert paths == {str(p.relative_to(medium)) for p in [*dicomdir_files(nested), loose, stray]}
