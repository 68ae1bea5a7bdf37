"""Policy between grouping and delivery: AI results, Other Content, routes.

* AI results (CAD heat maps, derived secondary captures, automatic SEG, CAD
  SR) are found from their attributes, each with the attribute that says so
  (``ai_evidence`` in the report), and, by policy, marked visibly (``mark``),
  held for a person (``hold``) or kept in the spool and not sent (``skip``).
* Clinical non-DICOM files become DICOM filed with the medium's one patient.
* Routes send each kind (rt, ai, document, ...) to its own destinations on
  top of the default ones.

Every object derived here is stored in the spool and remembered in the
journal against its source, so a resumed or repeated import sends the very
same bytes (same UIDs) and the journal recognises them as delivered.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdimport.model import Header
from pdimport.policy.classify import (
    DEFAULT_AI_PATTERNS,
    SEGMENTATION_CLASSES,
    AIRules,
    Rules,
    as_rules,
    class_evidence,
    classify,
    classify_with_evidence,
)
from pdimport.policy.group import Instance
from pdimport.problems import FileProblem, Problem

log = logging.getLogger(__name__)

KINDS = ("image", "rt", "ai", "document", "sr", "other")

#: SOP classes whose images are AI candidates when ImageType is DERIVED:
#: the Secondary Capture family, where CAD and AI products put their output.
_SC_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True)
class Route:
    """``kind[:modality]=URL``: also send instances of ``kind`` to ``dest``."""

    kind: str
    modality: str
    dest: Any

    def matches(self, inst: Instance) -> bool:
        if self.kind != "*" and inst.kind != self.kind:
            return False
        return not self.modality or inst.header.modality.upper() == self.modality.upper()


def parse_routes(specs: list[str], parse_dest: Callable[[str], Any]) -> list[Route]:
    """Parse ``--route KIND[:MODALITY]=URL`` values (or the ``route`` config list)."""
    routes = []
    for spec in specs:
        left, sep, url = spec.partition("=")
        if not sep or not url:
            raise ValueError(f"route {spec!r}: expected KIND=URL, e.g. rt=dicom://TPS@host:104")
        kind, _, modality = left.strip().partition(":")
        kind = kind.strip().lower()
        if kind not in KINDS and kind != "*":
            raise ValueError(f"route {spec!r}: kind must be one of {', '.join(KINDS)}")
        routes.append(Route(kind, modality.strip(), parse_dest(url.strip())))
    return routes


# ----------------------------------------------------------------------- AI
def detect_ai(instances: list[Instance], spool_path: Callable[[str], Path], rules: Rules) -> None:
    """Classify again, from the spooled file, the instances that may be AI
    results (or, for segmentations, may not be), and note on each ``ai`` one
    the attribute that made it so (:func:`ai_evidence`).

    `rules` is an :class:`~pdimport.policy.classify.AIRules` (:func:`ai_rules`)
    or just the patterns. Only images that can be AI output are read in full
    (DERIVED ImageType or a Secondary Capture class), and every segmentation:
    reading every CT slice again would cost a pydicom parse per file for
    nothing. A file that cannot be read keeps the kind its class gave it.
    """
    rules = as_rules(rules)
    for inst in instances:
        uid = inst.header.sop_class_uid
        evidence = class_evidence(uid) if inst.kind == "ai" else ""
        if _worth_reading(inst):
            from pydicom import dcmread  # here: a medium of plain images never needs it

            try:
                ds = dcmread(spool_path(inst.send_sha256), stop_before_pixels=True)
                inst.kind, evidence = classify_with_evidence(ds, rules)
            except Exception:
                log.exception("AI check of %s", inst.path)
                if inst.kind == "ai":
                    evidence += " (its attributes could not be read)"
        _note_evidence(inst, evidence)


def _worth_reading(inst: Instance) -> bool:
    if inst.header.sop_class_uid in SEGMENTATION_CLASSES:
        return True
    return inst.kind in ("image", "sr", "other") and _ai_candidate(inst.header)


def _ai_candidate(h: Header) -> bool:
    return (
        "DERIVED" in h.image_type.upper()
        or h.sop_class_uid.startswith(_SC_PREFIX)
        or h.sop_class_uid.startswith("1.2.840.10008.5.1.4.1.1.88.")
    )


#: Attribute of an Instance that holds why it is ``ai`` (read by job/report.py).
AI_EVIDENCE = "ai_evidence"


def _note_evidence(inst: Instance, evidence: str) -> None:
    # Instance (policy/group.py) has no field for it yet: set by name, read
    # with getattr by ai_evidence() and the report.
    setattr(inst, AI_EVIDENCE, evidence if inst.kind == "ai" else "")


def ai_evidence(inst: Any) -> str:
    """Why `inst` is an AI result (``SegmentSequence[1].SegmentAlgorithmType
    =AUTOMATIC``), or "" when it is not one or was not looked at."""
    return str(getattr(inst, AI_EVIDENCE, "") or "")


def mark_ai_instances(
    instances: list[Instance],
    prefix: str,
    store: DerivedStore,
    on_coercion: Callable[[Instance], None],
) -> list[Problem]:
    """Policy ``mark``: send AI instances with ``prefix`` on SeriesDescription,
    the change recorded in Original Attributes Sequence (PS3.3 C.12.1.1.9)."""
    from pydicom import dcmread

    from pdimport.convert import mark_ai

    problems: list[Problem] = []
    for inst in instances:
        if inst.kind != "ai" or inst.state != "pending":
            continue

        def build(out: Path, inst: Instance = inst) -> None:
            ds = dcmread(store.path(inst.send_sha256))
            mark_ai(ds, prefix=prefix, source=inst.header.institution_name)
            ds.save_as(out, enforce_file_format=True)

        try:
            [inst.send_sha256] = store.derive(inst.send_sha256, f"ai-mark:{prefix}", build)
            inst.detail = f"marked {prefix!r}"
            on_coercion(inst)
        except Exception as exc:
            log.exception("marking %s", inst.path)
            inst.state = "failed"
            problems.append(Problem("internal_error", inst.path, f"AI marking failed: {exc}"))
    return problems


# ------------------------------------------------------------ Other Content
def convert_other_content(
    other: list[tuple[str, str, str]],
    patients_headers: list[Header],
    store: DerivedStore,
    scan_one: Callable[[str, str], Header | Problem],
) -> tuple[list[Instance], list[dict[str, str]], list[Problem]]:
    """Convert each ``(path, sha256, subtype)`` into DICOM filed with the
    medium's one patient. Returns the new instances, the report's
    ``converted`` entries and the problems."""
    instances: list[Instance] = []
    converted: list[dict[str, str]] = []
    problems: list[Problem] = []
    if not other:
        return instances, converted, problems
    # the builders import pydicom and PIL: only a medium with Other Content pays for them
    from pdimport.convert import SUBTYPES, PatientContext, convert_file

    _study_extras(patients_headers, store)
    try:
        ctx = PatientContext.from_headers(patients_headers)
    except ValueError as exc:
        for path, _sha, _sub in other:
            problems.append(Problem("unsupported_content", path, f"not converted: {exc}"))
        return instances, converted, problems
    ctx_key = f"convert:{ctx.PatientID}:{ctx.StudyInstanceUID or 'new'}"
    for path, sha, subtype in other:
        if subtype not in SUBTYPES:
            problems.append(Problem("unsupported_content", path, subtype))
            continue

        def build(
            out_dir: Path, path: str = path, sha: str = sha, subtype: str = subtype
        ) -> list[Path]:
            return convert_file(store.path(sha), path, subtype, ctx, out_dir)

        try:
            outs = store.derive_many(sha, ctx_key, build)
        except FileProblem as exc:
            problems.append(Problem(exc.code, path, exc.detail))
            continue
        except Exception as exc:
            log.exception("converting %s", path)
            problems.append(Problem("internal_error", path, f"conversion failed: {exc}"))
            continue
        for out_sha in outs:
            res = scan_one(out_sha, path)
            if isinstance(res, Problem):
                problems.append(Problem(res.code, path, f"converted object: {res.detail}"))
                continue
            inst = Instance(
                path=path,
                sha256=out_sha,
                header=res,
                kind=classify(res),
                send_sha256=out_sha,
                detail=f"converted from {subtype}",
            )
            inst.converted = True
            instances.append(inst)
            converted.append(
                {
                    "path": path,
                    "sop_instance_uid": res.sop_instance_uid,
                    "sop_class_uid": res.sop_class_uid,
                    "type": subtype,
                }
            )
    return instances, converted, problems


def _study_extras(headers: list[Header], store: DerivedStore) -> None:
    """Study ID and Referring Physician's Name, which the header scan does
    not carry, from one instance of each study: converted objects that join
    the study repeat them (General Study Module, PS3.3 C.7.2.1)."""
    from pydicom import dcmread

    seen: dict[str, dict[str, str]] = {}
    for h in headers:
        if "StudyID" in h.extra:
            continue
        if h.study_uid not in seen:
            values = {"StudyID": "", "ReferringPhysicianName": ""}
            sha = h.extra.get("_sha256", "")
            try:
                if sha:
                    ds = dcmread(
                        store.path(sha),
                        stop_before_pixels=True,
                        specific_tags=["StudyID", "ReferringPhysicianName"],
                    )
                    values = {k: str(ds.get(k, "") or "") for k in values}
            except Exception:
                log.exception("reading study attributes")
            seen[h.study_uid] = values
        h.extra.update(seen[h.study_uid])


class DerivedStore:
    """Objects derived from spooled originals, cached by (source, purpose)
    in the journal so that a rerun reuses the same bytes."""

    def __init__(self, spool: Any, journal: Any) -> None:
        self.spool = spool
        self.journal = journal

    def path(self, sha: str) -> Path:
        return self.spool.path(sha)

    def derive(self, sha: str, purpose: str, build: Callable[[Path], None]) -> list[str]:
        def many(out_dir: Path) -> list[Path]:
            out = out_dir / "derived.dcm"
            build(out)
            return [out]

        return self.derive_many(sha, purpose, many)

    def derive_many(self, sha: str, purpose: str, build: Callable[[Path], list[Path]]) -> list[str]:
        cached = self.journal.derived(sha, purpose)
        if cached is not None:
            shas = [s for s in cached.split(",") if s]
            if all(self.spool.has(s) for s in shas):
                return shas
        work = self.spool.workfile()
        work.unlink()
        work.mkdir()
        try:
            outs = [self.spool.put_file(p)[0] for p in build(work)]
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self.journal.record_derived(sha, purpose, ",".join(outs))
        return outs


def ai_rules(settings: Any) -> AIRules:
    """The AI rules of `settings`: ``ai.patterns`` (empty: the built-in list),
    ``ai.segment_algorithm_types``, ``ai.algorithm_identification``."""
    patterns = settings.get("ai.patterns")
    return AIRules(
        patterns=tuple(patterns) if patterns else DEFAULT_AI_PATTERNS,
        segment_algorithm_types=tuple(settings.get("ai.segment_algorithm_types")),
        algorithm_identification=bool(settings.get("ai.algorithm_identification")),
    )


#: The name job/importer.py calls it by; it hands the result to detect_ai.
ai_patterns = ai_rules
