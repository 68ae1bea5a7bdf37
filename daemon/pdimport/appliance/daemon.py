"""The appliance: drives and a watch folder feeding the import pipeline.

Threads (each blocks on its own queue; none sleep-polls):

* ``udev-monitor`` (pyudev) classifies block events and hands them to the
  ``router``, which de-duplicates and debounces them (:mod:`pdimport.appliance.udev`)
  and passes each settled event to the drive's worker;
* one ``drive:<name>`` worker per drive runs that drive's lifecycle
  (:mod:`pdimport.job.lifecycle`): confirm the medium, lock the tray, read it into
  the spool, deliver, eject. A slow or failing disc delays only its own drive;
* ``watch-folder`` imports dropped ISO images, zip packages and folders;
* ``delivery-retry`` re-delivers jobs whose destination was down, with
  exponential back-off, until the PACS answers;
* the main thread only waits for signals (the handlers just enqueue) and pets
  the systemd watchdog while every worker lives.

On SIGTERM the readers stop at the next chunk (the journal and the spool keep
what was read; the next start re-reads only what is missing), deliveries in
flight get a grace period (each acknowledged instance is already in the
journal), and the process exits 0 within ``stop_timeout`` seconds.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Self

from pdimport.appliance import drives, udev
from pdimport.appliance.lock import EXIT_LOCKED, AlreadyRunning, DaemonLock
from pdimport.appliance.systemd import Notifier
from pdimport.appliance.watchfolder import DONE, WatchFolder, WatchLedger, WatchResult
from pdimport.appliance.watchfolder import FAILED as WATCH_FAILED
from pdimport.job.lifecycle import (
    EJECTING,
    EMPTY,
    FAILED,
    INSERTED,
    READ,
    READING,
    Transition,
    drive_lifecycle,
)
from pdimport.store.fsutil import atomic_write

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "devices": ["sr*", "sd*"],
    "watch": "",
    "eject_after": "delivered",
    "debounce": 1.5,
    "watch_settle": 5.0,
    "retry_max_delay": 300.0,
    "stop_timeout": 15.0,
    "eject_retries": 5,
}


def _setting(cfg: Any, name: str, default: Any = None) -> Any:
    """A setting that the settings table may not declare yet."""
    if default is None:
        default = DEFAULTS.get(name)
    try:
        value = cfg.get(name)
    except (KeyError, AttributeError):
        return default
    return default if value is None or value == [] else value


class Interrupted(BaseException):
    """Raised inside a read when the daemon stops.

    A ``BaseException`` so no ``except Exception`` on the way records it as a
    file problem: the read must stop, not complete with holes.
    """


# ---------------------------------------------------------------- outcome
def job_outcome(report: dict[str, Any]) -> str:
    """``done`` | ``waiting`` (for the PACS) | ``held`` | ``failed``, from the
    report's typed status (no more reading of problem text)."""
    return {"imported": "done", "waiting_for_destination": "waiting", "held": "held"}.get(
        report.get("status", ""), "failed"
    )


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds before retry number ``attempt`` (0-based): base·2^n, capped."""
    return min(cap, max(base, 0.1) * (2 ** min(attempt, 30)))


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

    def on_transition(self, t: Transition) -> None:
        """Lifecycle observer: a drive changed state."""
        fields: dict[str, Any] = {"state": t.target}
        fields.update({k: v for k, v in t.info.items() if isinstance(v, (str, int, float))})
        self.drive(t.machine, **fields)

    def _trim(self) -> None:
        finished = [
            k for k, v in self._jobs.items() if v.get("state") in ("done", "held", "failed")
        ]
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
            }

    def line(self, snap: dict[str, Any] | None = None) -> str:
        return status_line(snap or self.snapshot())

    def publish(self) -> None:
        snap = self.snapshot()
        with self._lock:  # one writer at a time: the rename must not interleave
            _write_atomic(self.path, json.dumps(snap, indent=1, ensure_ascii=False))
        self._notifier.status(status_line(snap))


def status_line(snap: dict[str, Any]) -> str:
    """One line for ``STATUS=``: drives, jobs, queue."""
    drives_part = (
        ", ".join(
            f"{os.path.basename(d)} {v.get('state', '?')}"
            for d, v in sorted(snap.get("drives", {}).items())
        )
        or "none"
    )
    states: dict[str, int] = {}
    for job in snap.get("jobs", {}).values():
        states[job.get("state", "?")] = states.get(job.get("state", "?"), 0) + 1
    active = sum(n for s, n in states.items() if s not in ("done", "held", "failed"))
    jobs_part = f"{active} active" + "".join(
        f", {n} {s}" for s, n in sorted(states.items()) if s in ("waiting", "held", "failed")
    )
    queue_part = ", ".join(f"{k} {v}" for k, v in sorted(snap.get("queue", {}).items())) or "0"
    return f"drives: {drives_part}; jobs: {jobs_part}; queue: {queue_part}"


def _write_atomic(path: Path, text: str) -> None:
    # A snapshot of state kept in the journal: atomic, but no fsync per update.
    with atomic_write(path, durable=False) as fp:
        fp.write(text.encode("utf-8"))


# ------------------------------------------------------- cancellable read
class _CancellableStream:
    def __init__(self, fp: BinaryIO, stop: threading.Event) -> None:
        self._fp = fp
        self._stop = stop

    def read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            raise Interrupted()
        return self._fp.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fp.close()


class CancellableMedium:
    """A medium whose reads stop at the next chunk once ``stop`` is set."""

    def __init__(self, medium: Any, stop: threading.Event) -> None:
        self._medium = medium
        self._stop = stop

    def open(self, entry: Any) -> _CancellableStream:
        if self._stop.is_set():
            raise Interrupted()
        return _CancellableStream(self._medium.open(entry), self._stop)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._medium, name)


# -------------------------------------------------------------- job runner
class JobRunner:
    """Reads media into jobs and delivers jobs; shared by all workers.

    One :class:`~pdimport.job.importer.Importer` per thread over one journal and
    one spool.
    """

    def __init__(self, cfg: Any, board: StatusBoard, stop: threading.Event) -> None:
        from pdimport.send import parse_dest
        from pdimport.store.journal import Journal
        from pdimport.store.spool import Spool

        self.cfg = cfg
        self.board = board
        self.stop = stop
        state = cfg.state_path
        self.journal = Journal(state / "journal.sqlite")
        self.spool = Spool(state / "spool")
        self.destinations = [parse_dest(d) for d in (cfg.dest or [])]
        from pdimport.record.audit import AuditLog

        self.audit = AuditLog.from_settings(state, cfg, journal=self.journal)
        self._local = threading.local()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def importer(self) -> Any:
        from pdimport.job.importer import Importer

        imp = getattr(self._local, "importer", None)
        if imp is None:
            imp = Importer(
                self.cfg,
                journal=self.journal,
                spool=self.spool,
                on_event=self._on_event,
                audit=self.audit,
            )
            self._local.importer = imp
        return imp

    def _on_event(self, name: str, fields: dict[str, Any]) -> None:
        job = fields.get("job")
        if job:
            self.board.job(
                job,
                event=name,
                **{k: v for k, v in fields.items() if k in ("source", "status", "label")},
            )

    @contextmanager
    def _job_lock(self, job_id: str) -> Iterator[None]:
        # The retry worker and a drive worker may both reach the same job
        # after a restart; delivery of one job never runs twice at once.
        with self._locks_lock:
            lock = self._locks.setdefault(job_id, threading.Lock())
        with lock:
            yield

    def read(
        self, source: str, on_job: Callable[[Any], None] | None = None
    ) -> tuple[Any | None, dict[str, Any] | None]:
        """Phase 1. Returns ``(job, None)``, or ``(None, report)`` when unusable.

        Raises
        ------
        Interrupted
            The daemon is stopping; the job resumes at the next start.
        """
        from pdimport.media import MediumOpenError, open_medium

        imp = self.importer()
        try:
            medium = open_medium(source, self.cfg)
        except MediumOpenError as exc:
            return None, self._unusable(imp, source, exc.code, exc.detail)
        try:
            job = imp.start_job(medium, source, "import")
            log.info(
                "job %s: reading %s%s", job.id, source, f" ({medium.label})" if medium.label else ""
            )
            if on_job is not None:
                on_job(job)
            self.board.job(job.id, state="reading", source=source, label=medium.label or "")
            if not job.read_complete:
                imp.read(job, CancellableMedium(medium, self.stop))
        finally:
            medium.close()
        self.board.job(job.id, state="read")
        return job, None

    @staticmethod
    def _unusable(imp: Any, source: str, code: str, detail: str) -> dict[str, Any]:
        return imp.unusable(source, code, detail, "import").report

    def deliver(self, job_id: str) -> tuple[str, dict[str, Any]]:
        """Phase 2 from the spool; returns ``(outcome, report)``."""
        self.board.job(job_id, state="delivering")
        with self._job_lock(job_id):
            result = self.importer().process(job_id, self.destinations)
        outcome = job_outcome(result.report)
        self.board.job(
            job_id,
            state=outcome,
            status=result.report.get("status"),
            counts=result.report.get("counts", {}),
        )
        status = result.report.get("status")
        if status == "imported":
            log.info("job %s: %s (%s)", job_id, outcome, status)
        else:
            log.info("job %s: %s (%s): %s", job_id, outcome, status, outcome_reason(result.report))
        return outcome, result.report

    def unfinished_read_jobs(self) -> list[str]:
        """Jobs fully read but not finished (interrupted in phase 2)."""
        from pdimport.store.journal import FINAL_STATES

        return [
            j.id
            for j in self.journal.jobs(10_000)
            if j.read_complete and j.state not in FINAL_STATES and j.mode == "import"
        ]

    def close(self) -> None:
        self.journal.close()


# ---------------------------------------------------------- delivery retry
class DeliveryRetrier(threading.Thread):
    """Re-delivers waiting jobs with exponential back-off; survives restarts.

    The waiting set lives in ``STATE_DIR/retry.sqlite`` (the journal records
    a waiting job as partial/failed, a final state).
    """

    def __init__(
        self,
        path: Path,
        runner: JobRunner,
        base: float,
        cap: float,
        stop: threading.Event,
        on_change: Callable[[int], None],
    ) -> None:
        super().__init__(name="delivery-retry", daemon=True)
        self._runner = runner
        self._base, self._cap = base, cap
        self._stop_event = stop
        self._on_change = on_change
        self._cond = threading.Condition()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS waiting (job_id TEXT PRIMARY KEY, "
            "attempts INTEGER NOT NULL, due REAL NOT NULL)"
        )

    def submit(self, job_id: str, now: bool = False) -> None:
        """Queue ``job_id``: at once (``now``) or after the next back-off step."""
        with self._cond:
            row = self._db.execute(
                "SELECT attempts FROM waiting WHERE job_id=?", (job_id,)
            ).fetchone()
            attempts = row[0] + 1 if row else 0
            due = time.time() + (0.0 if now else backoff(attempts, self._base, self._cap))
            self._db.execute(
                "INSERT OR REPLACE INTO waiting VALUES (?,?,?)", (job_id, attempts, due)
            )
            self._cond.notify()
        log.info(
            "job %s waits for delivery (attempt %d in %.1f s)",
            job_id,
            attempts + 1,
            max(0.0, due - time.time()),
        )
        self._on_change(self.size())

    def forget(self, job_id: str) -> None:
        with self._cond:
            self._db.execute("DELETE FROM waiting WHERE job_id=?", (job_id,))
        self._on_change(self.size())

    def size(self) -> int:
        with self._cond:
            return self._db.execute("SELECT COUNT(*) FROM waiting").fetchone()[0]

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def run(self) -> None:
        while not self._stop_event.is_set():
            job_id = self._next_due()
            if job_id is None:
                continue
            try:
                outcome, _ = self._runner.deliver(job_id)
            except Exception:
                log.exception("retry of job %s failed", job_id)
                outcome = "waiting"
            if self._stop_event.is_set() and outcome == "waiting":
                return
            if outcome == "waiting":
                self.submit(job_id)
            else:
                log.info("job %s: the destination answered again (%s)", job_id, outcome)
                self.forget(job_id)

    def _next_due(self) -> str | None:
        with self._cond:
            row = self._db.execute(
                "SELECT job_id, due FROM waiting ORDER BY due LIMIT 1"
            ).fetchone()
            if row is None:
                self._cond.wait()
                return None
            delay = row[1] - time.time()
            if delay > 0:
                self._cond.wait(delay)
                return None
            return row[0]

    def close(self) -> None:
        with self._cond:
            self._db.close()


# ------------------------------------------------------------ drive worker
class DriveWorker(threading.Thread):
    """One drive: its lifecycle, its reads, its eject. Owns its state alone."""

    def __init__(self, event: udev.MediaEvent, app: Daemon) -> None:
        super().__init__(name=f"drive:{event.kernel}", daemon=True)
        self.devnode = event.devnode
        self.kernel = event.kernel
        self.bus = event.bus
        self.app = app
        self.inbox: queue.SimpleQueue[udev.MediaEvent | None] = queue.SimpleQueue()
        self.eject_requested = threading.Event()
        self.lifecycle = drive_lifecycle(self.devnode, [app.board.on_transition])
        self._mounted: Path | None = None
        app.board.drive(self.devnode, state=EMPTY, bus=self.bus)

    def run(self) -> None:
        while True:
            event = self.inbox.get()
            if event is None or self.app.stop.is_set():
                return
            try:
                self.handle(event)
            except Interrupted:
                log.info("%s: stopped mid-read; the job resumes at the next start", self.devnode)
                return
            except Exception as exc:
                log.exception("%s: %s", self.devnode, exc)  # noqa: TRY401  the message line alone names the cause in journald
                self._fail(f"internal error: {exc}")

    def handle(self, event: udev.MediaEvent) -> None:
        if event.kind in udev.MEDIUM_KINDS:
            self._medium(event)
        elif event.kind == udev.EJECT_BUTTON:
            self._eject_button()
        elif event.kind in (udev.NO_MEDIA, udev.REMOVED):
            self._removed()

    # -------------------------------------------------------------- events
    def _removed(self) -> None:
        if self._mounted is not None:
            drives.unmount(self._mounted)
            self._mounted = None
        if self.lifecycle.can("removed"):
            self.lifecycle.fire("removed")

    def _eject_button(self) -> None:
        # Reading or delivering: the flag is honoured right after the read.
        if self.lifecycle.state in (EMPTY, INSERTED, READ, FAILED):
            self.eject_requested.clear()
            self.lifecycle.fire("eject", reason="button")
            self._eject()

    def _medium(self, event: udev.MediaEvent) -> None:
        if self.lifecycle.state == FAILED:
            self.lifecycle.fire("reset")  # a new medium: the old failure is history
        if self.lifecycle.state != EMPTY:
            log.warning("%s: new medium while %s; ignored", self.devnode, self.lifecycle.state)
            return
        self.eject_requested.clear()
        self.lifecycle.fire(
            "insert",
            diskseq=event.diskseq or 0,
            label=event.label,
            kind=event.kind,
            job="",
            detail="",
        )
        if event.kind in (udev.BLANK, udev.AUDIO):
            self._unreadable_disc(event)
            return
        source = self._prepare(event)
        if source is None:
            return
        self._read_and_deliver(source)

    def _unreadable_disc(self, event: udev.MediaEvent) -> None:
        what = "blank disc" if event.kind == udev.BLANK else "audio CD"
        log.warning("%s: %s, nothing to import; ejecting", self.devnode, what)
        self.app.write_drive_report(self.kernel, event, what)
        self.lifecycle.fire("eject", detail=what)
        self._eject()

    def _prepare(self, event: udev.MediaEvent) -> str | None:
        """The source to read: the device, or the USB mount point."""
        if self.bus == "optical" and not self._confirm_disc():
            self.lifecycle.fire("removed", detail="no disc after all")
            return None
        if self.bus != "usb":
            return self.devnode
        target = drives.mount_point(self.app.cfg.state_path, self.kernel)
        result = drives.mount_readonly(self.devnode, target, event.fs_type)
        if not result.ok:
            self._fail(f"cannot mount: {result.detail}")
            return None
        self._mounted = target
        return str(target)

    def _confirm_disc(self) -> bool:
        """``CDROM_DRIVE_STATUS``: the udev event may be stale by now."""
        for _ in range(10):
            status = drives.drive_status(self.devnode, ioctl=self.app.ioctl)
            if status == drives.CDS_DISC_OK or status == -1:
                return True  # -1: status unknown; the read itself will tell
            if status != drives.CDS_DRIVE_NOT_READY:
                return False
            # Spinning up: the drive says "not ready" for a few seconds.
            if self.app.stop.wait(1.0):
                return False
        return False

    # ------------------------------------------------------------- the job
    def _read_and_deliver(self, source: str) -> None:
        if self.bus == "optical":
            drives.lock_tray(self.devnode, True, ioctl=self.app.ioctl)
        self.lifecycle.fire("start_read")
        try:
            job, report = self.app.runner.read(
                source, on_job=lambda j: self.app.board.drive(self.devnode, job=j.id)
            )
        finally:
            if self._mounted is not None and self.app.stop.is_set():
                drives.unmount(self._mounted)
                self._mounted = None
        if job is None:
            self.lifecycle.fire("read_failed", detail=_first_problem(report))
            self.lifecycle.fire("eject")
            self._label(report)
            self._eject()
            return
        self.lifecycle.fire("read_done", job=job.id)
        early = self.app.eject_after == "read" or self.eject_requested.is_set()
        if early:
            self.lifecycle.fire("eject", reason="read")
            self._eject()
            self._label(self._deliver(job.id))
            return
        self.lifecycle.fire("deliver")
        report = self._deliver(job.id)
        self.lifecycle.fire("delivered")
        self._label(report)
        self._eject()

    def _deliver(self, job_id: str) -> dict[str, Any] | None:
        if self.app.stop.is_set():
            return None  # recovered from the journal at the next start
        report = None
        try:
            outcome, report = self.app.runner.deliver(job_id)
        except Exception:
            log.exception("%s: delivery of %s failed", self.devnode, job_id)
            outcome = "waiting"
        if outcome == "waiting":
            self.app.retrier.submit(job_id)
            if report is not None:
                report = dict(report, delivery="queued")
        self.app.board.drive(self.devnode, last=f"{job_id} {outcome}")
        return report

    def _audit(self, event: str, **fields: Any) -> None:
        try:
            self.app.runner.audit.append(
                event,
                drive=self.devnode,
                job=self.app.board.snapshot()["drives"].get(self.devnode, {}).get("job"),
                **fields,
            )
        except OSError:
            log.exception("%s: audit record %s failed", self.devnode, event)

    def _label(self, report: dict[str, Any] | None) -> None:
        """Print the status label as the disc comes out. A printer failure is
        recorded and shown in ``pdimport status``; it never stops the drive."""
        if not report or self.app.stop.is_set():
            return
        from pdimport.label.printer import print_label

        result = print_label(report, self.app.cfg, drive=self.devnode)
        self.app.board.drive(self.devnode, label=result.as_dict())
        try:
            self.app.runner.audit.append(
                "label_printed",
                job=report.get("job"),
                drive=self.devnode,
                ok=result.ok,
                detail=result.detail,
            )
        except OSError:
            log.exception("%s: audit record of the label failed", self.devnode)

    def _eject(self) -> None:
        """Eject by bus; the lifecycle is in ``ejecting``."""
        self.eject_requested.clear()
        if self.bus == "optical":
            result = drives.eject_optical(
                self.devnode,
                ioctl=self.app.ioctl,
                retries=int(_setting(self.app.cfg, "eject_retries")),
                stop=self.app.stop,
            )
        elif self.bus == "loop":
            result = drives.detach_loop(self.devnode)
        else:
            target = self._mounted or drives.mount_point(self.app.cfg.state_path, self.kernel)
            result = drives.release_usb(self.devnode, self.kernel, target)
            self._mounted = None
        if result.ok:
            if self.lifecycle.state == EJECTING:
                self.lifecycle.fire("ejected", detail=result.detail)
            self._audit("medium_ejected", ok=True, detail=result.detail)
        else:
            log.error("%s: eject failed: %s", self.devnode, result.detail)
            self._audit("medium_ejected", ok=False, detail=result.detail)
            if self.lifecycle.can("fail"):
                self.lifecycle.fire("fail", detail=f"eject failed: {result.detail}")

    def _fail(self, detail: str) -> None:
        log.error("%s: %s", self.devnode, detail)
        if self.lifecycle.can("fail"):
            self.lifecycle.fire("fail", detail=detail)
        if self.lifecycle.state == READING and self.bus == "optical":
            drives.lock_tray(self.devnode, False, ioctl=self.app.ioctl)


def outcome_reason(report: dict[str, Any]) -> str:
    """Why a job did not end imported, in one line: its hold reasons, or the
    first problem of each distinct code (not one line per instance)."""
    if report.get("hold_reasons"):
        return "held for " + ", ".join(report["hold_reasons"])
    first: dict[str, str] = {}
    counts: dict[str, int] = {}
    for problem in report.get("problems") or []:
        code = problem.get("code", "")
        counts[code] = counts.get(code, 0) + 1
        first.setdefault(code, problem.get("detail", ""))
    if not first:
        return "no problem recorded"
    return "; ".join(
        f"{code} x{counts[code]}: {detail}" if counts[code] > 1 else f"{code}: {detail}"
        for code, detail in first.items()
    )


def _first_problem(report: dict[str, Any] | None) -> str:
    problems = (report or {}).get("problems") or [{}]
    return f"{problems[0].get('code', '')}: {problems[0].get('detail', '')}"


# ------------------------------------------------------------------ router
class Router(threading.Thread):
    """Debounces udev events and hands each settled one to its drive worker."""

    def __init__(self, app: Daemon, quiet: float) -> None:
        super().__init__(name="router", daemon=True)
        self.app = app
        self.inbox: queue.SimpleQueue[udev.MediaEvent | None] = queue.SimpleQueue()
        self.debouncer = udev.Debouncer(quiet)

    def run(self) -> None:
        while True:
            deadline = self.debouncer.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                event = self.inbox.get(timeout=timeout)
            except queue.Empty:
                event = ...  # type: ignore[assignment]  # Ellipsis: a deadline passed
            if event is None:
                return
            now = time.monotonic()
            ready = [] if event is ... else self.debouncer.offer(event, now)
            for settled in ready + self.debouncer.due(now):
                self.app.dispatch(settled)


# ------------------------------------------------------------------ daemon
class Daemon:
    """The appliance. ``Daemon(cfg).run()`` returns the exit status.

    Parameters
    ----------
    cfg : Settings
        The frozen settings.
    ioctl : callable, optional
        Replaces :func:`fcntl.ioctl` for the optical drive edge (tests).
    notifier : Notifier, optional
        sd_notify sender; built from the environment by default.
    """

    def __init__(self, cfg: Any, ioctl: Any = None, notifier: Notifier | None = None) -> None:
        import fcntl

        self.cfg = cfg
        self.ioctl = ioctl or fcntl.ioctl
        self.notifier = notifier or Notifier()
        self.stop = threading.Event()
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        cfg.state_path.mkdir(parents=True, exist_ok=True)
        self.board = StatusBoard(cfg.state_path / "status.json", self.notifier)
        self.eject_after = _setting(cfg, "eject_after")
        self.patterns = list(_setting(cfg, "devices"))
        self.workers: dict[str, DriveWorker] = {}
        self._workers_lock = threading.Lock()
        self.runner = JobRunner(cfg, self.board, self.stop)
        self.retrier = DeliveryRetrier(
            cfg.state_path / "retry.sqlite",
            self.runner,
            float(_setting(cfg, "network.retry_delay", 2.0)),
            float(_setting(cfg, "retry_max_delay")),
            self.stop,
            lambda n: self.board.queue("retry", n),
        )
        self.router = Router(self, float(_setting(cfg, "debounce")))
        self.udev: udev.UdevSource | None = None
        self.watch: WatchFolder | None = None
        self._watch_ledger: WatchLedger | None = None

    # ---------------------------------------------------------- lifecycle
    def run(self, install_signals: bool = True) -> int:
        if install_signals:
            self._install_signals()
        try:
            self._start()
        except Exception as exc:
            log.exception("daemon start failed")
            self.notifier.notify(f"STATUS=start failed: {exc}")
            self._shutdown()
            return 1
        self.notifier.ready(self.board.line())
        log.info("pdimport daemon ready: %s", self.board.line())
        self._main_loop()
        self._shutdown()
        return 0

    def request_stop(self) -> None:
        """Thread-safe and reentrant (SimpleQueue.put): usable from a signal handler."""
        self.events.put(("signal", signal.SIGTERM))

    def _install_signals(self) -> None:
        def enqueue(signum: int, _frame: Any) -> None:
            self.events.put(("signal", signum))  # only enqueue; the main loop acts

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, enqueue)

    def _start(self) -> None:
        udev.ensure_media_polling()
        if not self.runner.destinations:
            log.warning("no destination configured (--dest): jobs will be read and held")
        self.retrier.start()
        self._recover()
        self.router.start()
        if self.patterns:
            self.udev = udev.UdevSource(self.patterns, self.router.inbox.put)
            self.udev.start()
        watch_dir = _setting(self.cfg, "watch")
        if watch_dir:
            self._watch_ledger = WatchLedger(self.cfg.state_path / "watch.sqlite")
            self.watch = WatchFolder(
                Path(watch_dir),
                self._watch_import,
                self._watch_ledger,
                float(_setting(self.cfg, "watch_settle")),
                on_change=self._watch_changed,
            )
            self.watch.start()

    def _recover(self) -> None:
        """Jobs fully read before a stop continue from the spool at once."""
        for job_id in self.runner.unfinished_read_jobs():
            log.info("resuming delivery of job %s from the spool", job_id)
            self.retrier.submit(job_id, now=True)
        self.board.queue("retry", self.retrier.size())

    def _main_loop(self) -> None:
        interval = self.notifier.watchdog_interval()
        next_ping = time.monotonic()
        while True:
            timeout = None if interval is None else max(0.0, next_ping - time.monotonic())
            try:
                kind, value = self.events.get(timeout=timeout)
            except queue.Empty:
                kind, value = "tick", None
            if interval is not None and time.monotonic() >= next_ping:
                self.notifier.watchdog(self.all_alive)
                next_ping = time.monotonic() + interval
            if kind == "signal" and value in (signal.SIGTERM, signal.SIGINT):
                log.info("signal %s: stopping", signal.Signals(value).name)
                return
            if kind == "signal" and value == signal.SIGHUP:
                # Settings are frozen for the process life; HUP republishes state.
                self.notifier.reloading()
                self.board.publish()
                self.notifier.ready(self.board.line())

    def all_alive(self) -> bool:
        """True while every long-lived worker thread runs."""
        threads: list[Any] = [self.retrier, self.router]
        with self._workers_lock:
            threads.extend(self.workers.values())
        alive = all(t.is_alive() for t in threads)
        if self.udev is not None:
            alive = alive and self.udev.is_alive()
        if self.watch is not None:
            alive = alive and self.watch.is_alive()
        return alive

    def _shutdown(self) -> None:
        deadline = time.monotonic() + float(_setting(self.cfg, "stop_timeout"))
        self.notifier.stopping("stopping: finishing or checkpointing jobs")
        self.stop.set()
        if self.udev is not None:
            self.udev.stop()
        self.router.inbox.put(None)
        self.retrier.wake()
        with self._workers_lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.inbox.put(None)
        if self.watch is not None:
            self.watch.stop(timeout=max(0.1, deadline - time.monotonic()))
        for thread in [self.router, self.retrier, *workers]:
            if thread.is_alive():
                thread.join(max(0.1, deadline - time.monotonic()))
        stuck = [t.name for t in [self.router, self.retrier, *workers] if t.is_alive()]
        if stuck:
            # A delivery in flight: every acknowledged instance is in the
            # journal already; the rest is sent at the next start.
            log.warning("leaving without waiting for: %s", ", ".join(stuck))
        self.board.publish()  # the last snapshot stays for `pdimport status`
        self.notifier.close()

    # ------------------------------------------------------------- routing
    def dispatch(self, event: udev.MediaEvent) -> None:
        """A settled udev event: to its drive's worker (started on first use)."""
        with self._workers_lock:
            worker = self.workers.get(event.devnode)
            if worker is None:
                if event.kind not in udev.MEDIUM_KINDS:
                    return  # nothing to do for a drive we never saw with media
                worker = DriveWorker(event, self)
                self.workers[event.devnode] = worker
                worker.start()
        if event.kind == udev.EJECT_BUTTON:
            worker.eject_requested.set()
        worker.inbox.put(event)

    # --------------------------------------------------------- watch folder
    def _watch_changed(self) -> None:
        if self.watch is not None:
            self.board.queue("watch", self.watch.pending())

    def _watch_import(self, path: Path) -> WatchResult | None:
        try:
            job, report = self.runner.read(str(path))
        except Interrupted:
            return None
        if job is None:
            return WatchResult(WATCH_FAILED, report or {})
        if self.stop.is_set():
            return None
        outcome, report = self.runner.deliver(job.id)
        if outcome == "waiting":
            self.retrier.submit(job.id)
            report = dict(report, delivery="queued")
        return WatchResult(DONE if outcome in ("done", "waiting") else WATCH_FAILED, report)

    def write_drive_report(self, kernel: str, event: udev.MediaEvent, what: str) -> None:
        """A disc with nothing to import still leaves a report."""
        reports = self.cfg.state_path / "reports"
        reports.mkdir(parents=True, exist_ok=True)
        doc = {
            "job": None,
            "source": {"kind": "device", "path": event.devnode, "label": event.label},
            "status": "failed",
            "counts": {},
            "problems": [
                {
                    "code": "blank_medium" if what == "blank disc" else "audio_cd",
                    "path": event.devnode,
                    "detail": what,
                }
            ],
        }
        _write_atomic(
            reports / f"{kernel}-{event.diskseq or 0}.json",
            json.dumps(doc, indent=1, ensure_ascii=False),
        )


# ------------------------------------------------------------- entry points
def daemon_main(cfg: Any) -> int:
    """``pdimport daemon``: run the appliance until SIGTERM; exit status.

    Logging is configured by the entry point (:mod:`pdimport.logs`). One
    daemon per state directory: a second one exits with ``EXIT_LOCKED``.
    """
    try:
        lock = DaemonLock(cfg.state_path)
    except AlreadyRunning as exc:
        log.error("%s", exc)
        return EXIT_LOCKED
    with lock:
        try:
            daemon = Daemon(cfg)
        except Exception as exc:  # noqa: BLE001 - e.g. a bad destination URL
            log.error("cannot start: %s", exc)
            return 2
        try:
            return daemon.run()
        finally:
            daemon.runner.close()


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
        print(f"  job {job_id} {job.get('state', '?')} {job.get('source', '')}".rstrip())
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
