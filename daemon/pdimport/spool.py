"""Content-addressed spool: every byte read from a medium is kept here once.

Files are named by their SHA-256, never by anything found on the medium, and
written crash-safely: temporary file, ``fsync``, ``rename``, ``fsync`` of the
directory (reliability notes §3.4). Spool files are never executable (a
preamble may hold a PE/ELF polyglot, CVE-2019-11687).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable

from .fsutil import fsync_dir

_MODE = 0o640


class Spool:
    """A folder of immutable, hash-named files: ``<root>/ab/cd/abcd…``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

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

    def put(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store a stream; return ``(sha256, size)``.

        If the stream raises (a read error on the medium), nothing is kept and
        the exception propagates to the caller, which records the problem.
        """
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="in-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp_name, _MODE)
            return self._commit(tmp_name, digest.hexdigest()), size
        except BaseException:
            _unlink(tmp_name)
            raise

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

    def _commit(self, tmp_name: str, sha256: str) -> str:
        final = self.path(sha256)
        if final.exists():
            _unlink(tmp_name)  # same content already stored: keep the first copy
            return sha256
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp_name, final)
        fsync_dir(final.parent)
        return sha256


def _unlink(name: str) -> None:
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass
