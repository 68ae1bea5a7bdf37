"""The values reconciliation passes around: who the medium says the patient
is, who an identity source knows, and what matching concluded.

Names are DICOM PN strings as decoded text: up to three component groups
(alphabetic ``=`` ideographic ``=`` phonetic, PS3.5 §6.2.1), components
separated by ``^``, e.g. ``Yamada^Taro=山田^太郎=やまだ^たろう``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from pdimport.problems import CodedError


@dataclass(frozen=True)
class Demographics:
    """A patient as a medium (or a person at the referral desk) describes them."""

    name: str  # PN, decoded
    birth_date: str  # YYYYMMDD, or "" when unknown
    sex: str  # "M" | "F" | "O", or "" when unknown
    patient_id: str = ""  # the foreign ID (never used to match)
    issuer: str = ""  # IssuerOfPatientID on the medium, if any


@dataclass(frozen=True)
class Candidate:
    """A local patient an identity source returned."""

    local_id: str
    name: str  # PN, decoded
    birth_date: str  # YYYYMMDD
    sex: str
    source: str  # the source's URL, e.g. "mwl://RIS@127.0.0.1:4242"
    issuer: str = ""  # IssuerOfPatientID of the local ID
    accession_number: str = ""  # from a worklist entry
    note: str = ""  # an expectation's note

    def as_dict(self) -> dict[str, str]:
        return {
            "local_id": self.local_id,
            "issuer": self.issuer,
            "name": self.name,
            "birth_date": self.birth_date,
            "sex": self.sex,
            "source": self.source,
            "accession_number": self.accession_number,
            "note": self.note,
        }


class MatchKind(StrEnum):
    MATCH = "match"
    NO_MATCH = "no_match"
    AMBIGUOUS = "ambiguous_match"


@dataclass(frozen=True)
class MatchResult:
    """What matching one patient against a source's candidates concluded."""

    kind: MatchKind
    chosen: Candidate | None = None  # set when kind is MATCH
    candidates: tuple[Candidate, ...] = ()  # every candidate that matched (or was close)
    rule: str = ""  # how the chosen one matched, e.g. "birth_date+sex+name:phonetic"
    detail: str = ""


class SourceDown(CodedError):
    """An identity source did not answer (refused, timed out, failed status)."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__("identity_source_down", f"{source}: {detail}")
        self.source = source


class IdentitySource(Protocol):
    """Somewhere local patients can be looked up (a worklist, a registry, a table).

    ``candidates`` returns every local patient the source holds with the
    given birth date (and sex, when the source can filter by it); the
    caller matches names itself, so a source never decides who is who.
    ``lookup`` finds one local patient by local ID (for a person's release
    decision). Both raise :class:`SourceDown` when the source cannot be asked.
    """

    url: str

    def candidates(self, who: Demographics) -> list[Candidate]: ...

    def lookup(self, local_id: str) -> list[Candidate]: ...


@dataclass
class Identities:
    """Several sources tried in order (setting ``reconcile.sources``)."""

    sources: list[IdentitySource] = field(default_factory=list)
