"""The time per disc, split into stages, from what the run leaves behind.

The journal's ``job_events`` time every step of a job, the audit trail the
label, and the bench itself the insert and the eject:

==========  =================================================================
detect      insert → ``start_read`` (udev event, debounce, spin-up, the
            medium's directory read, the job made)
read        ``start_read`` → ``read_done`` (the drive; identification and the
            header scan run beside it, on the bytes already spooled)
scan        ``read_done`` → ``deliver`` (what is left of the scan, grouping,
            DICOMDIR check, policy, reconciliation)
decode      the share of the delivery spent decompressing for a destination
            that refused the syntax (estimated: :func:`split_delivery`)
send        the rest of ``deliver`` → the job's final event
label       final event → ``label_printed`` (rendered and printed)
eject       label → tray out (the bench sees the loop device detached)
==========  =================================================================
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

STAGES = ("detect", "read", "scan", "decode", "send", "label", "eject")
FINAL_EVENTS = {"delivered", "partial", "wait", "fail", "hold", "discard", "read_failed"}


@dataclass
class DiscTiming:
    label: str
    job: str
    state: str
    total: float  # insert → eject, seconds
    stages: dict[str, float]
    images: int
    bytes: int


def job_records(journal: Path) -> dict[str, dict[str, Any]]:
    """Jobs by medium label: id, state, created, and their events in order."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5.0)
    try:
        jobs = {}
        for job_id, label, state, created in db.execute(
            "SELECT id, label, state, created FROM jobs ORDER BY created"
        ):
            events = db.execute(
                "SELECT time, event FROM job_events WHERE job_id=? ORDER BY time, rowid",
                (job_id,),
            ).fetchall()
            jobs[label] = {"id": job_id, "state": state, "created": created, "events": events}
        return jobs
    finally:
        db.close()


def label_times(state_dir: Path) -> dict[str, float]:
    """job id → time its label was printed (the audit trail's ISO timestamps)."""
    out: dict[str, float] = {}
    for path in sorted((state_dir / "audit").glob("audit-*.jsonl")):
        with open(path, encoding="utf-8") as fp:
            for line in fp:
                if '"label_printed"' not in line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("event") == "label_printed" and record.get("job"):
                    out[str(record["job"])] = datetime.fromisoformat(record["time"]).timestamp()
    return out


def split_delivery(deliver: float, decode_core_seconds: float, cores: int) -> tuple[float, float]:
    """(decode, send) seconds of a delivery that took ``deliver`` seconds.

    Decoding runs inside the send workers, one per core at most, so the
    journal cannot tell it from sending. Its share is the decode work this
    disc needed (measured apart, :mod:`pdimport.capacity.probe`) spread over
    the cores, never more than the delivery itself.
    """
    decode = min(deliver, decode_core_seconds / max(cores, 1))
    return decode, deliver - decode


def disc_timing(
    inserted: float,
    ejected: float,
    job: dict[str, Any] | None,
    label_time: float | None,
    decode_core_seconds: float,
    cores: int,
) -> tuple[str, dict[str, float]]:
    """The job's state and its stage seconds (all zero but ``detect`` when
    no job was ever made: the daemon never saw the disc)."""
    stages = dict.fromkeys(STAGES, 0.0)
    if job is None:
        stages["detect"] = ejected - inserted
        return "missing", stages
    times: dict[str, float] = {}
    for t, event in job["events"]:
        times.setdefault(event, t)  # the first of each
        if event in FINAL_EVENTS:
            times["final"] = t  # the last final event
    created = float(job["created"])
    start_read = times.get("start_read", created)
    read_done = times.get("read_done", times.get("read_failed", start_read))
    deliver = times.get("deliver", times.get("hold", read_done))
    final = times.get("final", deliver)
    label = label_time if label_time is not None and label_time >= final else final
    stages["detect"] = max(start_read - inserted, 0.0)
    stages["read"] = max(read_done - start_read, 0.0)
    stages["scan"] = max(deliver - read_done, 0.0)
    stages["decode"], stages["send"] = split_delivery(
        max(final - deliver, 0.0), decode_core_seconds, cores
    )
    stages["label"] = max(label - final, 0.0)
    stages["eject"] = max(ejected - label, 0.0)
    return str(job["state"]), stages


def mean_stages(timings: list[DiscTiming]) -> dict[str, float]:
    if not timings:
        return dict.fromkeys(STAGES, 0.0)
    return {s: sum(t.stages[s] for t in timings) / len(timings) for s in STAGES}
