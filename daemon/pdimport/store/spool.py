"""Content-addressed spool: every byte read from a medium is kept here once.

Files are named by their SHA-256, never by anything found on the medium, in
one folder per first two hex digits (``<root>/ab/abcd…``: 256 folders, as
git keeps loose objects), and
written crash-safely: temporary file, sync, ``rename``, sync of the directory
entries (reliability notes §3.4), for one file or for a group at once. Spool files are never executable (a
preamble may hold a PE/ELF polyglot, CVE-2019-11687).

Temporary files (``tmp/in-*`` while a file is read, ``tmp/work-*`` while one
is derived, ``tmp/nest-*`` while a nested package is open) carry their
owner in their name: its process id and start time (``/proc/PID/stat``
field 22, so a recycled pid is not mistaken for the owner). A process killed
mid-read leaves them behind; :meth:`Spool.clean_tmp`, run whenever a spool
is opened, removes those whose owner is gone and never one a running
process owns.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pdimport.store.fsutil import fsync_dir, sync_filesystem, write_bytes

log = logging.getLogger(__name__)

_MODE = 0o640
#: Written into a spool created in the one-level layout. A spool without it
#: that holds bucket folders was written by an earlier version in two levels
#: (``<root>/ab/cd/abcd…``): its files are found there and stay where they
#: are; new ones go to the one-level place. The second level cost a folder
#: per file on a new spool (1,000 CT images: 1,399 mkdir calls, 0.39 s of
#: system time on the committing thread, measured with strace -T).
LAYOUT_MARK = "layout-1"
#: ``<kind>-<pid>.<start time>-<number, or random letters from mkstemp>`` (module docstring).
_OWNED = re.compile(r"^(?:in|work|nest)-(\d+)\.(\d+)-")
_TMP_KINDS = ("in-", "work-", "nest-")
_start_times: dict[int, str] = {}
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
#: Temporary file numbers of this process (names also carry pid and start time).
_tmp_numbers = itertools.count()


def _start_time(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fp:
            stat_line = fp.read()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: count from its end.
    fields = stat_line[stat_line.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def tmp_prefix(kind: str) -> str:
    """Name prefix of a temporary file this process owns (``in``, ``work``, ``nest``)."""
    pid = os.getpid()
    if pid not in _start_times:
        _start_times[pid] = _start_time(pid) or "0"
    return f"{kind}-{pid}.{_start_times[pid]}-"


def owner_alive(name: str) -> bool:
    """Whether the process named in a temporary file's name still runs."""
    m = _OWNED.match(name)
    if m is None:
        return False  # no owner recorded (written before owners were): stale
    return _start_time(int(m.group(1))) == m.group(2)


def clean_tmp(tmp: Path) -> list[str]:
    """Remove the temporary files in ``tmp`` whose owner process is gone;
    returns their names."""
    removed: list[str] = []
    try:
        names = os.listdir(tmp)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(_TMP_KINDS) or owner_alive(name):
            continue
        try:
            os.unlink(tmp / name)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue
        removed.append(name)
    if removed:
        log.info("spool: removed %d stale temporary file(s) of stopped processes", len(removed))
    return removed


class Spool:
    """A folder of immutable, hash-named files: ``<root>/ab/abcd…``."""

    def __init__(self, root: Path, clean: bool = True) -> None:
        """Open (or create) the spool at ``root``; ``clean`` removes the
        temporary files of stopped processes (:meth:`clean_tmp`)."""
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._dirs: set[Path] = set()  # bucket folders known to exist
        self._two_level = self._written_in_two_levels()
        if clean:
            self.clean_tmp()

    def _written_in_two_levels(self) -> bool:
        """Whether files of the earlier two-level layout may be here
        (:data:`LAYOUT_MARK`); a new spool is marked before its first file."""
        if (self.root / LAYOUT_MARK).exists():
            return False
        if any(len(name) == 2 for name in os.listdir(self.root)):
            return True
        write_bytes(self.root / LAYOUT_MARK, b"spool layout: <root>/ab/<sha256>\n")
        return False

    @property
    def tmp(self) -> Path:
        """The folder of temporary files (same filesystem as the spool)."""
        return self._tmp

    def clean_tmp(self) -> list[str]:
        """Remove temporary files left by processes that no longer run (a
        kill -9 during a read); files of running processes stay."""
        return clean_tmp(self._tmp)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        path = self.root / sha256[:2] / sha256
        if self._two_level and not path.exists():
            earlier = self.root / sha256[:2] / sha256[2:4] / sha256
            if earlier.exists():
                return earlier
        return path

    def has(self, sha256: str, size: int | None = None) -> bool:
        try:
            st = self.path(sha256).stat()
        except (OSError, ValueError):
            return False
        return size is None or st.st_size == size

    def remove(self, sha256: str) -> bool:
        """Delete one spooled file (the retention of discarded media)."""
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            return False
        return True

    def put(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store a stream durably; return ``(sha256, size)``.

        If the stream raises (a read error on the medium), nothing is kept and
        the exception propagates to the caller, which records the problem.
        """
        staged = self.stage(chunks)
        return self.commit([staged])[0], staged.size

    def stage(self, chunks: Iterable[bytes]) -> Staged:
        """Write a stream to a temporary file and hash it, without syncing:
        nothing is in the spool until :meth:`commit`. If the stream raises,
        nothing is kept and the exception propagates."""
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = self._create_tmp("in")
        try:
            try:
                os.fchmod(fd, _MODE)
                for chunk in chunks:
                    digest.update(chunk)
                    _write_all(fd, chunk)
                    size += len(chunk)
            finally:
                os.close(fd)
        except BaseException:
            _unlink(tmp_name)
            raise
        return Staged(tmp_name, digest.hexdigest(), size)

    def _create_tmp(self, kind: str, suffix: str = "") -> tuple[int, str]:
        """A new temporary file of this process (``O_EXCL``), named by a
        counter rather than :func:`tempfile.mkstemp`'s random letters, and
        written through its descriptor: a Python file object per spooled file
        cost an fstat, an isatty ioctl and an lseek more."""
        prefix = os.path.join(self._tmp, tmp_prefix(kind))
        while True:
            name = f"{prefix}{next(_tmp_numbers)}{suffix}"
            try:
                return os.open(name, _TMP_FLAGS, 0o600), name
            except FileExistsError:  # left by an earlier process of the same pid and start
                continue

    def commit(self, staged: list[Staged]) -> list[str]:
        """Make staged files durable and move them into the spool; returns
        their digests. Crash-safe in this order: the data is synced, then
        renamed to its digest, then the renames are synced, so a spool file
        never holds anything but its digest's bytes (reliability notes
        §3.4). A group costs two ``syncfs`` calls instead of two fsyncs a
        file. On an error the files not yet moved are removed."""
        try:
            if not sync_filesystem(self._tmp):
                for s in staged:
                    _fsync_file(s.tmp)
            dirs: set[Path] = set()
            for s in staged:
                final = self.path(s.sha256)
                if final.exists():
                    _unlink(s.tmp)  # same content already stored: keep the first copy
                    continue
                if final.parent not in self._dirs:
                    final.parent.mkdir(parents=True, exist_ok=True)
                    self._dirs.add(final.parent)
                try:
                    os.rename(s.tmp, final)
                except FileNotFoundError:  # the bucket was removed meanwhile
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(s.tmp, final)
                dirs.add(final.parent)
            if dirs and not sync_filesystem(self._tmp):
                for d in dirs:
                    fsync_dir(d)
        except BaseException:
            for s in staged:
                _unlink(s.tmp)
            raise
        return [s.sha256 for s in staged]

    def discard(self, staged: list[Staged]) -> None:
        """Drop staged files that will not be committed."""
        for s in staged:
            _unlink(s.tmp)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        return self.put([data])

    def put_file(self, src: Path) -> tuple[str, int]:
        """Store a local file we produced (a conversion); the source is removed."""
        with open(src, "rb") as fp:
            sha, size = self.put(iter(lambda: fp.read(1 << 20), b""))
        _unlink(str(src))
        return sha, size

    def workfile(self, suffix: str = "") -> Path:
        """A fresh temporary path inside the spool (same filesystem for rename)."""
        fd, name = self._create_tmp("work", suffix)
        os.close(fd)
        return Path(name)


@dataclass(frozen=True)
class Staged:
    """A stream written and hashed but not yet in the spool (:meth:`Spool.stage`)."""

    tmp: str
    sha256: str
    size: int


def _fsync_file(name: str) -> None:
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass
