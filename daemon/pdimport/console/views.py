"""What the console's pages show, shaped from the status board snapshot and
the journal: plain values, no HTTP, so each is tested on its own."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from pdimport.console.preview import series_previews
from pdimport.job.lifecycle import FINAL_JOB_STATES, JobState
from pdimport.problems import PROBLEM_CODES
from pdimport.store.journal import Job, Journal

log = logging.getLogger(__name__)

#: The outcomes a person filters by, in the order the summary names them.
OUTCOMES = (
    "imported",
    "held",
    "partial",
    "waiting_for_destination",
    "failed",
    "discarded",
    "active",
)

#: Job states in which a read or a delivery moves.
_MOVING = (JobState.READING, JobState.DELIVERING)


def outcome_of(state: str) -> str:
    """A job's outcome key: its final state, or ``active`` while it runs."""
    if state in FINAL_JOB_STATES or state in (JobState.HELD, JobState.WAITING_FOR_DESTINATION):
        return str(state)
    return "active"


def patient_names(report: dict[str, Any] | None) -> list[str]:
    """The Patient's Names (PN) of a report, in report order."""
    return [str(p.get("name", "")) for p in (report or {}).get("patients") or []]


def eta_text(eta: Any) -> str:
    if eta is None:
        return "?"
    seconds = int(float(eta))
    return f"{seconds // 60}:{seconds % 60:02d}"


# ------------------------------------------------------------------ group
def group_boards(journal: Journal) -> list[dict[str, Any]]:
    """The other stations of a hospital group (a shared journal only), each
    with its drives as its last heartbeat published them."""
    from pdimport.appliance.group import Stations
    from pdimport.store.db import POSTGRESQL

    if journal.db.dialect != POSTGRESQL:
        return []
    try:
        boards = Stations(journal.db, journal.station).boards()
    except Exception as exc:  # noqa: BLE001 - no group table yet, or the database is down
        log.warning("console: the group's drive boards: %s", exc)
        return []
    out = []
    for board in boards:
        if board["station"] == journal.station:
            continue  # this station's own board is the live one
        board["drive_rows"] = [
            {
                "drive": os.path.basename(devnode),
                "state": drive.get("state", "?"),
                "label": drive.get("label") if isinstance(drive.get("label"), str) else "",
            }
            for devnode, drive in sorted((board.get("drives") or {}).items())
        ]
        out.append(board)
    return out


# ------------------------------------------------------------------ drives
def drives_view(snap: dict[str, Any], names: Callable[[str], list[str]]) -> dict[str, Any]:
    """Rows of the drives page: each drive with its current job's progress;
    the jobs in progress that no drive shows (watch folder, retries); queues."""
    jobs = snap.get("jobs", {})
    rows = []
    shown: set[str] = set()
    for devnode, drive in sorted(snap.get("drives", {}).items()):
        job_id = str(drive.get("job") or "")
        job = jobs.get(job_id, {}) if job_id else {}
        shown.add(job_id)
        label = job.get("label") or drive.get("label")
        rows.append(
            {
                "drive": os.path.basename(devnode),
                "state": drive.get("state", "?"),
                "label": label if isinstance(label, str) else "",
                **_job_row(job_id, job, names),
            }
        )
    active = [
        {
            "source": job.get("source", ""),
            "state": job.get("state", "?"),
            **_job_row(job_id, job, names),
        }
        for job_id, job in sorted(jobs.items())
        if job_id not in shown
        and job.get("state") not in FINAL_JOB_STATES
        and job.get("state") != JobState.HELD
    ]
    return {
        "drives": rows,
        "active": active,
        "queue": dict(snap.get("queue", {})),
        "intake": str(snap.get("intake") or ""),
    }


def _job_row(job_id: str, job: dict[str, Any], names: Callable[[str], list[str]]) -> dict[str, Any]:
    progress = job.get("progress") if job.get("state") in _MOVING else None
    state = str(job.get("state") or "")
    return {
        "job": job_id,
        "outcome": outcome_of(state) if state else "",
        # the report's names once there is one; while reading, the headers'
        "patients": (names(job_id) if job_id else []) or list((progress or {}).get("patients", [])),
        "percent": float(progress.get("percent", 0)) if progress else None,
        "phase": progress.get("phase", "") if progress else "",
        "mb_per_s": float(progress.get("mb_per_s", 0)) if progress else None,
        "eta": eta_text(progress.get("eta_s")) if progress else "",
    }


def job_live(snap: dict[str, Any], journal: Journal, job_id: str) -> dict[str, Any]:
    """A job's state and, while it moves, its progress: the board's word
    while the daemon has it, else the journal's."""
    job = dict(snap.get("jobs", {}).get(job_id) or {})
    if not job.get("state"):
        stored = journal.job(job_id)
        job["state"] = str(stored.state) if stored is not None else ""
    progress = job.get("progress") if job.get("state") in _MOVING else None
    return {
        "job": job_id,
        "state": str(job["state"]),
        "outcome": outcome_of(str(job["state"])),
        **_job_row(job_id, job, lambda _j: []),
        "files": f"{progress.get('files_done', 0)}/{progress.get('files_total', 0)}"
        if progress
        else "",
    }


# ------------------------------------------------------------------- today
def local_day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def history(
    journal: Journal, day: str | None, outcome: str | None, limit: int = 10_000
) -> list[dict[str, Any]]:
    """Jobs of ``day`` (local ``YYYY-MM-DD``; None = every day) with
    ``outcome`` (None = any), newest first."""
    rows = []
    for job in journal.jobs(limit):
        if job.mode != "import" or (day and local_day(job.created) != day):
            continue
        out = outcome_of(job.state)
        if outcome and out != outcome:
            continue
        rows.append(_history_row(job, journal.report(job.id)))
    return rows


def _history_row(job: Job, report: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "job": job.id,
        "time": time.strftime("%Y-%m-%d %H:%M", time.localtime(job.created)),
        "source": job.source_path,
        "label": job.label,
        "patients": patient_names(report),
        "studies": sum(len(p.get("studies") or []) for p in (report or {}).get("patients") or []),
        "counts": dict((report or {}).get("counts") or {}),
        "state": str(job.state),
        "outcome": outcome_of(job.state),
        "station": job.station,
    }


def outcome_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(OUTCOMES, 0)
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    return counts


def batch_summary(rows: list[dict[str, Any]], outcome_word: Callable[[str], str]) -> str:
    """``18 of 20 imported, 1 needs a decision, 1 failed`` (in the page's words)."""
    counts = outcome_counts(rows)
    head = f"{counts['imported']}/{len(rows)} {outcome_word('imported')}"
    rest = [f"{n} {outcome_word(k)}" for k, n in counts.items() if n and k != "imported"]
    return ", ".join([head, *rest])


# ---------------------------------------------------------------- job detail
def job_detail(journal: Journal, job_id: str) -> dict[str, Any] | None:
    job = journal.job(job_id)
    if job is None:
        return None
    report = journal.report(job_id) or {}
    problems = [
        {**p, "severity": PROBLEM_CODES.get(p.get("code", ""), ("error", ""))[0]}
        for p in report.get("problems") or []
    ]
    previews = series_previews(report)
    kinds: dict[str, set[str]] = {}
    for inst in report.get("instances") or []:
        kinds.setdefault(str(inst.get("series_uid", "")), set()).add(str(inst.get("kind", "")))
    patients = [
        {
            **p,
            "studies": [
                {
                    **st,
                    "series": [
                        {
                            **se,
                            "kinds": sorted(kinds.get(se.get("uid", ""), set()) - {"image"}),
                            "preview": se.get("uid", "") in previews,
                        }
                        for se in st.get("series") or []
                    ],
                }
                for st in p.get("studies") or []
            ],
        }
        for p in report.get("patients") or []
    ]
    return {
        "job": job,
        "row": _history_row(job, report),
        "report": report,
        "patients": patients,
        "problems": problems,
        "other_content": _other_content(report),
        "decisions": [d.as_dict() for d in journal.decisions(job_id)],
        "events": [
            {"time": time.strftime("%H:%M:%S", time.localtime(t)), "event": e, "to": to, "why": r}
            for t, e, _src, to, r in journal.job_events(job_id)
        ],
        "retryable": job.state
        in (JobState.WAITING_FOR_DESTINATION, JobState.FAILED, JobState.PARTIAL)
        and job.read_complete,
    }


def _other_content(report: dict[str, Any]) -> list[dict[str, str]]:
    """The non-DICOM files of a medium and the DICOM object each became, if any."""
    made = {str(c.get("path", "")): c for c in report.get("converted") or []}
    return [
        {
            "path": str(o.get("path", "")),
            "type": str(o.get("type", "")),
            "converted": str(made.get(str(o.get("path", "")), {}).get("sop_instance_uid", "")),
        }
        for o in report.get("other_content") or []
    ]
