"""The hold queue: held jobs, and a person's decisions on them.

A held job has everything in the spool, so the disc can go home with the
patient. A decision names one patient of the job (by the ID the medium gave
them) and either releases it (under a local identity, or unchanged) or
discards it; the job is then processed again from the spool. These functions
are the contract: ``pdimport jobs --held``, ``pdimport release``, ``pdimport
discard`` and the operator console all call them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pdimport.job import report as report_mod
from pdimport.job.importer import Importer, JobResult
from pdimport.job.lifecycle import JobState
from pdimport.job.reconcile import UNIDENTIFIED, identity_dict, identity_of
from pdimport.reconcile.model import Candidate
from pdimport.send import parse_dest
from pdimport.store import notify
from pdimport.store.journal import Journal
from pdimport.store.spool import Spool

if TYPE_CHECKING:
    from pdimport.job.decisionqueue import Decision, DecisionQueue


#: Seconds ``pdimport release`` waits for the answer of the station holding the job.
QUEUED_WAIT = 60.0


class HoldError(ValueError):
    """A decision that cannot be taken (unknown job or patient, not held,
    an unknown local ID): a usage error, and nothing is changed."""


def held_patients(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The patients of a held job's report that wait for a decision."""
    patients = report.get("patients") or []
    waiting = [p for p in patients if p.get("hold_reason")]
    if waiting or any("hold_reason" in p for p in patients):
        return waiting
    return list(patients)  # a report from before per-patient holds: all of them


def held_jobs(journal: Journal) -> list[dict[str, Any]]:
    """Every held job with its reasons, foreign patients and candidates."""
    out = []
    for job in journal.jobs(100_000):
        if job.state != JobState.HELD:
            continue
        report = journal.report(job.id) or {}
        out.append(
            {
                "job": job.id,
                "source": job.source_path,
                "label": job.label,
                "held_since": job.updated,
                "hold_reasons": report.get("hold_reasons", []),
                "patients": [
                    {
                        "id": p.get("id", ""),
                        "issuer": p.get("issuer", ""),
                        "name": p.get("name", ""),
                        "birth_date": p.get("birth_date", ""),
                        "sex": p.get("sex", ""),
                        "hold_reason": p.get("hold_reason"),
                        "candidates": p.get("candidates", []),
                    }
                    for p in held_patients(report)
                ],
            }
        )
    return out


def _held_job(imp: Importer, job_id: str) -> dict[str, Any]:
    job = imp.journal.job(job_id)
    if job is None:
        raise HoldError(f"no job {job_id} in the journal (see pdimport jobs --held)")
    if job.state != JobState.HELD:
        raise HoldError(f"job {job_id} is {job.state}, not held")
    return imp.journal.report(job_id) or {}


def _patient(report: dict[str, Any], job_id: str, patient: str | None) -> dict[str, Any]:
    waiting = held_patients(report)
    if patient is None:
        if len(waiting) == 1:
            return waiting[0]
        ids = ", ".join(p.get("id", "") or "(no ID)" for p in waiting)
        raise HoldError(
            f"job {job_id} holds {len(waiting)} patients ({ids}); name one with --patient"
        )
    if patient == UNIDENTIFIED:
        found = [p for p in waiting if p.get("unidentified")]
    else:
        found = [p for p in waiting if p.get("id", "") == patient and not p.get("unidentified")]
    if not found:
        ids = ", ".join(p.get("id", "") or "(no ID)" for p in waiting) or "none"
        raise HoldError(f"job {job_id} holds no patient {patient!r} (held: {ids})")
    return found[0]


def decision_key(patient: dict[str, Any]) -> str:
    """What a decision names a report patient by: the ID the medium gave it,
    or :data:`UNIDENTIFIED` for the files that name no patient."""
    return UNIDENTIFIED if patient.get("unidentified") else str(patient.get("id", ""))


def _releasable(
    report: dict[str, Any], job_id: str, chosen: dict[str, Any], local_id: str | None
) -> None:
    """A decision names a patient by the ID the medium gave; a release that
    would name several (two patients without ID) would file them as one.
    Files that name no patient may only go as they are: nothing says whose
    they are, so a person may send them unchanged, never under a local ID."""
    if chosen.get("unidentified"):
        if local_id:
            raise HoldError(
                f"job {job_id}: files that name no patient go only as they are "
                "(--keep-foreign) or are discarded"
            )
        return
    foreign = chosen.get("id", "")
    same = [p for p in held_patients(report) if p.get("id", "") == foreign]
    if len(same) > 1:
        raise HoldError(
            f"job {job_id} holds {len(same)} patients as {foreign or '(no ID)'}: a release"
            " would file them as one; discard the medium"
        )


def _operator(name: str) -> str:
    if not name.strip():
        raise HoldError("--operator: the name of the person deciding is required")
    return name.strip()


def release(
    imp: Importer,
    job_id: str,
    operator: str,
    local_id: str | None = None,
    patient: str | None = None,
    keep_foreign: bool = False,
    dests: list[str] | None = None,
) -> JobResult:
    """Release one held patient of ``job_id`` under ``local_id`` (or
    unchanged with ``keep_foreign``) and deliver it from the spool.

    Raises
    ------
    HoldError
        Nothing is changed: unknown job, not held, unknown patient, no or
        both of ``local_id``/``keep_foreign``, a local ID no source knows.
    """
    operator = _operator(operator)
    if bool(local_id) == keep_foreign:
        raise HoldError("give either --local-id ID or --keep-foreign")
    report = _held_job(imp, job_id)
    chosen = _patient(report, job_id, patient)
    _releasable(report, job_id, chosen, local_id)
    identity = None
    if local_id:
        known = [Candidate(**c) for c in chosen.get("candidates", []) if c["local_id"] == local_id]
        down: list[str] = []
        if not known:
            known, down = imp.reconciler.lookup(local_id)
        distinct = {(c.local_id, c.issuer): c for c in known}
        if not distinct:
            why = f"; sources down: {'; '.join(down)}" if down else ""
            raise HoldError(f"local ID {local_id!r} is not known to any identity source{why}")
        if len(distinct) > 1:
            raise HoldError(
                f"local ID {local_id!r} names {len(distinct)} patients (issuers differ)"
            )
        [candidate] = distinct.values()
        identity = identity_of(candidate, str(imp.settings.get("reconcile.issuer")))
    foreign = decision_key(chosen)
    imp.journal.add_decision(job_id, foreign, "release", identity_dict(identity), operator)
    imp.audit_event(
        "release",
        job=job_id,
        actor=operator,
        patient=foreign,
        local_id=identity.patient_id if identity else foreign,
        keep_foreign=keep_foreign,
    )
    return imp.process(job_id, [parse_dest(d) for d in dests or []])


def discard(
    imp: Importer,
    job_id: str,
    operator: str,
    reason: str,
    patient: str | None = None,
    dests: list[str] | None = None,
) -> JobResult:
    """Discard one held patient of ``job_id`` (every held one without
    ``patient``); nothing of it is sent.

    Raises
    ------
    HoldError
        Nothing is changed: unknown job or patient, not held, no reason.
    """
    operator = _operator(operator)
    if not reason.strip():
        raise HoldError("--reason: say why the medium is discarded")
    report = _held_job(imp, job_id)
    chosen = [_patient(report, job_id, patient)] if patient is not None else held_patients(report)
    for p in chosen:
        foreign = decision_key(p)
        imp.journal.add_decision(job_id, foreign, "discard", None, operator, reason.strip())
        imp.audit_event("discard", job=job_id, actor=operator, patient=foreign, reason=reason)
    return imp.process(job_id, [parse_dest(d) for d in dests or []])


# ------------------------------------------------- at the station holding it
@dataclass(frozen=True)
class Queued:
    """A decision written to the group's queue for the station that holds
    the job's spool (:mod:`pdimport.job.decisionqueue`); that station runs it."""

    job_id: str
    station: str
    decision: int


def holder(imp: Importer, job_id: str) -> str:
    """The station that holds ``job_id``'s spool ("" when not recorded)."""
    job = imp.journal.job(job_id)
    return str(getattr(job, "station", "") or "") if job is not None else ""


def decide(
    imp: Importer,
    queue: DecisionQueue | None,
    action: str,
    job_id: str,
    operator: str,
    args: dict[str, Any],
    dests: list[str] | None = None,
) -> JobResult | Queued:
    """Run a decision here when this station holds the job's spool (or no
    group is configured), else queue it for the station that does.

    The checks that need no spool run here first, so a mistaken decision is
    refused at the console that took it.

    Raises
    ------
    HoldError
        As :func:`release` and :func:`discard`; nothing is queued.
    """
    held_by = holder(imp, job_id)
    if queue is None or not held_by or held_by == queue.station:
        return run(imp, action, job_id, operator, args, dests)
    operator = _operator(operator)
    if action != "retry":
        report = _held_job(imp, job_id)
        patient = args.get("patient")
        if action == "release" or patient is not None:
            chosen = _patient(report, job_id, patient)
            if action == "release":
                _releasable(report, job_id, chosen, args.get("local_id"))
    return Queued(job_id, held_by, queue.submit(job_id, held_by, action, args, operator))


def run(
    imp: Importer,
    action: str,
    job_id: str,
    operator: str,
    args: dict[str, Any],
    dests: list[str] | None = None,
) -> JobResult:
    """The one code path of a decision, at the station holding the spool."""
    if action == "release":
        return release(
            imp,
            job_id,
            operator,
            local_id=args.get("local_id") or None,
            patient=args.get("patient"),
            keep_foreign=bool(args.get("keep_foreign")),
            dests=dests,
        )
    if action == "discard":
        return discard(
            imp, job_id, operator, str(args.get("reason", "")), args.get("patient"), dests
        )
    if action == "retry":
        imp.audit_event("retry_requested", job=job_id, actor=operator)
        return imp.process(job_id, [parse_dest(d) for d in dests or []])
    raise HoldError(f"unknown decision {action!r}")


def execute(imp: Importer, decision: Decision, dests: list[str]) -> dict[str, Any]:
    """A queued decision, run here; the result the queue records."""
    held_by = holder(imp, decision.job)
    if held_by and held_by != decision.station:  # never work from a spool it does not have
        raise HoldError(f"job {decision.job} is not held at station {decision.station}")
    result = run(imp, decision.action, decision.job, decision.operator, decision.args, dests)
    return {
        "job": result.job_id,
        "state": str(result.state),
        "exit_code": result.exit_code,
        "summary": report_mod.summary(result.report),
    }


def purge_discarded(journal: Journal, spool: Spool, retention_days: float, now: float) -> int:
    """Delete the spooled files of media discarded more than
    ``retention_days`` ago (content another job still holds is kept);
    returns how many files went."""
    gone = journal.purgeable(now - retention_days * 86400)
    return sum(1 for sha in gone if spool.remove(sha))


# ------------------------------------------------------------ command line
def jobs_held_main(journal: Journal | None, as_json: bool) -> int:
    """``pdimport jobs --held``."""
    jobs = held_jobs(journal) if journal is not None else []
    if as_json:
        print(json.dumps(jobs, ensure_ascii=False, indent=2))
        return 0
    for j in jobs:
        print(f"{j['job']}  held ({', '.join(j['hold_reasons'])})  {j['source']}")
        for p in j["patients"]:
            print(
                f"    patient {p['id'] or '(no ID)'} {p['name']} {p['birth_date']} {p['sex']}"
                f"  {p['hold_reason'] or ''}".rstrip()
            )
            for c in p["candidates"]:
                print(
                    f"      candidate {c['local_id']} {c['name']} {c['birth_date']} {c['sex']}"
                    f"  ({c['source']})"
                )
    return 0


def decision_main(imp: Importer, args: Any, dests: list[str]) -> int:
    """``pdimport release`` / ``pdimport discard``: exit status as for import.

    In a hospital group a job read at another station is queued for it; the
    command waits :data:`QUEUED_WAIT` seconds for that station's answer.
    """
    from pdimport.job.decisionqueue import DONE, for_journal

    if args.command == "release":
        action = "release"
        fields = {
            "local_id": args.local_id,
            "patient": args.patient,
            "keep_foreign": bool(args.keep_foreign),
        }
    else:
        action, fields = "discard", {"reason": args.reason, "patient": args.patient}
    queue = for_journal(imp.journal)
    result = decide(imp, queue, action, args.job, args.operator, fields, dests)
    if isinstance(result, Queued):
        assert queue is not None
        print(
            f"job {result.job_id} is held at station {result.station}: decision"
            f" {result.decision} queued there"
        )
        done = queue.wait(result.decision, QUEUED_WAIT)
        if done is None:
            print(
                f"station {result.station} has not answered yet; it runs the decision"
                " when it is up (pdimport jobs shows the outcome)"
            )
            return 1
        answer = done.result or {}
        if done.state != DONE:
            print(f"station {result.station}: {answer.get('error', 'failed')}", file=sys.stderr)
            return 64 if "HoldError" in str(answer.get("error", "")) else 2
        print(answer.get("summary", ""))
        return int(answer.get("exit_code", 1))
    # A daemon on this state directory shows the job too: its status, its
    # watch-folder result file and its retry queue follow the decision.
    notify.job_changed(imp.settings.state_path, result.job_id)
    if args.json:
        print(report_mod.dumps(result.report))
    else:
        print(report_mod.summary(result.report), file=sys.stdout)
    return result.exit_code
