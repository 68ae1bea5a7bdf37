"""Grouping and the checks that decide whether a medium may be sent.

Pure logic: instances (header values + content hash) in, groups and verdicts
out. Patients → studies → series as in the JSON report contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pdimport.model import Header


@dataclass
class Instance:
    """One DICOM instance found on a medium (after identification and scan)."""

    path: str  # display path on the medium
    sha256: str  # content identity of the original bytes
    header: Header
    kind: str = "image"
    state: str = "pending"  # pending | sent | failed | held | skipped | conflict
    send_sha256: str = ""  # spooled Part 10 file to send (== sha256 for Part 10 originals)
    previously_sent: bool = False
    converted: bool = False  # made by pdimport from Other Content
    detail: str = ""
    dest_states: dict[str, str] = field(default_factory=dict)
    #: every encoding of this instance on the medium, this one included,
    #: preferred first (one list shared by them; see policy/duplicates.py)
    copies: list[Instance] = field(default_factory=list, repr=False, compare=False)

    @property
    def uid(self) -> str:
        return self.header.sop_instance_uid


@dataclass
class Series:
    uid: str
    modality: str
    description: str
    number: str
    instances: list[Instance] = field(default_factory=list)


@dataclass
class Study:
    uid: str
    date: str
    description: str
    accession: str
    series: dict[str, Series] = field(default_factory=dict)


@dataclass
class Patient:
    id: str
    issuer: str
    name: str
    birth_date: str
    sex: str
    studies: dict[str, Study] = field(default_factory=dict)
    local_id: str | None = None


def normalise_name(name: str) -> str:
    """Compare names the way a person would: case, trailing component
    separators and padding do not make a different patient (PS3.5 §6.2.1)."""
    groups = [g.rstrip("^ ").strip().upper() for g in name.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _same_person(a: Header, b: Header) -> bool:
    if a.patient_id.strip() != b.patient_id.strip():
        return False
    if a.issuer_of_patient_id.strip() != b.issuer_of_patient_id.strip():
        return False
    na, nb = normalise_name(a.patient_name), normalise_name(b.patient_name)
    if na and nb:
        # One copy may carry ideographic components the other lacks: compare
        # the components both have.
        ga, gb = na.split("="), nb.split("=")
        if any(x and y and x != y for x, y in zip(ga, gb)):
            return False
    da, db = a.patient_birth_date.strip(), b.patient_birth_date.strip()
    return not (da and db and da != db)


def group_patients(instances: list[Instance]) -> list[Patient]:
    """Group instances into patients → studies → series, in medium order.

    A new patient starts whenever an instance is not the same person as any
    patient seen so far (different ID, issuer, name or birth date).
    """
    patients: list[tuple[Header, Patient]] = []
    for inst in instances:
        h = inst.header
        for ref, pat in patients:
            if _same_person(ref, h):
                break
        else:
            pat = Patient(
                id=h.patient_id,
                issuer=h.issuer_of_patient_id,
                name=h.patient_name,
                birth_date=h.patient_birth_date,
                sex=h.patient_sex,
            )
            patients.append((h, pat))
        study = pat.studies.setdefault(
            h.study_uid, Study(h.study_uid, h.study_date, h.study_description, h.accession_number)
        )
        series = study.series.setdefault(
            h.series_uid, Series(h.series_uid, h.modality, h.series_description, h.series_number)
        )
        series.instances.append(inst)
    return [p for _, p in patients]
