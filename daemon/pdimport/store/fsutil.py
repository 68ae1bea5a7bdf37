"""Crash-safe file writing, one implementation for every writer.

A file is written under a temporary name beside its target, flushed and
``fsync``'ed, then renamed over the target, and the directory entry is synced
too: after a crash a reader sees the old file or the whole new one, never a
half-written one that a later run would send or parse.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from pdimport.problems import CodedError


@contextmanager
def atomic_write(target: Path, mode: int | None = None, durable: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``target``; on a clean exit it replaces
    ``target``. On an exception nothing is left behind.

    ``durable=False`` skips the fsyncs, for files that are only a view of
    state kept elsewhere (e.g. a status snapshot rewritten every second).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:32]}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fp:
            yield fp
            fp.flush()
            if durable:
                os.fsync(fp.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(target.parent)


def write_bytes(target: Path, data: bytes, mode: int | None = None) -> None:
    with atomic_write(target, mode) as fp:
        fp.write(data)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable: the directory entry is on disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNCFS: object = None


def sync_filesystem(path: Path) -> bool:
    """``syncfs(2)`` the file system holding ``path``: every file written
    there so far, data and metadata (renames included), is on disk when it
    returns True. One call makes a whole group of new files durable, where
    an ``fsync`` per file and per directory costs a journal commit each.
    False when the call is not available (the caller fsyncs file by file).

    Since Linux 5.8 ``syncfs`` also reports a write-back error of any file
    since the last call (syncfs(2)); an error raises ``OSError`` and, like a
    failed fsync, is never retried: the job stops and keeps its source
    (reliability notes, "fsync errors are fatal")."""
    global _SYNCFS
    if _SYNCFS is None:
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).syncfs
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
            _SYNCFS = fn
        except (OSError, AttributeError):
            _SYNCFS = False
    if not _SYNCFS:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:  # type: ignore[operator]
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
        return True
    finally:
        os.close(fd)


class DiskFull(CodedError):
    """The appliance's own disk (spool, journal, reports) cannot take more:
    intake pauses and the job stops cleanly (``disk_full``); nothing read
    is lost, and nothing is retried with a journal that cannot record it."""

    def __init__(self, detail: str) -> None:
        super().__init__("disk_full", detail)
        self.job: Any = None  # the job it stopped, once known


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full (ENOSPC, EDQUOT, SQLITE_FULL)."""
    if isinstance(exc, DiskFull):
        return True
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # SQLITE_FULL: "database or disk is full"
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


def check_free(path: Path, min_free: int) -> None:
    """Raise :class:`DiskFull` when the file system of ``path`` has less than
    ``min_free`` bytes free: intake stops at a low-water mark, before the
    disk is full."""
    free = shutil.disk_usage(path).free
    if free < min_free:
        raise DiskFull(f"{free // (1 << 20)} MB free on {path}, below {min_free // (1 << 20)} MB")
