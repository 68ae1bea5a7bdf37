"""The records the journal returns (:mod:`pdimport.store.journal`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pdimport.job.lifecycle import JobState


@dataclass(frozen=True)
class Job:
    id: str
    source_key: str
    source_kind: str
    source_path: str
    label: str
    mode: str
    state: JobState
    read_complete: bool
    created: float
    updated: float
    station: str = ""  # the station that holds the job's spool ('' before issue 19)


@dataclass(frozen=True)
class Decision:
    """A person's decision on a held patient of a job (release or discard)."""

    job_id: str
    patient: str
    action: str
    identity: dict[str, Any] | None
    operator: str
    reason: str
    time: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "action": self.action,
            "local_id": (self.identity or {}).get("patient_id"),
            "identity": self.identity,
            "operator": self.operator,
            "reason": self.reason,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time)),
        }


@dataclass(frozen=True)
class FileRecord:
    seq: int
    path: str
    size: int
    sha256: str | None
    state: str
    code: str
    detail: str


@dataclass(frozen=True)
class Delivery:
    dest: str
    sop_instance_uid: str
    sha256: str
    state: str
    status: int | None
    code: str
    detail: str
    job_id: str
    attempts: int
