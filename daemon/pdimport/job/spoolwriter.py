"""Phase 1's writer thread: hash, write, sync and journal what the reader streams."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from pdimport.store.fsutil import DiskFull, disk_full
from pdimport.store.journal import Journal
from pdimport.store.spool import Spool

log = logging.getLogger(__name__)

#: 1 MiB chunks read from the medium but not yet in the spool (memory bound).
_WRITE_QUEUE = 32
#: Largest group of files the spool writer commits at once (SpoolWriter).
_GROUP_FILES = 64
_GROUP_BYTES = 256 << 20


class EntryFailed(Exception):
    """The medium could not deliver an entry; carries the problem code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail)
        self.code, self.detail = code, detail


class _Abandoned(Exception):
    """The read stopped in the middle of an entry."""


class SpoolWriter(threading.Thread):
    """Hashes, writes, syncs and journals the files the reader streams to it.

    A drive that waits while we sync loses its streaming rate (and a real
    one may lose a revolution); with this thread the reader only reads.
    Chunks pass through a bounded queue, so memory is bounded
    (``_WRITE_QUEUE`` chunks of 1 MiB) whatever the file sizes. Files are
    journaled in the order they were read.

    Group commit: a file is journaled (and handed on) only once it is
    durable in the spool, but when the reader is ahead (a fast source: an
    ISO image, a USB stick, a folder) the files written meanwhile are made
    durable and journaled together, at most ``_GROUP_FILES`` files or
    ``_GROUP_BYTES`` bytes at a time (one ``syncfs`` and one journal commit
    instead of two fsyncs and a commit per file). A slow drive leaves the
    queue empty after every file, which then commits alone at once.

    Parameters
    ----------
    spool, journal : Spool, Journal
        Where the bytes and the file records go.
    job_id : str
        The job being read.
    on_spooled : callable
        Called with ``(medium path, sha256)`` once a file is stored and
        journaled (the scan worker's ``submit``).
    """

    def __init__(
        self, spool: Spool, journal: Journal, job_id: str, on_spooled: Callable[[str, str], None]
    ) -> None:
        super().__init__(name="spool-writer", daemon=True)
        self._spool = spool
        self._journal = journal
        self._job_id = job_id
        self._on_spooled = on_spooled
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(_WRITE_QUEUE)
        self.error: BaseException | None = None
        self._group: list[tuple[int, Any, Any]] = []  # (seq, entry, Staged)
        self._group_bytes = 0

    # -- reader side
    def begin(self, seq: int, entry: Any) -> None:
        self._put(("begin", seq, entry))

    def data(self, chunk: bytes) -> None:
        self._put(("data", chunk))

    def end(self) -> None:
        self._put(("end",))

    def fail(self, code: str, detail: str) -> None:
        self._put(("fail", code, detail))

    def already_spooled(self, path: str, sha: str) -> None:
        self._put(("spooled", path, sha))

    def close(self, finish: bool = True) -> None:
        """Wait until everything is written (``finish``), or drop the file
        in progress; re-raise a failure of the writer itself."""
        self._queue.put(("stop",) if finish else ("abandon",))
        self.join()
        if self.error is not None and finish:
            raise self.error

    def _put(self, msg: tuple[Any, ...]) -> None:
        if self.error is not None:
            raise self.error  # journal or spool broken: stop reading
        self._queue.put(msg)

    # -- writer side
    def run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:
            if disk_full(exc) and not isinstance(exc, DiskFull):
                exc = DiskFull(f"spool: {exc}")
            if isinstance(exc, DiskFull):
                log.warning("spool writer stopped: %s", exc.detail)
            else:
                log.exception("spool writer failed")
            self.error = exc
            self._spool.discard([st for _, _, st in self._group])
            self._group.clear()
            self._discard()

    def _take(self) -> tuple[Any, ...]:
        """The next message. Before waiting for it, the staged group is
        committed if the reader is behind (nothing queued: a slow drive, or
        one retrying a sector inside a file for minutes) or the group is full."""
        if self._group and (
            self._queue.empty()
            or len(self._group) >= _GROUP_FILES
            or self._group_bytes >= _GROUP_BYTES
        ):
            self._commit_group()
        return self._queue.get()

    def _serve(self) -> None:
        while True:
            msg = self._take()
            if msg[0] in ("stop", "abandon"):
                self._commit_group()  # whole files already read are kept
                return
            if msg[0] == "spooled":
                self._commit_group()  # keep the hand-on order
                self._on_spooled(msg[1], msg[2])
            elif msg[0] == "begin" and not self._write_entry(msg[1], msg[2]):
                self._commit_group()
                return

    def _write_entry(self, seq: int, entry: Any) -> bool:
        """Stage one entry; False when the read was abandoned meanwhile."""
        try:
            staged = self._spool.stage(self._chunks())
        except _Abandoned:
            return False
        except OSError as exc:
            if disk_full(exc):  # our disk, not the medium: stop the read
                raise DiskFull(f"spool: {exc.strerror}") from exc
            code, detail = "unreadable_sector", str(exc)
        except EntryFailed as exc:
            code, detail = exc.code, exc.detail
        else:
            self._group.append((seq, entry, staged))
            self._group_bytes += staged.size
            return True
        self._commit_group()  # the journal keeps the read order
        self._journal.record_file(
            self._job_id, seq, entry.path, entry.size, None, "error", code, detail
        )
        return True

    def _commit_group(self) -> None:
        """Make the staged files durable, journal them, hand them on."""
        if not self._group:
            return
        group, self._group, self._group_bytes = self._group, [], 0
        self._spool.commit([st for _, _, st in group])  # on error it removes what it did not move
        self._journal.record_files(
            self._job_id,
            [(seq, entry.path, st.size, st.sha256, "read", "", "") for seq, entry, st in group],
        )
        for _, entry, st in group:
            self._on_spooled(entry.path, st.sha256)

    def _chunks(self) -> Iterator[bytes]:
        while True:
            msg = self._take()
            if msg[0] == "data":
                yield msg[1]
            elif msg[0] == "end":
                return
            elif msg[0] == "fail":
                raise EntryFailed(msg[1], msg[2])
            else:  # "abandon" (or a stray "stop"): nothing of this file is kept
                raise _Abandoned()

    def _discard(self) -> None:
        """After a failure, keep taking messages so the reader never blocks."""
        while self._queue.get()[0] not in ("stop", "abandon"):
            pass
