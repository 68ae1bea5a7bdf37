"""Identification and header scan of spooled files while the medium is still read.

Phase 2 must not start before phase 1 ends (a second patient in the last file
holds the whole medium), but its costly part only needs bytes already in the
spool, so a :class:`PrescanWorker` scans each file as soon as it is spooled
and phase 2 takes the results instead of scanning again. Results live in
memory only, in a :class:`PrescanStore` owned by whoever runs the jobs (one
per CLI run, one per daemon): after a restart phase 2 scans from the spool.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pdimport.model import Header, Identity
from pdimport.problems import Problem
from pdimport.scan.identify import identify
from pdimport.store.spool import Spool

log = logging.getLogger(__name__)

SCAN_BATCH = 256
#: Spooled files waiting for the scan worker. Only (path, sha) pairs queue,
#: so this bounds latency, not memory; when full the reader waits (the
#: scanner is far faster than any drive).
_PRESCAN_QUEUE = 1024
#: Most files whose scan results one job keeps in memory (about 2 kB each);
#: past it phase 2 scans the rest from the spool.
_PRESCAN_MAX_FILES = 200_000
#: Jobs whose results are kept; an interrupted job that never reaches
#: phase 2 is evicted after this many newer ones.
_PRESCAN_MAX_JOBS = 16


@dataclass(frozen=True)
class Prescan:
    """Identification and header scan of one spooled file, done during the read.

    ``result`` is None when the file is not DICOM (phase 2 identifies it again,
    with the whole medium's context).
    """

    identity: Identity
    result: Header | Problem | None
    #: the file to send and its repairs, when the early delivery prepared it
    #: (:meth:`~pdimport.job.inventory.InventoryTaker.prepare`)
    prepared: tuple[str, tuple[Problem, ...]] | None = None


class PrescanStore:
    """Scan results per job, shared by the :class:`~pdimport.job.importer.Importer`
    objects of one runner.

    The daemon reads a medium on a drive thread and may process the job on
    another thread with another Importer; its runner hands both the same
    store. Memory only: a restart simply scans again from the spool.
    """

    def __init__(self, max_jobs: int = _PRESCAN_MAX_JOBS) -> None:
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, dict[tuple[str, str], Prescan]] = OrderedDict()
        self._max_jobs = max_jobs
        #: per job, what its early delivery sent (destination -> (UID, sha256))
        self._sent: OrderedDict[str, dict[str, set[tuple[str, str]]]] = OrderedDict()

    def job(self, job_id: str) -> dict[tuple[str, str], Prescan]:
        """The (live) result table of a job, created on first use."""
        with self._lock:
            table = self._jobs.setdefault(job_id, {})
            self._jobs.move_to_end(job_id)
            while len(self._jobs) > self._max_jobs:
                self._jobs.popitem(last=False)
            return table

    def take(self, job_id: str) -> dict[tuple[str, str], Prescan]:
        """Remove and return a job's results (empty when there are none)."""
        with self._lock:
            return self._jobs.pop(job_id, {})

    def note_sent(self, job_id: str, sent: dict[str, set[tuple[str, str]]]) -> None:
        """Keep what a job's early delivery sent (:mod:`pdimport.job.overlap`)
        for its phase 2, which may run on another thread's Importer."""
        with self._lock:
            self._sent[job_id] = sent
            while len(self._sent) > self._max_jobs:
                self._sent.popitem(last=False)

    def take_sent(self, job_id: str) -> dict[str, set[tuple[str, str]]]:
        """Remove and return what :meth:`note_sent` kept (empty when nothing)."""
        with self._lock:
            return self._sent.pop(job_id, {})

    def peek(self, job_id: str) -> int:
        """How many files of a job have results now (tests, metrics)."""
        with self._lock:
            return len(self._jobs.get(job_id, {}))

    def clear(self) -> None:
        with self._lock:
            self._jobs.clear()
            self._sent.clear()


class PrescanWorker(threading.Thread):
    """Identifies and header-scans spooled files while the medium is read.

    Fed with ``(medium path, sha256)`` by :meth:`Importer.read` through a
    bounded queue; takes whatever has queued up (up to one scan batch) per
    scanner call, so a batched scanner stays batched when it keeps up.
    Failure is per file and only costs a re-scan in phase 2: nothing here
    can fail the read.

    Parameters
    ----------
    scanner : Scanner
        The job's header scanner (used by this thread only during the read).
    spool : Spool
        Where the files are.
    table : dict
        Receives one :class:`Prescan` per ``(path, sha256)``.
    on_header : callable, optional
        Told each header scanned (the job's progress names its patients
        while the medium is still read).
    on_result : callable, optional
        Told ``(medium path, sha256, result)`` for each file: a DICOM file's
        scan result (in the order the files were spooled), another file's
        :class:`Identity` (the early delivery's ``offer``).
    """

    _STOP = object()

    def __init__(
        self,
        scanner: Any,
        spool: Spool,
        table: dict[tuple[str, str], Prescan],
        on_header: Callable[[Header], None] | None = None,
        on_result: Callable[[str, str, Header | Problem | Identity], None] | None = None,
    ) -> None:
        super().__init__(name="prescan", daemon=True)
        self._scanner = scanner
        self._spool = spool
        self._table = table
        self._on_header = on_header
        self._on_result = on_result
        self._queue: queue.Queue[Any] = queue.Queue(_PRESCAN_QUEUE)
        self._cancelled = threading.Event()

    def submit(self, path: str, sha: str) -> None:
        if (path, sha) not in self._table and len(self._table) < _PRESCAN_MAX_FILES:
            self._queue.put((path, sha))

    def close(self, drain: bool = True) -> None:
        """Stop after the queued files (``drain``) or as soon as possible."""
        if drain:
            self._queue.put(self._STOP)
        else:
            self._cancelled.set()
            try:
                self._queue.put_nowait(self._STOP)  # wakes a worker waiting for work
            except queue.Full:
                pass  # not waiting: it sees the cancel flag after this batch
        self.join()

    def run(self) -> None:
        while not self._cancelled.is_set():
            batch, stop = self._next_batch()
            try:
                self._scan_batch(batch)
            except Exception:
                log.exception("scan during read failed on a batch of %d", len(batch))
            if stop:
                return

    def _next_batch(self) -> tuple[list[tuple[str, str]], bool]:
        """Block for one file, then take what else is queued (up to a batch)."""
        batch: list[tuple[str, str]] = []
        item = self._queue.get()
        while item is not self._STOP:
            batch.append(item)
            if len(batch) >= SCAN_BATCH:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _scan_batch(self, batch: list[tuple[str, str]]) -> None:

        dicom: list[tuple[tuple[str, str], Identity]] = []
        for key in batch:
            if self._cancelled.is_set():
                return
            ident = identify(key[0], self._spool.path(key[1]))
            if ident.kind == "dicom":
                dicom.append((key, ident))
                continue
            if ident.kind == "dicomdir":
                self._table[key] = Prescan(ident, None)
            if self._on_result is not None:
                self._on_result(key[0], key[1], ident)
        if not dicom:
            return
        paths = [self._spool.path(sha) for (_, sha), _ in dicom]
        results = self._scanner.scan(paths, [ident.subtype for _, ident in dicom])
        for (key, ident), res in zip(dicom, results, strict=True):
            self._table[key] = Prescan(ident, res)
            if self._on_header is not None and isinstance(res, Header):
                self._on_header(res)
            if self._on_result is not None:
                self._on_result(key[0], key[1], res)
