"""``pdimport bench`` end to end, small: the real daemon reads tiny discs
from emulated drives (sped up: this test is not about the rate) through a
real udevd and delivers them to a real receiver; the report has an entry per
drive count, the plots are PNGs, and every instance arrived."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pdimport.cli import main

TINY = Path(__file__).with_name("tiny-mix.toml")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0
        or not os.path.exists("/dev/fuse")
        or not shutil.which("fusermount3")
        or not os.access("/lib/systemd/systemd-udevd", os.X_OK),
        reason="needs root, /dev/fuse, fuse3 and systemd-udevd",
    ),
]


def test_bench_one_and_two_drives(tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    rc = main(
        [
            "bench",
            "--drives",
            "1-2",
            "--discs",
            "4",
            "--scale",
            "20",
            "--mix",
            str(TINY),
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    report = json.loads((out / "report.json").read_text())
    assert [r["drives"] for r in report["runs"]] == [1, 2]
    for run in report["runs"]:
        assert run["discs"] == 4 and run["timed_out"] == 0
        assert run["discs_per_hour"] > 0 and run["images_per_s"] > 0 and run["mb_per_s"] > 0
        assert run["bottleneck"] in ("drives", "CPU", "disk", "PACS link")
        assert sum(p["discs"] for p in run["per_drive"]) == 4
        assert len(run["per_drive"]) == run["drives"]
        # every disc became a job that came to rest (the scratched one partial at worst)
        assert set(run["job_states"]) <= {"imported", "partial"}, run["job_states"]
        assert sum(run["job_states"].values()) == 4
        stages = run["stages"]
        assert stages["read"] > 0 and stages["send"] > 0
        assert sum(stages.values()) == pytest.approx(run["disc_seconds"], rel=1e-6)
        received = list((out / "pacs").glob("*"))
        assert run["instances_delivered"] > 0 and len(received) >= run["instances_delivered"]
    assert len(report["projection"]) == 8 and report["checks"][0]["drives"] == 2
    for name in ("capacity-throughput", "capacity-stages", "capacity-utilisation"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "discs/year" in (out / "report.md").read_text()
    assert "2 drive(s):" in printed and "report:" in printed
