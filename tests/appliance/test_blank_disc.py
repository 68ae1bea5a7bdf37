"""A blank disc or an audio CD is a failed job like any unreadable medium:
journaled, with a report by the report contract, and a label that says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdimport.appliance import udev
from pdimport.appliance.daemon import Daemon
from pdimport.appliance.systemd import Notifier
from pdimport.label.content import label_content
from pdimport.settings import defaults


@pytest.mark.parametrize(
    ("kind", "what", "code"),
    [(udev.BLANK, "blank disc", "blank_medium"), (udev.AUDIO, "audio CD", "audio_cd")],
)
def test_unreadable_disc_is_a_failed_job_with_a_report(tmp_path: Path, kind, what, code) -> None:
    cfg = defaults().replace(state_dir=str(tmp_path / "state"), devices=[])
    app = Daemon(cfg, notifier=Notifier({}))
    try:
        event = udev.MediaEvent(
            devnode="/dev/sr0", kernel="sr0", kind=kind, bus="optical", diskseq=9
        )
        result = app.unreadable_medium(event, what)
        job = app.runner.journal.job(result.job_id)
        assert job is not None and job.state == "failed"
        stored = app.runner.journal.report(result.job_id)
        assert stored == result.report
        on_disk = json.loads((tmp_path / "state" / "reports" / f"{job.id}.json").read_text())
        assert on_disk["status"] == "failed" and on_disk["job"] == job.id
        assert [p["code"] for p in on_disk["problems"]] == [code]
        assert {"counts", "source", "patients"} <= set(on_disk)  # the whole contract
        assert app.board.snapshot()["jobs"][job.id]["state"] == "failed"
        assert label_content(on_disk)[0].text == "失敗  FAILED"
    finally:
        app.runner.close()
