"""A folder as a medium: a USB stick seen through its mount point, a watch
folder, an unpacked disc.

Implements the link and special-file rules of the reliability catalogue (I4:
never follow a link, ignore devices and fifos) and the names-as-labels rule
(I5): display paths are decoded for humans, the real ``bytes`` path stays
inside this module.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
from typing import BinaryIO

from pdimport.media.base import MediumOpenError, SizeBudget, unique_label
from pdimport.model import MediumEntry, MediumReadError
from pdimport.problems import Problem
from pdimport.settings import Settings

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


def display_name(raw: bytes) -> str:
    """Decode a file-name component for display.

    Names on foreign media are in any encoding; ``surrogateescape`` keeps the
    bytes, ``replace`` then makes the label printable and JSON-safe.
    """
    text = raw.decode("utf-8", "surrogateescape")
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _FolderReader(io.RawIOBase):
    """Stream of one regular file that must yield exactly the listed size.

    A file that shrinks (USB stick pulled, file rewritten) ends early: that is
    reported as ``truncated`` instead of returning short data (Medium
    contract); an I/O error is ``unreadable_sector``.
    """

    def __init__(self, fd: int, label: str, size: int) -> None:
        super().__init__()
        self._fd = fd
        self._label = label
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readall(self) -> bytes:
        # RawIOBase.readall would read in 8 KiB pieces: keep reads large.
        out = bytearray()
        while chunk := self.read(_CHUNK):
            out += chunk
        return bytes(out)

    def readinto(self, buf) -> int:
        want = min(len(buf), self._size - self._pos)
        if want <= 0:
            self._check_end()
            return 0
        try:
            data = os.read(self._fd, want)
        except OSError as exc:
            raise MediumReadError(
                "unreadable_sector", f"{self._label}: {exc.strerror} at offset {self._pos}"
            ) from exc
        if not data:
            raise MediumReadError(
                "truncated",
                f"{self._label}: ended at {self._pos} of {self._size} bytes while reading",
            )
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def _check_end(self) -> None:
        # A file that grew since listing was rewritten under us: its bytes are
        # not the ones the size limits were checked against.
        if os.fstat(self._fd).st_size != self._size:
            raise MediumReadError("truncated", f"{self._label}: size changed while reading")

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


class FolderMedium:
    """A directory tree read with an iterative, link-refusing walk.

    Parameters
    ----------
    root : str
        The folder the operator gave.
    settings : Settings
        Supplies ``limits.max_file_size``, ``limits.max_files`` and
        ``limits.max_medium_size``.
    """

    kind = "dir"

    def __init__(self, root: str, settings: Settings) -> None:
        self.path = root
        self.label = os.path.basename(os.path.normpath(root))
        self.problems: list[Problem] = []
        self._root = os.fsencode(root)
        self._real: dict[str, bytes] = {}
        self._entries = self._list(SizeBudget.from_settings(settings))

    # ----------------------------------------------------------- listing
    def _list(self, budget: SizeBudget) -> list[MediumEntry]:
        try:
            found = self._walk()
        except OSError as exc:
            raise MediumOpenError(
                "unreadable_medium", f"{self.path}: {exc.strerror or exc}"
            ) from exc
        # Sorting by the raw path components makes the order independent of
        # scandir's (filesystem-dependent) order.
        found.sort(key=lambda item: item[0])
        entries: list[MediumEntry] = []
        taken: set[str] = set()
        for parts, size in found:
            label = unique_label("/".join(display_name(p) for p in parts), taken)
            _, refusal = budget.admit(size)
            if refusal:
                self.problems.append(Problem("too_large", label, refusal))
                continue
            self._real[label] = os.path.join(self._root, *parts)
            entries.append(MediumEntry(label, size, order=len(entries)))
        return entries

    def _walk(self) -> list[tuple[tuple[bytes, ...], int]]:
        """Iterative scandir walk; returns (raw path components, size) of regular files."""
        found: list[tuple[tuple[bytes, ...], int]] = []
        with os.scandir(self._root):  # the root itself must be listable
            pass
        stack: list[tuple[bytes, ...]] = [()]
        while stack:
            parts = stack.pop()
            for dirent in self._scan(parts):
                child = parts + (dirent.name,)
                self._classify(dirent, child, stack, found)
        return found

    def _scan(self, parts: tuple[bytes, ...]) -> list[os.DirEntry]:
        try:
            with os.scandir(os.path.join(self._root, *parts)) as it:
                return sorted(it, key=lambda d: d.name)
        except OSError as exc:
            label = "/".join(display_name(p) for p in parts)
            self.problems.append(Problem("unreadable_directory", label, exc.strerror or str(exc)))
            return []

    def _classify(
        self, dirent: os.DirEntry, child: tuple[bytes, ...], stack: list, found: list
    ) -> None:
        label = "/".join(display_name(p) for p in child)
        try:
            st = dirent.stat(follow_symlinks=False)
        except OSError as exc:
            self.problems.append(Problem("unreadable_directory", label, exc.strerror or str(exc)))
            return
        if stat.S_ISLNK(st.st_mode):
            self.problems.append(Problem("link_ignored", label, "symbolic link not followed"))
        elif stat.S_ISDIR(st.st_mode):
            stack.append(child)
        elif stat.S_ISREG(st.st_mode):
            found.append((child, st.st_size))
        else:
            self.problems.append(
                Problem("link_ignored", label, "special file (fifo, device or socket)")
            )

    # ----------------------------------------------------------- Medium API
    def entries(self) -> list[MediumEntry]:
        """Every accepted regular file, in deterministic walk order."""
        return list(self._entries)

    def real_path(self, entry: MediumEntry) -> bytes:
        """Where an entry is, for readers that read in place (an inventory's
        prefix reads); they must refuse links as :meth:`open` does."""
        return self._real[entry.path]

    def open(self, entry: MediumEntry) -> BinaryIO:
        """Open one entry for streaming.

        ``O_NOFOLLOW`` and the ``S_ISREG`` check close the race where a file
        is swapped for a link or fifo between listing and reading.
        """
        real = self._real[entry.path]
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(real, flags)
        except OSError as exc:
            code = "link_ignored" if exc.errno == errno.ELOOP else "unreadable_sector"
            raise MediumReadError(code, f"{entry.path}: {exc.strerror}") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise MediumReadError("link_ignored", f"{entry.path}: no longer a regular file")
        return io.BufferedReader(_FolderReader(fd, entry.path, entry.size), _CHUNK)

    def close(self) -> None:
        self._real.clear()
