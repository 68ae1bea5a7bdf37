"""Packages inside a medium: a zip in a zip, a ``PATIENT.ISO`` on a USB stick.

A file on a medium whose name says package (``.zip``, ``.iso``, ``.img``)
and whose bytes agree (zip signature, ISO 9660 / UDF volume descriptors) is
opened as a medium of its own, as part of the same job: its entries are
listed in the package's place, read, scanned and delivered with their own
paths (``PATIENT.ISO/DICOM/IM1``). A package inside a package is opened too,
down to :data:`MAX_PACKAGE_DEPTH` levels; one deeper is ``nesting_limit``
and not opened. The inner media apply their own rules (unsafe names, links,
bombs, ``limits.*`` per entry), and everything listed counts against one
``limits.max_files`` / ``limits.max_medium_size`` budget for the whole medium.

Memory stays bounded: a package on a folder medium is opened in place
(through its descriptor); one inside a zip or an image is first streamed to
a temporary file in the spool's ``tmp`` folder (at most its admitted size,
itself capped by ``limits.max_file_size``), removed when the medium closes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from pdimport.media.base import ISO_IDENTIFIERS, SECTOR, MediumOpenError, SizeBudget, unique_label
from pdimport.model import Medium, MediumEntry, MediumReadError, iter_chunks
from pdimport.problems import Problem
from pdimport.settings import Settings
from pdimport.store.spool import tmp_prefix

log = logging.getLogger(__name__)

#: Packages inside packages opened at most: the medium's own packages are
#: level 1, a package inside one of them level 2 (issue 17: "depth limit 2").
MAX_PACKAGE_DEPTH = 2
PACKAGE_EXTENSIONS = (".zip", ".iso", ".img")
#: Bytes read to recognise a package: zip signature at 0, volume descriptors from sector 16.
_HEAD = 17 * SECTOR


def is_package_name(path: str) -> bool:
    """Whether a display path names a package (ISO 9660 ``;1`` already dropped)."""
    return path.rsplit("/", 1)[-1].lower().endswith(PACKAGE_EXTENSIONS)


def package_kind(head: bytes) -> str:
    """``zip``, ``iso`` or "" from a package's first bytes (APPNOTE 4.3.7;
    ECMA-119 §8.1 / ECMA-167 Part 2 §9.1 at sector 16)."""
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[16 * SECTOR + 1 : 16 * SECTOR + 6] in ISO_IDENTIFIERS:
        return "iso"
    return ""


class NestedMedium:
    """A medium with the packages on it opened in place.

    Parameters
    ----------
    outer : Medium
        The medium as opened (owned: closed with this one).
    settings : Settings
        Supplies the ``limits.*`` caps.
    opener : callable
        Opens a local path as a medium (``open_medium`` without nesting).
    workdir : Path, optional
        Where packages that cannot be opened in place are copied (the
        spool's ``tmp``); the system's temporary folder when None.
    depth : int
        Package level of ``outer`` (0: the medium the operator gave, whose
        budget counts every entry listed, inner ones included).
    """

    def __init__(
        self,
        outer: Any,
        settings: Settings,
        opener: Callable[[str, Settings], Any],
        workdir: Path | None = None,
        depth: int = 0,
    ) -> None:
        self.outer = outer
        self.kind, self.path, self.label = outer.kind, outer.path, outer.label
        self.problems: list[Problem] = list(outer.problems)
        self._settings = settings
        self._opener = opener
        self._workdir = workdir
        self._depth = depth
        self._budget = SizeBudget.from_settings(settings)
        self._inner: list[tuple[Medium, int, str]] = []  # (medium, fd or -1, temp path or "")
        self._route: dict[str, tuple[Any, MediumEntry]] = {}
        self._entries: list[MediumEntry] = []
        try:
            self._expand()
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------- listing
    def _expand(self) -> None:
        taken: set[str] = set()
        for entry in self.outer.entries():
            inner = self._package(entry) if is_package_name(entry.path) else None
            if inner is None:
                self._add(entry.path, self.outer, entry, taken)
                continue
            self.problems.extend(
                Problem(p.code, f"{entry.path}/{p.path}" if p.path else entry.path, p.detail)
                for p in inner.problems
            )
            for sub in inner.entries():
                self._add(f"{entry.path}/{sub.path}", inner, sub, taken)

    def _add(self, path: str, owner: Any, entry: MediumEntry, taken: set) -> None:
        """List one entry; at level 0 every entry, inner ones included,
        counts against the medium's ``limits.max_files`` and
        ``limits.max_medium_size`` (a package of packages is no way round them)."""
        if self._depth == 0:
            limit, why = self._budget.admit(entry.size)
            if limit:
                self.problems.append(Problem("too_large", path, why))
                return
        label = unique_label(path, taken)
        self._route[label] = (owner, entry)
        self._entries.append(MediumEntry(label, entry.size, order=len(self._entries)))

    def _package(self, entry: MediumEntry) -> NestedMedium | None:
        """The package ``entry`` opened as a medium, or None when its bytes
        are no package (it stays a plain file) or it cannot be opened
        (recorded; it stays a plain file too, so nothing read is lost)."""
        try:
            with self.outer.open(entry) as fp:
                head = fp.read(_HEAD)
        except (MediumReadError, OSError):
            return None  # the plain read reports the error with its code
        if not package_kind(head):
            return None
        if self._depth + 1 > MAX_PACKAGE_DEPTH:
            self.problems.append(
                Problem(
                    "nesting_limit",
                    entry.path,
                    f"a package inside {self._depth} levels of packages is not opened "
                    f"(at most {MAX_PACKAGE_DEPTH})",
                )
            )
            return None
        fd, temp = -1, ""
        try:
            source, fd, temp = self._local(entry)
            medium = self._opener(source, self._settings)
        except (MediumOpenError, MediumReadError, OSError) as exc:
            _release(fd, temp)
            code = getattr(exc, "code", "unreadable_medium")
            self.problems.append(
                Problem(code, entry.path, f"package not opened: {getattr(exc, 'detail', exc)}")
            )
            return None
        nested = NestedMedium(medium, self._settings, self._opener, self._workdir, self._depth + 1)
        self._inner.append((nested, fd, temp))
        log.info("%s: package %s opened (%d entries)", self.path, entry.path, len(nested.entries()))
        return nested

    def _local(self, entry: MediumEntry) -> tuple[str, int, str]:
        """A local path to the package's bytes: in place on a folder medium
        (``/proc/self/fd``, so no path length limit), else a temporary copy."""
        opener = getattr(self.outer, "open_fd", None)
        if opener is not None:
            fd = opener(entry)
            return f"/proc/self/fd/{fd}", fd, ""
        workdir = self._workdir if self._workdir is not None and self._workdir.is_dir() else None
        out, temp = tempfile.mkstemp(dir=workdir, prefix=tmp_prefix("nest"))
        try:
            with os.fdopen(out, "wb") as dst, self.outer.open(entry) as src:
                for chunk in iter_chunks(src):
                    dst.write(chunk)
        except BaseException:
            _release(-1, temp)
            raise
        return temp, -1, temp

    # ----------------------------------------------------------- Medium API
    def entries(self) -> list[MediumEntry]:
        """Every entry, with each package's entries in the package's place."""
        return list(self._entries)

    def open(self, entry: MediumEntry) -> BinaryIO:
        owner, inner = self._route[entry.path]
        return owner.open(inner)

    def __getattr__(self, name: str) -> Any:
        # What only some kinds have (``namespace``, ``size``) comes from the outer medium.
        if name.startswith("_") or name == "outer":
            raise AttributeError(name)
        return getattr(self.outer, name)

    def close(self) -> None:
        for medium, fd, temp in self._inner:
            try:
                medium.close()
            finally:
                _release(fd, temp)
        self._inner.clear()
        self.outer.close()


def _release(fd: int, temp: str) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
    if temp:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
