"""One medium becomes one job: read → identify & scan → group & check → deliver.

The job runs in two phases so that a disc can leave the drive early:

1. :meth:`Importer.read` copies every file of the medium into the spool, in
   on-medium order, and records each one in the journal. After it, the medium
   is no longer needed.
2. :meth:`Importer.process` works from the journal and the spool only:
   identification, header scan, DICOMDIR cross-check, grouping, the one-patient
   rule, duplicate UIDs, delivery and the report.

Phase 2 must not start before phase 1 ends (a second patient found in the
last file holds the whole medium), but its costly part, identification and
header scan, only needs bytes already in the spool. So :meth:`Importer.read`
feeds every spooled file to a :class:`~pdimport.job.prescan.PrescanWorker`
thread that scans while the drive keeps reading, and the inventory
(:mod:`pdimport.job.inventory`) takes those results instead of scanning again:
the drive should be the only thing an import waits for. The results live in
memory only: after a restart phase 2 scans from the spool, as it always could.
A medium that can be read twice cheaply (a folder, a disc image on a local
disk) is surveyed in place first, and when its decisions allow it, sent from
the spool while it is still read (:mod:`~pdimport.job.overlap`).

The steps live beside this module: :mod:`~pdimport.job.spoolwriter` (phase 1's
writer thread), :mod:`~pdimport.job.prescan`, :mod:`~pdimport.job.inventory`,
:mod:`~pdimport.job.deliver` and :mod:`~pdimport.job.report`. This module is
the one orchestration of a job, used by the CLI and the daemon alike.

A bad file is a recorded problem, never an exception that leaves the job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pdimport.job import overlap
from pdimport.job import report as report_mod
from pdimport.job.deliver import Deliverer, settle
from pdimport.job.inventory import Inventory, InventoryTaker
from pdimport.job.lifecycle import FINAL_JOB_STATES, IllegalTransition, JobEvent, JobState
from pdimport.job.prescan import PrescanStore, PrescanWorker
from pdimport.job.progress import ProgressMeter, ProgressSink
from pdimport.job.readbudget import ReadBudget
from pdimport.job.reconcile import (
    DELIVER,
    DISCARD,
    HOLD,
    Reconciler,
    Settled,
    all_discarded,
)
from pdimport.job.spoolwriter import SpoolWriter
from pdimport.media import MediumOpenError, open_medium, source_key
from pdimport.model import MediumReadError, iter_chunks
from pdimport.policy import rules as policy
from pdimport.policy.group import Instance, group_patients, hold_unidentified
from pdimport.problems import Problem
from pdimport.record.audit import AuditLog
from pdimport.scan import get_scanner
from pdimport.send import parse_dest
from pdimport.settings import Settings
from pdimport.store.fsutil import DiskFull, check_free
from pdimport.store.journal import Job, Journal, open_journal
from pdimport.store.spool import Spool
from pdimport.web.dicomweb import without_credentials

log = logging.getLogger(__name__)

#: Entries between two checks of the spool's free space (statvfs is cheap, not free).
_FREE_CHECK_EVERY = 16

EXIT_OK, EXIT_ATTENTION, EXIT_FAILED, EXIT_USAGE = 0, 1, 2, 64


#: The report status of a delivery, as the event that ends it.
_FINISH = {
    JobState.IMPORTED: JobEvent.DELIVERED,
    JobState.DISCARDED: JobEvent.DISCARD,
    JobState.PARTIAL: JobEvent.PARTIAL,
    JobState.WAITING_FOR_DESTINATION: JobEvent.WAIT,
    JobState.FAILED: JobEvent.FAIL,
}


def _reason(problems: list[dict[str, Any]]) -> str:
    """The distinct problem codes of a report, as a transition's reason."""
    return ",".join(sorted({p["code"] for p in problems}))


@dataclass
class JobResult:
    job_id: str
    report: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return report_mod.exit_code(self.report["status"])

    @property
    def state(self) -> JobState:
        """The job's state once the step that returned this ended."""
        return JobState(self.report["status"])


def disk_full_result(
    source: str, exc: DiskFull, job: Job | None = None, mode: str = "import"
) -> JobResult:
    """The failed result of a job the full disk stopped (``disk_full``),
    built in memory: it can be printed when nothing can be written."""
    log.error("disk full: %s", exc.detail)
    if job is None:  # the job itself could not be recorded
        now = time.time()
        job = Job(
            f"unrecorded-{now:.0f}", "", "unknown", source, "", mode, JobState.FAILED,
            False, now, now,
        )  # fmt: skip
    inv = Inventory(problems=[Problem("disk_full", source, exc.detail)])
    return JobResult(job.id, report_mod.build(job, inv, [], [], mode, failed=True))


class Importer:
    """Runs jobs against one state directory (journal + spool)."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal | None = None,
        spool: Spool | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        audit: AuditLog | None = None,
        prescans: PrescanStore | None = None,
        stop: threading.Event | None = None,
        progress: ProgressSink | None = None,
    ) -> None:
        self.settings = settings
        state = settings.state_path
        state.mkdir(parents=True, exist_ok=True)
        self.journal = journal or open_journal(settings)
        self.spool = spool or Spool(state / "spool")
        self.reports_dir = state / "reports"
        self.reports_dir.mkdir(exist_ok=True)
        self._on_event = on_event
        # The audit trail is not an observer that may fail quietly: a step is
        # only reported done once its record is on disk (fsync'ed).
        self.audit = audit or AuditLog.from_settings(state, settings, journal=self.journal)
        self.scanner = get_scanner(settings.scanner, limits=settings)
        #: scan results of the read, for phase 2 (shared by a runner's importers)
        self.prescans = prescans if prescans is not None else PrescanStore()
        self.stop = stop if stop is not None else threading.Event()
        #: told how far a read or a delivery is (the daemon's status board)
        self.progress = progress
        self._inventory = InventoryTaker(settings, self.journal, self.spool, self.scanner)
        self._deliverer = Deliverer(
            settings, self.journal, self.spool, self.audit_event, self.stop, progress
        )
        self.reconciler = Reconciler(settings, self.journal, self.spool)

    # ------------------------------------------------------------ public
    def run(self, source: str, dests: list[str], mode: str = "import") -> JobResult:
        """Import (or, with ``mode='scan'``, inventory) one source end to end."""
        destinations = [parse_dest(d) for d in dests]
        job: Job | JobResult | None = None
        try:
            job = self.read_source(
                source, mode, destinations=destinations if mode == "import" else None
            )
            if isinstance(job, JobResult):
                return job
            return self.process(job.id, destinations, mode)
        except DiskFull as exc:
            return self.disk_full(source, exc, job if isinstance(job, Job) else None, mode)

    def disk_full(
        self, source: str, exc: DiskFull, job: Job | None = None, mode: str = "import"
    ) -> JobResult:
        """The job the full disk stopped, as a failed result with ``disk_full``:
        recorded in the journal and ``reports/`` when they can still be
        written, on stdout in any case. Nothing read is lost: the spool and
        the journal keep what was committed, and the same command continues
        once there is space."""
        job = exc.job or job
        result = disk_full_result(source, exc, job, mode)
        if job is None:
            return result  # the job itself was never recorded
        try:
            self.journal.save_report(job.id, result.report)
            current = self.journal.job(job.id)
            if current is not None and current.state not in FINAL_JOB_STATES:
                event = JobEvent.READ_FAILED if current.state == JobState.READING else JobEvent.FAIL
                self.journal.transition(job.id, event, "disk_full")
            (self.reports_dir / f"{job.id}.json").write_text(
                report_mod.dumps(result.report), encoding="utf-8"
            )
        except (DiskFull, OSError, IllegalTransition) as again:
            log.error("the report of job %s could not be kept: %s", job.id, again)
        return result

    def read_source(
        self,
        source: str,
        mode: str = "import",
        wrap: Callable[[Any], Any] | None = None,
        on_job: Callable[[Job], None] | None = None,
        destinations: list[Any] | None = None,
    ) -> Job | JobResult:
        """Phase 1 for a source path: open it, start (or resume) its job, read it.

        Returns the job, read completely, or the :class:`JobResult` of a
        failed job when the source cannot be opened at all. ``wrap`` wraps the
        opened medium (the daemon's cancellable reads); ``on_job`` is told the
        job before its read starts. With ``destinations``, a medium that can
        be read twice is delivered while it is read (:mod:`~pdimport.job.overlap`).

        Raises
        ------
        Interrupted
            From ``wrap``'s medium: the process is stopping; the job resumes
            at the next start.
        """
        try:
            medium = open_medium(source, self.settings, workdir=self.spool.tmp)
        except MediumOpenError as exc:  # the report never shows a URL's credentials
            return self.unusable(without_credentials(source), exc.code, exc.detail, mode)
        try:
            job = self.start_job(medium, source, mode)
            log.info(
                "job %s: reading %s%s", job.id, source, f" ({medium.label})" if medium.label else ""
            )
            if on_job is not None:
                on_job(job)
            if not job.read_complete:
                try:
                    self.read(job, wrap(medium) if wrap is not None else medium, destinations)
                except DiskFull as exc:
                    exc.job = job  # for disk_full()
                    raise
        finally:
            medium.close()
        return job

    def start_job(self, medium: Any, source: str, mode: str) -> Job:
        # A remote medium names itself (a normalised URL, no credentials).
        key = getattr(medium, "source_key", "") or source_key(
            medium.kind, source, medium.label, getattr(medium, "size", None)
        )
        source = medium.path if getattr(medium, "source_key", "") else source
        job = self.journal.find_unfinished(key, mode)
        if job is not None:
            log.info("resuming job %s for %s", job.id, source)
            return job
        job = self.journal.create_job(key, medium.kind, source, medium.label or "", mode)
        self.audit_event(
            "medium_inserted", job=job.id, source=source, kind=medium.kind, label=medium.label
        )
        return job

    # ------------------------------------------------------------ phase 1
    def read(self, job: Job, medium: Any, destinations: list[Any] | None = None) -> None:
        """Copy every entry into the spool, in on-medium order; record each.

        Three things overlap so that the drive never waits for the computer:
        this thread only reads the medium; a :class:`~pdimport.job.spoolwriter.SpoolWriter`
        hashes, writes, fsyncs and journals each file; a
        :class:`~pdimport.job.prescan.PrescanWorker`
        identifies and scans each spooled file for :meth:`process`; and for
        ``destinations``, an :class:`~pdimport.job.overlap.EarlyDelivery`
        may send the spooled instances meanwhile.
        """
        if (self.journal.job(job.id) or job).state == JobState.READING:  # crashed mid-read
            self.journal.transition(job.id, JobEvent.INTERRUPTED, "resumed after a stop")
        self.journal.transition(job.id, JobEvent.START_READ)
        done = self.journal.file_map(job.id)
        entries = medium.entries()
        early = overlap.start(self, job, medium, entries, destinations or [])
        meter = ProgressMeter(
            job.id, "reading", len(entries), sum(e.size for e in entries), self.progress
        )
        scanner = PrescanWorker(
            self.scanner,
            self.spool,
            self.prescans.job(job.id),
            on_header=lambda header: meter.note_patient(header.patient_name),
            on_result=early.offer if early is not None else None,
        )
        writer = SpoolWriter(self.spool, self.journal, job.id, scanner.submit)
        scanner.start()
        writer.start()
        finished = False
        budget = ReadBudget.from_settings(self.settings)
        min_free = int(self.settings.get("spool.min_free_mb")) << 20
        try:
            for seq, entry in enumerate(entries):
                rec = done.get(entry.path)
                if (
                    rec
                    and rec.state == "read"
                    and rec.sha256
                    # a remote medium lists no sizes (0): the content hash decides
                    and self.spool.has(rec.sha256, entry.size or None)
                ):
                    writer.already_spooled(entry.path, rec.sha256)  # read before a restart
                    meter.add(files=1, nbytes=entry.size)
                    continue
                if seq % _FREE_CHECK_EVERY == 0:
                    check_free(self.spool.root, min_free)  # DiskFull: the read stops, resumable
                if budget.exhausted:
                    writer.begin(seq, entry)
                    writer.fail("read_abandoned", budget.why())
                    meter.add(files=1, nbytes=entry.size)
                    continue
                self._read_entry(medium, seq, entry, writer, meter, budget)
            finished = True
            meter.finish()
        finally:
            # Interrupted (daemon stopping) or failed: the file being copied
            # is dropped and queued scans are abandoned; the resumed read
            # copies that file again and phase 2 scans what is missing.
            try:
                writer.close(finish=finished)
            finally:
                scanner.close(drain=finished and writer.error is None)
                if early is not None:
                    early.close(cancel=not finished)
                    self.prescans.note_sent(job.id, early.sent)
        problems = [*medium.problems, *(early.problems if early is not None else [])]
        self.journal.replace_job_problems(
            job.id, iter([(p.code, p.path, p.detail) for p in problems])
        )
        self.journal.transition(job.id, JobEvent.READ_DONE, files=len(entries))
        self.audit_event("read_completed", job=job.id, files=len(entries))

    @staticmethod
    def _read_entry(
        medium: Any,
        seq: int,
        entry: Any,
        writer: SpoolWriter,
        meter: ProgressMeter,
        budget: ReadBudget,
    ) -> None:
        """Stream one entry's bytes to the writer; a read error ends it as a
        problem and is charged to the medium's read-error budget."""
        writer.begin(seq, entry)
        meter.add(files=1)
        budget.start()
        try:
            with medium.open(entry) as fp:
                for chunk in iter_chunks(fp):
                    writer.data(chunk)
                    meter.add(nbytes=len(chunk))
        except MediumReadError as exc:
            writer.fail(exc.code, exc.detail)
            if exc.code == "unreadable_sector":
                budget.failed(exc)
            return
        except OSError as exc:
            writer.fail("unreadable_sector", str(exc))
            budget.failed(exc)
            return
        writer.end()

    # ------------------------------------------------------------ phase 2
    def process(self, job_id: str, destinations: list[Any], mode: str = "import") -> JobResult:
        job = self.journal.job(job_id)
        assert job is not None
        if job.state in (JobState.INVENTORIED, JobState.DELIVERING):  # stopped in phase 2
            self.journal.transition(job.id, JobEvent.INTERRUPTED, "resumed after a stop")
        redeliver = job.state in (
            JobState.WAITING_FOR_DESTINATION,
            JobState.FAILED,
            JobState.PARTIAL,
        )
        current = self.journal.job(job_id)
        if current is not None and current.state == JobState.READ:
            self.journal.transition(job.id, JobEvent.INVENTORY)
        inv = self._inventory.take(job, self.prescans.take(job.id))
        early_sent = self.prescans.take_sent(job.id)
        pending = [i for i in inv.instances if i.state == "pending"]
        policy.detect_ai(pending, self.spool.path, policy.ai_patterns(self.settings))
        patients = group_patients(pending)
        facility = report_mod.facility(inv)
        hold_reasons: list[str] = []
        settled: list[Settled] = []
        identified = [p for p in patients if not p.unidentified]
        if mode == "scan":
            if len(identified) > 1:
                hold_reasons.append("multi_patient")
            if len(identified) < len(patients):
                hold_reasons.append("unidentified_patient")
        else:
            settled = self.reconciler.settle(job.id, patients, facility, inv.problems)
            for s in settled:
                if s.action == HOLD:
                    hold_reasons.append(s.hold_reason)
                for inst in s.instances:
                    if s.action == HOLD:
                        inst.state = "held"
                    elif s.action == DISCARD and s.decision is not None:
                        inst.state = "skipped"
                        inst.detail = f"discarded by {s.decision.operator}: {s.decision.reason}"
            if overlap.hold_changed(inv, pending, bool(self.journal.decisions(job.id))):
                hold_reasons.append("source_changed")
        if "multi_patient" in hold_reasons:
            names = "; ".join(f"{p.id or '(no ID)'} {p.name}" for p in identified)
            inv.problems.append(Problem("multi_patient", "", names))
        if "unidentified_patient" in hold_reasons:
            # Whose the files are is unknown, so no other patient's files may be
            # taken as complete; a site that splits media (a sender it knows)
            # gets its named patients while the unnamed files wait.
            whole = self.settings.get("policy.multi_patient") == "hold"
            hold_unidentified(patients, pending if whole else [], inv.problems)
        ai_policy = self.settings.get("ai.policy")
        if ai_policy == "hold" and any(i.kind == "ai" for i in pending):
            hold_reasons.append("ai_content")
            for inst in pending:  # the whole medium waits for a person
                if inst.state == "pending":
                    inst.state = "held"
        hold_reasons = list(dict.fromkeys(hold_reasons))
        deliverable = [i for i in inv.instances if i.state == "pending"]
        delivering = mode != "scan" and (bool(deliverable) or not hold_reasons)
        if delivering and not all_discarded(settled):
            self._apply_policy(job, inv, deliverable, ai_policy)
            self._coerce(job.id, settled, inv, facility)
            patients = group_patients(
                [i for i in inv.instances if i.state in ("pending", "held", "skipped")]
            )
            self.journal.transition(
                job.id,
                JobEvent.RELEASE
                if job.state == JobState.HELD
                else JobEvent.RETRY
                if redeliver
                else JobEvent.DELIVER,
            )
            for dest, select in self._deliverer.routes(destinations):
                self._deliverer.deliver(job, dest, inv, select, early_sent.get(dest.key, set()))
            settle(inv.instances)
        else:
            delivering = False
            overlap.mark_sent(inv.instances, early_sent)
        report = report_mod.build(
            job,
            inv,
            patients,
            hold_reasons,
            mode,
            reconciled=settled,
            decisions=self.journal.decisions(job.id),
        )
        # The report is saved before the step's last transition: an observer
        # that hears a job came to rest reads its final report.
        self.journal.save_report(job.id, report)
        if mode == "scan":
            self.journal.transition(job.id, JobEvent.SCANNED)
        elif hold_reasons:
            if delivering or job.state != JobState.HELD:
                self.journal.transition(job.id, JobEvent.HOLD, ",".join(hold_reasons))
            self.audit_event("hold", job=job.id, reasons=hold_reasons)
        elif report["status"] == JobState.DISCARDED and not delivering:
            self.journal.transition(job.id, JobEvent.DISCARD, "every patient discarded")
        else:
            self.journal.transition(job.id, _FINISH[report["status"]], _reason(report["problems"]))
        return self._finished(job.id, report)

    def _coerce(self, job_id: str, settled: list[Settled], inv: Inventory, facility: str) -> None:
        """Deliverable patients with a local identity are sent as coerced
        copies; objects converted from the medium's documents go with the
        patient they were filed under."""
        by_id = {s.patient.id: s for s in settled if s.action == DELIVER and s.identity}
        for s in by_id.values():
            todo = [i for i in s.instances if i.state == "pending"]
            todo += [
                i
                for i in inv.instances
                if i.converted and i.state == "pending" and i.header.patient_id == s.patient.id
            ]
            assert s.identity is not None
            inv.problems.extend(self.reconciler.coerce(todo, s.identity, facility))
            self.audit_event(
                "coercion",
                job=job_id,
                attribute="PatientID",
                foreign_id=s.patient.id,
                local_id=s.identity.patient_id,
                identity_source=s.identity.source,
                counts={"instances": len(todo)},
            )

    def _apply_policy(
        self, job: Job, inv: Inventory, pending: list[Instance], ai_policy: str
    ) -> None:
        """AI marking or skipping, and Other Content conversion (issue 5)."""
        store = policy.DerivedStore(self.spool, self.journal)
        ai = [i for i in pending if i.kind == "ai"]
        if ai_policy == "skip":
            for inst in ai:
                inst.state = "skipped"
                inst.detail = "AI result kept in the spool, not sent (policy skip)"
        elif ai:
            prefix = self.settings.get("ai.prefix")
            inv.problems.extend(
                policy.mark_ai_instances(
                    ai,
                    prefix,
                    store,
                    lambda i: self.audit_event(
                        "coercion",
                        job=job.id,
                        path=i.path,
                        sop_instance_uid=i.uid,
                        attribute="SeriesDescription",
                        prefix=prefix,
                    ),
                )
            )
        if inv.other_content and self.settings.get("convert_other_content"):
            for inst in pending:
                inst.header.extra.setdefault("_sha256", inst.send_sha256)
            new, converted, problems = policy.convert_other_content(
                inv.other_content, [i.header for i in pending], store, self._inventory.scan_one
            )
            inv.instances.extend(new)
            inv.converted.extend(converted)
            inv.problems.extend(problems)
            for entry in converted:
                self.audit_event("conversion", job=job.id, **entry)

    # ------------------------------------------------------------ helpers
    def unusable(self, source: str, code: str, detail: str, mode: str = "import") -> JobResult:
        """Record a medium that could not be opened at all as a failed job."""
        job = self.journal.create_job(
            f"unusable:{source}:{time.time()}", "unknown", source, "", mode
        )
        inv = Inventory(problems=[Problem(code, source, detail)])
        report = report_mod.build(job, inv, [], [], mode, failed=True)
        self.journal.save_report(job.id, report)
        self.journal.transition(job.id, JobEvent.START_READ)
        self.journal.transition(job.id, JobEvent.READ_FAILED, code)
        return self._finished(job.id, report)

    def _finished(self, job_id: str, report: dict[str, Any]) -> JobResult:
        """A step ended: its report in ``reports/`` and the audit trail."""
        (self.reports_dir / f"{job_id}.json").write_text(report_mod.dumps(report), encoding="utf-8")
        self.audit_event("job_finished", job=job_id, status=report["status"], report=report)
        return JobResult(job_id, report)

    def audit_event(self, name: str, **fields: Any) -> None:
        self.audit.on_event(name, dict(fields))
        if self._on_event is None:
            return
        try:
            self._on_event(name, fields)
        except Exception:
            log.exception("event subscriber failed on %s", name)

    def close(self) -> None:
        self.journal.close()
