"""Content-addressed spool: every byte read from a medium is kept here once.

Files are named by their SHA-256, never by anything found on the medium, and
written crash-safely: temporary file, sync, ``rename``, sync of the directory
entries (reliability notes §3.4), for one file or for a group at once. Spool files are never executable (a
preamble may hold a PE/ELF polyglot, CVE-2019-11687).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pdimport.store.fsutil import fsync_dir, sync_filesystem

_MODE = 0o640


class Spool:
    """A folder of immutable, hash-named files: ``<root>/ab/cd/abcd…``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._dirs: set[Path] = set()  # bucket folders known to exist

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

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
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="in-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            os.chmod(tmp_name, _MODE)
        except BaseException:
            _unlink(tmp_name)
            raise
        return Staged(tmp_name, digest.hexdigest(), size)

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
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="work-", suffix=suffix)
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


def _unlink(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass
