"""A station in a hospital group (issue 19): what it shares through the
group's PostgreSQL database beside the journal.

* ``stations``: each station's drive board and queues, with a heartbeat,
  so every console shows the group's drives;
* ``watch_claims``: each package of a shared watch folder is taken by
  exactly one station (``INSERT … ON CONFLICT DO NOTHING`` on the folder's
  path and the package's name, size and mtime: the stations mount a shared
  folder at the same path); a claim stays with its station, which finishes
  it after a restart, since only it has the package's spool;
* one delivery at a time of the same content: two copies of a disc read
  at two stations at once would both find nothing acknowledged yet and
  both send; a PostgreSQL advisory lock on the medium's content (the hashes
  of its files) makes the second wait, and then its "already acknowledged"
  lookup finds everything the first sent (:func:`content_lock`);
* the decision queue (:mod:`pdimport.job.decisionqueue`), run by the
  ``decisions`` thread: release, discard and retry of the jobs whose spool
  this station holds, wherever they were decided.

A station on its own (the journal in SQLite) has none of this: the daemon
builds no :class:`GroupMember`, and its watch folder takes everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pdimport.job.decisionqueue import DecisionQueue, Waker, run_worker
from pdimport.store.db import POSTGRESQL, Database, JournalUnavailable, Migration, migrate

log = logging.getLogger(__name__)

#: Seconds between two heartbeats; a station silent for three is shown as gone.
HEARTBEAT = 5.0

MIGRATIONS = (
    Migration(
        1,
        "each station's drive board, and one station per shared watch-folder package",
        """
        CREATE TABLE IF NOT EXISTS stations (
            name TEXT PRIMARY KEY,
            heartbeat REAL NOT NULL,
            board TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS watch_claims (
            key TEXT PRIMARY KEY,
            station TEXT NOT NULL,
            claimed REAL NOT NULL,
            state TEXT NOT NULL,
            job TEXT
        )
        """,
    ),
)


def open_group(url: str) -> Database:
    db = Database(url)
    migrate(db, "group", MIGRATIONS)
    return db


def _claim_key(key: str) -> str:
    # the ledger's key separates name and signature with NUL, which
    # PostgreSQL's text refuses; "/" cannot occur in a file name either
    return key.replace("\0", "/")


@contextmanager
def content_lock(db: Database, job_id: str) -> Iterator[None]:
    """Hold the group's lock on ``job_id``'s content (its files' hashes)
    while the block delivers it; a no-op outside a group.

    The lock lives in a connection of its own, so waiting for it never
    holds up the journal, and it goes with that connection if the station dies.
    """
    if db.dialect != POSTGRESQL:
        yield
        return
    rows = db.execute(
        "SELECT sha256 FROM files WHERE job_id=? AND sha256 IS NOT NULL ORDER BY sha256",
        (job_id,),
    )
    digest = hashlib.sha256("\n".join(r[0] for r in rows).encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    lock = Database(db.url)
    try:
        lock.execute("SELECT pg_advisory_lock(?)", (key,))
        yield
    finally:
        lock.close()  # the session ends: its lock is released


class WatchClaims:
    """Which station takes each package of a shared watch folder."""

    def __init__(self, db: Database, station: str) -> None:
        self.db = db
        self.station = station

    def claim(self, key: str) -> bool:
        """Whether this station takes the package ``key``: it claimed it
        now, or claimed it before (a restart resumes its own claim).

        Raises
        ------
        JournalUnavailable
            The database cannot be reached: nobody may take it now.
        """
        self.db.execute(
            "INSERT INTO watch_claims (key, station, claimed, state) VALUES (?,?,?,?)"
            " ON CONFLICT (key) DO NOTHING",
            (_claim_key(key), self.station, time.time(), "importing"),
        )
        rows = self.db.execute("SELECT station FROM watch_claims WHERE key=?", (_claim_key(key),))
        return bool(rows) and rows[0][0] == self.station

    def done(self, key: str, state: str, job_id: str | None) -> None:
        self.db.execute(
            "UPDATE watch_claims SET state=?, job=? WHERE key=? AND station=?",
            (str(state), job_id, _claim_key(key), self.station),
        )

    def claims(self) -> dict[str, str]:
        """Every claim: package key (as the database keeps it) -> station."""
        return dict(self.db.execute("SELECT key, station FROM watch_claims"))


class Stations:
    """The ``stations`` table: publish this station's board, read the group's."""

    def __init__(self, db: Database, station: str) -> None:
        self.db = db
        self.station = station

    def publish(self, snapshot: dict[str, Any]) -> None:
        board = {k: snapshot.get(k) for k in ("drives", "queue", "intake", "watch")}
        self.db.execute(
            "INSERT INTO stations (name, heartbeat, board) VALUES (?,?,?)"
            " ON CONFLICT (name) DO UPDATE SET heartbeat=excluded.heartbeat,"
            " board=excluded.board",
            (self.station, time.time(), json.dumps(board, ensure_ascii=False, default=str)),
        )

    def boards(self, now: float | None = None) -> list[dict[str, Any]]:
        """Each station's last board: name, heartbeat, alive, drives, queue."""
        now = time.time() if now is None else now
        out = []
        for name, beat, board in self.db.execute(
            "SELECT name, heartbeat, board FROM stations ORDER BY name"
        ):
            out.append(
                {
                    "station": name,
                    "heartbeat": beat,
                    "alive": now - float(beat) < 3 * HEARTBEAT,
                    **json.loads(board),
                }
            )
        return out


class GroupMember:
    """The daemon's part in the group: the ``decisions`` thread (which also
    beats the heart) and the watch-folder claims.

    Parameters
    ----------
    journal : Journal
        The shared journal (on PostgreSQL), named after this station; its
        connection carries the group's tables too.
    execute : callable
        ``execute(decision) -> result``: the decision, run here.
    snapshot : callable
        The status board's snapshot, published with each heartbeat.
    stop : threading.Event
        Set when the daemon stops.
    """

    def __init__(
        self,
        journal: Any,
        execute: Callable[[Any], dict[str, Any]],
        snapshot: Callable[[], dict[str, Any]],
        stop: threading.Event,
    ) -> None:
        self.station = journal.station
        self.stop = stop
        self._execute = execute
        self._snapshot = snapshot
        self.db = journal.db
        migrate(self.db, "group", MIGRATIONS)
        url = self.db.url
        # decisions on a connection of their own: a long release never
        # holds up the heartbeat or the watch folder's claims
        self.queue = DecisionQueue(Database(url), self.station)
        self.claims = WatchClaims(self.db, self.station)
        self.stations = Stations(self.db, self.station)
        self._waker = Waker(url, self.station, stop)
        self._next_beat = 0.0
        self._thread = threading.Thread(target=self._run, name="decisions", daemon=True)

    def start(self) -> None:
        resumed = self.queue.resume()
        if resumed:
            log.info("%d decision(s) left running by the last stop run again", resumed)
        self._beat()
        self._thread.start()

    def _beat(self) -> None:
        if time.monotonic() < self._next_beat:
            return
        self._next_beat = time.monotonic() + HEARTBEAT
        try:
            self.stations.publish(self._snapshot())
        except JournalUnavailable as exc:
            log.warning("station heartbeat: %s", exc.detail)

    def _wake(self) -> None:
        self._waker.wait(min(HEARTBEAT, 3.0))
        self._beat()

    def _run(self) -> None:
        run_worker(self.queue, self._execute, self._wake, self.stop.is_set)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._waker.close()
        self.queue.db.close()
