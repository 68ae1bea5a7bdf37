"""A full disk pauses the appliance's intake (issue 17): the daemon in its
own process, its state directory on a small tmpfs, a watch folder. Under the
low-water mark nothing is taken and `pdimport status` and status.json say
why; with space back the waiting entry is imported, nothing lost."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from fixtures_daemon import status, status_text, wait_until
from fixtures_dicom import make_ct_series

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (root)")


def test_a_full_disk_pauses_intake_until_space_is_back(daemon_factory, tmp_path: Path):
    state, watch, out = tmp_path / "state", tmp_path / "watch", tmp_path / "out"
    for d in (state, watch, out):
        d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(state)], check=True)
    try:
        daemon_factory(
            {"state_dir": str(state), "dest": [f"file://{out}"], "spool.min_free_mb": 24},
            {"devices": [], "watch": str(watch), "watch_settle": 0.3},
        )
        wait_until(lambda: (state / "status.json").exists(), 20, "the daemon started")
        filler = state / "filler"
        subprocess.run(["fallocate", "-l", str(30 << 20), str(filler)], check=True)  # 18 MB free
        stage = tmp_path / "stage"
        make_ct_series(stage, 6, patient_id="PAUSE")
        os.rename(stage, watch / "PAUSE")
        wait_until(lambda: "disk_full" in str(status(state).get("intake", "")), 20, "intake paused")
        said = status_text(state)
        assert "intake paused: disk_full" in said, said
        assert list(out.iterdir()) == []  # nothing taken meanwhile
        filler.unlink()
        wait_until(
            lambda: len(list(out.iterdir())) == 6, 60, "the entry imported after space came back"
        )
        wait_until(lambda: not status(state).get("intake"), 20, "intake open again")
        # the files reach the destination while the job still finishes (early delivery)
        wait_until(lambda: (watch / "imported" / "PAUSE.json").exists(), 20, "the report filed")
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
