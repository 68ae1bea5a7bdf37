"""The daemon's DICOMweb intake channel: a QIDO-RS study search
(``intake.qido_url``) asked every ``intake.qido_interval`` seconds; each
study found that was not imported from that search yet becomes a job, like a
disc in a drive.

A ledger (``STATE_DIR/qido.sqlite``) records each study of each search with
the number of instances it had (Number of Study Related Instances, PS3.18
Table 10.6.3-3) once its job came to rest. A study already in the ledger is
imported again only when it grew: the new job reads the study again, and the
journal sends only the instances no destination has acknowledged yet. A job
that ended because the server went away (``remote_unreachable``) is not
recorded, so the next search takes the study up again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from pdimport.settings import Settings
from pdimport.web.dicomweb import RemoteError, is_uid, parse_query, search, value
from pdimport.web.http import WebConfigError, make_client

log = logging.getLogger(__name__)

STUDY_INSTANCE_UID, NUMBER_OF_STUDY_RELATED_INSTANCES = "0020000D", "00201208"
#: Studies taken from one search at most (a search that matches the whole archive).
MAX_STUDIES = 100_000
#: What the poller asks of the daemon: import this study URL; a result with
#: ``job_id`` and ``report``, or None when the daemon is stopping.
ImportFn = Callable[[str], Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    search    TEXT NOT NULL,
    study     TEXT NOT NULL,
    instances INTEGER NOT NULL,
    job       TEXT NOT NULL,
    updated   REAL NOT NULL,
    PRIMARY KEY (search, study)
)
"""


class QidoLedger:
    """Which studies of which search were imported, and at what size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._db() as db:
            db.execute(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        # one short connection per call: the poller thread and the tests
        # that ask it each get their own
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def instances(self, search_url: str, study: str) -> int | None:
        """The instance count recorded for ``study`` (-1: unknown), or None."""
        with self._db() as db:
            row = db.execute(
                "SELECT instances FROM studies WHERE search=? AND study=?", (search_url, study)
            ).fetchone()
        return None if row is None else int(row[0])

    def record(self, search_url: str, study: str, instances: int, job: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO studies VALUES (?, ?, ?, ?, ?)",
                (search_url, study, instances, job, time.time()),
            )


def due(known: int | None, found: int) -> bool:
    """Whether a study with ``found`` instances (-1: the server did not say)
    is to be imported, given the count the ledger ``known`` for it."""
    if known is None:
        return True
    return found >= 0 and found > known


class QidoPoller(threading.Thread):
    """Searches ``intake.qido_url`` now and every ``intake.qido_interval``
    seconds until ``stop`` is set; ``import_fn`` runs each job (the daemon's
    read and delivery, as for a watch-folder entry).

    A search that fails is logged and tried again at the next interval: a
    server that is down never stops the thread."""

    def __init__(
        self,
        settings: Settings,
        ledger: QidoLedger,
        import_fn: ImportFn,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="qido-poller", daemon=True)
        self.settings = settings
        self.url = str(settings.get("intake.qido_url"))
        self.interval = float(settings.get("intake.qido_interval"))
        self.ledger = ledger
        self.import_fn = import_fn
        self.stop = stop
        self.root, self._path, query = parse_query(self.url)
        self._params = [
            (k, v)
            for k, v in parse_qsl(query, keep_blank_values=True)
            if k.lower() not in ("limit", "offset")
        ] + [("includefield", NUMBER_OF_STUDY_RELATED_INSTANCES)]

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.poll()
            except Exception:  # the channel outlives one bad search
                log.exception("QIDO-RS search of %s failed", self.url)
            if self.stop.wait(self.interval):
                return

    def found(self) -> list[tuple[str, int]]:
        """``(StudyInstanceUID, instances or -1)`` of every match.

        Raises
        ------
        RemoteError
            The search failed.
        """
        try:
            client = make_client(self.settings, self.root)
        except WebConfigError as exc:
            raise RemoteError("remote_refused", str(exc)) from None
        out: list[tuple[str, int]] = []
        with client:
            page = int(self.settings.get("intake.qido_page_size"))
            for ds in search(client, self._path, self._params, page, MAX_STUDIES):
                uid = value(ds, STUDY_INSTANCE_UID)
                if not is_uid(uid):
                    log.warning("%s: a match without a valid Study Instance UID", self.url)
                    continue
                count = value(ds, NUMBER_OF_STUDY_RELATED_INSTANCES)
                out.append((uid, int(count) if count.isdigit() else -1))
        return out

    def poll(self) -> list[str]:
        """One search; the study URLs whose jobs ran."""
        try:
            matches = self.found()
        except RemoteError as exc:
            log.warning("QIDO-RS search of %s: %s", self.url, exc)
            return []
        ran: list[str] = []
        for uid, count in matches:
            if self.stop.is_set() or not due(self.ledger.instances(self.url, uid), count):
                continue
            study_url = f"dicomweb+{self.root}/studies/{uid}"
            log.info("QIDO-RS: %s (%s instances) is new here", study_url, count)
            result = self.import_fn(study_url)
            if result is None:  # the daemon is stopping: the next start asks again
                return ran
            ran.append(study_url)
            codes = {p.get("code") for p in result.report.get("problems", [])}
            if "remote_unreachable" in codes:
                log.info("%s: the server went away; taken up at the next search", study_url)
                continue
            self.ledger.record(self.url, uid, count, result.job_id or "")
        return ran
