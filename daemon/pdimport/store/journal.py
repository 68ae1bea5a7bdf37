"""The journal: an SQLite database (WAL, ``synchronous=FULL``) of jobs, the
files read from each medium, and every delivery outcome per destination.

It is what makes an import resumable and idempotent:

* a job whose files are all recorded as read can be finished from the spool
  without the medium;
* an instance acknowledged by a destination is recorded there before the next
  one is sent, and is never sent to that destination again (same SOP Instance
  UID and same content), unless someone asks for it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdimport.job.lifecycle import (
    FINAL_JOB_STATES,
    JOB_TRANSITIONS,
    IllegalTransition,
    JobEvent,
    JobState,
    Observer,
    Transition,
    job_state,
)
from pdimport.store.fsutil import check_free
from pdimport.store.schema import AUDIT_SCHEMA, SCHEMA, Connection

log = logging.getLogger(__name__)


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


class Journal:
    """Thread-safe wrapper around one SQLite connection."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(path),
            check_same_thread=False,
            isolation_level=None,
            timeout=30.0,
            factory=Connection,
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            # with no byte free SQLite cannot even create its WAL: "disk I/O error"
            check_free(path.parent, 1 << 20)
            raise exc from None
        # FULL: with NORMAL a commit can roll back after power loss (SQLite docs).
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._db.executescript(AUDIT_SCHEMA)
        self._observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> None:
        """Call ``observer`` with a :class:`Transition` after every job transition.

        Observer exceptions are logged, never raised to the job.
        """
        self._observers.append(observer)

    @classmethod
    def open_existing(cls, path: Path) -> Journal | None:
        """The journal at ``path`` if there is one, else None: read-only
        commands (``jobs``, ``report``) never create a journal."""
        return cls(path) if path.is_file() else None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------- helpers
    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ---------------------------------------------------------------- jobs
    def find_unfinished(self, source_key: str, mode: str) -> Job | None:
        rows = self._rows(
            "SELECT * FROM jobs WHERE source_key=? AND mode=? ORDER BY created DESC LIMIT 1",
            (source_key, mode),
        )
        if rows and job_state(rows[0][6]) not in FINAL_JOB_STATES:
            return _job(rows[0])
        return None

    def create_job(
        self, source_key: str, source_kind: str, source_path: str, label: str, mode: str = "import"
    ) -> Job:
        now = time.time()
        job_id = time.strftime("%Y%m%d-%H%M%S-", time.gmtime(now)) + uuid.uuid4().hex[:8]
        self._exec(
            "INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
            (
                job_id,
                source_key,
                source_kind,
                source_path,
                label,
                mode,
                JobState.QUEUED,
                0,
                now,
                now,
            ),
        )
        job = self.job(job_id)
        assert job is not None
        return job

    def job(self, job_id: str) -> Job | None:
        rows = self._rows("SELECT * FROM jobs WHERE id=?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs(self, limit: int = 100) -> list[Job]:
        return [
            _job(r)
            for r in self._rows("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,))
        ]

    def set_label(self, job_id: str, label: str) -> None:
        self._exec("UPDATE jobs SET label=? WHERE id=?", (label, job_id))

    def transition(
        self, job_id: str, event: JobEvent | str, reason: str = "", **info: Any
    ) -> JobState:
        """Apply ``event`` to a job: the only way a job's state changes.

        The pair is checked against
        :data:`~pdimport.job.lifecycle.JOB_TRANSITIONS`; the new state and a
        ``job_events`` row (time, event, from, to, reason) are written in one
        transaction; then observers hear of it.

        Parameters
        ----------
        job_id : str
            The job.
        event : JobEvent or str
            What happened.
        reason : str, optional
            Why (e.g. problem codes), recorded with the event.
        **info
            Passed on to observers in :attr:`Transition.info`.

        Returns
        -------
        JobState
            The new state.

        Raises
        ------
        IllegalTransition
            When the table does not allow ``event`` in the job's state; nothing
            is written.
        KeyError
            When there is no such job.
        """
        event = JobEvent(event)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
                if row is None:
                    raise KeyError(job_id)
                source = job_state(row[0])
                target = JOB_TRANSITIONS.get((source, event))
                if target is None:
                    raise IllegalTransition(job_id, source, event)
                read_done = 1 if event == JobEvent.READ_DONE else None
                self._db.execute(
                    "UPDATE jobs SET state=?, updated=?, "
                    "read_complete=COALESCE(?, read_complete) WHERE id=?",
                    (str(target), now, read_done, job_id),
                )
                self._db.execute(
                    "INSERT INTO job_events VALUES (?,?,?,?,?,?)",
                    (job_id, now, str(event), str(source), str(target), reason),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        transition = Transition(
            job_id, str(event), str(source), str(target), dict(info, reason=reason), now
        )
        for observer in list(self._observers):
            try:
                observer(transition)
            except Exception:
                log.exception("job observer %r failed on %s", observer, transition)
        return target

    def job_events(self, job_id: str) -> list[tuple[float, str, str, str, str]]:
        """``(time, event, from, to, reason)`` of every transition of a job, oldest first."""
        return self._rows(
            "SELECT time, event, source, target, reason FROM job_events "
            "WHERE job_id=? ORDER BY rowid",
            (job_id,),
        )

    def save_report(self, job_id: str, report: dict[str, Any]) -> None:
        self._exec(
            "UPDATE jobs SET report=?, updated=? WHERE id=?",
            (json.dumps(report, ensure_ascii=False), time.time(), job_id),
        )

    def report(self, job_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT report FROM jobs WHERE id=?", (job_id,))
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    # ----------------------------------------------------------- decisions
    def add_decision(
        self,
        job_id: str,
        patient: str,
        action: str,
        identity: dict[str, Any] | None,
        operator: str,
        reason: str = "",
    ) -> Decision:
        now = time.time()
        self._exec(
            "INSERT INTO decisions VALUES (?,?,?,?,?,?,?)",
            (
                job_id,
                patient,
                action,
                None if identity is None else json.dumps(identity, ensure_ascii=False),
                operator,
                reason,
                now,
            ),
        )
        return Decision(job_id, patient, action, identity, operator, reason, now)

    def record_commitment(
        self,
        dest: str,
        sop_instance_uid: str,
        sha256: str,
        state: str,
        detail: str,
        transaction_uid: str,
    ) -> None:
        """What ``dest`` answered to a storage commitment request for one
        instance (the latest answer counts: a resent instance may commit)."""
        self._exec(
            "INSERT INTO commitments VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT(dest, sop_instance_uid, sha256) DO UPDATE SET "
            "state=excluded.state, detail=excluded.detail, "
            "transaction_uid=excluded.transaction_uid, time=excluded.time",
            (dest, sop_instance_uid, sha256, state, detail, transaction_uid, time.time()),
        )

    def commitments(self, dest: str) -> dict[tuple[str, str], str]:
        """(uid, sha256) -> committed | failed, for ``dest``."""
        return {
            (r[0], r[1]): r[2]
            for r in self._rows(
                "SELECT sop_instance_uid, sha256, state FROM commitments WHERE dest=?", (dest,)
            )
        }

    def record_settlement(
        self,
        job_id: str,
        patient: str,
        identity: dict[str, Any] | None,
        match: dict[str, str] | None,
    ) -> None:
        """The identity a patient of a job was first delivered under, found
        without a person: later runs of the job (a retry, a resume) keep it."""
        self._exec(
            "INSERT OR IGNORE INTO settlements VALUES (?,?,?,?,?)",
            (
                job_id,
                patient,
                None if identity is None else json.dumps(identity, ensure_ascii=False),
                None if match is None else json.dumps(match, ensure_ascii=False),
                time.time(),
            ),
        )

    def settlements(
        self, job_id: str
    ) -> dict[str, tuple[dict[str, Any] | None, dict[str, str] | None]]:
        """Each settled patient's (identity, match) of a job."""
        return {
            r[0]: (json.loads(r[1]) if r[1] else None, json.loads(r[2]) if r[2] else None)
            for r in self._rows(
                "SELECT patient, identity, match FROM settlements WHERE job_id=?", (job_id,)
            )
        }

    def decisions(self, job_id: str) -> list[Decision]:
        """A job's decisions, oldest first."""
        return [
            Decision(r[0], r[1], r[2], json.loads(r[3]) if r[3] else None, r[4], r[5], r[6])
            for r in self._rows(
                "SELECT * FROM decisions WHERE job_id=? ORDER BY time, rowid", (job_id,)
            )
        ]

    def purgeable(self, discarded_before: float) -> set[str]:
        """Spooled content only jobs discarded before ``discarded_before``
        refer to (their files and what was derived from them)."""
        old = "SELECT id FROM jobs WHERE state='discarded' AND updated < ?"
        rows = self._rows(
            f"""
            WITH gone AS (SELECT sha256 FROM files WHERE job_id IN ({old}) AND sha256 IS NOT NULL
                          EXCEPT
                          SELECT sha256 FROM files WHERE job_id NOT IN ({old})
                                 AND sha256 IS NOT NULL)
            SELECT sha256 FROM gone
            UNION SELECT out_sha256 FROM derived WHERE sha256 IN (SELECT sha256 FROM gone)
            """,
            (discarded_before, discarded_before),
        )
        return {r[0] for r in rows}

    # --------------------------------------------------------------- files
    def record_file(
        self,
        job_id: str,
        seq: int,
        path: str,
        size: int,
        sha256: str | None,
        state: str,
        code: str = "",
        detail: str = "",
    ) -> None:
        self._exec(
            "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)",
            (job_id, seq, path, size, sha256, state, code, detail),
        )

    def record_files(
        self, job_id: str, rows: list[tuple[int, str, int, str | None, str, str, str]]
    ) -> None:
        """:meth:`record_file` for ``(seq, path, size, sha256, state, code,
        detail)`` rows, in one transaction (one commit, one WAL sync)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)",
                    [(job_id, *r) for r in rows],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def files(self, job_id: str) -> list[FileRecord]:
        return [
            FileRecord(*r)
            for r in self._rows(
                "SELECT seq, path, size, sha256, state, code, detail FROM files WHERE job_id=? "
                "ORDER BY seq",
                (job_id,),
            )
        ]

    def file_map(self, job_id: str) -> dict[str, FileRecord]:
        return {f.path: f for f in self.files(job_id)}

    def replace_job_problems(self, job_id: str, problems: Iterator[tuple[str, str, str]]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM job_problems WHERE job_id=?", (job_id,))
            self._db.executemany(
                "INSERT INTO job_problems VALUES (?,?,?,?)", [(job_id, *p) for p in problems]
            )
            self._db.execute("COMMIT")

    def job_problems(self, job_id: str) -> list[tuple[str, str, str]]:
        return self._rows("SELECT code, path, detail FROM job_problems WHERE job_id=?", (job_id,))

    # ------------------------------------------------------------- derived
    def derived(self, sha256: str, purpose: str) -> str | None:
        rows = self._rows(
            "SELECT out_sha256 FROM derived WHERE sha256=? AND purpose=?", (sha256, purpose)
        )
        return rows[0][0] if rows else None

    def record_derived(self, sha256: str, purpose: str, out_sha256: str) -> None:
        self._exec("INSERT OR REPLACE INTO derived VALUES (?,?,?)", (sha256, purpose, out_sha256))

    # ---------------------------------------------------------- deliveries
    def delivery(self, dest: str, sop_instance_uid: str, sha256: str) -> Delivery | None:
        rows = self._rows(
            "SELECT * FROM deliveries WHERE dest=? AND sop_instance_uid=? AND sha256=?",
            (dest, sop_instance_uid, sha256),
        )
        return _delivery(rows[0]) if rows else None

    def deliveries_for_uid(self, dest: str, sop_instance_uid: str) -> list[Delivery]:
        return [
            _delivery(r)
            for r in self._rows(
                "SELECT * FROM deliveries WHERE dest=? AND sop_instance_uid=?",
                (dest, sop_instance_uid),
            )
        ]

    def sent_set(self, dest: str) -> set[tuple[str, str]]:
        """(uid, sha256) pairs already acknowledged by ``dest``."""
        return set(
            self._rows(
                "SELECT sop_instance_uid, sha256 FROM deliveries WHERE dest=? AND state='sent'",
                (dest,),
            )
        )

    def record_delivery(
        self,
        dest: str,
        sop_instance_uid: str,
        sha256: str,
        state: str,
        status: int | None,
        code: str,
        detail: str,
        job_id: str,
    ) -> None:
        """Record one outcome, durably, before the caller moves on. A 'sent'
        row is never downgraded by a later failure of a resend."""
        self.record_deliveries(
            [(dest, sop_instance_uid, sha256, state, status, code, detail, job_id, time.time())]
        )

    def record_deliveries(self, rows: list[tuple[Any, ...]]) -> None:
        """:meth:`record_delivery` for ``(dest, uid, sha256, state, status,
        code, detail, job_id, time)`` rows, in order, in one transaction (one
        commit, one WAL sync): see :mod:`pdimport.store.groupcommit`."""
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(_UPSERT_DELIVERY, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ----------------------------------------------------------- audit head
    def set_audit_head(self, trail: str, count: int, hash: str) -> None:
        """Record that ``trail`` now ends with its ``count``-th record, whose
        ``hash`` field is ``hash`` (one autocommitted, synced statement)."""
        self._exec(
            "INSERT INTO audit_head VALUES (?,?,?,?) ON CONFLICT(trail) DO UPDATE SET "
            "count=excluded.count, hash=excluded.hash, updated=excluded.updated",
            (trail, count, hash, time.time()),
        )

    def audit_head(self, trail: str) -> tuple[int, str] | None:
        """``(count, hash)`` last recorded for ``trail``, or None if never."""
        rows = self._rows("SELECT count, hash FROM audit_head WHERE trail=?", (trail,))
        return (int(rows[0][0]), str(rows[0][1])) if rows else None


_UPSERT_DELIVERY = (
    "INSERT INTO deliveries VALUES (?,?,?,?,?,?,?,?,1,?) "
    "ON CONFLICT(dest, sop_instance_uid, sha256) DO UPDATE SET "
    "state=CASE WHEN deliveries.state='sent' THEN 'sent' ELSE excluded.state END, "
    "status=CASE WHEN deliveries.state='sent' THEN deliveries.status "
    "ELSE excluded.status END, "
    "code=excluded.code, detail=excluded.detail, job_id=excluded.job_id, "
    "attempts=deliveries.attempts+1, time=excluded.time"
)


def _job(row: tuple) -> Job:
    return Job(
        id=row[0],
        source_key=row[1],
        source_kind=row[2],
        source_path=row[3],
        label=row[4],
        mode=row[5],
        state=job_state(row[6]),
        read_complete=bool(row[7]),
        created=row[8],
        updated=row[9],
    )


def _delivery(row: tuple) -> Delivery:
    return Delivery(
        dest=row[0],
        sop_instance_uid=row[1],
        sha256=row[2],
        state=row[3],
        status=row[4],
        code=row[5],
        detail=row[6],
        job_id=row[7],
        attempts=row[8],
    )
