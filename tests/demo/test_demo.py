"""The README's first command runs `pdimport demo`: the appliance on embedded
defaults. `--once` makes it stop after the sample disc."""

from __future__ import annotations

import subprocess
import sys

from pydicom import dcmread


def test_demo_imports_the_sample_disc_through_the_watch_folder(tmp_path):
    state = tmp_path / "state"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pdimport",
            "demo",
            "--once",
            "--state-dir",
            str(state),
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "IMPORTED" in done.stdout
    received = [p for p in (state / "demo" / "pacs").iterdir() if p.is_file()]
    on_disc = len(list((state / "demo" / "watch" / "imported").glob("*.iso")))
    assert on_disc == 1  # the package went to imported/ beside its report
    assert len(received) >= 15
    assert {str(dcmread(p, stop_before_pixels=True).PatientID) for p in received} == {"DEMO001"}
