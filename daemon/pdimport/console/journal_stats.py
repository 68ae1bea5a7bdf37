"""Read-only questions the console asks of ``journal.sqlite`` for
``/metrics``: how long jobs spent in each stage, how long instances took to
reach a destination, how many bytes were delivered.

Plain SQL over a connection of :func:`reader`: the journal's schema is
:mod:`pdimport.store.journal`'s; nothing here writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pdimport.store.db import POSTGRESQL
from pdimport.store.journal import Journal

#: The state a job is in during each stage of the flow.
STAGES = {"reading": "read", "inventoried": "scan", "delivering": "deliver"}

#: Upper bounds (seconds) of the histogram buckets.
STAGE_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
LATENCY_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0)


@dataclass
class Histogram:
    """Observations counted into cumulative buckets, as Prometheus wants them."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        self.n += 1
        self.total += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1

    def buckets(self) -> list[tuple[str, float]]:
        cumulative: list[tuple[str, float]] = [
            (repr(b), float(c)) for b, c in zip(self.bounds, self.counts, strict=True)
        ]
        return [*cumulative, ("+Inf", float(self.n))]


@contextmanager
def reader(journal: Journal) -> Iterator[Any]:
    """A connection to ask on, None when there is no journal file yet.

    On SQLite a read-only connection of its own: a scrape never takes the
    daemon's journal lock and never writes (WAL readers do not block the
    writer). On PostgreSQL the journal's own database (readers never block
    writers there), so it is the group's shared journal.
    """
    if journal.db.dialect == POSTGRESQL:
        yield journal.db
        return
    if journal.path is None or not journal.path.is_file():
        yield None
        return
    db = sqlite3.connect(f"file:{journal.path}?mode=ro", uri=True, timeout=5.0)
    try:
        yield db
    finally:
        db.close()


def own(db: Any, station: str, column: str = "job_id") -> tuple[str, tuple[str, ...]]:
    """An ``AND`` clause keeping the rows of this station's jobs, and its
    argument. On the group's shared journal (PostgreSQL) every station
    counts only its own jobs, so summing the stations' metrics counts each
    job once; a SQLite journal is one station's already."""
    if getattr(db, "dialect", "") != POSTGRESQL:
        return "", ()
    return f" AND {column} IN (SELECT id FROM jobs WHERE station = ?)", (station,)


def stage_durations(db: Any, station: str = "") -> dict[str, Histogram]:
    """Seconds each job spent in each stage, one observation per stay:
    from the transition into ``reading`` / ``inventoried`` / ``delivering``
    to the job's next transition (a stage still running is not counted)."""
    out = {stage: Histogram(STAGE_BUCKETS) for stage in STAGES.values()}
    mine, arg = own(db, station)
    rows = db.execute(
        "SELECT target, next_time - time FROM ("
        " SELECT target, time,"
        f"  LEAD(time) OVER (PARTITION BY job_id ORDER BY time, {getattr(db, 'rowid', 'rowid')})"
        " AS next_time"
        f" FROM job_events WHERE 1 = 1{mine}) AS e"
        " WHERE next_time IS NOT NULL AND target IN (?, ?, ?)",
        (*arg, *STAGES),
    )
    for target, seconds in rows:
        out[STAGES[target]].observe(max(float(seconds), 0.0))
    return out


def delivery_latency(db: Any, station: str = "") -> dict[str, Histogram]:
    """Per destination: seconds from a job's start (the medium inserted, the
    package seen) to each of its instances acknowledged by that destination."""
    out: dict[str, Histogram] = {}
    mine, arg = own(db, station, "d.job_id")
    rows = db.execute(
        "SELECT d.dest, d.time - j.created FROM deliveries d JOIN jobs j ON j.id = d.job_id"
        f" WHERE d.state = 'sent'{mine}",
        arg,
    )
    for dest, seconds in rows:
        out.setdefault(dest, Histogram(LATENCY_BUCKETS)).observe(max(float(seconds), 0.0))
    return out


def bytes_delivered(db: Any, station: str = "") -> Iterable[tuple[str, int]]:
    """Per destination: bytes of the originals (as read from the medium)
    whose instance it acknowledged."""
    mine, arg = own(db, station, "d.job_id")
    return db.execute(
        "SELECT d.dest, coalesce(sum(f.size), 0) FROM deliveries d"
        " JOIN (SELECT job_id, sha256, max(size) AS size FROM files"
        "       WHERE state = 'read' GROUP BY job_id, sha256) f"
        "   ON f.job_id = d.job_id AND f.sha256 = d.sha256"
        f" WHERE d.state = 'sent'{mine} GROUP BY d.dest",
        arg,
    ).fetchall()


def last_delivered(db: Any) -> dict[str, float]:
    """Per destination: when it last acknowledged an instance."""
    return dict(
        db.execute("SELECT dest, max(time) FROM deliveries WHERE state = 'sent' GROUP BY dest")
    )
