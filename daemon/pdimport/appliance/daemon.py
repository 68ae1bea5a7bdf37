"""The appliance: drives and a watch folder feeding the import pipeline.

Threads (each blocks on its own queue; none sleep-polls):

* ``udev-monitor`` (pyudev) classifies block events and hands them to the
  ``router``, which de-duplicates and debounces them (:mod:`pdimport.appliance.udev`)
  and passes each settled event to the drive's worker;
* one ``drive:<name>`` worker per drive runs that drive's lifecycle
  (:mod:`pdimport.job.lifecycle`): confirm the medium, lock the tray, read it into
  the spool, deliver, eject. A slow or failing disc delays only its own drive;
* ``watch-folder`` imports dropped ISO images, zip packages and folders;
* ``qido-poller`` turns the studies a QIDO-RS search finds into jobs
  (:mod:`pdimport.web.poller`, when ``intake.qido_url`` is set);
* ``delivery-retry`` re-delivers jobs whose destination was down, with
  exponential back-off, until the PACS answers;
* ``console`` serves the operator console (:mod:`pdimport.console`) under
  uvicorn; it reads the status board's snapshot, never the workers' queues;
* the main thread only waits for signals (the handlers just enqueue) and pets
  the systemd watchdog while every worker lives.

On SIGTERM the readers stop at the next chunk (the journal and the spool keep
what was read; the next start re-reads only what is missing), deliveries in
flight get a grace period (each acknowledged instance is already in the
journal), and the process exits 0 within ``stop_timeout`` seconds.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pdimport.appliance import udev
from pdimport.appliance.cancellable import CancellableMedium
from pdimport.appliance.control import ControlListener
from pdimport.appliance.drive_worker import DriveWorker, outcome_reason
from pdimport.appliance.group import GroupMember, content_lock
from pdimport.appliance.intake import Intake, reachable
from pdimport.appliance.lock import EXIT_LOCKED, AlreadyRunning, DaemonLock
from pdimport.appliance.retry import DeliveryRetrier
from pdimport.appliance.status import StatusBoard
from pdimport.appliance.systemd import Notifier
from pdimport.appliance.watchfolder import WatchFolder, WatchLedger, WatchResult
from pdimport.console.app import ConsoleDeps
from pdimport.console.server import ConsoleServer
from pdimport.job.holdqueue import execute, purge_discarded
from pdimport.job.importer import Importer, JobResult
from pdimport.job.lifecycle import FINAL_JOB_STATES, Interrupted, JobState
from pdimport.job.prescan import PrescanStore
from pdimport.record.audit import AuditLog
from pdimport.send import parse_dest
from pdimport.store.db import POSTGRESQL, JournalUnavailable
from pdimport.store.fsutil import DiskFull, atomic_write
from pdimport.store.journal import Job, open_journal
from pdimport.store.spool import Spool
from pdimport.web.poller import QidoLedger, QidoPoller

log = logging.getLogger(__name__)

_PURGE_EVERY = 86400.0
#: Seconds between two looks at the free space (a paused intake opens again).
_INTAKE_EVERY = 5.0


# -------------------------------------------------------------- job runner
_T = TypeVar("_T")


def _probe_write(state: Path) -> None:
    """A small durable write in the state directory: the disk takes writes."""
    with atomic_write(state / ".intake-probe") as fp:
        fp.write(b"\0" * 65536)


class JobRunner:
    """The daemon's jobs: one journal, one spool, one audit trail and one
    prescan store, shared by every worker thread; an
    :class:`~pdimport.job.importer.Importer` per thread runs the job itself.

    The status board follows the journal: it hears every job transition.
    """

    def __init__(self, cfg: Any, board: StatusBoard, stop: threading.Event) -> None:
        self.cfg = cfg
        self.board = board
        self.stop = stop
        state = cfg.state_path
        self.journal = open_journal(cfg)
        self.journal.subscribe(board.on_job_transition)
        self.spool = Spool(state / "spool")
        self.destinations = [parse_dest(d) for d in (cfg.dest or [])]
        self.audit = AuditLog.from_settings(state, cfg, journal=self.journal)
        self.prescans = PrescanStore()
        self.intake = Intake(
            board.intake,
            self.spool.root,
            int(cfg.get("spool.min_free_mb")) << 20,
            lambda: _probe_write(state),
            lambda: reachable(self.journal),
        )
        self._local = threading.local()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def importer(self) -> Importer:
        imp = getattr(self._local, "importer", None)
        if imp is None:
            imp = Importer(
                self.cfg,
                journal=self.journal,
                spool=self.spool,
                audit=self.audit,
                prescans=self.prescans,
                stop=self.stop,
                progress=lambda job_id, fields: self.board.job(job_id, progress=fields),
            )
            self._local.importer = imp
        return imp

    @contextmanager
    def _job_lock(self, job_id: str) -> Iterator[None]:
        # The retry worker and a drive worker may both reach the same job
        # after a restart; delivery of one job never runs twice at once.
        with self._locks_lock:
            lock = self._locks.setdefault(job_id, threading.Lock())
        with lock:
            yield

    def read(self, source: str, on_job: Callable[[Job], None] | None = None) -> Job | JobResult:
        """Phase 1: the job, read; or the result of a failed job when the
        source cannot be opened.

        Raises
        ------
        Interrupted
            The daemon is stopping; the job resumes at the next start.
        """

        def started(job: Job) -> None:
            self.board.job(job.id, source=source, label=job.label)
            if on_job is not None:
                on_job(job)

        # A group's station delivers under a lock on the content of the whole
        # medium (two copies of a disc go once), so it cannot send while reading.
        early = self.destinations if self.journal.db.dialect != POSTGRESQL else None
        job = self._gated(
            lambda: self.importer().read_source(
                source,
                "import",
                wrap=lambda m: CancellableMedium(m, self.stop),
                on_job=started,
                destinations=early,
            )
        )
        if isinstance(job, JobResult):  # could not be opened: a failed job all the same
            self.board.job(job.job_id, source=source)
        return job

    def deliver(self, job_id: str) -> JobResult:
        """Phase 2 from the spool.

        Raises
        ------
        Interrupted
            The daemon is stopping mid-delivery; the job resumes at the next start.
        """
        with self._job_lock(job_id):
            done = self.journal.job(job_id)
            report = self.journal.report(job_id) if done is not None else None
            if done is not None and done.state == JobState.IMPORTED and report is not None:
                # delivered meanwhile (the retry worker and the watch folder both
                # resume a job after a crash): nothing is left to do
                return JobResult(job_id, report)
            with content_lock(self.journal.db, job_id):  # a copy at another station
                result = self._gated(lambda: self.importer().process(job_id, self.destinations))
        self.board.job(job_id, counts=result.report.get("counts", {}))
        if result.state == JobState.IMPORTED:
            log.info("job %s: %s", job_id, result.state)
        else:
            log.info("job %s: %s: %s", job_id, result.state, outcome_reason(result.report))
        return result

    def _gated(self, step: Callable[[], _T]) -> _T:
        """Run a read or a delivery when intake is open; a full disk pauses
        intake and the step waits, then runs again (resuming its job from
        the spool and the journal): a disc stays in its drive meanwhile.

        Raises
        ------
        Interrupted
            The daemon stops while the step waits.
        """
        while True:
            self.intake.recheck()  # the low-water mark, before anything is taken
            if not self.intake.wait_open(self.stop):
                raise Interrupted()
            try:
                return step()
            except DiskFull as exc:
                self.intake.pause(exc.detail)
            except JournalUnavailable as exc:  # the group's database is down: wait for it
                self.intake.pause(exc.detail, exc.code)

    def unusable(self, source: str, code: str, detail: str) -> JobResult:
        """A medium with nothing to read (blank, audio) as a failed job."""
        result = self.importer().unusable(source, code, detail)
        self.board.job(result.job_id, source=source)
        return result

    def unfinished_read_jobs(self) -> list[str]:
        """Jobs fully read but not finished (interrupted in phase 2)."""
        return [
            j.id
            for j in self.journal.jobs(10_000)
            if j.read_complete and j.state not in FINAL_JOB_STATES and j.mode == "import"
        ]

    def close(self) -> None:
        self.journal.close()


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
        self.eject_after = cfg.get("eject_after")
        self.patterns = list(cfg.get("devices"))
        self.workers: dict[str, DriveWorker] = {}
        self._workers_lock = threading.Lock()
        self.runner = JobRunner(cfg, self.board, self.stop)
        self.retrier = DeliveryRetrier(
            cfg.state_path / "retry.sqlite",
            self.runner.deliver,
            float(cfg.get("network.retry_delay")),
            float(cfg.get("retry_max_delay")),
            self.stop,
            lambda n: self.board.queue("retry", n),
        )
        self.router = Router(self, float(cfg.get("debounce")))
        self.udev: udev.UdevSource | None = None
        self.watch: WatchFolder | None = None
        self._watch_ledger: WatchLedger | None = None
        self.qido: QidoPoller | None = None
        self.control: ControlListener | None = None
        self.console: ConsoleServer | None = None
        self.group: GroupMember | None = None

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
        if self.cfg.get("console.enabled"):
            # First: a console refused (no TLS off loopback, port taken) stops
            # the start before any medium is touched.
            self.console = ConsoleServer(
                ConsoleDeps(
                    self.cfg,
                    self.board.snapshot,
                    self.runner.importer,
                    after_decision=self.job_changed_elsewhere,
                    retry=lambda job_id: self.retrier.submit(job_id, now=True),
                    watch=self.board.watch,
                )
            ).start()
        udev.ensure_media_polling()
        if not self.runner.destinations:
            log.warning("no destination configured (--dest): jobs will be read and held")
        self.retrier.start()
        self.control = ControlListener(self.cfg.state_path, self.job_changed_elsewhere)
        self.control.start()
        self._recover()
        self.router.start()
        if self.patterns:
            self.udev = udev.UdevSource(self.patterns, self.router.inbox.put)
            self.udev.start()
        if self.runner.journal.db.dialect == POSTGRESQL:  # one of a hospital group's stations
            journal = self.runner.journal
            self.group = GroupMember(journal, self._decide, self.board.snapshot, self.stop)
            self.group.start()
        watch_dir = self.cfg.get("watch")
        if watch_dir:
            self._watch_ledger = WatchLedger(self.cfg.state_path / "watch.sqlite")
            self.watch = WatchFolder(
                Path(watch_dir),
                self._watch_import,
                self._watch_ledger,
                float(self.cfg.get("watch_settle")),
                on_change=self._watch_changed,
                reports=self.runner.journal.report,
                claims=self.group.claims if self.group is not None else None,
            )
            watch = self.watch
            self.runner.journal.subscribe(lambda t: watch.job_changed(t.machine, t.target))
            self.watch.start()
        if self.cfg.get("intake.qido_url"):  # DICOMweb studies: jobs as watch-folder entries
            ledger = QidoLedger(self.cfg.state_path / "qido.sqlite")
            self.qido = QidoPoller(self.cfg, ledger, self._watch_import, self.stop)
            self.qido.start()

    def _recover(self) -> None:
        """Jobs fully read before a stop continue from the spool at once."""
        for job_id in self.runner.unfinished_read_jobs():
            log.info("resuming delivery of job %s from the spool", job_id)
            self.retrier.submit(job_id, now=True)
        self.board.queue("retry", self.retrier.size())

    def _main_loop(self) -> None:
        interval = self.notifier.watchdog_interval()
        next_ping = time.monotonic()
        next_purge = time.monotonic()  # at start, then once a day
        next_intake = time.monotonic() + _INTAKE_EVERY
        while True:
            due = (
                min(next_purge, next_intake)
                if interval is None
                else min(next_ping, next_purge, next_intake)
            )
            try:
                kind, value = self.events.get(timeout=max(0.0, due - time.monotonic()))
            except queue.Empty:
                kind, value = "tick", None
            if interval is not None and time.monotonic() >= next_ping:
                self.notifier.watchdog(self.all_alive)
                next_ping = time.monotonic() + interval
            if time.monotonic() >= next_purge:
                self._purge()
                next_purge = time.monotonic() + _PURGE_EVERY
            if time.monotonic() >= next_intake:
                self.runner.intake.recheck()  # a paused intake opens once space is back
                next_intake = time.monotonic() + _INTAKE_EVERY
            if kind == "signal" and value in (signal.SIGTERM, signal.SIGINT):
                log.info("signal %s: stopping", signal.Signals(value).name)
                return
            if kind == "signal" and value == signal.SIGHUP:
                # Settings are frozen for the process life; HUP republishes state.
                self.notifier.reloading()
                self.board.publish()
                self.notifier.ready(self.board.line())

    def _purge(self) -> None:
        """Discarded media leave the spool after ``spool.retention_days``."""
        try:
            n = purge_discarded(
                self.runner.journal,
                self.runner.spool,
                float(self.cfg.get("spool.retention_days")),
                time.time(),
            )
        except OSError:
            log.exception("purge of discarded media failed")
            return
        if n:
            log.info("purged %d spooled file(s) of discarded media", n)

    def all_alive(self) -> bool:
        """True while every long-lived worker thread runs."""
        threads: list[Any] = [self.retrier, self.router]
        if self.control is not None:
            threads.append(self.control)
        if self.console is not None:
            threads.append(self.console)
        if self.group is not None:
            threads.append(self.group)
        with self._workers_lock:
            threads.extend(self.workers.values())
        alive = all(t.is_alive() for t in threads)
        if self.udev is not None:
            alive = alive and self.udev.is_alive()
        if self.watch is not None:
            alive = alive and self.watch.is_alive()
        if self.qido is not None:
            alive = alive and self.qido.is_alive()
        return alive

    def _shutdown(self) -> None:
        deadline = time.monotonic() + float(self.cfg.get("stop_timeout"))
        self.notifier.stopping("stopping: finishing or checkpointing jobs")
        self.stop.set()
        if self.udev is not None:
            self.udev.stop()
        self.router.inbox.put(None)
        self.retrier.wake()
        if self.group is not None:
            self.group.close()
        with self._workers_lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.inbox.put(None)
        if self.watch is not None:
            self.watch.stop(timeout=max(0.1, deadline - time.monotonic()))
        if self.control is not None:
            self.control.stop(max(0.1, deadline - time.monotonic()))
        if self.console is not None:
            self.console.stop(max(0.1, deadline - time.monotonic()))
        threads = [self.router, self.retrier, *workers, *([self.qido] if self.qido else [])]
        for thread in threads:
            if thread.is_alive():
                thread.join(max(0.1, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
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

    def _watch_import(self, path: Path | str) -> WatchResult | None:
        try:
            job = self.runner.read(str(path))
        except Interrupted:
            return None
        if isinstance(job, JobResult):
            return WatchResult(job.job_id, job.state, job.report)
        if self.stop.is_set():
            return None
        try:
            result = self.deliver(job.id)
        except Interrupted:
            return None
        return WatchResult(result.job_id, result.state, result.report)

    def deliver(self, job_id: str) -> JobResult:
        """Deliver a read job; one the destination did not take goes to the
        retry worker. The result's report is the job's report as it stands.

        Raises
        ------
        Interrupted
            The daemon is stopping mid-delivery (the job resumes at the next start).
        """
        result = self.runner.deliver(job_id)
        if result.state == JobState.WAITING_FOR_DESTINATION:
            self.retrier.submit(job_id)
        return result

    def job_changed_elsewhere(self, job_id: str) -> None:
        """Another process (a person's release or discard) changed a job:
        the status board, the watch folder and the retry queue follow."""
        job = self.runner.journal.job(job_id)
        if job is None:
            return
        log.info("job %s is %s now (changed by another process)", job_id, job.state)
        self.board.job(job_id, state=job.state)
        if self.watch is not None:
            self.watch.job_changed(job_id, job.state)
        if job.state == JobState.WAITING_FOR_DESTINATION:
            self.retrier.submit(job_id)

    def _decide(self, decision: Any) -> dict[str, Any]:
        """A decision queued for this station (it holds the job's spool)."""
        with self.runner._job_lock(decision.job):
            result = execute(self.runner.importer(), decision, list(self.cfg.dest or []))
        self.job_changed_elsewhere(decision.job)
        return result

    def unreadable_medium(self, event: udev.MediaEvent, what: str) -> JobResult:
        """A disc with nothing to import (blank, audio) is a failed job with
        a report, as any other medium that cannot be read."""
        code = "blank_medium" if event.kind == udev.BLANK else "audio_cd"
        return self.runner.unusable(event.devnode, code, what)


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
