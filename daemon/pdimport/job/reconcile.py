"""Phase 2's identity step: who each patient of a medium is here.

For every patient the medium holds, in order:

1. a person's decision (``pdimport release`` / ``discard``) decides;
2. else, with several patients and ``policy.multi_patient = hold``, the
   patient is held (``multi_patient``); the files that name no patient
   (:func:`~pdimport.policy.group.group_patients`) are held
   (``unidentified_patient``) until a person discards them, and are not
   counted as a patient;
3. else, when an earlier run of the job settled the patient (a retry after
   the PACS was down, a resume), that identity stays;
4. else the identity sources are asked in order (``reconcile.sources``): the
   first that names exactly one matching local patient decides; one that
   names several holds the patient (``ambiguous_match``); one that does not
   answer holds it (``identity_source_down``), never sent under the foreign ID
   by accident; when none matches, ``reconcile.unmatched`` says what happens
   (hold, keep the foreign ID, or prefix it);
5. with no source configured, the instances are delivered as they are.

A patient with a local identity is delivered as coerced copies
(:mod:`pdimport.reconcile.coerce`); the original bytes stay in the spool.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pdimport.policy.group import Instance, Patient, patient_instances
from pdimport.problems import Problem
from pdimport.reconcile.match import match
from pdimport.reconcile.model import Candidate, Demographics, IdentitySource, MatchKind, SourceDown
from pdimport.reconcile.sources import expectations_at, open_source
from pdimport.settings import Settings
from pdimport.store.journal import Decision, Journal
from pdimport.store.spool import Spool

if TYPE_CHECKING:
    from pdimport.reconcile.coerce import LocalIdentity

log = logging.getLogger(__name__)

DELIVER, HOLD, DISCARD = "deliver", "hold", "discard"
#: The decision key of the files that name no patient (``--patient unidentified``).
UNIDENTIFIED = "unidentified"


@dataclass
class Settled:
    """What becomes of one patient of a medium."""

    patient: Patient
    instances: list[Instance]
    action: str  # DELIVER | HOLD | DISCARD
    identity: LocalIdentity | None = None  # None: delivered as on the medium
    hold_reason: str = ""
    match: dict[str, str] | None = None  # kind, source, rule, detail
    candidates: list[dict[str, str]] = field(default_factory=list)
    decision: Decision | None = None


def all_discarded(settled: list[Settled]) -> bool:
    """A person discarded every patient of the medium (none: not discarded)."""
    return bool(settled) and all(s.action == DISCARD for s in settled)


def identity_dict(identity: LocalIdentity | None) -> dict[str, Any] | None:
    return None if identity is None else dataclasses.asdict(identity)


def local_identity(**fields: Any) -> LocalIdentity:
    """A :class:`~pdimport.reconcile.coerce.LocalIdentity`. Coercion needs
    pydicom (≈ 0.3 s to import): it is loaded when a medium has a patient to
    coerce, not at every start."""
    from pdimport.reconcile.coerce import LocalIdentity

    return LocalIdentity(**fields)


def identity_of(candidate: Candidate, default_issuer: str) -> LocalIdentity:
    """A matched candidate's identity; ``reconcile.issuer`` where the source names none."""
    from pdimport.reconcile.coerce import LocalIdentity

    identity = LocalIdentity.from_candidate(candidate)
    if not identity.issuer and default_issuer:
        identity = dataclasses.replace(identity, issuer=default_issuer)
    return identity


def demographics(patient: Patient) -> Demographics:
    return Demographics(
        name=patient.name,
        birth_date=patient.birth_date.strip(),
        sex=patient.sex.strip().upper(),
        patient_id=patient.id,
        issuer=patient.issuer,
    )


class Reconciler:
    """Settles the identity of a job's patients and coerces their instances."""

    def __init__(self, settings: Settings, journal: Journal, spool: Spool) -> None:
        self.settings = settings
        self.journal = journal
        self.spool = spool
        self._sources: list[IdentitySource] | None = None

    # ----------------------------------------------------------- sources
    @property
    def sources(self) -> list[IdentitySource]:
        """The configured identity sources, opened on first use."""
        if self._sources is None:
            self._sources = [
                open_source(
                    url,
                    timeout=float(self.settings.get("reconcile.timeout")),
                    calling_aet=str(self.settings.get("calling_aet")),
                    state_dir=expectations_at(self.settings),
                )
                for url in self.settings.get("reconcile.sources")
            ]
        return self._sources

    def lookup(self, local_id: str) -> tuple[list[Candidate], list[str]]:
        """Every local patient with ``local_id`` in any source, and the
        sources that did not answer."""
        found: list[Candidate] = []
        down: list[str] = []
        for source in self.sources:
            try:
                found.extend(source.lookup(local_id))
            except SourceDown as exc:
                down.append(exc.detail)
        return found, down

    # ------------------------------------------------------------ settle
    def settle(
        self, job_id: str, patients: list[Patient], facility: str, problems: list[Problem]
    ) -> list[Settled]:
        """Decide each patient's fate; problems found on the way are appended."""
        decisions = {d.patient: d for d in self.journal.decisions(job_id)}  # the last one counts
        earlier = self.journal.settlements(job_id)
        several = len([p for p in patients if not p.unidentified]) > 1
        out: list[Settled] = []
        for patient in patients:
            insts = patient_instances(patient)
            only = len(patients) == 1
            decision = decisions.get(patient.id) or (decisions.get("") if only else None)
            if patient.unidentified:
                out.append(self._unidentified(patient, insts, decisions.get(UNIDENTIFIED)))
            elif decision is not None:
                out.append(self._decided(patient, insts, decision))
            elif patient.id in earlier:
                # Settled by an earlier run of this job (a retry, a resume): a
                # patient is never delivered under two identities, whatever
                # the sources or settings say now.
                identity, how = earlier[patient.id]
                local = local_identity(**identity) if identity else None
                out.append(Settled(patient, insts, DELIVER, identity=local, match=how))
            elif several and self.settings.get("policy.multi_patient") == "hold":
                out.append(Settled(patient, insts, HOLD, hold_reason="multi_patient"))
            elif not self.settings.get("reconcile.sources"):
                out.append(Settled(patient, insts, DELIVER))
            else:
                out.append(self._ask(patient, insts, facility, problems))
        for s in out:
            if s.action == DELIVER and s.decision is None and not s.patient.unidentified:
                self.journal.record_settlement(
                    job_id, s.patient.id, identity_dict(s.identity), s.match
                )
        return out

    @staticmethod
    def _unidentified(
        patient: Patient, insts: list[Instance], decision: Decision | None
    ) -> Settled:
        """Files that name no one are never delivered as anybody: held until a
        person discards them or sends them as they are (``--keep-foreign``)."""
        if decision is not None and decision.action == DISCARD:
            return Settled(patient, insts, DISCARD, decision=decision)
        if decision is not None and decision.identity is None:
            return Settled(patient, insts, DELIVER, decision=decision)
        return Settled(patient, insts, HOLD, hold_reason="unidentified_patient")

    def _decided(self, patient: Patient, insts: list[Instance], decision: Decision) -> Settled:
        if decision.action == DISCARD:
            return Settled(patient, insts, DISCARD, decision=decision)
        identity = local_identity(**decision.identity) if decision.identity else None
        return Settled(
            patient,
            insts,
            DELIVER,
            identity=identity,
            match={"kind": "decision", "source": f"operator {decision.operator}", "rule": ""},
            decision=decision,
        )

    def _ask(
        self, patient: Patient, insts: list[Instance], facility: str, problems: list[Problem]
    ) -> Settled:
        who = demographics(patient)
        close: list[Candidate] = []
        for source in self.sources:
            try:
                found = source.candidates(who)
            except SourceDown as exc:
                log.warning("identity source down: %s", exc.detail)
                problems.append(Problem("identity_source_down", "", exc.detail))
                return Settled(patient, insts, HOLD, hold_reason="identity_source_down")
            result = match(who, found)
            if result.kind == MatchKind.MATCH and result.chosen is not None:
                identity = identity_of(result.chosen, str(self.settings.get("reconcile.issuer")))
                return Settled(
                    patient,
                    insts,
                    DELIVER,
                    identity=identity,
                    match={"kind": "match", "source": source.url, "rule": result.rule},
                    candidates=[result.chosen.as_dict()],
                )
            if result.kind == MatchKind.AMBIGUOUS:
                names = "; ".join(f"{c.local_id} {c.name}" for c in result.candidates)
                problems.append(Problem("ambiguous_match", "", f"{patient.id}: {names}"))
                return Settled(
                    patient,
                    insts,
                    HOLD,
                    hold_reason="ambiguous_match",
                    match={"kind": "ambiguous_match", "source": source.url, "rule": ""},
                    candidates=[c.as_dict() for c in result.candidates],
                )
            close.extend(result.candidates)
        return self._unmatched(patient, insts, facility, problems, close)

    def _unmatched(
        self,
        patient: Patient,
        insts: list[Instance],
        facility: str,
        problems: list[Problem],
        close: Iterable[Candidate],
    ) -> Settled:
        policy = self.settings.get("reconcile.unmatched")
        candidates = [c.as_dict() for c in close]
        problems.append(Problem("no_match", "", f"{patient.id} {patient.name} (policy {policy})"))
        if policy == "hold":
            return Settled(patient, insts, HOLD, hold_reason="no_match", candidates=candidates)
        local_id = patient.id
        if policy == "prefix":
            local_id = f"{self.settings.get('reconcile.prefix')}{patient.id}"
        identity = local_identity(
            patient_id=local_id,
            issuer=patient.issuer or facility,
            name=patient.name,
            birth_date=patient.birth_date,
            sex=patient.sex,
            source=f"reconcile.unmatched={policy}",
            accession_number=None,
        )
        return Settled(
            patient,
            insts,
            DELIVER,
            identity=identity,
            match={"kind": f"unmatched_{policy}", "source": "", "rule": ""},
            candidates=candidates,
        )

    # ------------------------------------------------------------ coerce
    def coerce(
        self, instances: Iterable[Instance], identity: LocalIdentity, facility: str
    ) -> list[Problem]:
        """Point each instance's ``send_sha256`` at a copy coerced to
        ``identity`` (made once, then found in the journal)."""
        from pdimport.reconcile.coerce import coerce_file

        accession = str(self.settings.get("reconcile.accession"))
        key = json.dumps([identity_dict(identity), accession, facility], sort_keys=True)
        purpose = "coerce:" + hashlib.sha256(key.encode()).hexdigest()[:32]
        problems: list[Problem] = []
        for inst in instances:
            cached = self.journal.derived(inst.send_sha256, purpose)
            if cached and self.spool.has(cached):
                inst.send_sha256 = cached
                continue
            work = self.spool.workfile(".dcm")
            try:
                coerce_file(
                    self.spool.path(inst.send_sha256),
                    work,
                    identity,
                    accession=accession,
                    foreign_issuer_fallback=facility,
                )
            except Exception as exc:
                log.exception("coercion of %s failed", inst.path)
                work.unlink(missing_ok=True)
                inst.state = "failed"
                inst.detail = f"not coerced to {identity.patient_id}: {exc}"
                problems.append(Problem("coercion_failed", inst.path, str(exc)))
                continue
            out, _ = self.spool.put_file(work)
            self.journal.record_derived(inst.send_sha256, purpose, out)
            inst.send_sha256 = out
        return problems
