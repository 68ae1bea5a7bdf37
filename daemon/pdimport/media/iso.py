"""ISO 9660 / Joliet / Rock Ridge / UDF images and optical block devices.

pycdlib parses the directory tree only; the data are read by
:mod:`pdimport.media.extents` with ``os.pread`` in on-disc (LBA) order,
because that order is what makes an optical disc read in minutes rather than
in quarter hours (hardware notes §3.3) and because pycdlib silently truncates
extents that run past the end of the image (reliability catalogue I3). Read
errors follow hardware notes §3.4: check every ``pread`` length, retry a
failing chunk sector by sector, and report the unreadable LBAs instead of
returning short data (I7).
"""

from __future__ import annotations

import logging
import os
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from pdimport.media.base import SECTOR, MediumOpenError, SizeBudget, unique_label
from pdimport.media.blockdev import fd_size
from pdimport.media.extents import ExtentMedium, Extents
from pdimport.media.folder import display_name
from pdimport.media.iso9660 import TolerantWalker, iso_name, read_volumes, safe_component
from pdimport.model import MediumEntry
from pdimport.problems import Problem
from pdimport.settings import Settings

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- listing
@dataclass(frozen=True)
class Found:
    """One file record found while walking a namespace."""

    parts: tuple[str, ...]
    extents: Extents | None  # None: a link or special file
    why: str = ""


def recorded_length(fd: int, rec, end: int) -> int:
    """Data Length of a directory record as written on the medium.

    pycdlib shortens the length of a file whose extent runs past the end of
    the image (catalogue I3), which would turn a damaged file into silently
    short data. Such a record ends exactly at the medium end, so only those
    are re-read from their parent directory (ECMA-119 §9.1.4: Data Length,
    both-endian, at byte 10; records never span sectors, §6.8.1.1).
    """
    if rec.extent_location() * SECTOR + rec.data_length != end or rec.parent is None:
        return rec.data_length
    parent = rec.parent
    start = parent.extent_location() * SECTOR
    data = os.pread(fd, parent.data_length, start)
    ident = rec.file_identifier()
    pos = 0
    while pos + 33 < len(data):
        length = data[pos]
        if length == 0:  # padding up to the next sector
            pos = (pos // SECTOR + 1) * SECTOR
            continue
        extent, size = (
            struct.unpack_from("<I", data, pos + 2)[0],
            struct.unpack_from("<I", data, pos + 10)[0],
        )
        name = data[pos + 33 : pos + 33 + data[pos + 32]]
        if name == ident and extent == rec.extent_location():
            return size
        pos += length
    return rec.data_length


def _dr_runs(rec, length_of: Callable[[object], int]) -> Extents:
    """Runs of an ISO 9660 record and its multi-extent continuations."""
    runs, size = [], 0
    while rec is not None:
        length = length_of(rec)
        if length:
            runs.append((rec.extent_location() * SECTOR, length))
            size += length
        rec = rec.data_continuation
    return Extents(tuple(runs), size)


def _rr_special(rec) -> str:
    """Why a Rock Ridge record is not a regular file, or "" (RRIP PX/SL)."""
    if rec.rock_ridge is None:
        return ""
    if rec.rock_ridge.is_symlink():
        return "Rock Ridge symbolic link not followed"
    try:
        mode = rec.rock_ridge.get_file_mode()
    except PyCdlibException:
        return ""  # no PX entry: nothing says it is special
    if not stat.S_ISREG(mode):
        return f"Rock Ridge special file (mode {mode:o})"
    return ""


def _dr_children(rec, rr: bool) -> Iterator:
    """Children of an ISO 9660 directory record, as pycdlib's walk sees them.

    Multi-extent files repeat their name (only the first record counts);
    with Rock Ridge, a relocated directory (RRIP §4.1.5 CL/PL/RE) is shown at
    its CL place, not under ``rr_moved``.
    """
    last = None
    for child in rec.children:
        ident = child.file_identifier()
        if ident == last or child.is_dot() or child.is_dotdot():
            continue
        last = ident
        if rr and child.rock_ridge is not None:
            if len(child.children) >= 2:
                dotdot = child.children[1]
                if dotdot.rock_ridge is not None and dotdot.rock_ridge.parent_link_record_exists():
                    continue
            moved = (
                child.rock_ridge.cl_to_moved_dr
                if child.rock_ridge.child_link_record_exists()
                else None
            )
            if moved is not None and moved.parent is not None:
                for other in moved.parent.children:
                    if (
                        other.rock_ridge is not None
                        and other.rock_ridge.name() == child.rock_ridge.name()
                    ):
                        child = other
                        break
        yield child


def _dr_name(rec, namespace: str) -> str:
    if namespace == "rr" and rec.rock_ridge is not None:
        return display_name(rec.rock_ridge.name())
    return iso_name(rec.file_identifier(), joliet=namespace == "joliet")


def walk_dr(
    root, namespace: str, length_of: Callable[[object], int], problems: list[Problem]
) -> Iterator[Found]:
    """Iterative walk of an ISO 9660, Joliet or Rock Ridge tree.

    ``length_of(record)`` gives a file record's true Data Length
    (see :func:`recorded_length`); a directory met twice costs its own
    entries (``directory_loop`` in ``problems``), not the walk.
    """
    rr = namespace == "rr"
    stack: list[tuple[tuple[str, ...], Any]] = [((), root)]
    seen = {root.extent_location()}
    while stack:
        parts, directory = stack.pop()
        for child in _dr_children(directory, rr):
            path = parts + (safe_component(_dr_name(child, namespace)),)
            if child.is_dir():
                if child.extent_location() in seen:
                    problems.append(
                        Problem("directory_loop", "/".join(path), "directory met twice")
                    )
                    continue
                seen.add(child.extent_location())
                stack.append((path, child))
                continue
            why = _rr_special(child) if rr else ""
            yield Found(path, None, why) if why else Found(path, _dr_runs(child, length_of))


def _udf_runs(entry, part_start: int) -> Extents:
    """Runs of a UDF File Entry from its allocation descriptors
    (ECMA-167 Part 4 §14.14; flags 3 = data inline in the File Entry)."""
    runs, left = [], entry.get_data_length()
    for ad in entry.alloc_descs:
        if left <= 0:
            break
        length = min(ad.extent_length, left)
        if type(ad).__name__ == "UDFInlineAD":
            runs.append((ad.log_block_num * SECTOR + ad.offset, length))
        else:
            runs.append(((part_start + ad.log_block_num) * SECTOR, length))
        left -= length
    return Extents(tuple(runs), entry.get_data_length())


def walk_udf(root, part_start: int) -> Iterator[Found]:
    """Iterative walk of a UDF tree (pycdlib already refused loops)."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), root)]
    seen = {id(root)}
    while stack:
        parts, directory = stack.pop()
        for fid in directory.fi_descs.values():
            entry = fid.file_entry
            if fid.is_parent() or entry is None:
                continue
            name = fid.fi.decode(fid.encoding or "latin-1", "replace")
            path = parts + (safe_component(name),)
            if entry.is_dir():
                if id(entry) not in seen:
                    seen.add(id(entry))
                    stack.append((path, entry))
            elif entry.is_file():
                yield Found(path, _udf_runs(entry, part_start))
            else:
                yield Found(
                    path, None, f"UDF non-regular file (ICB type {entry.icb_tag.file_type})"
                )


def choose_namespace(iso: pycdlib.PyCdlib) -> str:
    """UDF > Rock Ridge > Joliet > ISO 9660: the first that keeps long,
    mixed-case names and the file types (catalogue I6: prefer UDF)."""
    if iso.has_udf() and iso.udf_root is not None:
        return "udf"
    if iso.has_rock_ridge():
        return "rr"
    if iso.has_joliet():
        return "joliet"
    return "iso"


def volume_label(iso: pycdlib.PyCdlib) -> str:
    """Volume Identifier (ECMA-119 §8.4.11), the Joliet one when present
    because it may hold lower case and non-ASCII."""
    if iso.joliet_vd is not None:
        text = iso.joliet_vd.volume_identifier.decode("utf-16-be", "replace")
    else:
        text = display_name(iso.pvd.volume_identifier)
    return text.replace("\x00", "").strip()


def _walk(
    iso: pycdlib.PyCdlib, namespace: str, fd: int, end: int, problems: list[Problem]
) -> Iterator[Found]:
    if namespace == "udf":
        return walk_udf(iso.udf_root, iso.udf_main_descs.partitions[0].part_start_location)
    vd = iso.joliet_vd if namespace == "joliet" else iso.pvd
    assert vd is not None, "namespace was chosen from the volume descriptors present"
    return walk_dr(
        vd.root_directory_record(), namespace, lambda rec: recorded_length(fd, rec, end), problems
    )


def _rr_nonregular(iso: pycdlib.PyCdlib, fd: int, end: int) -> dict[str, str]:
    """Labels that Rock Ridge says are links or special files. Other
    namespaces (UDF written by genisoimage, Joliet) list them as empty
    regular files; this lets us refuse them there too."""
    if not iso.has_rock_ridge():
        return {}
    found = _walk(iso, "rr", fd, end, [])
    return {"/".join(f.parts): f.why for f in found if f.extents is None}


class IsoMedium(ExtentMedium):
    """An ISO 9660 / UDF image file or a block device.

    Parameters
    ----------
    source : str
        Image path or block device (``/dev/sr0``, ``/dev/loop3``).
    settings : Settings
        Supplies the ``limits.*`` caps.
    kind : str
        ``iso`` or ``device`` (as reported in ``source.kind``).

    Raises
    ------
    MediumOpenError
        ``unreadable_medium`` when the image cannot be opened or parsed
        (including directory loops, catalogue I1/I2).
    """

    def __init__(
        self, source: str, settings: Settings, kind: str = "iso", tolerant: bool = True
    ) -> None:
        self.kind = kind
        self.tolerant = tolerant
        self.path = source
        self.label = ""
        self.namespace = ""
        self.problems: list[Problem] = []
        self._extents: dict[str, Extents] = {}
        self._direct_fd: int | None = None
        self._fd = self._open_source(source)
        try:
            self._size = fd_size(self._fd)
            self._entries = self._list(SizeBudget.from_settings(settings))
        except BaseException:
            os.close(self._fd)
            raise

    def _parse(self) -> tuple[pycdlib.PyCdlib, BinaryIO]:
        iso = pycdlib.PyCdlib()
        fp = os.fdopen(os.dup(self._fd), "rb")
        try:
            iso.open_fp(fp)
        except (PyCdlibException, OSError, ValueError, struct.error, IndexError, KeyError) as exc:
            fp.close()
            raise MediumOpenError("unreadable_medium", f"{self.path}: {exc}") from exc
        return iso, fp

    def _list(self, budget: SizeBudget) -> list[MediumEntry]:
        try:
            iso, fp = self._parse()
        except MediumOpenError as exc:
            if not self.tolerant:
                raise
            log.info("%s: pycdlib refused the image (%s); walking it tolerantly", self.path, exc)
            return self._list_tolerant(budget, exc)
        try:
            self.namespace = choose_namespace(iso)
            self.label = volume_label(iso)
            refused = _rr_nonregular(iso, self._fd, self._size) if self.namespace != "rr" else {}
            found = list(_walk(iso, self.namespace, self._fd, self._size, self.problems))
        except (PyCdlibException, OSError, ValueError, struct.error, IndexError) as exc:
            raise MediumOpenError("unreadable_medium", f"{self.path}: {exc}") from exc
        finally:
            # The tree is all we need from pycdlib; free it (bounded memory).
            iso.close()
            fp.close()
        log.info("%s: %d records in the %s namespace", self.path, len(found), self.namespace)
        return self._admit(found, refused, budget)

    def _list_tolerant(self, budget: SizeBudget, refused: MediumOpenError) -> list[MediumEntry]:
        """List an image pycdlib refused with :class:`~pdimport.media.iso9660.TolerantWalker`:
        a loop or bad directory extent costs the entries below it only."""
        try:
            volumes = read_volumes(self._fd)
        except (MediumOpenError, OSError) as exc:
            raise refused from exc
        volume = volumes[0]
        self.namespace, self.label = volume.namespace, volume.label
        walker = TolerantWalker(self._fd, self._size, volume, self.problems)
        found = [Found(parts, extents, why) for parts, extents, why in walker.walk()]
        log.info(
            "%s: %d records in the %s namespace (tolerant walk)",
            self.path,
            len(found),
            self.namespace,
        )
        return self._admit(found, {}, budget)

    def _admit(
        self, found: list[Found], refused: dict[str, str], budget: SizeBudget
    ) -> list[MediumEntry]:
        entries: list[MediumEntry] = []
        taken: set[str] = set()
        # On-disc order: sequential reads, no seeks (hardware notes §3.3).
        found.sort(key=lambda f: (f.extents.lba if f.extents else 0, f.parts))
        for item in found:
            label = unique_label("/".join(item.parts), taken)
            why = item.why or (
                refused.get(label, "") if item.extents and not item.extents.size else ""
            )
            if why or item.extents is None:
                why = why or "no data extents recorded"
                self.problems.append(Problem("link_ignored", label, why))
                continue
            _, refusal = budget.admit(item.extents.size)
            if refusal:
                self.problems.append(Problem("too_large", label, refusal))
                continue
            self._extents[label] = item.extents
            entries.append(MediumEntry(label, item.extents.size, order=item.extents.lba))
        return entries

    # ----------------------------------------------------------- Medium API
    def entries(self) -> list[MediumEntry]:
        """Every accepted regular file, sorted by LBA."""
        return list(self._entries)
