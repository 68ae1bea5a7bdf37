"""Grouping and the checks that decide whether a medium may be sent.

Pure logic: instances (header values + content hash) in, groups and verdicts
out. Patients → studies → series as in the JSON report contract.

Which files are one patient
---------------------------
Grouping is a function of the *set* of files: the order in which a medium
lists them changes the order of the report, never who is who. Absence of a
value never makes two files one patient.

A file's identifying values are Patient ID (0010,0020) with Issuer of Patient
ID (0010,0021), Patient's Name (0010,0010, compared by :func:`normalise_name`
and per component group, PS3.5 §6.2.1.2), Patient's Birth Date (0010,0030)
and Patient's Sex (0010,0040). A file is *blank* when it has no ID, no name
and no birth date. Two values *conflict* when both are present and differ;
two IDs also conflict when their issuers differ, an absent issuer included.

Two non-blank files *agree* when none of their values conflict and

(a) both carry the Patient ID (the same ID under the same issuer); or
(b) their names share a component group (alphabetic, ideographic or
    phonetic) and their birth dates are the same and present: the rule for
    a file without ID, also against a file with one; or
(c) neither carries an ID and their names and birth dates are the same
    (normalised), e.g. one name and no birth date on both.

Patients are the connected components of "agree". A component in which two
files conflict (joined only through a chain, e.g. a file without ID matching
two different IDs by name and birth date) is not one patient: each distinct
set of values in it becomes a patient of its own, as no side is safe. Two
patients is the safe failure: the medium is held (``multi_patient``) for a
person to decide.

A blank file joins a patient only through an explicit link: its Study
Instance UID is that of files of exactly one patient, whose values its own
(sex, issuer) do not conflict with. Every other blank file goes to one
patient marked ``unidentified``, which holds the medium
(``unidentified_patient``): nothing of it may be delivered as anybody.

Names are compared exactly (after normalisation), not by the fuzzy matching
of :mod:`pdimport.reconcile.names`: on one medium a different spelling is a
different value.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pdimport.model import Header
from pdimport.problems import Problem


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
    #: blank files (no ID, name or birth date) no study links to a patient
    unidentified: bool = False


@functools.lru_cache(maxsize=4096)  # a medium repeats a few names thousands of times
def normalise_name(name: str) -> str:
    """Compare names the way a person would: case, trailing component
    separators and padding do not make a different patient (PS3.5 §6.2.1)."""
    groups = [g.rstrip("^ ").strip().upper() for g in name.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


# ------------------------------------------------------------------ identity
@dataclass(frozen=True)
class _Identity:
    """The identifying values of one file, normalised for comparison."""

    PatientID: str
    IssuerOfPatientID: str
    PatientName: str  # normalise_name
    PatientBirthDate: str
    PatientSex: str
    #: alphabetic, ideographic and phonetic components (PS3.5 §6.2.1.2)
    name_groups: tuple[str, ...]

    @classmethod
    def of(cls, h: Header) -> _Identity:
        return _identity(
            h.patient_id,
            h.issuer_of_patient_id,
            h.patient_name,
            h.patient_birth_date,
            h.patient_sex,
        )

    @property
    def blank(self) -> bool:
        """Names no one: sex and issuer alone identify no patient."""
        return not (self.PatientID or self.PatientName or self.PatientBirthDate)


@functools.lru_cache(maxsize=4096)  # a medium repeats a few identities thousands of times
def _identity(pid: str, issuer: str, name: str, birth_date: str, sex: str) -> _Identity:
    name = normalise_name(name)
    return _Identity(
        pid.strip(),
        issuer.strip(),
        name,
        birth_date.strip(),
        sex.strip().upper(),
        tuple(name.split("=")) if name else (),
    )


def _differ(a: str, b: str) -> bool:
    return bool(a and b and a != b)


def _conflict(a: _Identity, b: _Identity) -> bool:
    """Some value is present in both and differs (an ID also by its issuer)."""
    if a.PatientID and b.PatientID and a.IssuerOfPatientID != b.IssuerOfPatientID:
        return True
    return (
        _differ(a.PatientID, b.PatientID)
        or _differ(a.IssuerOfPatientID, b.IssuerOfPatientID)
        or _differ(a.PatientBirthDate, b.PatientBirthDate)
        or _differ(a.PatientSex, b.PatientSex)
        or any(_differ(x, y) for x, y in zip(a.name_groups, b.name_groups, strict=False))
    )


def _agree(a: _Identity, b: _Identity) -> bool:
    """Rule (a), (b) or (c) of the module docstring."""
    if a.blank or b.blank or _conflict(a, b):
        return False
    if a.PatientID and b.PatientID:
        return True  # (a): the same ID under the same issuer
    same_group = any(x and x == y for x, y in zip(a.name_groups, b.name_groups, strict=False))
    if same_group and a.PatientBirthDate and a.PatientBirthDate == b.PatientBirthDate:
        return True  # (b)
    return (  # (c)
        not a.PatientID
        and not b.PatientID
        and a.PatientName == b.PatientName
        and a.PatientBirthDate == b.PatientBirthDate
    )


def _buckets(ident: _Identity) -> Iterator[tuple[str, ...]]:
    """Keys two identities share whenever they may agree: only identities
    in a common bucket are compared."""
    if ident.PatientID:
        yield ("id", ident.PatientID, ident.IssuerOfPatientID)
    if ident.PatientBirthDate:
        for n, group in enumerate(ident.name_groups):
            if group:
                yield ("name", str(n), group, ident.PatientBirthDate)
    if not ident.PatientID:
        yield ("demographics", ident.PatientName, ident.PatientBirthDate)


def _consistent(idents: Iterable[_Identity]) -> bool:
    """No two of ``idents`` conflict (checked on the sets of values)."""
    idents = list(idents)
    if len({(i.PatientID, i.IssuerOfPatientID) for i in idents if i.PatientID}) > 1:
        return False
    for values in (
        {i.IssuerOfPatientID for i in idents},
        {i.PatientBirthDate for i in idents},
        {i.PatientSex for i in idents},
    ):
        if len(values - {""}) > 1:
            return False
    groups: dict[int, set[str]] = {}
    for ident in idents:
        for n, group in enumerate(ident.name_groups):
            if group:
                groups.setdefault(n, set()).add(group)
    return all(len(v) == 1 for v in groups.values())


def _components(nodes: list[_Identity]) -> list[list[int]]:
    """Connected components of the agree relation over distinct identities."""
    parent = list(range(len(nodes)))

    def root(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    buckets: dict[tuple[str, ...], list[int]] = {}
    for n, ident in enumerate(nodes):
        for key in _buckets(ident):
            buckets.setdefault(key, []).append(n)
    for members in buckets.values():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                if root(a) != root(b) and _agree(nodes[a], nodes[b]):
                    parent[max(root(a), root(b))] = min(root(a), root(b))
    components: dict[int, list[int]] = {}
    for n in range(len(nodes)):
        components.setdefault(root(n), []).append(n)
    return list(components.values())


def _person_groups(idents: list[_Identity]) -> list[list[int]]:
    """Sets of distinct (non-blank) identities that are each one patient."""
    out: list[list[int]] = []
    for component in _components(idents):
        if _consistent(idents[n] for n in component):
            out.append(component)
        else:  # joined only through a chain of partial matches: no side is safe
            out.extend([n] for n in component)
    return out


# ------------------------------------------------------------------ grouping
def group_patients(instances: list[Instance]) -> list[Patient]:
    """Group instances into patients → studies → series.

    Membership depends only on the set of instances (module docstring);
    patients, studies and series are listed in order of first appearance on
    the medium. Blank files no study links to exactly one patient form one
    patient with ``unidentified`` set, listed where its first file is.
    """
    idents = [_Identity.of(i.header) for i in instances]
    nodes = list(dict.fromkeys(i for i in idents if not i.blank))
    node_of = {ident: n for n, ident in enumerate(nodes)}
    group_of: dict[int, int] = {}  # node -> group
    groups = _person_groups(nodes)
    for g, members in enumerate(groups):
        for n in members:
            group_of[n] = g
    unlinked = len(groups)
    member: list[int] = [unlinked if ident.blank else group_of[node_of[ident]] for ident in idents]
    studies: dict[str, set[int]] = {}
    for inst, g in zip(instances, member, strict=True):
        if g != unlinked and inst.header.study_uid:
            studies.setdefault(inst.header.study_uid, set()).add(g)
    for k, (inst, ident) in enumerate(zip(instances, idents, strict=True)):
        linked = studies.get(inst.header.study_uid, set()) if ident.blank else set()
        if len(linked) == 1:
            [g] = linked
            if _consistent([ident, *(nodes[n] for n in groups[g])]):
                member[k] = g
    return _build(instances, member, unlinked)


def _build(instances: list[Instance], member: list[int], unidentified: int) -> list[Patient]:
    """Patients → studies → series in medium order, from each instance's group."""
    files: dict[int, list[Header]] = {}
    for inst, g in zip(instances, member, strict=True):
        files.setdefault(g, []).append(inst.header)
    patients = {
        g: Patient("", "", "", "", "", unidentified=True) if g == unidentified else _patient(hs)
        for g, hs in files.items()
    }
    for inst, g in zip(instances, member, strict=True):
        h = inst.header
        study = patients[g].studies.setdefault(
            h.study_uid, Study(h.study_uid, h.study_date, h.study_description, h.accession_number)
        )
        series = study.series.setdefault(
            h.series_uid, Series(h.series_uid, h.modality, h.series_description, h.series_number)
        )
        series.instances.append(inst)
    return list(patients.values())


def _patient(files: list[Header]) -> Patient:
    """A patient named by its files: each value as the first file giving it
    (the name with the most component groups); the group holds no two."""

    def first(attr: str) -> str:
        return next((v for h in files if (v := getattr(h, attr)).strip()), "")

    with_id = next((h for h in files if h.patient_id.strip()), None)
    named = max(files, key=lambda h: len([g for g in _Identity.of(h).name_groups if g]))
    return Patient(
        id=with_id.patient_id if with_id else "",
        issuer=with_id.issuer_of_patient_id if with_id else first("issuer_of_patient_id"),
        name=named.patient_name if normalise_name(named.patient_name) else "",
        birth_date=first("patient_birth_date"),
        sex=first("patient_sex"),
    )


def patient_instances(patient: Patient) -> list[Instance]:
    return [i for st in patient.studies.values() for se in st.series.values() for i in se.instances]


def hold_unidentified(
    patients: list[Patient], pending: list[Instance], problems: list[Problem]
) -> None:
    """Record the files that name no patient, and hold ``pending`` with them."""
    paths = [i.path for p in patients if p.unidentified for i in patient_instances(p)]
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    problems.append(Problem("unidentified_patient", "", f"{len(paths)} file(s): {shown}"))
    for inst in pending:
        if inst.state == "pending":
            inst.state = "held"
