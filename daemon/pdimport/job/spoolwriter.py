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
#: Largest group of files the spool writer commits at once (SpoolWriter),
#: reached by doubling from the first group's size: the first files of a
#: medium are handed on (and sent) soon, then each ``syncfs`` covers more
#: files. Every sync is a journal commit of the file system, during which
#: creating the next files and folders waits (py-spy, 1,000 CT from a
#: folder: 1.8 s of CPU in creating files and bucket folders with groups of
#: 64; 0.5 s less CPU with 256).
_FIRST_GROUP_FILES = 32
_GROUP_FILES = 256
_GROUP_BYTES = 256 << 20
#: How often the writer looks again whether the committer is free for a
#: waiting group while the reader sends nothing (a drive retrying a sector).
_RECHECK = 0.05


class EntryFailed(Exception):
    """The medium could not deliver an entry; carries the problem code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail)
        self.code, self.detail = code, detail


class _Abandoned(Exception):
    """The read stopped in the middle of an entry."""


def _staged(group: list[tuple[Any, ...]]) -> list[Any]:
    """The staged files of a group of records (see :class:`_Committer`)."""
    return [r[3] for r in group if r[0] == "staged"]


def _stopped(exc: BaseException, what: str) -> BaseException:
    """Log why writing stopped; a full disk becomes :class:`DiskFull` (the
    read stops, resumable) whatever raised it."""
    if disk_full(exc) and not isinstance(exc, DiskFull):
        exc = DiskFull(f"spool: {exc}")
    if isinstance(exc, DiskFull):
        log.warning("spool writer stopped: %s", exc.detail)
    else:
        log.exception(what)
    return exc


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
    durable and journaled together, at most ``_GROUP_FILES`` files (the
    first group ``_FIRST_GROUP_FILES``, each full one after twice the one
    before) or ``_GROUP_BYTES`` bytes at a time (one ``syncfs`` and one
    journal commit instead of two fsyncs and a commit per file). A slow drive leaves the
    queue empty after every file, which then commits alone at once.

    The commits run in a second thread (:class:`_Committer`): while one
    group waits for the disk, this thread writes the next one, so a fast
    source is copied at the speed of writing, not of writing plus syncing.
    At most one group waits for the committer; the files written meanwhile
    join the next group.

    Parameters
    ----------
    spool, journal : Spool, Journal
        Where the bytes and the file records go.
    job_id : str
        The job being read.
    on_spooled : callable
        Called with ``(medium path, sha256)`` once a file is stored and
        journaled (the scan worker's ``submit``), in read order.
    """

    def __init__(
        self, spool: Spool, journal: Journal, job_id: str, on_spooled: Callable[[str, str], None]
    ) -> None:
        super().__init__(name="spool-writer", daemon=True)
        self._spool = spool
        self._queue: queue.Queue[tuple[Any, ...]] = queue.Queue(_WRITE_QUEUE)
        self._committer = _Committer(spool, journal, job_id, on_spooled)
        self._error: BaseException | None = None
        self._group: list[tuple[Any, ...]] = []  # records for _Committer, in read order
        self._group_files = 0
        self._group_limit = _FIRST_GROUP_FILES
        self._group_bytes = 0

    @property
    def error(self) -> BaseException | None:
        """Why writing or committing stopped, if it did."""
        return self._error or self._committer.error

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
    def start(self) -> None:
        self._committer.start()
        super().start()

    def run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - logged, and the reader re-raises it
            self._error = _stopped(exc, "spool writer failed")
            self._spool.discard(_staged(self._group))
            self._group.clear()
            self._committer.finish()
            self._discard()
        else:
            self._committer.finish()

    def _take(self) -> tuple[Any, ...]:
        """The next message. Before waiting for it, the staged group is
        handed to the committer if the reader is behind (nothing queued: a
        slow drive, or one retrying a sector inside a file for minutes) or
        the group is full; while the committer is still busy with the group
        before, the files keep gathering (checked again every
        ``_RECHECK`` seconds while the reader is silent)."""
        while True:
            if self._group and (
                self._group_files >= self._group_limit or self._group_bytes >= _GROUP_BYTES
            ):
                self._hand_over(wait=True)
                self._group_limit = min(2 * self._group_limit, _GROUP_FILES)
            elif self._group and self._queue.empty():
                self._hand_over(wait=False)
            if not self._group:
                return self._queue.get()
            try:
                return self._queue.get(timeout=_RECHECK)
            except queue.Empty:
                continue

    def _hand_over(self, wait: bool) -> None:
        if self._committer.offer(self._group, wait):
            self._group, self._group_files, self._group_bytes = [], 0, 0

    def _serve(self) -> None:
        while True:
            msg = self._take()
            if msg[0] in ("stop", "abandon"):
                self._hand_over(wait=True)  # whole files already read are kept
                return
            if msg[0] == "spooled":
                self._group.append(msg)
            elif msg[0] == "begin" and not self._write_entry(msg[1], msg[2]):
                self._hand_over(wait=True)
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
            self._group.append(("staged", seq, entry, staged))
            self._group_files += 1
            self._group_bytes += staged.size
            return True
        self._group.append(("error", seq, entry, code, detail))  # the journal keeps the read order
        return True

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


class _Committer(threading.Thread):
    """Makes the writer's groups durable, journals them and hands them on.

    A group is a list of records in read order: ``("staged", seq, entry,
    Staged)`` a file written to the spool's temporary folder, ``("error",
    seq, entry, code, detail)`` an entry the medium could not deliver,
    ``("spooled", path, sha256)`` a file already in the spool from an
    earlier run. After a failure the committer drops what it is given
    (removing the staged files), so the writer never blocks on it.
    """

    def __init__(
        self, spool: Spool, journal: Journal, job_id: str, on_spooled: Callable[[str, str], None]
    ) -> None:
        super().__init__(name="spool-committer", daemon=True)
        self._spool = spool
        self._journal = journal
        self._job_id = job_id
        self._on_spooled = on_spooled
        self._slot: queue.Queue[list[tuple[Any, ...]] | None] = queue.Queue(1)
        self.error: BaseException | None = None

    def offer(self, group: list[tuple[Any, ...]], wait: bool) -> bool:
        """Queue ``group`` for commit; False (without ``wait``) while the
        group before is still waiting."""
        if not group:
            return True
        try:
            self._slot.put(group, block=wait)
        except queue.Full:
            return False
        return True

    def finish(self) -> None:
        """Commit what was offered, then stop."""
        self._slot.put(None)
        self.join()

    def run(self) -> None:
        while (group := self._slot.get()) is not None:
            if self.error is not None:
                self._spool.discard(_staged(group))
                continue
            try:
                self._commit(group)
            except BaseException as exc:  # noqa: BLE001 - logged, and the reader re-raises it
                self.error = _stopped(exc, "spool commit failed")

    def _commit(self, group: list[tuple[Any, ...]]) -> None:
        self._spool.commit(_staged(group))  # on error it removes what it did not move
        rows = [
            (r[1], r[2].path, r[3].size, r[3].sha256, "read", "", "")
            if r[0] == "staged"
            else (r[1], r[2].path, r[2].size, None, "error", r[3], r[4])
            for r in group
            if r[0] != "spooled"
        ]
        if rows:
            self._journal.record_files(self._job_id, rows)
        for r in group:
            if r[0] == "staged":
                self._on_spooled(r[2].path, r[3].sha256)
            elif r[0] == "spooled":
                self._on_spooled(r[1], r[2])
