"""Jobs waiting for their destination, re-delivered with exponential back-off
(:func:`pdimport.job.deliver.backoff`, capped by ``retry_max_delay``) until the
PACS answers. The one owner of job-level retries.

The waiting set lives in ``STATE_DIR/retry.sqlite`` so a restart keeps it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pdimport.job.deliver import backoff
from pdimport.job.importer import JobResult
from pdimport.job.lifecycle import Interrupted, JobState

log = logging.getLogger(__name__)


class DeliveryRetrier(threading.Thread):
    """Re-delivers waiting jobs with exponential back-off; survives restarts.

    The waiting set and each job's attempt count live in
    ``STATE_DIR/retry.sqlite``; the journal holds the job's state
    (``waiting_for_destination``).
    """

    def __init__(
        self,
        path: Path,
        deliver: Callable[[str], JobResult],
        base: float,
        cap: float,
        stop: threading.Event,
        on_change: Callable[[int], None],
    ) -> None:
        super().__init__(name="delivery-retry", daemon=True)
        self._deliver = deliver
        self._base, self._cap = base, cap
        self._stop_event = stop
        self._on_change = on_change
        self._cond = threading.Condition()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS waiting (job_id TEXT PRIMARY KEY, "
            "attempts INTEGER NOT NULL, due REAL NOT NULL)"
        )

    def submit(self, job_id: str, now: bool = False) -> None:
        """Queue ``job_id``: at once (``now``) or after the next back-off step."""
        with self._cond:
            row = self._db.execute(
                "SELECT attempts FROM waiting WHERE job_id=?", (job_id,)
            ).fetchone()
            attempts = row[0] + 1 if row else 0
            due = time.time() + (0.0 if now else backoff(attempts, self._base, self._cap))
            self._db.execute(
                "INSERT OR REPLACE INTO waiting VALUES (?,?,?)", (job_id, attempts, due)
            )
            self._cond.notify()
        log.info(
            "job %s waits for delivery (attempt %d in %.1f s)",
            job_id,
            attempts + 1,
            max(0.0, due - time.time()),
        )
        self._on_change(self.size())

    def forget(self, job_id: str) -> None:
        with self._cond:
            self._db.execute("DELETE FROM waiting WHERE job_id=?", (job_id,))
        self._on_change(self.size())

    def size(self) -> int:
        with self._cond:
            return self._db.execute("SELECT COUNT(*) FROM waiting").fetchone()[0]

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def run(self) -> None:
        while not self._stop_event.is_set():
            job_id = self._next_due()
            if job_id is None:
                continue
            try:
                state = self._deliver(job_id).state
            except Interrupted:
                return  # stopping: the job stays queued here and in the journal
            except Exception:
                log.exception("retry of job %s failed", job_id)
                state = JobState.WAITING_FOR_DESTINATION
            if state == JobState.WAITING_FOR_DESTINATION:
                self.submit(job_id)
            else:
                log.info("job %s: the destination answered again (%s)", job_id, state)
                self.forget(job_id)

    def _next_due(self) -> str | None:
        with self._cond:
            row = self._db.execute(
                "SELECT job_id, due FROM waiting ORDER BY due LIMIT 1"
            ).fetchone()
            if row is None:
                self._cond.wait()
                return None
            delay = row[1] - time.time()
            if delay > 0:
                self._cond.wait(delay)
                return None
            return row[0]

    def close(self) -> None:
        with self._cond:
            self._db.close()
