"""Decisions queued for the station that holds the job's spool (issue 19).

A release, discard or retry may be taken at any console or CLI of a hospital
group, but only the station that read the medium has its bytes. The decision
is written to ``decision_queue`` in the shared database, naming that station;
the station claims it (``FOR UPDATE SKIP LOCKED``: two threads of one station
never take the same row), runs it through the one decision code path
(:func:`pdimport.job.holdqueue.execute`), and marks it done with its result,
which the console or CLI that asked for it shows.

On PostgreSQL ``NOTIFY pdimport_decisions`` wakes the holder at once; it also
looks every :data:`POLL` seconds, so a lost notification (the database was
restarted) costs a few seconds, never a decision. A station that dies while
running a decision finds it ``running`` under its own name at its next start
and runs it again (a release whose job is no longer held then records why).
On SQLite nothing is queued: the journal is local, so the decision runs at
once, as it always did.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pdimport.store.db import POSTGRESQL, Database, Migration, migrate

log = logging.getLogger(__name__)

ACTIONS = ("release", "discard", "retry")
CHANNEL = "pdimport_decisions"
#: Seconds between two looks at the queue without a notification.
POLL = 3.0

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"

MIGRATIONS = (
    Migration(
        1,
        "decisions taken anywhere, executed by the station holding the spool",
        """
        CREATE TABLE IF NOT EXISTS decision_queue (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job TEXT NOT NULL,
            station TEXT NOT NULL,
            action TEXT NOT NULL,
            args TEXT NOT NULL,
            operator TEXT NOT NULL,
            origin TEXT NOT NULL,
            state TEXT NOT NULL,
            result TEXT,
            created REAL NOT NULL,
            finished REAL
        );
        CREATE INDEX IF NOT EXISTS decision_queue_todo ON decision_queue(station, state, id)
        """,
    ),
)


@dataclass(frozen=True)
class Decision:
    """One queued decision."""

    id: int
    job: str
    station: str
    action: str
    args: dict[str, Any]
    operator: str
    origin: str
    state: str
    result: dict[str, Any] | None


_COLUMNS = "id, job, station, action, args, operator, origin, state, result"


def _decision(row: tuple[Any, ...]) -> Decision:
    return Decision(
        int(row[0]),
        row[1],
        row[2],
        row[3],
        json.loads(row[4]),
        row[5],
        row[6],
        row[7],
        json.loads(row[8]) if row[8] else None,
    )


class DecisionQueue:
    """``decision_queue`` in ``db``, seen from station ``station``."""

    def __init__(self, db: Database, station: str) -> None:
        self.db = db
        self.station = station
        migrate(db, "decisions", MIGRATIONS)

    def submit(
        self, job_id: str, holder: str, action: str, args: dict[str, Any], operator: str
    ) -> int:
        """Queue ``action`` on ``job_id`` for station ``holder``; its id."""
        if action not in ACTIONS:
            raise ValueError(f"unknown decision {action!r}")
        with self.db.transaction():
            rows = self.db.execute(
                "INSERT INTO decision_queue (job, station, action, args, operator, origin,"
                " state, created) VALUES (?,?,?,?,?,?,?,?) RETURNING id",
                (
                    job_id,
                    holder,
                    action,
                    json.dumps(args, ensure_ascii=False, sort_keys=True),
                    operator,
                    self.station,
                    QUEUED,
                    time.time(),
                ),
            )
            if self.db.dialect == POSTGRESQL:  # delivered at commit
                self.db.execute("SELECT pg_notify(?, ?)", (CHANNEL, holder))
        log.info("decision %s on job %s queued for station %s", action, job_id, holder)
        return int(rows[0][0])

    def get(self, decision_id: int) -> Decision | None:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM decision_queue WHERE id=?", (decision_id,))
        return _decision(rows[0]) if rows else None

    def claim(self) -> Decision | None:
        """The oldest decision queued for this station, now ``running``."""
        lock = " FOR UPDATE SKIP LOCKED" if self.db.dialect == POSTGRESQL else ""
        with self.db.transaction():
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM decision_queue WHERE station=? AND state=?"
                f" ORDER BY id LIMIT 1{lock}",
                (self.station, QUEUED),
            )
            if not rows:
                return None
            self.db.execute(
                "UPDATE decision_queue SET state=? WHERE id=?", (RUNNING, int(rows[0][0]))
            )
        return _decision(rows[0])

    def finish(self, decision_id: int, result: dict[str, Any], ok: bool = True) -> None:
        self.db.execute(
            "UPDATE decision_queue SET state=?, result=?, finished=? WHERE id=?",
            (
                DONE if ok else FAILED,
                json.dumps(result, ensure_ascii=False, sort_keys=True),
                time.time(),
                decision_id,
            ),
        )

    def resume(self) -> int:
        """At start: this station's decisions left ``running`` by a crash
        are queued again; how many."""
        rows = self.db.execute(
            "UPDATE decision_queue SET state=? WHERE station=? AND state=?",
            (QUEUED, self.station, RUNNING),
        )
        return max(rows.rowcount, 0)

    def pending(self, station: str | None = None) -> list[Decision]:
        """Decisions not finished yet (of ``station``, or of every station)."""
        where, args = ("state IN (?,?)", [QUEUED, RUNNING])
        if station is not None:
            where += " AND station=?"
            args.append(station)
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM decision_queue WHERE {where} ORDER BY id", args
        )
        return [_decision(r) for r in rows]

    def wait(self, decision_id: int, timeout: float, poll: float = 0.2) -> Decision | None:
        """The decision once finished, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.get(decision_id)
            if found is not None and found.state in (DONE, FAILED):
                return found
            if time.monotonic() >= deadline:
                return None
            time.sleep(poll)  # a CLI waiting for another station's answer: no event to wait on


class Waker:
    """``LISTEN pdimport_decisions`` on a connection of its own; :meth:`wait`
    returns when a decision for ``station`` may be waiting (a notification
    naming it, or :data:`POLL` seconds passed)."""

    def __init__(self, url: str, station: str, stop: threading.Event) -> None:
        self.url = url
        self.station = station
        self.stop = stop
        self._conn: Any = None

    def _listen(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            self._conn.execute(f"LISTEN {CHANNEL}")
        return self._conn

    def wait(self, timeout: float = POLL) -> None:
        import psycopg

        try:
            for note in self._listen().notifies(timeout=timeout):
                if note.payload == self.station:
                    return
        except psycopg.Error as exc:  # the database went away: the poll goes on
            log.debug("decision queue: listen: %s", exc)
            if self._conn is not None:
                self._conn.close()
            self.stop.wait(timeout)  # nothing to listen on while the database is down

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def run_worker(
    queue: DecisionQueue,
    execute: Callable[[Decision], dict[str, Any]],
    wake: Callable[[], None],
    stopped: Callable[[], bool],
) -> None:
    """The holder's loop: claim, execute, finish, until ``stopped()``.

    ``execute(decision)`` returns the result to record; an exception is
    recorded as the decision's failure (the loop goes on).
    """
    from pdimport.store.db import JournalUnavailable

    while not stopped():
        try:
            decision = queue.claim()
        except JournalUnavailable as exc:
            log.warning("decision queue: %s", exc.detail)
            wake()
            continue
        if decision is None:
            wake()
            continue
        log.info("decision %s: %s on job %s", decision.id, decision.action, decision.job)
        try:
            result, ok = execute(decision), True
        except Exception as exc:  # noqa: BLE001 - a failed decision is recorded, not fatal
            log.warning("decision %s on job %s failed: %s", decision.id, decision.job, exc)
            result, ok = {"error": f"{type(exc).__name__}: {exc}"}, False
        while True:
            try:
                queue.finish(decision.id, result, ok)
                break
            except JournalUnavailable as exc:  # keep the answer until it can be written
                log.warning("decision queue: %s", exc.detail)
                if stopped():
                    return
                wake()


# -------------------------------------------------------------- journal
def for_journal(journal: Any) -> DecisionQueue | None:
    """The group's decision queue beside a shared journal (on its
    connection), or None for a station on its own (SQLite)."""
    db = journal.db
    return DecisionQueue(db, journal.station) if db.dialect == POSTGRESQL else None
