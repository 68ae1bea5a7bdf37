"""Faults of a station in a group, with the daemon in its own process on a
real PostgreSQL: the database stopped during a read, and a station killed
(SIGKILL) mid-delivery and started again."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pydicom
from fixtures_daemon import status, status_text, wait_until
from fixtures_dicom import make_ct_series
from test_stations import group  # noqa: F401 - the stations' fixture

from pdimport import settings
from pdimport.send.pool import DEPTH
from pdimport.store.groupcommit import DELIVERY_GROUP_ROWS

#: What may be sent twice after a crash (the README's bound): DEPTH items on
#: each parallel association in flight, plus one journal commit group.
BOUND = max(1, int(settings.defaults().get("network.associations"))) * DEPTH + DELIVERY_GROUP_ROWS


def _uids(folder: Path) -> list[str]:
    return [
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in folder.rglob("*")
        if p.is_file()
    ]


def test_the_database_stopped_during_a_read(group, postgres, tmp_path):  # noqa: F811
    watch, stage = tmp_path / "watch", tmp_path / "stage"
    watch.mkdir()
    _a, state = group.start("A", watch)
    make_ct_series(stage / "big", 400, patient_id="BIG")
    sent = set(_uids(stage / "big"))
    os.rename(stage / "big", watch / "big")
    wait_until(lambda: _reading(state), 60, "the read started")
    postgres.stop()
    try:
        wait_until(
            lambda: "journal_unavailable" in str(status(state).get("intake", "")),
            60,
            "intake paused for the journal",
        )
        said = status_text(state)
        assert "intake paused: journal_unavailable" in said, said
        paused_at = group.received()
        time.sleep(1)  # nothing is taken or delivered while the journal is away
        assert group.received() == paused_at
    finally:
        postgres.start()
    wait_until(lambda: (watch / "imported" / "big.json").exists(), 240, "imported after")
    wait_until(lambda: not status(state).get("intake"), 30, "intake open again")
    got = _uids(group.pacs.out_dir)
    assert set(got) == sent  # nothing lost
    assert len(got) - len(sent) <= BOUND  # resent: at most what was in flight


def test_a_station_killed_mid_delivery_resumes_its_own_job(group, tmp_path):  # noqa: F811
    watch, stage = tmp_path / "watch", tmp_path / "stage"
    watch.mkdir()
    a, _state_a = group.start("A", watch)
    b, _state_b = group.start("B", watch)  # shares the folder, never takes A's package
    make_ct_series(stage / "big", 300, patient_id="KILL")
    sent = set(_uids(stage / "big"))
    os.rename(stage / "big", watch / "big")
    wait_until(lambda: group.received() >= 40, 120, "the delivery under way")
    holder = a if "taken by another station" in _log(b) else b
    holder.proc.kill()  # SIGKILL: no checkpoint, no goodbye
    holder.proc.wait()
    before = group.received()
    assert before < len(sent), "the delivery ended before the kill"
    other = b if holder is a else a
    # the other station does not take over: the spool is the holder's
    assert not _within(2.0, lambda: (watch / "imported" / "big.json").exists())
    assert group.received() == before and other.proc.poll() is None
    group.start("A" if holder is a else "B", watch)  # the same station again
    wait_until(lambda: (watch / "imported" / "big.json").exists(), 240, "resumed and imported")
    got = _uids(group.pacs.out_dir)
    assert set(got) == sent  # nothing lost
    assert len(got) - len(sent) <= BOUND  # nothing twice beyond what was in flight


def _within(seconds: float, happened) -> bool:
    """Whether ``happened()`` comes true within ``seconds`` (a negative check)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if happened():
            return True
        time.sleep(0.1)
    return False


def _log(d) -> str:
    return Path(d.log.name).read_text(errors="replace")


def _reading(state: Path) -> bool:
    jobs = status(state).get("jobs") or {}
    return any(j.get("state") == "reading" for j in jobs.values())
