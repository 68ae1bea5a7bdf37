"""Which local patient the patient on a medium is, if exactly one.

IHE Import Reconciliation Workflow (ITI TF-1 / RAD TF-1 §21): instances from
another enterprise are filed under a local identity only when that identity
is certain. The rule here:

* birth date equal: a full YYYYMMDD on both sides, compared after stripping;
* sex equal: non-empty on both sides, compared after stripping and
  upper-casing; ``O`` is a value like ``M`` and ``F``;
* the names share a key (:func:`pdimport.reconcile.names.same_name`): at
  least one component group agrees after normalisation.

Exactly one local patient (local ID + issuer; the same patient returned by
several sources counts once) is a match. None or several is for a person to
decide, and the result carries who was close. The foreign Patient ID never
takes part: two hospitals' IDs share a namespace only by accident.
"""

from __future__ import annotations

from collections.abc import Sequence

from pdimport.reconcile.model import Candidate, Demographics, MatchKind, MatchResult
from pdimport.reconcile.names import name_keys, same_name

__all__ = ["match"]


def _birth_date(value: str) -> str:
    """A DA value as compared: stripped, and ``""`` unless a full YYYYMMDD.

    A year or year-month alone (seen on old media) is not a birth date that
    tells two people apart.
    """
    value = value.strip()
    return value if len(value) == 8 and value.isascii() and value.isdigit() else ""


def _sex(value: str) -> str:
    return value.strip().upper()


def _patient(candidate: Candidate) -> tuple[str, str]:
    """Who a candidate is locally: the same pair from two sources is one patient."""
    return candidate.local_id.strip(), candidate.issuer.strip()


def _patients(candidates: Sequence[Candidate]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(_patient(c) for c in candidates))


def _label(patient: tuple[str, str]) -> str:
    local_id, issuer = patient
    return f"{local_id} ({issuer})" if issuer else local_id


def match(who: Demographics, candidates: Sequence[Candidate]) -> MatchResult:
    """Match the patient on a medium against the local candidates.

    Parameters
    ----------
    who : Demographics
        The patient as the medium describes them. ``who.patient_id`` and
        ``who.issuer`` are not used.
    candidates : sequence of Candidate
        Local patients from one or more identity sources, in the order the
        sources were tried; the first record of the chosen patient is the one
        returned as ``chosen``.

    Returns
    -------
    MatchResult
        ``MATCH`` with ``chosen``, every record of that patient in
        ``candidates`` and ``rule`` such as ``birth_date+sex+name:phonetic``;
        ``AMBIGUOUS`` with every matching record; ``NO_MATCH`` with the
        candidates of the same birth date (those whose name matches when the
        medium has no birth date), so a person sees who was close.
    """
    birth_date = _birth_date(who.birth_date)
    sex = _sex(who.sex)
    if not birth_date:
        named = tuple(c for c in candidates if same_name(who.name, c.name))
        why = "no birth date" if not who.birth_date.strip() else "no full birth date"
        return MatchResult(
            MatchKind.NO_MATCH,
            candidates=named,
            detail=f"the medium has {why} ({who.birth_date!r}): never matched without one",
        )
    same_birth = tuple(c for c in candidates if _birth_date(c.birth_date) == birth_date)
    if not sex:
        return MatchResult(
            MatchKind.NO_MATCH,
            candidates=same_birth,
            detail="the medium has no sex: never matched without one",
        )
    if not name_keys(who.name):
        return MatchResult(
            MatchKind.NO_MATCH,
            candidates=same_birth,
            detail="the medium's patient name is empty: never matched without one",
        )

    # a record without a local ID cannot be filed under: it is never chosen
    matched = [
        (c, kind)
        for c in same_birth
        if c.local_id.strip() and _sex(c.sex) == sex and (kind := same_name(who.name, c.name))
    ]
    patients = _patients([c for c, _ in matched])
    if not patients:
        return MatchResult(
            MatchKind.NO_MATCH,
            candidates=same_birth,
            detail=(
                f"no local patient with birth date {birth_date}, sex {sex} and the same name"
                f" ({len(_patients(same_birth))} with that birth date)"
            ),
        )
    records = tuple(c for c, _ in matched)
    if len(patients) > 1:
        return MatchResult(
            MatchKind.AMBIGUOUS,
            candidates=records,
            detail=(
                f"{len(patients)} local patients have birth date {birth_date}, sex {sex}"
                f" and the same name: {', '.join(_label(p) for p in patients)}"
            ),
        )
    chosen, kind = matched[0]
    sources = sorted({c.source for c in records})
    return MatchResult(
        MatchKind.MATCH,
        chosen=chosen,
        candidates=records,
        rule=f"birth_date+sex+name:{kind}",
        detail=f"local patient {_label(patients[0])} (from {', '.join(sources)})",
    )
