"""Unreadable sectors on a real block device (issue 17): a disc in an
emulated drive (hardware/fusedrive.py: FUSE behind a loop device, EIO at
chosen sectors) imported into a real storescp. The file on the bad sector is
`unreadable_sector`, naming the LBA, and never delivered; every other file is.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from fixtures_dicom import make_ct_series
from fixtures_media import make_iso
from pydicom import dcmread

from pdimport.cli import main
from pdimport.media import IsoMedium
from pdimport.settings import defaults

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hardware"))
import fusedrive

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"),
    reason="needs root, /dev/fuse and fuse3 (hardware/setup.sh installs it)",
)


def disc(tmp_path: Path) -> tuple[Path, Path, list]:
    """An ISO of 8 CT files, and its entries in LBA order."""
    src = tmp_path / "src"
    make_ct_series(src / "DICOM", 8, patient_id="BAD1", patient_name="Sector^Bad")
    image = make_iso(src, tmp_path / "disc.iso")
    medium = IsoMedium(str(image), defaults())
    try:
        return src, image, sorted(medium.entries(), key=lambda e: e.order)
    finally:
        medium.close()


def middle(entry) -> int:
    return entry.order + entry.size // 2048 // 2


def run(dev: str, scp, tmp_path: Path, capsys, config: str = "") -> tuple[int, dict]:
    args = ["import", dev, "--dest", scp.url, "--state-dir", str(tmp_path / "state"), "--json"]
    if config:
        (tmp_path / "pdimport.toml").write_text(config)
        args += ["--config", str(tmp_path / "pdimport.toml")]
    rc = main(args)
    return rc, json.loads(capsys.readouterr().out)


def test_a_bad_sector_costs_its_file_only(tmp_path: Path, storescp, capsys):
    src, image, entries = disc(tmp_path)
    victim = entries[3]
    bad = middle(victim)
    sent_uids = {str(dcmread(src / e.path).SOPInstanceUID) for e in entries if e != victim}
    scp = storescp()
    with fusedrive.emulated_drive(image, "dvd", scale=20.0, bad_lbas=[bad]) as dev:
        rc, report = run(dev, scp, tmp_path, capsys)
    bad_files = [p for p in report["problems"] if p["code"] == "unreadable_sector"]
    assert [p["path"] for p in bad_files] == [victim.path], report["problems"]
    assert str(bad) in bad_files[0]["detail"]
    assert report["status"] == "partial" and rc != 0
    assert {str(dcmread(f).SOPInstanceUID) for f in scp.files()} == sent_uids


@pytest.mark.parametrize(
    ("config", "bad_files"),
    [
        ("[limits]\nmax_bad_sectors = 1\n", [1, 2]),  # the second bad sector is one too many
        ("[limits]\nmax_read_error_minutes = 0.0005\n", [1]),  # 30 ms: one failing file
    ],
    ids=["sectors", "minutes"],
)
def test_the_read_error_budget_ends_the_read_and_names_what_was_not_read(
    tmp_path: Path, storescp, capsys, config, bad_files
):
    src, image, entries = disc(tmp_path)
    bad = [middle(entries[i]) for i in (1, 2, 3)]
    scp = storescp()
    with fusedrive.emulated_drive(image, "dvd", scale=20.0, bad_lbas=bad) as dev:
        rc, report = run(dev, scp, tmp_path, capsys, config)
    codes = {p["path"]: p["code"] for p in report["problems"]}
    assert [codes.get(e.path) for e in entries] == (
        [None]
        + ["unreadable_sector"] * len(bad_files)
        + ["read_abandoned"] * (len(entries) - 1 - len(bad_files))
    ), report["problems"]
    assert "budget" in next(
        p["detail"] for p in report["problems"] if p["code"] == "read_abandoned"
    )
    assert report["status"] == "partial" and rc != 0
    # what was read before the budget ran out is delivered
    assert {str(dcmread(f).SOPInstanceUID) for f in scp.files()} == {
        str(dcmread(src / entries[0].path).SOPInstanceUID)
    }
