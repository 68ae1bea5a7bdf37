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
feeds every spooled file to a :class:`PrescanWorker` thread that scans while
the drive keeps reading, and :meth:`Importer.inventory` takes those results
instead of scanning again (performance notes §5: the drive should be the
only thing an import waits for). The results live in memory only: after a
restart phase 2 scans from the spool, as it always could.

A bad file is a recorded problem, never an exception that leaves the job.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import stat
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdimport.job import report as report_mod
from pdimport.job.lifecycle import JobEvent, JobState
from pdimport.model import Header, Identity, MediumReadError, SendItem, SendOutcome, iter_chunks
from pdimport.policy import rules as policy
from pdimport.policy.classify import classify
from pdimport.policy.group import Instance, group_patients, split_duplicates
from pdimport.problems import Problem
from pdimport.settings import Settings
from pdimport.store.journal import Job, Journal
from pdimport.store.spool import Spool

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ATTENTION, EXIT_FAILED, EXIT_USAGE = 0, 1, 2, 64

_SCAN_BATCH = 256
#: Spooled files waiting for the scan worker. Only (path, sha) pairs queue,
#: so this bounds latency, not memory; when full the reader waits (the
#: scanner is far faster than any drive, performance notes §5).
_PRESCAN_QUEUE = 1024
#: 1 MiB chunks read from the medium but not yet in the spool (memory bound).
_WRITE_QUEUE = 32
#: Largest group of files the spool writer commits at once (SpoolWriter).
_GROUP_FILES = 64
_GROUP_BYTES = 256 << 20
#: Most files whose scan results one job keeps in memory (about 2 kB each);
#: past it phase 2 scans the rest from the spool.
_PRESCAN_MAX_FILES = 200_000
#: Jobs whose results are kept; an interrupted job that never reaches
#: phase 2 is evicted after this many newer ones.
_PRESCAN_MAX_JOBS = 16


#: The report status of a delivery, as the event that ends it.
_FINISH = {
    JobState.IMPORTED: JobEvent.DELIVERED,
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


@dataclass
class Inventory:
    """Everything phase 2 learnt about a job's files."""

    instances: list[Instance] = field(default_factory=list)
    other_content: list[tuple[str, str, str]] = field(default_factory=list)  # path, sha, subtype
    converted: list[dict[str, str]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    #: headers the fast scanner left to the pydicom path, by reason (a file
    #: both paths reject is a Problem instead, and not counted here)
    scan_fallbacks: Counter[str] = field(default_factory=Counter)
    #: paths whose delivery failed only because a destination was unavailable
    #: (association failed/rejected, outcome unknown, C-STORE 0xA7xx): the job
    #: waits for the destination rather than failing
    transient: set[str] = field(default_factory=set)


class Importer:
    """Runs jobs against one state directory (journal + spool)."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal | None = None,
        spool: Spool | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        audit: Any = None,
    ) -> None:
        self.settings = settings
        state = settings.state_path
        state.mkdir(parents=True, exist_ok=True)
        self.journal = journal or Journal(state / "journal.sqlite")
        self.spool = spool or Spool(state / "spool")
        self.reports_dir = state / "reports"
        self.reports_dir.mkdir(exist_ok=True)
        self._on_event = on_event
        from pdimport.record.audit import AuditLog

        # The audit trail is not an observer that may fail quietly: a step is
        # only reported done once its record is on disk (fsync'ed).
        self.audit = audit or AuditLog.from_settings(state, settings, journal=self.journal)
        from pdimport.scan import get_scanner

        self.scanner = get_scanner(settings.scanner, limits=settings)

    # ------------------------------------------------------------ public
    def run(self, source: str, dests: list[str], mode: str = "import") -> JobResult:
        """Import (or, with ``mode='scan'``, inventory) one source end to end."""
        from pdimport.media import MediumOpenError, open_medium
        from pdimport.send import parse_dest

        destinations = [parse_dest(d) for d in dests]
        try:
            medium = open_medium(source, self.settings)
        except MediumOpenError as exc:
            return self.unusable(source, exc.code, exc.detail, mode)
        try:
            job = self.start_job(medium, source, mode)
            if not job.read_complete:
                self.read(job, medium)
        finally:
            medium.close()
        return self.process(job.id, destinations, mode)

    def start_job(self, medium: Any, source: str, mode: str) -> Job:
        key = source_key(medium.kind, source, medium.label, getattr(medium, "size", None))
        job = self.journal.find_unfinished(key, mode)
        if job is not None:
            log.info("resuming job %s for %s", job.id, source)
            return job
        job = self.journal.create_job(key, medium.kind, source, medium.label or "", mode)
        self._event(
            "medium_inserted", job=job.id, source=source, kind=medium.kind, label=medium.label
        )
        return job

    # ------------------------------------------------------------ phase 1
    def read(self, job: Job, medium: Any) -> None:
        """Copy every entry into the spool, in on-medium order; record each.

        Three things overlap so that the drive never waits for the computer:
        this thread only reads the medium; a :class:`SpoolWriter` hashes,
        writes, fsyncs and journals each file; a :class:`PrescanWorker`
        identifies and scans each spooled file for :meth:`process`.
        """
        if (self.journal.job(job.id) or job).state == JobState.READING:  # crashed mid-read
            self.journal.transition(job.id, JobEvent.INTERRUPTED, "resumed after a stop")
        self.journal.transition(job.id, JobEvent.START_READ)
        done = self.journal.file_map(job.id)
        entries = medium.entries()
        scanner = PrescanWorker(self.scanner, self.spool, PRESCANS.job(job.id))
        writer = SpoolWriter(self.spool, self.journal, job.id, scanner.submit)
        scanner.start()
        writer.start()
        finished = False
        try:
            for seq, entry in enumerate(entries):
                rec = done.get(entry.path)
                if (
                    rec
                    and rec.state == "read"
                    and rec.sha256
                    and self.spool.has(rec.sha256, entry.size)
                ):
                    writer.already_spooled(entry.path, rec.sha256)  # read before a restart
                    continue
                self._read_entry(medium, seq, entry, writer)
            finished = True
        finally:
            # Interrupted (daemon stopping) or failed: the file being copied
            # is dropped and queued scans are abandoned; the resumed read
            # copies that file again and phase 2 scans what is missing.
            try:
                writer.close(finish=finished)
            finally:
                scanner.close(drain=finished and writer.error is None)
        self.journal.replace_job_problems(
            job.id, iter([(p.code, p.path, p.detail) for p in medium.problems])
        )
        self.journal.transition(job.id, JobEvent.READ_DONE, files=len(entries))
        self._event("read_completed", job=job.id, files=len(entries))

    @staticmethod
    def _read_entry(medium: Any, seq: int, entry: Any, writer: SpoolWriter) -> None:
        """Stream one entry's bytes to the writer; a read error ends it as a problem."""
        writer.begin(seq, entry)
        try:
            with medium.open(entry) as fp:
                for chunk in iter_chunks(fp):
                    writer.data(chunk)
        except MediumReadError as exc:
            writer.fail(exc.code, exc.detail)
            return
        except OSError as exc:
            writer.fail("unreadable_sector", str(exc))
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
        inv = self.inventory(job)
        pending = [i for i in inv.instances if i.state == "pending"]
        policy.detect_ai(pending, self.spool.path, policy.ai_patterns(self.settings))
        hold_reasons: list[str] = []
        patients = group_patients(pending)
        if len(patients) > 1:
            hold_reasons.append("multi_patient")
            names = "; ".join(f"{p.id or '(no ID)'} {p.name}" for p in patients)
            inv.problems.append(Problem("multi_patient", "", names))
        ai_policy = self.settings.get("ai.policy")
        if ai_policy == "hold" and any(i.kind == "ai" for i in pending):
            hold_reasons.append("ai_content")
        if hold_reasons:
            # Nothing is converted or sent until a person releases the medium.
            for inst in pending:
                inst.state = "held"
            if mode != "scan":
                if job.state != JobState.HELD:
                    self.journal.transition(job.id, JobEvent.HOLD, ",".join(hold_reasons))
                self._event("hold", job=job.id, reasons=hold_reasons)
        elif mode != "scan":
            self._apply_policy(job, inv, pending, ai_policy)
            patients = group_patients([i for i in inv.instances if i.state == "pending"])
            self.journal.transition(
                job.id,
                JobEvent.RELEASE
                if job.state == JobState.HELD
                else JobEvent.RETRY
                if redeliver
                else JobEvent.DELIVER,
            )
            for dest, select in self._routes(destinations):
                self.deliver(job, dest, inv, select)
            _settle(inv.instances)
        report = report_mod.build(job, inv, patients, hold_reasons, mode)
        self.journal.save_report(job.id, report)
        if mode == "scan":
            self.journal.transition(job.id, JobEvent.SCANNED)
        elif not hold_reasons:
            self.journal.transition(job.id, _FINISH[report["status"]], _reason(report["problems"]))
        (self.reports_dir / f"{job.id}.json").write_text(report_mod.dumps(report), encoding="utf-8")
        self._event("job_finished", job=job.id, status=report["status"], report=report)
        return JobResult(job.id, report)

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
                    lambda i: self._event(
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
                inv.other_content, [i.header for i in pending], store, self._scan_one
            )
            inv.instances.extend(new)
            inv.converted.extend(converted)
            inv.problems.extend(problems)
            for entry in converted:
                self._event("conversion", job=job.id, **entry)

    def _scan_one(self, sha: str, path: str) -> Header | Problem:
        [res] = self.scanner.scan([self.spool.path(sha)], ["part10"])
        return res

    def _routes(self, destinations: list[Any]) -> list[tuple[Any, Callable[[Instance], bool]]]:
        """Default destinations take everything; each route adds a
        destination for one kind (and optionally one modality)."""
        from pdimport.send import parse_dest

        plan: list[tuple[Any, Callable[[Instance], bool]]] = [
            (d, lambda i: True) for d in destinations
        ]
        defaults = {d.key for d in destinations}
        by_dest: dict[str, list[policy.Route]] = {}
        dests: dict[str, Any] = {}
        for route in policy.parse_routes(list(self.settings.get("route")), parse_dest):
            if route.dest.key in defaults:
                continue
            by_dest.setdefault(route.dest.key, []).append(route)
            dests[route.dest.key] = route.dest
        for key, routes in by_dest.items():
            plan.append((dests[key], _matches_any(routes)))
        return plan

    def inventory(self, job: Job) -> Inventory:
        """Identify and scan every spooled file of a job (from the spool only)."""
        from pdimport.scan.identify import identify, medium_context

        inv = Inventory()
        prescanned = PRESCANS.take(job.id)
        inv.problems.extend(Problem(c, p, d) for c, p, d in self.journal.job_problems(job.id))
        files = self.journal.files(job.id)
        inv.files = len(files)
        all_paths = [f.path for f in files]
        readable = [f for f in files if f.state == "read" and f.sha256]
        # DICOMDIRs first: what they name tells identification which files
        # must be DICOM (a non-DICOM file named by one is broken, not unknown).
        indexes = self._read_dicomdirs(
            [f for f in readable if f.path.rsplit("/", 1)[-1].upper() == "DICOMDIR"], inv
        )
        named = self._crosscheck_dicomdirs(indexes, all_paths, inv)
        context = medium_context(all_paths, named)
        dicom: list[tuple[str, str, str]] = []  # (path, sha, encoding)
        for f in files:
            if f.state != "read" or not f.sha256:
                inv.problems.append(Problem(f.code or "unreadable_sector", f.path, f.detail))
                continue
            if f.path in indexes:
                continue
            early = prescanned.get((f.path, f.sha256))
            if early is not None:
                ident = early.identity  # DICOM by its bytes: the context cannot change it
            else:
                try:
                    ident = identify(f.path, self.spool.path(f.sha256), context)
                except Exception as exc:
                    log.exception("identify failed on %s", f.path)
                    ident = Identity("broken", problem=Problem("internal_error", f.path, str(exc)))
            if ident.kind == "dicomdir":  # a DICOMDIR under another name
                late = self._read_dicomdirs([f], inv)
                named |= self._crosscheck_dicomdirs(late, all_paths, inv)
                indexes.update(late)
                continue
            self._file_identity(f.path, f.sha256, ident, inv, dicom)
        self._scan(dicom, inv, prescanned)
        if indexes:
            for inst in inv.instances:
                if inst.path not in named:
                    inv.problems.append(
                        Problem(
                            "unindexed_file",
                            inst.path,
                            "not named in the DICOMDIR; imported anyway",
                        )
                    )
        _unique, identical, conflicts = split_duplicates(inv.instances)
        for dup in identical:
            dup.state = "skipped"
            dup.detail = "identical copy of an instance already on this medium"
        for dup in conflicts:
            dup.state = "conflict"
            inv.problems.append(
                Problem(
                    "uid_conflict",
                    dup.path,
                    f"SOP Instance UID {dup.uid} also at another path with different content",
                )
            )
        return inv

    @staticmethod
    def _file_identity(path: str, sha: str, ident: Identity, inv: Inventory, dicom: list) -> None:
        if ident.kind == "dicom":
            dicom.append((path, sha, ident.subtype))
        elif ident.kind == "other_content":
            inv.other_content.append((path, sha, ident.subtype))
        elif ident.kind == "ignored":
            inv.ignored.append((path, ident.subtype))
        elif ident.problem is not None:
            p = ident.problem
            inv.problems.append(Problem(p.code, path, p.detail))
        else:
            inv.problems.append(Problem("unsupported_content", path, ident.kind))

    def _scan(
        self,
        dicom: list[tuple[str, str, str]],
        inv: Inventory,
        prescanned: dict[tuple[str, str], Prescan] | None = None,
    ) -> None:
        """Turn scan results into instances and problems, in file order.

        Files the scan worker already did (same path, content and encoding)
        are not scanned again.
        """
        prescanned = prescanned or {}
        results: list[Header | Problem | None] = []
        for path, sha, enc in dicom:
            early = prescanned.get((path, sha))
            ok = early is not None and early.identity.subtype == enc and early.result is not None
            results.append(early.result if ok and early is not None else None)
        missing = [i for i, res in enumerate(results) if res is None]
        for start in range(0, len(missing), _SCAN_BATCH):
            batch = missing[start : start + _SCAN_BATCH]
            for i, scanned in zip(batch, self._scan_batch([dicom[i] for i in batch])):
                results[i] = scanned
        for (path, sha, _enc), res in zip(dicom, results):
            assert res is not None
            self._add_scanned(path, sha, res, inv)

    def _scan_batch(self, batch: list[tuple[str, str, str]]) -> list[Header | Problem]:
        paths = [self.spool.path(sha) for _, sha, _ in batch]
        try:
            return self.scanner.scan(paths, [enc for _, _, enc in batch])
        except Exception as exc:
            log.exception("scanner failed on a batch")
            return [Problem("internal_error", "", str(exc))] * len(batch)

    def _add_scanned(self, path: str, sha: str, res: Header | Problem, inv: Inventory) -> None:
        if isinstance(res, Problem):
            inv.problems.append(Problem(res.code, path, res.detail))
            return
        for code in res.warnings:
            inv.problems.append(Problem(code, path, ""))
        reason = res.extra.get("scan_fallback")
        if reason:
            inv.scan_fallbacks[reason] += 1
        inst = Instance(path=path, sha256=sha, header=res, kind=classify(res))
        try:
            inst.send_sha256 = self._sendable(sha, res)
        except Exception as exc:
            log.exception("could not prepare %s", path)
            inv.problems.append(Problem("internal_error", path, str(exc)))
            return
        inv.instances.append(inst)

    def _sendable(self, sha: str, header: Header) -> str:
        """The spooled Part 10 file to send: the original, or for a dataset
        without preamble/meta the same bytes behind correct file meta."""
        if header.encoding == "part10":
            return sha
        cached = self.journal.derived(sha, "part10")
        if cached and self.spool.has(cached):
            return cached
        work = self.spool.workfile(".dcm")
        wrap_part10(self.spool.path(sha), work, header)
        out, _ = self.spool.put_file(work)
        self.journal.record_derived(sha, "part10", out)
        return out

    def _read_dicomdirs(self, files: list[Any], inv: Inventory) -> dict[str, Any]:
        from pdimport.scan.dicomdir import read_dicomdir

        indexes: dict[str, Any] = {}
        for f in files:
            try:
                index = read_dicomdir(self.spool.path(f.sha256), self.settings)
            except Exception as exc:
                log.exception("DICOMDIR %s", f.path)
                inv.problems.append(Problem("dicomdir_invalid", f.path, str(exc)))
                continue
            inv.problems.extend(Problem(p.code, p.path or f.path, p.detail) for p in index.problems)
            indexes[f.path] = index
        return indexes

    @staticmethod
    def _crosscheck_dicomdirs(
        indexes: dict[str, Any], medium_paths: list[str], inv: Inventory
    ) -> set[str]:
        """Match every File ID to a file on the medium; report the absent
        ones as ``missing_file``. Returns the medium paths the DICOMDIRs name."""
        from pdimport.scan.dicomdir import match_path

        named: set[str] = set()
        for path, index in indexes.items():
            base = path.rsplit("/", 1)[0] if "/" in path else ""
            for ref in index.files:
                found = match_path(ref.path, medium_paths, base=base)
                if found is None:
                    rel = f"{base}/{ref.path}" if base else ref.path
                    inv.problems.append(
                        Problem("missing_file", rel, f"named in {path} but not on the medium")
                    )
                else:
                    named.add(found)
        return named

    # ------------------------------------------------------------ delivery
    def deliver(
        self,
        job: Job,
        dest: Any,
        inv: Inventory,
        select: Callable[[Instance], bool] = lambda i: True,
    ) -> None:
        """Send every pending instance ``select`` picks to one destination,
        with retries; the outcome of each is journaled as it arrives."""
        from pdimport.send import deliver as send_to

        sent = self.journal.sent_set(dest.key)
        todo: dict[str, Instance] = {}
        for inst in inv.instances:
            if inst.state != "pending" or not select(inst):
                continue
            if (inst.uid, inst.sha256) in sent:
                inst.previously_sent = True
                inst.dest_states[dest.key] = "sent"
                continue
            if self._historic_conflict(dest.key, inst):
                inst.dest_states[dest.key] = "conflict"
                inv.problems.append(
                    Problem(
                        "uid_conflict",
                        inst.path,
                        f"{dest.key} already holds SOP Instance UID {inst.uid} with other content",
                    )
                )
                continue
            todo[inst.sha256 + inst.uid] = inst
        outcomes: dict[str, SendOutcome] = {}

        def on_outcome(out: SendOutcome) -> None:
            inst = todo[out.key]
            self.journal.record_delivery(
                dest.key, inst.uid, inst.sha256, out.state, out.status, out.code, out.detail, job.id
            )
            outcomes[out.key] = out

        workdir = self.settings.state_path / "work"
        workdir.mkdir(exist_ok=True)
        try:
            self._attempts(dest, todo, outcomes, on_outcome, workdir, send_to)
        finally:
            from pdimport.send.link import remove_converted

            # converted copies live as long as the delivery: a resend within
            # it sends the same bytes, a later one converts again
            remove_converted(workdir, todo)
        self._apply_outcomes(dest, todo, outcomes, inv)
        self._event(
            "instances_delivered",
            job=job.id,
            dest=dest.key,
            dest_aet=getattr(dest, "aet", ""),
            sent=sum(1 for o in outcomes.values() if o.state == "sent"),
            failed=sum(1 for o in outcomes.values() if o.state != "sent"),
            already_sent=sum(
                1
                for i in inv.instances
                if i.dest_states.get(dest.key) == "sent" and i.previously_sent
            ),
        )

    def _attempts(
        self,
        dest: Any,
        todo: dict[str, Instance],
        outcomes: dict[str, SendOutcome],
        on_outcome: Callable[[SendOutcome], None],
        workdir: Path,
        send_to: Callable[..., Any],
    ) -> None:
        """Up to ``network.retries`` attempts, with growing pauses, until
        every instance has an outcome that is not worth retrying."""
        attempts = int(self.settings.get("network.retries"))
        delay = float(self.settings.get("network.retry_delay"))
        pending = list(todo)
        for attempt in range(attempts):
            items = [self._item(key, todo[key]) for key in pending]
            if not items:
                break
            try:
                send_to(dest, items, self.settings, on_outcome, workdir)
            except Exception as exc:
                log.exception("delivery to %s failed", dest.key)
                for key in pending:
                    outcomes.setdefault(
                        key, SendOutcome(key, "retry", code="internal_error", detail=str(exc))
                    )
            pending = [
                k for k in pending if k not in outcomes or outcomes[k].state in ("retry", "unknown")
            ]
            if not pending or attempt == attempts - 1:
                break
            for key in pending:
                outcomes.pop(key, None)
            time.sleep(delay * (2**attempt))

    def _historic_conflict(self, dest_key: str, inst: Instance) -> bool:
        return any(
            d.state == "sent" and d.sha256 != inst.sha256
            for d in self.journal.deliveries_for_uid(dest_key, inst.uid)
        )

    def _item(self, key: str, inst: Instance) -> SendItem:
        path = self.spool.path(inst.send_sha256)
        return SendItem(
            key=key,
            path=path,
            sop_class_uid=inst.header.sop_class_uid,
            sop_instance_uid=inst.uid,
            transfer_syntax=inst.header.transfer_syntax,
            size=path.stat().st_size,
        )

    @staticmethod
    def _apply_outcomes(
        dest: Any, todo: dict[str, Instance], outcomes: dict[str, SendOutcome], inv: Inventory
    ) -> None:
        for key, inst in todo.items():
            out = outcomes.get(key)
            if out is None:
                inst.dest_states[dest.key] = "failed"
                inv.problems.append(
                    Problem("association_failed", inst.path, f"{dest.key}: not attempted")
                )
                continue
            if out.state == "sent":
                inst.dest_states[dest.key] = "sent"
                if out.code:
                    inv.problems.append(Problem(out.code, inst.path, f"{dest.key}: {out.detail}"))
                continue
            inst.dest_states[dest.key] = "failed"
            if out.state in ("retry", "unknown") or _out_of_resources(out.status):
                inv.transient.add(inst.path)
            code = out.code or (
                "outcome_unknown"
                if out.state == "unknown"
                else "association_failed"
                if out.state == "retry"
                else "store_failed"
            )
            inv.problems.append(Problem(code, inst.path, f"{dest.key}: {out.detail}".rstrip(": ")))

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
        return JobResult(job.id, report)

    def _event(self, name: str, **fields: Any) -> None:
        self.audit.on_event(name, dict(fields))
        if self._on_event is None:
            return
        try:
            self._on_event(name, fields)
        except Exception:
            log.exception("event subscriber failed on %s", name)

    def close(self) -> None:
        self.journal.close()


# ------------------------------------------------------------ spool writer
class _EntryFailed(Exception):
    """The medium could not deliver an entry; carries the problem code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail)
        self.code, self.detail = code, detail


class _Abandoned(Exception):
    """The read stopped in the middle of an entry."""


class SpoolWriter(threading.Thread):
    """Hashes, writes, syncs and journals the files the reader streams to it.

    A drive that waits while we sync loses its streaming rate (and a real
    one may lose a revolution); with this thread the reader only reads.
    Chunks pass through a bounded queue, so memory is bounded
    (``_WRITE_QUEUE`` chunks of 1 MiB) whatever the file sizes. Files are
    journaled in the order they were read.

    Group commit: a file is journaled (and handed on) only once it is
    durable in the spool, but when the reader is ahead (a fast source: an
    ISO image, a USB stick, a folder) the files written meanwhile are made
    durable and journaled together, at most ``_GROUP_FILES`` files or
    ``_GROUP_BYTES`` bytes at a time (one ``syncfs`` and one journal commit
    instead of two fsyncs and a commit per file). A slow drive leaves the
    queue empty after every file, which then commits alone at once.

    Parameters
    ----------
    spool, journal : Spool, Journal
        Where the bytes and the file records go.
    job_id : str
        The job being read.
    on_spooled : callable
        Called with ``(medium path, sha256)`` once a file is stored and
        journaled (the scan worker's ``submit``).
    """

    def __init__(
        self, spool: Spool, journal: Journal, job_id: str, on_spooled: Callable[[str, str], None]
    ) -> None:
        super().__init__(name="spool-writer", daemon=True)
        self._spool = spool
        self._journal = journal
        self._job_id = job_id
        self._on_spooled = on_spooled
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(_WRITE_QUEUE)
        self.error: BaseException | None = None
        self._group: list[tuple[int, Any, Any]] = []  # (seq, entry, Staged)
        self._group_bytes = 0

    # -- reader side
    def begin(self, seq: int, entry: Any) -> None:
        self._put(("begin", seq, entry))

    def data(self, chunk: bytes) -> None:
        self._put(("data", chunk))

    def end(self) -> None:
        self._put(("end",))

    def fail(self, code: str, detail: str) -> None:
        self._put(("fail", code, detail))

    def already_spooled(self, path: str, sha: str) -> None:
        self._put(("spooled", path, sha))

    def close(self, finish: bool = True) -> None:
        """Wait until everything is written (``finish``), or drop the file
        in progress; re-raise a failure of the writer itself."""
        self._queue.put(("stop",) if finish else ("abandon",))
        self.join()
        if self.error is not None and finish:
            raise self.error

    def _put(self, msg: tuple[Any, ...]) -> None:
        if self.error is not None:
            raise self.error  # journal or spool broken: stop reading
        self._queue.put(msg)

    # -- writer side
    def run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:
            log.exception("spool writer failed")
            self.error = exc
            self._spool.discard([st for _, _, st in self._group])
            self._group.clear()
            self._discard()

    def _take(self) -> tuple[Any, ...]:
        """The next message. Before waiting for it, the staged group is
        committed if the reader is behind (nothing queued: a slow drive, or
        one retrying a sector inside a file for minutes) or the group is full."""
        if self._group and (
            self._queue.empty()
            or len(self._group) >= _GROUP_FILES
            or self._group_bytes >= _GROUP_BYTES
        ):
            self._commit_group()
        return self._queue.get()

    def _serve(self) -> None:
        while True:
            msg = self._take()
            if msg[0] in ("stop", "abandon"):
                self._commit_group()  # whole files already read are kept
                return
            if msg[0] == "spooled":
                self._commit_group()  # keep the hand-on order
                self._on_spooled(msg[1], msg[2])
            elif msg[0] == "begin" and not self._write_entry(msg[1], msg[2]):
                self._commit_group()
                return

    def _write_entry(self, seq: int, entry: Any) -> bool:
        """Stage one entry; False when the read was abandoned meanwhile."""
        try:
            staged = self._spool.stage(self._chunks())
        except _Abandoned:
            return False
        except (_EntryFailed, OSError) as exc:
            code, detail = (
                (exc.code, exc.detail)
                if isinstance(exc, _EntryFailed)
                else ("unreadable_sector", str(exc))
            )
            self._commit_group()  # the journal keeps the read order
            self._journal.record_file(
                self._job_id, seq, entry.path, entry.size, None, "error", code, detail
            )
            return True
        self._group.append((seq, entry, staged))
        self._group_bytes += staged.size
        return True

    def _commit_group(self) -> None:
        """Make the staged files durable, journal them, hand them on."""
        if not self._group:
            return
        group, self._group, self._group_bytes = self._group, [], 0
        self._spool.commit([st for _, _, st in group])  # on error it removes what it did not move
        self._journal.record_files(
            self._job_id,
            [(seq, entry.path, st.size, st.sha256, "read", "", "") for seq, entry, st in group],
        )
        for _, entry, st in group:
            self._on_spooled(entry.path, st.sha256)

    def _chunks(self) -> Iterator[bytes]:
        while True:
            msg = self._take()
            if msg[0] == "data":
                yield msg[1]
            elif msg[0] == "end":
                return
            elif msg[0] == "fail":
                raise _EntryFailed(msg[1], msg[2])
            else:  # "abandon" (or a stray "stop"): nothing of this file is kept
                raise _Abandoned()

    def _discard(self) -> None:
        """After a failure, keep taking messages so the reader never blocks."""
        while self._queue.get()[0] not in ("stop", "abandon"):
            pass


# ------------------------------------------------------------ scan during read
@dataclass(frozen=True)
class Prescan:
    """Identification and header scan of one spooled file, done during the read.

    ``result`` is None when the file is not DICOM (phase 2 identifies it again,
    with the whole medium's context).
    """

    identity: Identity
    result: Header | Problem | None


class PrescanStore:
    """Scan results per job, shared by every :class:`Importer` of the process.

    The daemon reads a medium on a drive thread and may process the job on
    another thread with another Importer; both see this store. Memory only:
    a restart simply scans again from the spool.
    """

    def __init__(self, max_jobs: int = _PRESCAN_MAX_JOBS) -> None:
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, dict[tuple[str, str], Prescan]] = OrderedDict()
        self._max_jobs = max_jobs

    def job(self, job_id: str) -> dict[tuple[str, str], Prescan]:
        """The (live) result table of a job, created on first use."""
        with self._lock:
            table = self._jobs.setdefault(job_id, {})
            self._jobs.move_to_end(job_id)
            while len(self._jobs) > self._max_jobs:
                self._jobs.popitem(last=False)
            return table

    def take(self, job_id: str) -> dict[tuple[str, str], Prescan]:
        """Remove and return a job's results (empty when there are none)."""
        with self._lock:
            return self._jobs.pop(job_id, {})

    def peek(self, job_id: str) -> int:
        """How many files of a job have results now (tests, metrics)."""
        with self._lock:
            return len(self._jobs.get(job_id, {}))

    def clear(self) -> None:
        with self._lock:
            self._jobs.clear()


#: The process-wide store (see :class:`PrescanStore`).
PRESCANS = PrescanStore()


class PrescanWorker(threading.Thread):
    """Identifies and header-scans spooled files while the medium is read.

    Fed with ``(medium path, sha256)`` by :meth:`Importer.read` through a
    bounded queue; takes whatever has queued up (up to one scan batch) per
    scanner call, so a batched scanner stays batched when it keeps up.
    Failure is per file and only costs a re-scan in phase 2: nothing here
    can fail the read.

    Parameters
    ----------
    scanner : Scanner
        The job's header scanner (used by this thread only during the read).
    spool : Spool
        Where the files are.
    table : dict
        Receives one :class:`Prescan` per ``(path, sha256)``.
    """

    _STOP = object()

    def __init__(self, scanner: Any, spool: Spool, table: dict[tuple[str, str], Prescan]) -> None:
        super().__init__(name="prescan", daemon=True)
        self._scanner = scanner
        self._spool = spool
        self._table = table
        self._queue: queue.Queue[Any] = queue.Queue(_PRESCAN_QUEUE)
        self._cancelled = threading.Event()

    def submit(self, path: str, sha: str) -> None:
        if (path, sha) not in self._table and len(self._table) < _PRESCAN_MAX_FILES:
            self._queue.put((path, sha))

    def close(self, drain: bool = True) -> None:
        """Stop after the queued files (``drain``) or as soon as possible."""
        if drain:
            self._queue.put(self._STOP)
        else:
            self._cancelled.set()
            try:
                self._queue.put_nowait(self._STOP)  # wakes a worker waiting for work
            except queue.Full:
                pass  # not waiting: it sees the cancel flag after this batch
        self.join()

    def run(self) -> None:
        while not self._cancelled.is_set():
            batch, stop = self._next_batch()
            try:
                self._scan_batch(batch)
            except Exception:
                log.exception("scan during read failed on a batch of %d", len(batch))
            if stop:
                return

    def _next_batch(self) -> tuple[list[tuple[str, str]], bool]:
        """Block for one file, then take what else is queued (up to a batch)."""
        batch: list[tuple[str, str]] = []
        item = self._queue.get()
        while item is not self._STOP:
            batch.append(item)
            if len(batch) >= _SCAN_BATCH:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _scan_batch(self, batch: list[tuple[str, str]]) -> None:
        from pdimport.scan.identify import identify

        dicom: list[tuple[tuple[str, str], Identity]] = []
        for key in batch:
            if self._cancelled.is_set():
                return
            ident = identify(key[0], self._spool.path(key[1]))
            if ident.kind == "dicom":
                dicom.append((key, ident))
            elif ident.kind == "dicomdir":
                self._table[key] = Prescan(ident, None)
        if not dicom:
            return
        paths = [self._spool.path(sha) for (_, sha), _ in dicom]
        results = self._scanner.scan(paths, [ident.subtype for _, ident in dicom])
        for (key, ident), res in zip(dicom, results, strict=True):
            self._table[key] = Prescan(ident, res)


def _out_of_resources(status: int | None) -> bool:
    """C-STORE "Refused: Out of Resources" (PS3.4 Annex B.2.3: 0xA7xx): transient."""
    return status is not None and status & 0xFF00 == 0xA700


def _matches_any(routes: list[Any]) -> Callable[[Instance], bool]:
    """A filter that admits an instance any of ``routes`` matches."""
    return lambda inst: any(r.matches(inst) for r in routes)


def _settle(instances: list[Instance]) -> None:
    """An instance is sent when every destination it was meant for has it."""
    for inst in instances:
        if inst.state != "pending" or not inst.dest_states:
            continue
        states = set(inst.dest_states.values())
        inst.state = (
            "sent" if states == {"sent"} else "conflict" if "conflict" in states else "failed"
        )


def source_key(kind: str, source: str, label: str, size: int | None = None) -> str:
    """A stable identity for "the same source again" (resume after a crash).

    For a device the node alone is not enough (another disc may be in the
    drive now): the volume label and the medium size must match too.
    """
    real = os.path.realpath(source)
    try:
        st = os.stat(real)
    except OSError:
        return f"{kind}:{real}"
    if stat.S_ISDIR(st.st_mode):
        return f"dir:{real}"
    if stat.S_ISBLK(st.st_mode):
        return f"device:{real}:{label}:{size if size is not None else _device_size(real)}"
    return f"{kind}:{real}:{st.st_size}:{st.st_mtime_ns}"


def _device_size(path: str) -> int:
    import fcntl
    import struct

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return -1
    try:
        buf = fcntl.ioctl(fd, 0x80081272, b"\0" * 8)  # BLKGETSIZE64
        return struct.unpack("Q", buf)[0]
    except OSError:
        return -1
    finally:
        os.close(fd)


def wrap_part10(src: Path, dst: Path, header: Header) -> None:
    """Write ``src``'s dataset bytes, unchanged, behind a preamble and File
    Meta Information (PS3.10 §7.1) so it can be sent and stored as Part 10."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(header.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(header.sop_instance_uid)
    meta.TransferSyntaxUID = UID(header.transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PDIMPORT_01"
    with open(dst, "wb") as out, open(src, "rb") as fp:
        out.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(DicomFileLike(out), meta, enforce_standard=True)
        fp.seek(header.dataset_offset)
        shutil.copyfileobj(fp, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
