"""``pdimport jobs --verify JOB``: prove that nothing read was lost.

Every file the journal says was read from the medium must end in one of
three ways, and this module checks the journal, the stored report and the
spool against each other to prove it:

* **delivered**: an instance of the report is ``sent`` and the journal's
  deliveries table records that very content (SOP Instance UID and SHA-256)
  as sent to the destination; or it was sent by an earlier job;
* **quarantined** with a reason: a problem code recorded against the file
  (unreadable, not DICOM, a UID conflict, ...), a person's decision, a
  hold, a policy skip, or the file being Other Content or ignored (viewer
  software, OS litter), its bytes kept in the spool;
* **skipped as identical**: an identical copy of an instance on the same
  medium.

Beside that, the bytes of every file read must be in the spool (content
address and size), and no temporary file of a stopped process may remain in
``spool/tmp`` (see :meth:`~pdimport.store.spool.Spool.clean_tmp`).

Anything else (a job that stopped mid-read, a ``sent`` without a delivery
record, a spool file missing) is listed; the exit status is then 1.
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from pdimport.store.journal import FileRecord, Journal, open_existing_journal
from pdimport.store.spool import Spool, owner_alive

EXIT_HOLDS, EXIT_BROKEN, EXIT_NO_JOB = 0, 1, 2
_IDENTICAL = "identical copy"


@dataclass
class Verdict:
    """The outcome of one check: each read file's ending, and what failed."""

    job: str
    state: str
    files: int = 0
    endings: dict[str, int] = field(default_factory=dict)
    unaccounted: list[dict[str, str]] = field(default_factory=list)
    stale_tmp: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return not self.unaccounted and not self.stale_tmp

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["endings"] = dict(sorted(self.endings.items()))
        out["holds"] = self.holds
        return out


def verify_job(journal: Journal, spool: Spool, job_id: str) -> Verdict | None:
    """Check one job; None when the journal does not know it."""
    job = journal.job(job_id)
    if job is None:
        return None
    verdict = Verdict(job=job.id, state=str(job.state))
    report = journal.report(job.id) or {}
    index = _Index(report)
    for rec in journal.files(job.id):
        verdict.files += 1
        ending, why = _ending(rec, index, journal, spool, report.get("mode", job.mode))
        if ending:
            verdict.endings[ending] = verdict.endings.get(ending, 0) + 1
        else:
            verdict.unaccounted.append({"path": rec.path, "why": why})
    try:
        names = sorted(os.listdir(spool.tmp))
    except FileNotFoundError:
        names = []
    verdict.stale_tmp = [n for n in names if n.startswith(("in-", "work-", "nest-"))]
    verdict.stale_tmp = [n for n in verdict.stale_tmp if not owner_alive(n)]
    return verdict


class _Index:
    """The stored report, by medium path."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.exists = bool(report)
        self.instances: dict[str, dict[str, Any]] = {}
        for inst in report.get("instances") or []:
            if not inst.get("converted"):
                self.instances.setdefault(inst["path"], inst)
        self.problems: dict[str, list[str]] = defaultdict(list)
        for p in report.get("problems") or []:
            self.problems[p.get("path", "")].append(p["code"])
        self.other = {o["path"]: o.get("type", "") for o in report.get("other_content") or []}
        self.ignored = {o["path"]: o.get("reason", "") for o in report.get("ignored") or []}
        self.hold_reasons = list(report.get("hold_reasons") or [])


def _ending(
    rec: FileRecord, index: _Index, journal: Journal, spool: Spool, mode: str
) -> tuple[str, str]:
    """``(ending, "")`` for an accounted file, ``("", why)`` otherwise."""
    if rec.state != "read":
        if rec.code:
            return "quarantined", ""
        return "", f"not read ({rec.state}) and no problem code recorded"
    if not rec.sha256 or not spool.has(rec.sha256, rec.size):
        return "", "its bytes are not in the spool"
    if not index.exists:
        return "", "the job has no report: it stopped before its inventory"
    inst = index.instances.get(rec.path)
    if inst is not None:
        return _instance_ending(rec, inst, index, journal, mode)
    if index.problems.get(rec.path):
        return "quarantined", ""
    if rec.path in index.other or rec.path in index.ignored:
        return "quarantined", ""
    return "", "read, but neither delivered nor recorded with a reason"


def _instance_ending(
    rec: FileRecord, inst: dict[str, Any], index: _Index, journal: Journal, mode: str
) -> tuple[str, str]:
    state = inst.get("state", "")
    if mode == "scan":
        return "inventoried", ""
    if state == "sent":
        if inst.get("previously_sent"):
            return "delivered", ""
        sent_to = [d for d, s in (inst.get("destinations") or {}).items() if s == "sent"]
        for dest in sent_to:
            row = journal.delivery(dest, inst["sop_instance_uid"], rec.sha256 or "")
            if row is None or row.state != "sent":
                return "", f"reported sent to {dest} but the journal records no such delivery"
        return ("delivered", "") if sent_to else ("", "reported sent to no destination")
    if state == "skipped":
        if _IDENTICAL in inst.get("detail", ""):
            return "skipped_identical", ""
        return ("quarantined", "") if inst.get("detail") else ("", "skipped without a reason")
    if state == "held" and index.hold_reasons:
        return "quarantined", ""
    if state in ("failed", "conflict", "held") and index.problems.get(rec.path):
        return "quarantined", ""
    return "", f"instance {state or 'without a state'} and no problem recorded against it"


def verify_main(state_path: Any, job_id: str, as_json: bool, settings: Any = None) -> int:
    """The CLI: print the verdict; exit 0 when it holds, 1 when not, 2 for
    an unknown job."""
    journal = open_existing_journal(settings, state_path)
    verdict = None
    if journal is not None:
        try:
            # clean=False: a check that cleaned first would prove nothing about the tmp folder
            verdict = verify_job(journal, Spool(state_path / "spool", clean=False), job_id)
        finally:
            journal.close()
    if verdict is None:
        print(f"pdimport: no job {job_id} in the journal", file=sys.stderr)
        return EXIT_NO_JOB
    if as_json:
        print(json.dumps(verdict.as_dict(), indent=2))
    else:
        endings = ", ".join(f"{n} {k}" for k, n in sorted(verdict.endings.items()))
        print(f"job {verdict.job} ({verdict.state}): {verdict.files} files read; {endings or '-'}")
        for item in verdict.unaccounted:
            print(f"  UNACCOUNTED {item['path']}: {item['why']}")
        for name in verdict.stale_tmp:
            print(f"  STALE spool/tmp/{name}")
        print("holds" if verdict.holds else "DOES NOT HOLD")
    return EXIT_HOLDS if verdict.holds else EXIT_BROKEN
