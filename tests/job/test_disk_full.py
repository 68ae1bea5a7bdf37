"""A full disk (issue 17): the state directory on a small tmpfs. ENOSPC in
the spool, a journal that cannot commit, or free space under the low-water
mark stops the job cleanly: disk_full, a report on stdout, exit 2, no retry
against a journal that cannot record. With space back, the same command
delivers everything, and nothing acknowledged is sent twice."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_dicom import make_ct_series
from pydicom import dcmread

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (root)")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "state"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def resize(mnt: Path, mb: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={mb}m", str(mnt)], check=True)


def fill(mnt: Path, leave: int) -> Path:
    """Take all but ``leave`` bytes of the file system."""
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    subprocess.run(
        ["fallocate", "-l", str(st.f_bavail * st.f_frsize - leave), str(filler)], check=True
    )
    return filler


def run(tmp_path: Path, state: Path, dest: str, min_free_mb: int = 0) -> tuple[int, dict]:
    cfg = tmp_path / "pdimport.toml"
    cfg.write_text(f"[spool]\nmin_free_mb = {min_free_mb}\n[network]\nretries = 2\n")
    cmd = [sys.executable, "-m", "pdimport", "import", str(tmp_path / "disc"), "--dest", dest]
    cmd += ["--state-dir", str(state), "--config", str(cfg), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def codes(report: dict) -> set[str]:
    return {p["code"] for p in report["problems"]}


@pytest.fixture
def disc(tmp_path: Path) -> list[Path]:
    return make_ct_series(tmp_path / "disc", 40, patient_id="FULL", rows=256, cols=256)


def test_the_spool_filling_up_mid_read_stops_cleanly_then_resumes(
    tmp_path, small_disk, disc, storescp
):
    resize(small_disk, 3)  # the disc holds 5 MB
    scp = storescp()
    rc, report = run(tmp_path, small_disk, scp.url)
    assert (rc, report["status"]) == (2, "failed")
    assert codes(report) == {"disk_full"}
    assert scp.files() == []  # nothing sent from a half-read disc
    resize(small_disk, 64)
    rc, report = run(tmp_path, small_disk, scp.url)
    assert (rc, report["status"]) == (0, "imported"), report["problems"]
    assert len(scp.files()) == 40


def test_a_journal_that_cannot_record_is_not_retried_against(tmp_path, small_disk, disc, storescp):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    down = f"dicom://DOWN@127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    rc, report = run(tmp_path, small_disk, down)
    assert report["status"] == "waiting_for_destination"  # read whole, in the spool
    filler = fill(small_disk, 256 << 10)
    scp = storescp(unique=True)  # +uf: a second copy of an instance is a second file
    rc, report = run(tmp_path, small_disk, scp.url)
    assert (rc, report["status"]) == (2, "failed")
    assert "disk_full" in codes(report)
    first = len(scp.files())
    filler.unlink()
    rc, report = run(tmp_path, small_disk, scp.url)
    assert (rc, report["status"]) == (0, "imported"), report["problems"]
    uids = [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in scp.files()]
    assert sorted(set(uids)) == sorted(str(dcmread(p).SOPInstanceUID) for p in disc)
    # what the full journal could not record is all that went twice
    assert len(uids) - 40 <= first


def test_under_the_low_water_mark_no_medium_is_read(tmp_path, small_disk, disc, storescp):
    scp = storescp()
    rc, report = run(tmp_path, small_disk, scp.url, min_free_mb=64)  # 32 MB disk
    assert (rc, report["status"]) == (2, "failed")
    assert codes(report) == {"disk_full"}
    assert "below 64 MB" in report["problems"][0]["detail"]
    assert scp.files() == []
