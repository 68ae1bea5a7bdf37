"""The JSON report of a job (contract in DESIGN.md: field names are stable,
new fields may be added) and the status/exit code it implies."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from pdimport.problems import PROBLEM_CODES

if TYPE_CHECKING:
    from pdimport.job.inventory import Inventory
    from pdimport.job.reconcile import Settled
    from pdimport.policy.group import Patient
    from pdimport.store.journal import Decision, Job

_EXIT = {
    "imported": 0,
    "scanned": 0,
    "held": 1,
    "partial": 1,
    "waiting_for_destination": 1,
    "discarded": 1,
    "failed": 2,
}


def exit_code(status: str) -> int:
    """0 everything delivered; 1 held, partial or waiting for the destination;
    2 failed or unusable input."""
    return _EXIT.get(status, 2)


def status_of(
    inv: Inventory, hold_reasons: list[str], mode: str, failed: bool, discarded: bool = False
) -> str:
    if failed:
        return "failed"
    if hold_reasons:
        return "held"
    if discarded:
        return "discarded"  # a person discarded every patient of the medium
    errors = [p for p in inv.problems if PROBLEM_CODES[p.code][0] == "error"]
    live = [i for i in inv.instances if i.state not in ("skipped",)]
    if mode == "scan":
        if not live and not inv.other_content:
            return "failed"
        return "partial" if errors else "imported"
    sent = [i for i in live if i.state == "sent"]
    if any(i.state == "failed" and i.path in inv.transient for i in live):
        return "waiting_for_destination"  # typed send outcome: the PACS was not there
    if not live:
        # Nothing DICOM to deliver: a medium of documents only needs a person,
        # an empty or unreadable one has failed.
        return "partial" if inv.other_content else "failed"
    if not sent:
        return "failed"
    if errors or len(sent) != len(live):
        return "partial"
    return "imported"


def build(
    job: Job,
    inv: Inventory,
    patients: list[Patient],
    hold_reasons: list[str],
    mode: str,
    failed: bool = False,
    reconciled: list[Settled] | None = None,
    decisions: list[Decision] | None = None,
) -> dict[str, Any]:
    """The report of a job as it stands. ``reconciled`` says who each patient
    is here (:mod:`pdimport.job.reconcile`); ``decisions`` are a person's."""
    reconciled = reconciled or []
    discarded = False
    if reconciled:  # an inventory has none (and job.reconcile's imports reach pynetdicom)
        from pdimport.job.reconcile import all_discarded

        discarded = all_discarded(reconciled)
    status = status_of(inv, hold_reasons, mode, failed, discarded)
    # Each reported patient is the settled one its files belong to (patients
    # may be grouped again after conversion; several may have no ID).
    by_instance = {id(i): r for r in reconciled for i in r.instances}
    counts = {
        "files": inv.files,
        "dicom": len(inv.instances),
        "other_content": len(inv.other_content),
        "converted": len(inv.converted),
        "sent": sum(1 for i in inv.instances if i.state == "sent"),
        "failed": sum(1 for i in inv.instances if i.state == "failed"),
        "skipped": sum(1 for i in inv.instances if i.state == "skipped"),
        "held": sum(1 for i in inv.instances if i.state == "held"),
        "conflict": sum(1 for i in inv.instances if i.state == "conflict"),
        "already_sent": sum(1 for i in inv.instances if i.previously_sent),
        "ignored": len(inv.ignored),
        "problems": len(inv.problems),
        "scan_fallbacks": sum(inv.scan_fallbacks.values()),
    }
    kinds = {i.kind for i in inv.instances}
    return {
        "job": job.id,
        "mode": mode,
        "source": {
            "kind": job.source_kind,
            "path": job.source_path,
            "label": job.label,
            "facility": facility(inv),
        },
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": status,
        "hold_reasons": hold_reasons,
        "flags": {
            "multi_patient": "multi_patient" in hold_reasons,
            "rt": "rt" in kinds,
            "ai": "ai" in kinds,
            "other_content": bool(inv.other_content),
        },
        "patients": [_patient(p, _settled_of(p, by_instance)) for p in patients],
        "decisions": [d.as_dict() for d in decisions or []],
        "counts": counts,
        "instances": [_instance(i) for i in inv.instances],
        "other_content": [{"path": p, "type": t} for p, _sha, t in inv.other_content],
        "ignored": [{"path": p, "reason": r} for p, r in inv.ignored],
        "converted": inv.converted,
        "problems": [p.as_dict() for p in inv.problems],
        "scan_fallbacks": dict(sorted(inv.scan_fallbacks.items())),
    }


def _patient(p: Patient, settled: Settled | None) -> dict[str, Any]:
    identity = settled.identity if settled is not None else None
    return {
        "id": p.id,
        "issuer": p.issuer,
        "name": p.name,
        "birth_date": p.birth_date,
        "sex": p.sex,
        "unidentified": p.unidentified,
        "local_id": identity.patient_id if identity is not None else p.local_id,
        "local_issuer": identity.issuer if identity is not None else None,
        "local_name": identity.name if identity is not None else None,
        "decision": settled.action if settled is not None else None,
        "hold_reason": (settled.hold_reason or None) if settled is not None else None,
        "match": settled.match if settled is not None else None,
        "candidates": settled.candidates if settled is not None else [],
        "studies": [
            {
                "uid": st.uid,
                "date": st.date,
                "description": st.description,
                "accession": st.accession,
                "series": [
                    {
                        "uid": se.uid,
                        "modality": se.modality,
                        "number": se.number,
                        "description": se.description,
                        "instances": len(se.instances),
                        "sent": sum(1 for i in se.instances if i.state == "sent"),
                    }
                    for se in st.series.values()
                ],
            }
            for st in p.studies.values()
        ],
    }


def _settled_of(p: Patient, by_instance: dict[int, Settled]) -> Settled | None:
    """The settled patient most of ``p``'s files belong to (converted objects
    made for it are not in it)."""
    votes: dict[int, int] = {}
    for st in p.studies.values():
        for se in st.series.values():
            for inst in se.instances:
                if (s := by_instance.get(id(inst))) is not None:
                    votes[id(s)] = votes.get(id(s), 0) + 1
    if not votes:
        return None
    best = max(votes, key=lambda k: votes[k])
    return next(s for s in by_instance.values() if id(s) == best)


def facility(inv: Inventory) -> str:
    """The sending institution, as the instances name it (most common value)."""
    names: dict[str, int] = {}
    for inst in inv.instances:
        name = inst.header.institution_name.strip()
        if name:
            names[name] = names.get(name, 0) + 1
    return max(names, key=lambda n: names[n]) if names else ""


def _instance(i: Any) -> dict[str, Any]:
    out = {
        "sop_instance_uid": i.uid,
        "sop_class_uid": i.header.sop_class_uid,
        "path": i.path,
        "kind": i.kind,
        "state": i.state,
        "transfer_syntax": i.header.transfer_syntax,
        "encoding": i.header.encoding,
        "sha256": i.sha256,
        "study_uid": i.header.study_uid,
        "series_uid": i.header.series_uid,
    }
    if i.previously_sent:
        out["previously_sent"] = True
    if i.converted:
        out["converted"] = True
    if i.dest_states:
        out["destinations"] = dict(i.dest_states)
    if i.detail:
        out["detail"] = i.detail
    evidence = getattr(i, "ai_evidence", "")  # policy.rules.detect_ai: the attribute that said AI
    if evidence:
        out["ai_evidence"] = evidence
    return out


#: Depth from which a value is written on one line (see :func:`dumps`).
FLAT_DEPTH = 2
#: ``json.dumps(v, ensure_ascii=False)`` without a new encoder per call
#: (10,000 instance lines: 42 -> 33 ms).
_encode = json.JSONEncoder(ensure_ascii=False).encode


def dumps(report: Any, depth: int = 0) -> str:
    """JSON for people and tools: indented down to the report's lists, each
    of their items on one line (an instance, a problem, a patient).

    ``json.dumps(indent=2)`` runs CPython's pure-Python encoder, ≈ 10× the
    C one: 0.25 s for a 10,000-instance report, about a third of a whole
    ``pdimport scan``; here the C encoder writes every line."""
    if depth >= FLAT_DEPTH or not isinstance(report, (dict, list)) or not report:
        return _encode(report)
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(report, dict):
        items = [f"{inner}{_encode(str(k))}: {dumps(v, depth + 1)}" for k, v in report.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    items = [inner + dumps(v, depth + 1) for v in report]
    return "[\n" + ",\n".join(items) + "\n" + pad + "]"


def summary(report: dict[str, Any]) -> str:
    """A few human lines for the terminal."""
    c = report["counts"]
    lines = [
        f"job {report['job']}: {report['status'].upper()}"
        + (f" ({', '.join(report['hold_reasons'])})" if report["hold_reasons"] else ""),
        f"  source  {report['source']['kind']} {report['source']['path']}"
        + (f" [{report['source']['label']}]" if report["source"]["label"] else ""),
        (
            f"  files {c['files']}, DICOM {c['dicom']}, sent {c['sent']}"
            f" (already there {c['already_sent']}), failed {c['failed']}, held {c['held']},"
            f" other content {c['other_content']}, problems {c['problems']}"
        ),
    ]
    fallbacks = report.get("scan_fallbacks") or {}
    if fallbacks:
        lines.append(
            f"  header scan: {sum(fallbacks.values())} file(s) read by the pydicom path ("
            + ", ".join(f"{k} {v}" for k, v in fallbacks.items())
            + ")"
        )
    for p in report["patients"]:
        n = sum(se["instances"] for st in p["studies"] for se in st["series"])
        lines.append(f"  patient {p['id']} {p['name']}: {len(p['studies'])} studies, {n} instances")
    for prob in report["problems"][:20]:
        lines.append(f"  ! {prob['code']}: {prob['path']} {prob['detail']}".rstrip())
    if len(report["problems"]) > 20:
        lines.append(f"  ! … {len(report['problems']) - 20} more in the JSON report")
    return "\n".join(lines)
