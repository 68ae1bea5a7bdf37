"""One worker thread per drive: confirm the medium, read it, deliver, eject.

A slow or failing disc delays only its own drive. The drive's states are the
drive lifecycle of :mod:`pdimport.job.lifecycle`.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Any, Protocol

from pdimport.appliance import drives, udev
from pdimport.appliance.status import StatusBoard
from pdimport.job.importer import JobResult
from pdimport.job.lifecycle import (
    EJECTING,
    EMPTY,
    FAILED,
    INSERTED,
    READ,
    READING,
    Interrupted,
    drive_lifecycle,
)
from pdimport.label.printer import print_label

log = logging.getLogger(__name__)


class DriveHost(Protocol):
    """What a drive worker needs of the appliance (the daemon is one)."""

    cfg: Any
    ioctl: Any
    stop: threading.Event
    eject_after: str
    board: StatusBoard
    runner: Any  # .read(source, on_job) and .audit
    retrier: Any  # .submit(job_id)

    def deliver(self, job_id: str) -> JobResult: ...

    def unreadable_medium(self, event: udev.MediaEvent, what: str) -> JobResult: ...


# ------------------------------------------------------------ drive worker
class DriveWorker(threading.Thread):
    """One drive: its lifecycle, its reads, its eject. Owns its state alone."""

    def __init__(self, event: udev.MediaEvent, app: DriveHost) -> None:
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
        if udev.is_stale(event):
            log.info("%s: stale medium event (DISKSEQ %s) ignored", self.devnode, event.diskseq)
            return
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
        result = self.app.unreadable_medium(event, what)
        self.lifecycle.fire("eject", detail=what, job=result.job_id)
        self._eject()
        self._label(result.report)

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
            job = self.app.runner.read(
                source, on_job=lambda j: self.app.board.drive(self.devnode, job=j.id)
            )
        finally:
            if self._mounted is not None and self.app.stop.is_set():
                drives.unmount(self._mounted)
                self._mounted = None
        if isinstance(job, JobResult):  # nothing could be read
            self.lifecycle.fire("read_failed", detail=_first_problem(job.report))
            self.lifecycle.fire("eject")
            self._label(job.report)
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
        """The job's report after delivery; None when there is none to print."""
        if self.app.stop.is_set():
            return None  # recovered from the journal at the next start
        try:
            result = self.app.deliver(job_id)
        except Interrupted:
            raise
        except Exception:
            log.exception("%s: delivery of %s failed", self.devnode, job_id)
            self.app.retrier.submit(job_id)
            return None
        self.app.board.drive(self.devnode, last=f"{job_id} {result.state}")
        return result.report

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
                retries=int(self.app.cfg.get("eject_retries")),
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
