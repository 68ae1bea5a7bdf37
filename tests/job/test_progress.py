"""Progress of a read and of a delivery: files and bytes of the total, the
rate and the time left, in ``pdimport status`` while a slow medium is read."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fixtures_dicom import make_ct_series

from pdimport.appliance.status import StatusBoard
from pdimport.appliance.systemd import Notifier
from pdimport.job.importer import Importer
from pdimport.job.progress import ProgressMeter, describe
from pdimport.settings import defaults


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_meter_reports_percent_rate_and_eta_at_most_every_interval() -> None:
    clock, told = Clock(), []
    meter = ProgressMeter("j", "reading", 4, 4_000_000, lambda j, f: told.append(f), 0.5, clock)
    meter.add(files=1, nbytes=1_000_000)  # the first add always tells
    clock.now += 0.1
    meter.add(files=1, nbytes=1_000_000)  # within the interval: quiet
    clock.now += 0.9  # 1 s after the start, 2 MB done
    meter.add()
    assert len(told) == 2
    assert told[-1] == {
        "phase": "reading",
        "files_done": 2,
        "files_total": 4,
        "bytes_done": 2_000_000,
        "bytes_total": 4_000_000,
        "percent": 50.0,
        "mb_per_s": 2.0,
        "eta_s": 1.0,
        "patients": [],
    }
    assert describe(told[-1]) == "50% 2/4 files 2.0/4.0 MB 2.0 MB/s ETA 0:01"
    meter.finish()
    assert len(told) == 3


class SlowMedium:
    """Each file takes ``delay`` seconds to read, like a disc far from its data."""

    def __init__(self, medium: Any, delay: float) -> None:
        self._medium, self._delay = medium, delay

    def open(self, entry: Any) -> Any:
        time.sleep(self._delay)
        return self._medium.open(entry)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._medium, name)


def test_status_shows_percent_files_rate_and_eta_while_a_slow_medium_is_read(tmp_path: Path):
    make_ct_series(tmp_path / "disc" / "CT", 40, patient_id="PROG")
    cfg = defaults().replace(state_dir=str(tmp_path / "state"))
    board = StatusBoard(cfg.state_path / "status.json", Notifier({}))
    imp = Importer(cfg, progress=lambda job, fields: board.job(job, progress=fields))
    imp.journal.subscribe(board.on_job_transition)
    reader = threading.Thread(
        target=imp.read_source,
        args=(str(tmp_path / "disc"),),
        kwargs={"wrap": lambda m: SlowMedium(m, 0.1)},
    )
    reader.start()
    try:
        seen = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and reader.is_alive():
            out = subprocess.run(
                [sys.executable, "-m", "pdimport", "status", "--state-dir", str(cfg.state_path)],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            line = next((x for x in out.splitlines() if " reading " in x and "%" in x), "")
            if line and "0/40 files" not in line:
                seen = line
                break
            time.sleep(0.2)
    finally:
        reader.join(60)
    assert seen, "pdimport status never showed the read's progress"
    assert "/40 files" in seen and " MB/s " in seen and "ETA " in seen
    snap = json.loads((cfg.state_path / "status.json").read_text())
    [job] = snap["jobs"].values()
    assert job["progress"]["files_done"] == job["progress"]["files_total"] == 40
    assert job["progress"]["percent"] == 100.0
    imp.close()


def test_the_read_names_its_patient_before_the_report_exists(tmp_path: Path):
    """The drives page names the disc's patient while it is read: the
    headers scanned during the read reach the progress."""
    make_ct_series(tmp_path / "disc" / "CT", 12, patient_id="PROG", patient_name="Yamada^Hanako")
    cfg = defaults().replace(state_dir=str(tmp_path / "state"))
    told: list[dict] = []
    imp = Importer(cfg, progress=lambda job, fields: told.append(fields))
    try:
        imp.read_source(str(tmp_path / "disc"), wrap=lambda m: SlowMedium(m, 0.05))
    finally:
        imp.close()
    reading = [f for f in told if f["phase"] == "reading"]
    assert reading and reading[0]["patients"] == []  # nothing scanned yet at the start
    named = [f for f in reading if f["patients"] == ["Yamada^Hanako"]]
    assert named and named[0]["files_done"] < 12, [
        (f["files_done"], f["patients"]) for f in reading
    ]
