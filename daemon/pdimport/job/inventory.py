"""Phase 2's first step: what a job's spooled files are.

Identification, header scan (taking what the :class:`~pdimport.job.prescan.PrescanWorker`
found during the read), DICOMDIR cross-check and duplicate UIDs, from the
journal and the spool only. A bad file is a recorded problem.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdimport.job.prescan import SCAN_BATCH, Prescan
from pdimport.model import Header, Identity
from pdimport.policy.classify import classify
from pdimport.policy.duplicates import sort_copies
from pdimport.policy.group import Instance
from pdimport.problems import Problem
from pdimport.scan.dicomdir import match_path, read_dicomdir, unindexed
from pdimport.scan.identify import identify, medium_context
from pdimport.send import repair
from pdimport.settings import Settings
from pdimport.store.journal import Job, Journal
from pdimport.store.spool import Spool

log = logging.getLogger(__name__)


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


def scanned_instance(path: str, sha: str, res: Header | Problem, inv: Inventory) -> Instance | None:
    """A scan result as an instance (its warnings and fallback counted in
    ``inv``), or None with its problem recorded."""
    if isinstance(res, Problem):
        inv.problems.append(Problem(res.code, path, res.detail))
        return None
    for code in res.warnings:
        inv.problems.append(Problem(code, path, res.warning_detail(code)))
    reason = res.extra.get("scan_fallback")
    if reason:
        inv.scan_fallbacks[reason] += 1
    return Instance(path=path, sha256=sha, header=res, kind=classify(res))


class InventoryTaker:
    """Takes the inventory of jobs in one journal and spool with one scanner."""

    def __init__(self, settings: Settings, journal: Journal, spool: Spool, scanner: Any) -> None:
        self.settings = settings
        self.journal = journal
        self.spool = spool
        self.scanner = scanner

    def scan_one(self, sha: str, path: str) -> Header | Problem:
        """One spooled Part 10 file (a converted object, say)."""
        [res] = self.scanner.scan([self.spool.path(sha)], ["part10"])
        return res

    def take(self, job: Job, prescanned: dict[tuple[str, str], Prescan]) -> Inventory:
        """Identify and scan every spooled file of a job (from the spool only);
        files in ``prescanned`` (same path and content) are not scanned again."""
        inv = Inventory()
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
            inv.problems.extend(unindexed([i.path for i in inv.instances], named, indexes))
        self._sort_copies(inv)
        return inv

    def _sort_copies(self, inv: Inventory) -> None:
        """Copies of one SOP Instance UID (:mod:`pdimport.policy.duplicates`)."""
        found = sort_copies(inv.instances, self._pixel_digests)
        for dup in found.identical:
            dup.state = "skipped"
            dup.detail = "identical copy of an instance already on this medium"
        for copies in found.encodings:
            for inst in copies:  # all stay pending: the deliverer picks one per destination
                inst.copies = copies
        for inst, why in found.undecodable:
            inst.state = "skipped"
            inst.detail = "its pixel data do not decode; another encoding of it is imported"
            inv.problems.append(Problem("copy_undecodable", inst.path, why))
        for dup in found.conflicts:
            dup.state = "conflict"
            inv.problems.append(
                Problem(
                    "uid_conflict",
                    dup.path,
                    f"SOP Instance UID {dup.uid} also at another path with different content",
                )
            )

    def _pixel_digests(self, copies: list[Instance]) -> dict[str, tuple[str, str]]:
        """sha256 -> (digest of the decoded pixels, why not), decoded in the
        pool's worker processes, never here."""
        try:
            from pdimport.transcode.digest import pixel_digests  # decoders: only for copies

            results = pixel_digests([self.spool.path(c.send_sha256) for c in copies])
        except Exception as exc:  # no comparison: the copies clash, as they did before
            log.exception("comparing the pixels of %d copies failed", len(copies))
            results = [("", f"not compared: {exc}")] * len(copies)
        return {c.sha256: res for c, res in zip(copies, results)}

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
        for start in range(0, len(missing), SCAN_BATCH):
            batch = missing[start : start + SCAN_BATCH]
            for i, scanned in zip(batch, self._scan_batch([dicom[i] for i in batch])):
                results[i] = scanned
        for (path, sha, _enc), res in zip(dicom, results):
            assert res is not None
            early = prescanned.get((path, sha))
            prepared = early.prepared if early is not None and early.result is res else None
            self.add_scanned(path, sha, res, inv, prepared)

    def _scan_batch(self, batch: list[tuple[str, str, str]]) -> list[Header | Problem]:
        paths = [self.spool.path(sha) for _, sha, _ in batch]
        try:
            return self.scanner.scan(paths, [enc for _, _, enc in batch])
        except Exception as exc:
            log.exception("scanner failed on a batch")
            return [Problem("internal_error", "", str(exc))] * len(batch)

    def prepare(self, path: str, sha: str, header: Header) -> tuple[str, list[Problem]]:
        """The spooled file to send for one scanned file, and the repairs
        found on the way (``meta_repaired``, ``length_repaired``)."""
        found = Inventory()
        return self._repaired(self._sendable(sha, header), header, path, found), found.problems

    def add_scanned(
        self,
        path: str,
        sha: str,
        res: Header | Problem,
        inv: Inventory,
        prepared: tuple[str, Sequence[Problem]] | None = None,
    ) -> None:
        """One scan result as an instance; ``prepared`` is what
        :meth:`prepare` gave for it earlier (the early delivery's), so the
        file is not walked again."""
        inst = scanned_instance(path, sha, res, inv)
        if inst is None:
            return
        try:
            inst.send_sha256, repairs = prepared or self.prepare(path, sha, inst.header)
        except Exception as exc:
            log.exception("could not prepare %s", path)
            inv.problems.append(Problem("internal_error", path, str(exc)))
            return
        inv.problems.extend(repairs)
        inv.instances.append(inst)

    def _sendable(self, sha: str, header: Header) -> str:
        """The spooled Part 10 file to send: the original, or for a dataset
        without preamble/meta the same bytes behind correct file meta."""
        if header.encoding == "part10":
            return sha
        from pdimport.store.part10 import wrap_part10  # pydicom: only for files to wrap

        return self._derive(sha, "part10", lambda src, dst: wrap_part10(src, dst, header))

    def _repaired(self, sha: str, header: Header, path: str, inv: Inventory) -> str:
        """The file to send with what PS3.5/PS3.10 require of a sender repaired
        (:mod:`pdimport.send.repair`): ``sha`` itself when nothing needs it, else
        a derived copy, recorded as ``meta_repaired`` / ``length_repaired``.
        A body in another VR form than its syntax (``vr_form_mismatch``, a
        warning of the scan) is re-encoded instead."""
        if "vr_form_mismatch" in header.warnings:
            return self._derive(sha, "explicit_vr", repair.reencode_explicit)
        fix = repair.plan(
            self.spool.path(sha),
            header.sop_class_uid,
            header.sop_instance_uid,
            header.transfer_syntax,
        )
        if not fix:
            return sha
        for code, detail in zip(("meta_repaired", "length_repaired"), repair.summary(fix)):
            if detail:
                inv.problems.append(Problem(code, path, detail))
        return self._derive(sha, "repaired", lambda src, dst: repair.write(src, dst, fix))

    def _derive(self, sha: str, kind: str, make: Callable[[Path, Path], None]) -> str:
        """The spool file derived from ``sha`` by ``make(source, target)``,
        made once and cached in the journal under ``kind``."""
        cached = self.journal.derived(sha, kind)
        if cached and self.spool.has(cached):
            return cached
        work = self.spool.workfile(".dcm")
        make(self.spool.path(sha), work)
        out, _ = self.spool.put_file(work)
        self.journal.record_derived(sha, kind, out)
        return out

    def _read_dicomdirs(self, files: list[Any], inv: Inventory) -> dict[str, Any]:
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
        """Match every File ID to a file on the medium, relative to the folder
        of its DICOMDIR (a nested file-set describes its own folder); report
        the absent ones as ``missing_file`` at that place. Returns the medium
        paths the DICOMDIRs name."""
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
