"""The daemon's live state: what ``pdimport status`` and systemd ``STATUS=`` show.

The :class:`StatusBoard` keeps drives, jobs and queues in memory and publishes
them atomically to ``STATE_DIR/status.json``; ``pdimport status`` only reads
that file, so looking never slows a read. Watchers (the console's event
streams) are told after each change, so they push it instead of polling.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pdimport.appliance.systemd import Notifier
from pdimport.job.lifecycle import FINAL_JOB_STATES, JobState, Transition
from pdimport.job.progress import describe
from pdimport.store.fsutil import atomic_write

log = logging.getLogger(__name__)


# ----------------------------------------------------------------- status
class StatusBoard:
    """Live state of drives, jobs and queues.

    Every change rewrites ``STATE_DIR/status.json`` atomically (``pdimport
    status`` reads it) and sends one ``STATUS=`` line to systemd.
    """

    _KEEP_FINISHED = 50

    def __init__(self, path: Path, notifier: Notifier) -> None:
        self.path = path
        self._notifier = notifier
        self._lock = threading.Lock()
        self._drives: dict[str, dict[str, Any]] = {}
        self._jobs: dict[str, dict[str, Any]] = {}
        self._queues: dict[str, int] = {}
        self._started = time.time()
        self._watchers: list[Callable[[], None]] = []
        self._intake = ""  # "" when media are taken, else why not

    def watch(self, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call ``watcher()`` after every change (from the changing thread:
        it must only hand the news on, e.g. ``loop.call_soon_threadsafe``).
        Returns the function that stops the watching."""
        with self._lock:
            self._watchers.append(watcher)

        def unwatch() -> None:
            with self._lock:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)

        return unwatch

    def drive(self, devnode: str, **fields: Any) -> None:
        with self._lock:
            self._drives.setdefault(devnode, {}).update(fields, since=time.time())
        self.publish()

    def job(self, job_id: str, **fields: Any) -> None:
        with self._lock:
            self._jobs.setdefault(job_id, {}).update(fields, updated=time.time())
            self._trim()
        self.publish()

    def queue(self, name: str, size: int) -> None:
        with self._lock:
            if self._queues.get(name) == size:
                return
            self._queues[name] = size
        self.publish()

    def intake(self, paused: str) -> None:
        """Why the appliance takes no media now ("" again when it does)."""
        with self._lock:
            if self._intake == paused:
                return
            self._intake = paused
        self.publish()

    def on_job_transition(self, t: Transition) -> None:
        """Journal observer: a job changed state (the journal's word is the board's)."""
        self.job(t.machine, state=t.target)

    def on_transition(self, t: Transition) -> None:
        """Lifecycle observer: a drive changed state."""
        fields: dict[str, Any] = {"state": t.target}
        fields.update({k: v for k, v in t.info.items() if isinstance(v, (str, int, float))})
        self.drive(t.machine, **fields)

    def _trim(self) -> None:
        finished = [k for k, v in self._jobs.items() if v.get("state") in FINAL_JOB_STATES]
        for key in finished[: -self._KEEP_FINISHED]:
            del self._jobs[key]

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "pid": os.getpid(),
                "started": self._started,
                "updated": time.time(),
                "drives": json.loads(json.dumps(self._drives)),
                "jobs": json.loads(json.dumps(self._jobs)),
                "queue": dict(self._queues),
                "intake": self._intake,
            }

    def line(self, snap: dict[str, Any] | None = None) -> str:
        return status_line(snap or self.snapshot())

    def publish(self) -> None:
        snap = self.snapshot()
        with self._lock:  # one writer at a time: the rename must not interleave
            try:
                _write_atomic(self.path, json.dumps(snap, indent=1, ensure_ascii=False))
            except OSError as exc:  # a full disk: the file is only a view, systemd still hears
                log.warning("status.json not written: %s", exc.strerror or exc)
            watchers = list(self._watchers)
        self._notifier.status(status_line(snap))
        for watcher in watchers:  # notifications: a failing watcher is logged, never raised
            try:
                watcher()
            except Exception:
                log.exception("status watcher %r failed", watcher)


#: Job states counted by name in the status line: the ones a person may want to act on.
_SHOWN = (
    JobState.WAITING_FOR_DESTINATION,
    JobState.HELD,
    JobState.PARTIAL,
    JobState.FAILED,
)


def status_line(snap: dict[str, Any]) -> str:
    """One line for ``STATUS=``: drives, jobs, queue."""
    jobs = snap.get("jobs", {})
    drives_part = (
        ", ".join(
            f"{os.path.basename(d)} {v.get('state', '?')}{_percent(jobs.get(v.get('job') or ''))}"
            for d, v in sorted(snap.get("drives", {}).items())
        )
        or "none"
    )
    states: dict[str, int] = {}
    for job in snap.get("jobs", {}).values():
        states[job.get("state", "?")] = states.get(job.get("state", "?"), 0) + 1
    active = sum(n for s, n in states.items() if s not in FINAL_JOB_STATES and s not in _SHOWN)
    jobs_part = f"{active} active" + "".join(f", {states[s]} {s}" for s in _SHOWN if states.get(s))
    queue_part = ", ".join(f"{k} {v}" for k, v in sorted(snap.get("queue", {}).items())) or "0"
    intake = f"intake {snap['intake']}; " if snap.get("intake") else ""
    return f"{intake}drives: {drives_part}; jobs: {jobs_part}; queue: {queue_part}"


def _percent(job: dict[str, Any] | None) -> str:
    """The moving job's progress as ``pdimport status`` says it: percent,
    files, MB, MB/s and ETA."""
    progress = (job or {}).get("progress")
    if not progress or (job or {}).get("state") not in _MOVING:
        return ""
    return f" {describe(progress)}"


#: Job states in which progress moves.
_MOVING = (JobState.READING, JobState.DELIVERING)


def _write_atomic(path: Path, text: str) -> None:
    # A snapshot of state kept in the journal: atomic, but no fsync per update.
    with atomic_write(path, durable=False) as fp:
        fp.write(text.encode("utf-8"))


def status_main(cfg: Any, as_json: bool = False) -> int:
    """``pdimport status [--json]``: the daemon's live state from status.json.

    Returns 0 when a daemon is running, 3 when not (as ``systemctl status``).
    """
    path = cfg.state_path / "status.json"
    try:
        snap = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        snap = None
    running = snap is not None and _pid_alive(int(snap.get("pid", 0)))
    if as_json:
        print(json.dumps({"running": running, **(snap or {})}, indent=1, ensure_ascii=False))
        return 0 if running else 3
    if snap is None:
        print(f"pdimport daemon: not running (no {path})")
        return 3
    state = f"running, pid {snap['pid']}" if running else "not running"
    print(f"pdimport daemon: {state}")
    print(status_line(snap))
    for devnode, drive in sorted(snap.get("drives", {}).items()):
        print(
            f"  {devnode:14} {drive.get('state', '?'):11} {drive.get('job', '')} "
            f"{drive.get('detail', '')}".rstrip()
        )
    for job_id, job in sorted(snap.get("jobs", {}).items()):
        state = job.get("state", "?")
        moving = job.get("progress") if state in _MOVING else None
        how = f"{describe(moving)} " if moving else ""
        print(f"  job {job_id} {state} {how}{job.get('source', '')}".rstrip())
    return 0 if running else 3


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
