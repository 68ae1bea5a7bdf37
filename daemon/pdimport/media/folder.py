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
import resource
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
            # straight into the caller's buffer: os.read would allocate a
            # fresh 1 MiB object per chunk and then be copied once more
            got = os.readv(self._fd, [memoryview(buf)[:want]])
        except OSError as exc:
            raise MediumReadError(
                "unreadable_sector", f"{self._label}: {exc.strerror} at offset {self._pos}"
            ) from exc
        if not got:
            raise MediumReadError(
                "truncated",
                f"{self._label}: ended at {self._pos} of {self._size} bytes while reading",
            )
        self._pos += got
        return got

    def _check_end(self) -> None:
        # A file that grew since listing was rewritten under us: its bytes are
        # not the ones the size limits were checked against.
        if os.fstat(self._fd).st_size != self._size:
            raise MediumReadError("truncated", f"{self._label}: size changed while reading")

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


#: Folders held open at once while walking (one per level of the path being
#: walked): a tree deeper than this, or than half the process's descriptor
#: limit, loses the folders below that depth as ``unreadable_directory``.
MAX_DEPTH = 4096
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _depth_cap() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_DEPTH
    return max(16, min(MAX_DEPTH, soft // 2))


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class FolderMedium:
    """A directory tree read with an iterative, link-refusing walk.

    Every folder is opened relative to its parent's descriptor (``openat``,
    ``O_NOFOLLOW``) and listed through its own descriptor, and files are
    opened the same way: no path is ever longer than one name, so a tree
    deeper than ``PATH_MAX`` (4096 bytes) is read like any other, and a
    folder swapped for a link between listing and reading is refused.

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
        self._root_fd = -1
        self._real: dict[str, tuple[bytes, ...]] = {}
        try:
            self._root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._entries = self._list(SizeBudget.from_settings(settings))
        except OSError as exc:
            self.close()
            raise MediumOpenError(
                "unreadable_medium", f"{self.path}: {exc.strerror or exc}"
            ) from exc
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------- listing
    def _list(self, budget: SizeBudget) -> list[MediumEntry]:
        found = self._walk()
        # Sorting by the raw path components makes the order independent of
        # scandir's (filesystem-dependent) order.
        found.sort(key=lambda item: item[0])
        entries: list[MediumEntry] = []
        taken: set[str] = set()
        for parts, size in found:
            label = unique_label(_label(parts), taken)
            _, refusal = budget.admit(size)
            if refusal:
                self.problems.append(Problem("too_large", label, refusal))
                continue
            self._real[label] = parts
            entries.append(MediumEntry(label, size, order=len(entries)))
        return entries

    def _walk(self) -> list[tuple[tuple[bytes, ...], int]]:
        """Depth-first walk on directory descriptors; returns (raw path
        components, size) of regular files. One descriptor is open per level
        of the current path, never more."""
        found: list[tuple[tuple[bytes, ...], int]] = []
        cap = _depth_cap()
        subdirs = self._scan(self._root_fd, (), found)
        if subdirs is None:  # the root itself must be listable
            raise OSError(errno.EIO, self.problems.pop().detail)
        # frames: (parts, descriptor, subfolders not yet walked)
        stack: list[tuple[tuple[bytes, ...], int, list[bytes]]] = [((), self._root_fd, subdirs)]
        try:
            while stack:
                parts, fd, todo = stack[-1]
                if not todo:
                    stack.pop()
                    if fd != self._root_fd:
                        os.close(fd)
                    continue
                child = parts + (todo.pop(),)
                if len(child) >= cap:
                    self.problems.append(
                        Problem(
                            "unreadable_directory",
                            _label(child),
                            f"folders nested deeper than {cap} levels are not walked",
                        )
                    )
                    continue
                try:
                    child_fd = os.open(child[-1], _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    self._unlistable(child, exc)
                    continue
                below = self._scan(child_fd, child, found)
                if below is None:
                    os.close(child_fd)
                    continue
                stack.append((child, child_fd, below))
        finally:
            for _, fd, _ in stack:
                if fd != self._root_fd:
                    _close(fd)
        return found

    def _unlistable(self, parts: tuple[bytes, ...], exc: OSError) -> None:
        code, why = "unreadable_directory", exc.strerror or str(exc)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped for a link since listing
            code, why = "link_ignored", "no longer a folder (link not followed)"
        self.problems.append(Problem(code, _label(parts), why))

    def _scan(self, fd: int, parts: tuple[bytes, ...], found: list) -> list[bytes] | None:
        """List one folder through its descriptor: its files go to ``found``;
        returns its subfolders in reverse name order (popped in name order),
        or None when it cannot be listed."""
        try:
            with os.scandir(fd) as it:
                dirents = sorted(it, key=lambda d: d.name)
        except OSError as exc:
            self.problems.append(
                Problem("unreadable_directory", _label(parts), exc.strerror or str(exc))
            )
            return None
        subdirs: list[bytes] = []
        for dirent in dirents:
            child = parts + (os.fsencode(dirent.name),)
            self._classify(dirent, child, subdirs, found)
        subdirs.reverse()
        return subdirs

    def _classify(
        self, dirent: os.DirEntry, child: tuple[bytes, ...], subdirs: list, found: list
    ) -> None:
        try:
            st = dirent.stat(follow_symlinks=False)
        except OSError as exc:
            self.problems.append(
                Problem("unreadable_directory", _label(child), exc.strerror or str(exc))
            )
            return
        if stat.S_ISLNK(st.st_mode):
            self.problems.append(
                Problem("link_ignored", _label(child), "symbolic link not followed")
            )
        elif stat.S_ISDIR(st.st_mode):
            subdirs.append(child[-1])
        elif stat.S_ISREG(st.st_mode):
            found.append((child, st.st_size))
        else:
            self.problems.append(
                Problem("link_ignored", _label(child), "special file (fifo, device or socket)")
            )

    # ----------------------------------------------------------- Medium API
    def entries(self) -> list[MediumEntry]:
        """Every accepted regular file, in deterministic walk order."""
        return list(self._entries)

    def real_path(self, entry: MediumEntry) -> bytes:
        """Where an entry is, for readers that read in place (an inventory's
        prefix reads); they must refuse links as :meth:`open` does. A path
        longer than PATH_MAX cannot be opened by name: such readers fall
        back to :meth:`open`, which walks directory descriptors."""
        return os.path.join(os.fsencode(self.path), *self._real[entry.path])

    def open(self, entry: MediumEntry) -> BinaryIO:
        """Open one entry for streaming (see :meth:`open_fd`)."""
        return io.BufferedReader(_FolderReader(self.open_fd(entry), entry.path, entry.size), _CHUNK)

    def open_fd(self, entry: MediumEntry) -> int:
        """A read-only descriptor on one entry (the caller closes it).

        Each folder on the way is opened ``O_NOFOLLOW`` relative to its
        parent, the file itself ``O_NOFOLLOW`` too, and the ``S_ISREG``
        check closes the race where a file is swapped for a link or fifo
        between listing and reading.
        """
        parts = self._real[entry.path]
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        dir_fd = self._root_fd
        try:
            for name in parts[:-1]:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                if dir_fd != self._root_fd:
                    os.close(dir_fd)
                dir_fd = nxt
            fd = os.open(parts[-1], flags, dir_fd=dir_fd)
        except OSError as exc:
            code = (
                "link_ignored" if exc.errno in (errno.ELOOP, errno.ENOTDIR) else "unreadable_sector"
            )
            raise MediumReadError(code, f"{entry.path}: {exc.strerror}") from exc
        finally:
            if dir_fd != self._root_fd:
                _close(dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise MediumReadError("link_ignored", f"{entry.path}: no longer a regular file")
        return fd

    def close(self) -> None:
        self._real.clear()
        if self._root_fd >= 0:
            _close(self._root_fd)
            self._root_fd = -1


def _label(parts: tuple[bytes, ...]) -> str:
    return "/".join(display_name(p) for p in parts)
