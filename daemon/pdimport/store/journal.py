"""The journal: a database of jobs, the files read from each medium, and
every delivery outcome per destination; an embedded SQLite file (WAL,
``synchronous=FULL``) or, with ``journal.url``, a PostgreSQL database shared
by the stations of a hospital group (:mod:`pdimport.store.db`).

It is what makes an import resumable and idempotent:

* a job whose files are all recorded as read can be finished from the spool
  without the medium;
* an instance acknowledged by a destination is recorded there before the next
  one is sent, and is never sent to that destination again (same SOP Instance
  UID and same content), unless someone asks for it. In a shared journal that
  holds for every station: the lookups never filter by station or job.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
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
from pdimport.store.db import POSTGRESQL, Database, Rows, is_url, migrate
from pdimport.store.records import Decision, Delivery, FileRecord, Job
from pdimport.store.schema import JOURNAL_MIGRATIONS

log = logging.getLogger(__name__)

__all__ = [
    "Decision",
    "Delivery",
    "FileRecord",
    "Job",
    "Journal",
    "journal_target",
    "open_existing_journal",
    "open_journal",
    "station_name",
]


class Journal:
    """The journal's questions and records, over one thread-safe
    :class:`~pdimport.store.db.Database`.

    Parameters
    ----------
    target : Path, str or Database
        The SQLite file, a ``postgresql://`` URL, or an open database.
    station : str, optional
        This station's name, recorded on the jobs it creates (the station
        that holds their spool).
    """

    def __init__(self, target: Path | str | Database, station: str = "") -> None:
        self.db = target if isinstance(target, Database) else Database(target)
        self.path = self.db.path
        self.station = station
        try:
            migrate(self.db, "journal", JOURNAL_MIGRATIONS)
        except BaseException:
            self.db.close()
            raise
        self._observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> None:
        """Call ``observer`` with a :class:`Transition` after every job transition.

        Observer exceptions are logged, never raised to the job.
        """
        self._observers.append(observer)

    @classmethod
    def open_existing(cls, target: Path | str, station: str = "") -> Journal | None:
        """The journal at ``target`` if there is one, else None: read-only
        commands (``jobs``, ``report``) never create a journal file (a
        database server always has one)."""
        if is_url(target) or Path(target).is_file():
            return cls(target, station)
        return None

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------- helpers
    def _exec(self, sql: str, args: tuple = ()) -> Rows:
        return self.db.execute(sql, args)

    def _rows(self, sql: str, args: tuple = ()) -> Rows:
        return self.db.execute(sql, args)

    # ---------------------------------------------------------------- jobs
    def find_unfinished(self, source_key: str, mode: str) -> Job | None:
        rows = self._rows(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE source_key=? AND mode=? "
            "ORDER BY created DESC LIMIT 1",
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
            f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
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
                self.station,
            ),
        )
        job = self.job(job_id)
        assert job is not None
        return job

    def job(self, job_id: str) -> Job | None:
        rows = self._rows(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id=?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs(self, limit: int = 100) -> list[Job]:
        return [
            _job(r)
            for r in self._rows(
                f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY created DESC LIMIT ?", (limit,)
            )
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
        with self.db.transaction() as db:
            # FOR UPDATE on PostgreSQL: two stations moving one job serialise here
            lock = " FOR UPDATE" if db.dialect == POSTGRESQL else ""
            rows = db.execute(f"SELECT state FROM jobs WHERE id=?{lock}", (job_id,))
            if not rows:
                raise KeyError(job_id)
            source = job_state(rows[0][0])
            target = JOB_TRANSITIONS.get((source, event))
            if target is None:
                raise IllegalTransition(job_id, source, event)
            read_done = 1 if event == JobEvent.READ_DONE else None
            db.execute(
                "UPDATE jobs SET state=?, updated=?, "
                "read_complete=COALESCE(?, read_complete) WHERE id=?",
                (str(target), now, read_done, job_id),
            )
            db.execute(
                "INSERT INTO job_events (job_id, time, event, source, target, reason) "
                "VALUES (?,?,?,?,?,?)",
                (job_id, now, str(event), str(source), str(target), reason),
            )
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
            f"WHERE job_id=? ORDER BY {self.db.rowid}",
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
            "INSERT INTO decisions (job_id, patient, action, identity, operator, reason, time) "
            "VALUES (?,?,?,?,?,?,?)",
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
            "INSERT INTO commitments (dest, sop_instance_uid, sha256, state, detail, "
            "transaction_uid, time) VALUES (?,?,?,?,?,?,?) "
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
            "INSERT INTO settlements (job_id, patient, identity, match, time) "
            "VALUES (?,?,?,?,?) ON CONFLICT (job_id, patient) DO NOTHING",
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
                "SELECT job_id, patient, action, identity, operator, reason, time "
                f"FROM decisions WHERE job_id=? ORDER BY time, {self.db.rowid}",
                (job_id,),
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
        self._exec(_UPSERT_FILE, (job_id, seq, path, size, sha256, state, code, detail))

    def record_files(
        self, job_id: str, rows: list[tuple[int, str, int, str | None, str, str, str]]
    ) -> None:
        """:meth:`record_file` for ``(seq, path, size, sha256, state, code,
        detail)`` rows, in one transaction (one commit, one WAL sync)."""
        with self.db.transaction() as db:
            db.executemany(_UPSERT_FILE, [(job_id, *r) for r in rows])

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
        with self.db.transaction() as db:
            db.execute("DELETE FROM job_problems WHERE job_id=?", (job_id,))
            db.executemany(
                "INSERT INTO job_problems (job_id, code, path, detail) VALUES (?,?,?,?)",
                [(job_id, *p) for p in problems],
            )

    def job_problems(self, job_id: str) -> list[tuple[str, str, str]]:
        return self._rows(
            f"SELECT code, path, detail FROM job_problems WHERE job_id=? ORDER BY {self.db.rowid}",
            (job_id,),
        )

    # ------------------------------------------------------------- derived
    def derived(self, sha256: str, purpose: str) -> str | None:
        rows = self._rows(
            "SELECT out_sha256 FROM derived WHERE sha256=? AND purpose=?", (sha256, purpose)
        )
        return rows[0][0] if rows else None

    def record_derived(self, sha256: str, purpose: str, out_sha256: str) -> None:
        self._exec(
            "INSERT INTO derived (sha256, purpose, out_sha256) VALUES (?,?,?) "
            "ON CONFLICT (sha256, purpose) DO UPDATE SET out_sha256=excluded.out_sha256",
            (sha256, purpose, out_sha256),
        )

    # ---------------------------------------------------------- deliveries
    def delivery(self, dest: str, sop_instance_uid: str, sha256: str) -> Delivery | None:
        rows = self._rows(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries "
            "WHERE dest=? AND sop_instance_uid=? AND sha256=?",
            (dest, sop_instance_uid, sha256),
        )
        return _delivery(rows[0]) if rows else None

    def deliveries_for_uid(self, dest: str, sop_instance_uid: str) -> list[Delivery]:
        return [
            _delivery(r)
            for r in self._rows(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE dest=? AND sop_instance_uid=?",
                (dest, sop_instance_uid),
            )
        ]

    def sent_set(self, dest: str) -> set[tuple[str, str]]:
        """(uid, sha256) pairs already acknowledged by ``dest``."""
        return {
            (r[0], r[1])
            for r in self._rows(
                "SELECT sop_instance_uid, sha256 FROM deliveries WHERE dest=? AND state='sent'",
                (dest,),
            )
        }

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
        with self.db.transaction() as db:
            db.executemany(_UPSERT_DELIVERY, rows)

    # ----------------------------------------------------------- audit head
    def set_audit_head(self, trail: str, count: int, hash: str) -> None:
        """Record that ``trail`` now ends with its ``count``-th record, whose
        ``hash`` field is ``hash`` (one autocommitted, synced statement)."""
        self._exec(
            "INSERT INTO audit_head (trail, count, hash, updated) VALUES (?,?,?,?) "
            "ON CONFLICT(trail) DO UPDATE SET "
            "count=excluded.count, hash=excluded.hash, updated=excluded.updated",
            (trail, count, hash, time.time()),
        )

    def audit_head(self, trail: str) -> tuple[int, str] | None:
        """``(count, hash)`` last recorded for ``trail``, or None if never."""
        rows = self._rows("SELECT count, hash FROM audit_head WHERE trail=?", (trail,))
        return (int(rows[0][0]), str(rows[0][1])) if rows else None


_JOB_COLUMNS = (
    "id, source_key, source_kind, source_path, label, mode, state, read_complete, "
    "created, updated, station"
)
_DELIVERY_COLUMNS = (
    "dest, sop_instance_uid, sha256, state, status, code, detail, job_id, attempts, time"
)
_UPSERT_FILE = (
    "INSERT INTO files (job_id, seq, path, size, sha256, state, code, detail) "
    "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (job_id, path) DO UPDATE SET "
    "seq=excluded.seq, size=excluded.size, sha256=excluded.sha256, state=excluded.state, "
    "code=excluded.code, detail=excluded.detail"
)
_UPSERT_DELIVERY = (
    f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,1,?) "
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
        station=row[10],
    )


def station_name(settings: Any) -> str:
    """``station.name``, or this host's name when it is not set."""
    return _opt(settings, "station.name") or socket.gethostname()


def journal_target(settings: Any = None, state_dir: Path | str | None = None) -> Path | str:
    """Where the journal lives: ``journal.url`` when set, else
    ``journal.sqlite`` in the state folder (``state_dir`` when there are no
    settings)."""
    url = _opt(settings, "journal.url")
    if url:
        return url
    state = Path(state_dir) if state_dir is not None else settings.state_path
    return state / "journal.sqlite"


def open_journal(settings: Any = None, state_dir: Path | str | None = None) -> Journal:
    """The one way pdimport opens its journal (see :func:`journal_target`),
    named after this station (:func:`station_name`)."""
    return Journal(journal_target(settings, state_dir), _station(settings))


def open_existing_journal(
    settings: Any = None, state_dir: Path | str | None = None
) -> Journal | None:
    """:func:`open_journal` for read-only commands: None rather than
    creating a journal file."""
    return Journal.open_existing(journal_target(settings, state_dir), _station(settings))


def _opt(settings: Any, name: str) -> str:
    """A text setting, '' when unset (or ``settings`` is None or lacks it)."""
    try:
        return str(settings.get(name) or "") if settings is not None else ""
    except KeyError:
        return ""


def _station(settings: Any) -> str:
    return station_name(settings) if settings is not None else socket.gethostname()


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
