"""``pdimport scan`` of a folder in place: headers read where they lie.

An inventory needs the headers, not the files: :class:`Survey` reads a
prefix of each file of a folder medium where it is (the numba scanner's
batched prefix reads), copies nothing into the spool and records no file
rows in the journal, and gives the report of ``Importer.run(mode="scan")``
with the same fields and the same header values:

1. names decide what is ignored (viewer, OS litter, IHE PDI web content),
   without a read; DICOMDIRs by name are read first, as the importer does;
2. every other file is scanned as Part 10 in one batched call. A file the
   fast path answers is a Part 10 DICOM file: its preamble, ``DICM`` and
   File Meta were walked and checked, which is what identification would
   have read. A file it does not answer (a Problem, or a header from the
   reference path) is identified as the importer identifies a spooled file,
   with the medium's context, and scanned again only when it turns out to
   be another encoding than Part 10;
3. grouping, the one-patient rule, AI evidence and the report are the
   importer's own functions.

What an inventory in place does not do: hash every file. ``sha256`` is only
computed for the copies of a SOP Instance UID that appears more than once
(telling identical copies from clashing ones needs their bytes) and is
``""`` for the rest; and the repairs a send would make
(``meta_repaired``/``length_repaired``, a walk of every file to its end)
are found by ``pdimport import``, which makes them. Media that are not
folders (disc images, devices, zip packages), and folders with a path too
long to be named to the kernel, keep the read into the spool:
``Survey.run`` returns None for them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path
from typing import Any, cast

from pdimport.job import report as report_mod
from pdimport.job.inventory import Inventory, InventoryTaker, scanned_instance
from pdimport.job.lifecycle import JobEvent
from pdimport.model import Header, Identity
from pdimport.policy import rules as policy
from pdimport.policy.group import Instance, group_patients, hold_unidentified
from pdimport.problems import Problem
from pdimport.scan import get_scanner
from pdimport.scan.dicomdir import unindexed
from pdimport.scan.identify import identify, ignored_by_name, medium_context
from pdimport.settings import Settings
from pdimport.store.journal import Journal, open_journal

log = logging.getLogger(__name__)

#: Media kinds read in place.
IN_PLACE_KINDS = frozenset({"dir"})
_HASH_CHUNK = 1 << 20


class Survey:
    """Inventories of folder media in place, against one state directory.

    Parameters
    ----------
    settings : Settings
        The frozen settings (state directory, scanner, limits, policies).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = settings.state_path
        #: The last report as written to ``reports/<job>.json`` (``--json``
        #: prints the same text instead of encoding 10,000 lines again).
        self.report_text: str | None = None

    def run(self, source: str) -> dict[str, Any] | None:
        """The scan report of ``source``, or None when the source is not a
        medium read in place (the caller then runs the importer)."""
        from pdimport.media import MediumOpenError, open_medium, source_key

        try:
            medium = open_medium(source, self.settings)
        except MediumOpenError:
            return None  # the importer records the unusable medium
        try:
            if medium.kind not in IN_PLACE_KINDS or not nameable(medium):
                return None
            self.state.mkdir(parents=True, exist_ok=True)
            journal = open_journal(self.settings)
            try:
                key = source_key(medium.kind, source, medium.label)
                if journal.find_unfinished(key, "scan") is not None:
                    return None  # a scan stopped half-way: the importer resumes it
                report = self._survey(journal, medium, key, source)
            finally:
                journal.close()
        finally:
            medium.close()
        return report

    def _survey(self, journal: Journal, medium: Any, key: str, source: str) -> dict[str, Any]:
        from pdimport.record.audit import AuditLog

        audit = AuditLog.from_settings(self.state, self.settings, journal=journal)
        job = journal.create_job(key, medium.kind, source, medium.label or "", "scan")
        audit.on_event(
            "medium_inserted",
            {"job": job.id, "source": source, "kind": medium.kind, "label": medium.label},
        )
        journal.transition(job.id, JobEvent.START_READ)
        entries = medium.entries()
        inv = InPlace(self.settings, medium).take(entries)
        journal.replace_job_problems(
            job.id, iter([(p.code, p.path, p.detail) for p in medium.problems])
        )
        journal.transition(job.id, JobEvent.READ_DONE, files=len(entries))
        audit.on_event("read_completed", {"job": job.id, "files": len(entries)})
        journal.transition(job.id, JobEvent.INVENTORY)
        pending = [i for i in inv.instances if i.state == "pending"]
        policy.detect_ai(pending, inv.locate, policy.ai_patterns(self.settings))
        patients = group_patients(pending)
        identified = [p for p in patients if not p.unidentified]
        hold_reasons = []
        if len(identified) > 1:
            hold_reasons.append("multi_patient")
            names = "; ".join(f"{p.id or '(no ID)'} {p.name}" for p in identified)
            inv.problems.append(Problem("multi_patient", "", names))
        if len(identified) < len(patients):
            hold_reasons.append("unidentified_patient")
            hold_unidentified(patients, [], inv.problems)
        current = journal.job(job.id)
        assert current is not None
        report = report_mod.build(
            current, inv, patients, hold_reasons, "scan", decisions=journal.decisions(job.id)
        )
        journal.save_report(job.id, report)
        journal.transition(job.id, JobEvent.SCANNED)
        reports = self.state / "reports"
        reports.mkdir(exist_ok=True)
        self.report_text = report_mod.dumps(report)
        (reports / f"{job.id}.json").write_text(self.report_text, encoding="utf-8")
        audit.on_event(
            "job_finished", {"job": job.id, "status": report["status"], "report": report}
        )
        return report


def nameable(medium: Any) -> bool:
    """Whether every file of a folder can be opened by its name: one whose
    path is longer than the kernel takes (PATH_MAX, images hundreds of folders
    deep) is read the spooled way, through directory descriptors."""
    limit = os.pathconf(medium.path, "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096
    return all(len(medium.real_path(e)) < limit for e in medium.entries())


class InPlaceInventory(Inventory):
    """An :class:`~pdimport.job.inventory.Inventory` whose instances are
    files on the medium: ``send_sha256`` holds the medium path, and
    :meth:`locate` names the file that holds it."""

    real: dict[str, bytes]

    def locate(self, path: str) -> Path:
        return Path(os.fsdecode(self.real[path]))

    def names(self, paths: list[str]) -> list[Path]:
        """:meth:`locate` for a batch, as the str the scanners take
        (``os.fspath`` of a Path; building 10,000 Paths costs 0.1 s)."""
        return cast(list[Path], [os.fsdecode(self.real[p]) for p in paths])


class InPlace:
    """The inventory of one folder medium, from its files where they are
    (module docstring: what differs from the spooled inventory)."""

    def __init__(self, settings: Settings, medium: Any) -> None:
        self.settings = settings
        self.medium = medium
        self.scanner = get_scanner(settings.scanner, limits=settings)

    def take(self, entries: list[Any]) -> InPlaceInventory:
        inv = InPlaceInventory()
        inv.real = {e.path: self.medium.real_path(e) for e in entries}
        inv.problems.extend(self.medium.problems)
        inv.files = len(entries)
        all_paths = [e.path for e in entries]
        # DICOMDIRs first, as the spooled inventory reads them: what they
        # name tells identification which files must be DICOM.
        by_name = [p for p in all_paths if p.rsplit("/", 1)[-1].upper() == "DICOMDIR"]
        indexes = self._read_dicomdirs(by_name, inv)
        named = InventoryTaker._crosscheck_dicomdirs(indexes, all_paths, inv)
        skipped = {p: why for p in all_paths if (why := ignored_by_name(p))}
        candidates = [p for p in all_paths if p not in indexes and p not in skipped]
        results = self.scanner.scan(inv.names(candidates), ["part10"] * len(candidates))
        context = medium_context(all_paths, named)
        found: dict[str, Identity | Header | Problem] = {}
        again: list[tuple[str, str]] = []
        for path, res in zip(candidates, results):
            if isinstance(res, Header) and not res.extra.get("scan_fallback"):
                found[path] = res  # the fast path walked its preamble, DICM and meta
                continue
            ident = self._identify(path, inv, context)
            if ident.kind == "dicomdir":  # a DICOMDIR under another name
                late = self._read_dicomdirs([path], inv)
                named |= InventoryTaker._crosscheck_dicomdirs(late, all_paths, inv)
                indexes.update(late)
            elif ident.kind == "dicom" and ident.subtype == "part10":
                found[path] = res  # what scanning it as Part 10 gave
            elif ident.kind == "dicom":
                again.append((path, ident.subtype))
            else:
                found[path] = ident
        if again:
            rescanned = self.scanner.scan(
                inv.names([p for p, _ in again]), [enc for _, enc in again]
            )
            found.update((p, r) for (p, _), r in zip(again, rescanned))
        for path in all_paths:  # in file order, as the spooled inventory goes
            if path in skipped:
                inv.ignored.append((path, skipped[path]))
                continue
            got = found.get(path)
            if isinstance(got, Identity):
                InventoryTaker._file_identity(path, "", got, inv, [])
            elif got is not None:
                self._add(path, got, inv)
        if indexes:
            inv.problems.extend(unindexed([i.path for i in inv.instances], named, indexes))
        self._sort_copies(inv)
        return inv

    def _identify(self, path: str, inv: InPlaceInventory, context: Any) -> Identity:
        try:
            if not stat.S_ISREG(os.lstat(inv.real[path]).st_mode):
                # listed as a regular file, a link or special file now: never followed
                return Identity(
                    "broken", problem=Problem("link_ignored", path, "no longer a regular file")
                )
            return identify(path, inv.locate(path), context)
        except Exception as exc:
            log.exception("identify failed on %s", path)
            return Identity("broken", problem=Problem("internal_error", path, str(exc)))

    def _read_dicomdirs(self, paths: list[str], inv: InPlaceInventory) -> dict[str, Any]:
        from pdimport.scan.dicomdir import read_dicomdir

        indexes: dict[str, Any] = {}
        for path in paths:
            try:
                index = read_dicomdir(inv.locate(path), self.settings)
            except Exception as exc:
                log.exception("DICOMDIR %s", path)
                inv.problems.append(Problem("dicomdir_invalid", path, str(exc)))
                continue
            inv.problems.extend(Problem(p.code, p.path or path, p.detail) for p in index.problems)
            indexes[path] = index
        return indexes

    @staticmethod
    def _add(path: str, res: Header | Problem, inv: InPlaceInventory) -> None:
        """One scan result as an instance or a problem (the spooled
        inventory's, without the sender's repairs)."""
        inst = scanned_instance(path, "", res, inv)
        if inst is not None:
            inst.send_sha256 = path  # InPlaceInventory.locate finds it by this
            inv.instances.append(inst)

    def _sort_copies(self, inv: InPlaceInventory) -> None:
        """Copies of one SOP Instance UID, judged by their bytes as the
        spooled inventory judges them: only these files are hashed."""
        seen: dict[str, int] = {}
        for inst in inv.instances:
            seen[inst.uid] = seen.get(inst.uid, 0) + 1
        for inst in inv.instances:
            if seen[inst.uid] > 1:
                inst.sha256 = _sha256(inv.locate(inst.path))
        if any(n > 1 for n in seen.values()):
            taker = InventoryTaker.__new__(InventoryTaker)
            taker._pixel_digests = lambda copies: _pixel_digests(copies, inv)  # type: ignore[method-assign]
            taker._sort_copies(inv)


def _pixel_digests(copies: list[Instance], inv: InPlaceInventory) -> dict[str, tuple[str, str]]:
    from pdimport.transcode.digest import pixel_digests

    try:
        results = pixel_digests([inv.locate(c.path) for c in copies])
    except Exception as exc:
        log.exception("comparing the pixels of %d copies failed", len(copies))
        results = [("", f"not compared: {exc}")] * len(copies)
    return {c.sha256: res for c, res in zip(copies, results)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fp:
            while chunk := fp.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        return f"unreadable:{exc.errno}"
    return digest.hexdigest()
