"""Intake: whether the appliance takes media now.

A full disk (ENOSPC in the spool, a journal that cannot commit, or free space
under ``spool.min_free_mb``) pauses intake: no drive starts a read, no watch
folder entry is taken, no delivery runs, and a disc already in a drive stays
there (nothing half-read is ejected). The status board, systemd ``STATUS=``
and the console say why. The daemon's main loop looks again every few
seconds; once there is room (the low-water mark, and a journal that takes a
write), intake opens and the waiting reads and deliveries go on, resuming
their jobs from the spool and the journal.

A shared journal that cannot be reached (a PostgreSQL server down, issue 19)
pauses intake the same way, with its own word (``journal_unavailable``):
nothing is taken that could not be journaled. A read already running
finishes into the local spool first: the reader's journal rows wait in the
reader, which asks again once intake opens, so nothing read is lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from pdimport.store.db import JournalUnavailable
from pdimport.store.fsutil import DiskFull, check_free

log = logging.getLogger(__name__)

#: How often a thread waiting for intake looks whether it may go on.
_POLL = 1.0


class Intake:
    """The gate every read and delivery of the daemon passes.

    Parameters
    ----------
    announce : callable
        ``announce(reason)``: the board's word for it ("" when open).
    spool : Path
        Where free space is measured.
    min_free : int
        The low-water mark in bytes.
    writable : callable
        A cheap durable write (the journal's): intake only opens when it works.
    reachable : callable, optional
        Raises :class:`~pdimport.store.db.JournalUnavailable` while the
        shared journal cannot be reached: intake only opens when it can.
    """

    def __init__(
        self,
        announce: Callable[[str], None],
        spool: Path,
        min_free: int,
        writable: Callable[[], None],
        reachable: Callable[[], None] = lambda: None,
    ) -> None:
        self._announce = announce
        self._spool = spool
        self._min_free = min_free
        self._writable = writable
        self._reachable = reachable
        self._open = threading.Event()
        self._open.set()
        self.reason = ""
        self.code = ""

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def pause(self, reason: str, code: str = "disk_full") -> None:
        if not self.paused or reason != self.reason:
            log.error("intake paused: %s: %s", code, reason)
        self.reason = reason
        self.code = code
        self._open.clear()
        self._announce(f"paused: {code}: {reason}")

    def recheck(self) -> None:
        """Open when there is room again; pause when under the low-water mark."""
        try:
            check_free(self._spool, self._min_free)
            if self.paused:
                self._writable()
                self._reachable()
        except DiskFull as exc:
            self.pause(exc.detail)
            return
        except JournalUnavailable as exc:
            self.pause(exc.detail, exc.code)
            return
        except OSError as exc:
            self.pause(f"{self._spool}: {exc.strerror or exc}")
            return
        if self.paused:
            log.info(
                "intake open again: %s",
                "journal back" if self.code != "disk_full" else "space is back",
            )
            self.reason = ""
            self.code = ""
            self._open.set()
            self._announce("")

    def wait_open(self, stop: threading.Event) -> bool:
        """Block while paused; False when the daemon stops meanwhile."""
        while not self._open.wait(_POLL):
            if stop.is_set():
                return False
        return not stop.is_set()


def reachable(journal: object) -> None:
    """A shared journal answers (raises JournalUnavailable when it does not)."""
    db = getattr(journal, "db", None)
    if db is not None and getattr(db, "dialect", "") == "postgresql":
        db.execute("SELECT 1")
