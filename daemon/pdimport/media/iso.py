"""ISO 9660 / Joliet / Rock Ridge / UDF images and optical block devices.

pycdlib parses the directory tree only; the data are read here with
``os.pread`` in on-disc (LBA) order, because that order is what makes an
optical disc read in minutes rather than in quarter hours (hardware notes
§3.3) and because pycdlib silently truncates extents that run past the end
of the image (reliability catalogue I3). Read errors follow hardware notes
§3.4: check every ``pread`` length, retry a failing chunk sector by sector,
and report the unreadable LBAs instead of returning short data (I7).
"""

from __future__ import annotations

import fcntl
import io
import logging
import mmap
import os
import re
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from pdimport.media.base import SECTOR, LargeReads, MediumOpenError, SizeBudget, unique_label
from pdimport.media.folder import display_name
from pdimport.model import MediumEntry, MediumReadError
from pdimport.problems import Problem
from pdimport.settings import Settings

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: <linux/fs.h> BLKGETSIZE64 = _IOR(0x12, 114, size_t): device size in bytes.
BLKGETSIZE64 = 0x80081272
#: Extra attempts per sector before it counts as unreadable (hardware notes §3.4).
SECTOR_RETRIES = 2
_MAX_NAME = 255
_VERSION_SUFFIX = re.compile(r";\d*$")
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")

Pread = Callable[[int, int, int], bytes]


# ------------------------------------------------------------------ names
def safe_component(name: str) -> str:
    """One path component made harmless as a display label (catalogue I5).

    Separators, NUL and control characters become ``_``; ``.``/``..``/empty
    become ``_``-prefixed; very long names are cut. The label is never used
    as a local path (the spool names files by hash); this only keeps reports
    and logs unambiguous.
    """
    name = _UNSAFE_CHARS.sub("_", name)
    if name in ("", ".", ".."):
        name = "_" + name
    if len(name) > _MAX_NAME:
        name = name[: _MAX_NAME - 1] + "\u2026"
    return name


def iso_name(raw: bytes, joliet: bool = False) -> str:
    """Decode an ISO 9660 or Joliet File Identifier (ECMA-119 §7.5, Joliet is
    UCS-2 big-endian) and drop the ``;1`` version and the empty-extension dot."""
    text = raw.decode("utf-16-be", "replace") if joliet else display_name(raw)
    text = _VERSION_SUFFIX.sub("", text)
    if not joliet and text.endswith(".") and text not in (".", ".."):
        text = text[:-1]
    return text


# ------------------------------------------------------------------ sizes
def medium_size(fd: int) -> int:
    """Bytes on the image or device: ``BLKGETSIZE64`` for block devices
    (``st_size`` is 0 there), ``st_size`` for files."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
        return struct.unpack("Q", buf)[0]
    return st.st_size


# --------------------------------------------------------------- reading
def _read_sector(fd: int, lba: int, need: int, pread: Pread) -> bytes | None:
    """One sector with retries; None when it stays unreadable or short."""
    for _ in range(SECTOR_RETRIES + 1):
        try:
            data = pread(fd, SECTOR, lba * SECTOR)
        except OSError as exc:
            log.debug("LBA %d: %s", lba, exc.strerror)
            continue
        if len(data) >= need:
            return data
    return None


def _direct_pread(fd: int, length: int, offset: int) -> bytes:
    """``pread`` through an ``O_DIRECT`` descriptor: a page-aligned buffer is
    required, and the kernel then reports exactly the bad 2048-byte sector
    rather than its whole 4 KiB page (hardware notes §3.4)."""
    buf = mmap.mmap(-1, length)
    try:
        got = os.preadv(fd, [buf], offset)
        return bytes(buf[:got])
    finally:
        buf.close()


@dataclass(frozen=True)
class Extents:
    """Where one file's bytes are: ``(byte offset, length)`` runs on the medium.

    ISO 9660 files over 4 GiB have one run per directory record
    (multi-extent, ECMA-119 §6.5.1); UDF files one per allocation descriptor
    (ECMA-167 Part 4 §14.14); UDF inline data one run inside its File Entry.
    """

    runs: tuple[tuple[int, int], ...]
    size: int

    @property
    def lba(self) -> int:
        return self.runs[0][0] // SECTOR if self.runs else 0


class ExtentReader(LargeReads):
    """Raw stream over an :class:`Extents`, never returning short data.

    Parameters
    ----------
    fd : int
        Image or device descriptor (not owned).
    label : str
        Display path, for error details.
    extents : Extents
        The runs to read.
    end : int
        Size of the medium in bytes; a run past it is ``truncated_extent``.
    pread : callable
        ``os.pread`` by default; injectable so tests can simulate a
        scratched disc.
    sector_fd : int, optional
        Descriptor used for the sector-by-sector retry (``O_DIRECT`` on
        devices); ``fd`` when None.
    sector_pread : callable, optional
        How ``sector_fd`` is read; ``pread`` when None.
    """

    def __init__(
        self,
        fd: int,
        label: str,
        extents: Extents,
        end: int,
        pread: Pread = os.pread,
        sector_fd: int | None = None,
        sector_pread: Pread | None = None,
    ) -> None:
        super().__init__()
        self._fd = fd
        self._label = label
        self._extents = extents
        self._end = end
        self._pread = pread
        self._sector_fd = fd if sector_fd is None else sector_fd
        self._sector_pread = sector_pread or pread
        self._run = 0
        self._in_run = 0
        self._done = 0
        self._checked = False

    def readinto(self, buf) -> int:
        if not self._checked:
            self._check_bounds()
            self._checked = True
        runs = self._extents.runs
        while self._run < len(runs) and self._in_run >= runs[self._run][1]:
            self._run, self._in_run = self._run + 1, 0
        if self._run >= len(runs):
            return 0
        offset, length = runs[self._run]
        want = min(len(buf), CHUNK, length - self._in_run)
        data = self._read_checked(offset + self._in_run, want)
        buf[:want] = data
        self._in_run += want
        self._done += want
        return want

    def _check_bounds(self) -> None:
        """Refuse extents beyond the medium end before yielding any byte (I3)."""
        total = sum(length for _, length in self._extents.runs)
        if total < self._extents.size:
            raise MediumReadError(
                "truncated_extent",
                f"{self._label}: extents hold {total} of {self._extents.size} bytes",
            )
        for offset, length in self._extents.runs:
            if offset + length > self._end:
                raise MediumReadError(
                    "truncated_extent",
                    f"{self._label}: LBA {offset // SECTOR}-{(offset + length - 1) // SECTOR} "
                    f"runs past the medium end (LBA {self._end // SECTOR})",
                )

    def _read_checked(self, offset: int, length: int) -> bytes:
        try:
            data = self._pread(self._fd, length, offset)
        except OSError as exc:
            log.info("%s: %s at byte %d, retrying by sector", self._label, exc.strerror, offset)
            data = b""
        if len(data) >= length:
            return data[:length]
        return self._retry_sectors(offset, length, data)

    def _retry_sectors(self, offset: int, length: int, data: bytes) -> bytes:
        """Re-read the failing part of a chunk one 2048-byte sector at a time."""
        start = offset + len(data)
        start -= start % SECTOR
        out, bad = bytearray(data[: start - offset]), []
        end = offset + length
        for lba in range(start // SECTOR, -(-end // SECTOR)):
            lo = max(lba * SECTOR, offset)
            hi = min((lba + 1) * SECTOR, end)
            sector = _read_sector(self._sector_fd, lba, hi - lba * SECTOR, self._sector_pread)
            if sector is None:
                bad.append(lba)
                continue
            out += sector[lo - lba * SECTOR : hi - lba * SECTOR]
        if bad:
            raise MediumReadError(
                "unreadable_sector", f"{self._label}: unreadable LBA {', '.join(map(str, bad))}"
            )
        return bytes(out)


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


def walk_dr(root, namespace: str, length_of: Callable[[object], int]) -> Iterator[Found]:
    """Iterative walk of an ISO 9660, Joliet or Rock Ridge tree.

    ``length_of(record)`` gives a file record's true Data Length
    (see :func:`recorded_length`).
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
                    raise MediumOpenError(
                        "unreadable_medium", f"directory loop at {'/'.join(path)}"
                    )
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


def _walk(iso: pycdlib.PyCdlib, namespace: str, fd: int, end: int) -> Iterator[Found]:
    if namespace == "udf":
        return walk_udf(iso.udf_root, iso.udf_main_descs.partitions[0].part_start_location)
    vd = iso.joliet_vd if namespace == "joliet" else iso.pvd
    assert vd is not None, "namespace was chosen from the volume descriptors present"
    return walk_dr(vd.root_directory_record(), namespace, lambda rec: recorded_length(fd, rec, end))


def _rr_nonregular(iso: pycdlib.PyCdlib, fd: int, end: int) -> dict[str, str]:
    """Labels that Rock Ridge says are links or special files. Other
    namespaces (UDF written by genisoimage, Joliet) list them as empty
    regular files; this lets us refuse them there too."""
    if not iso.has_rock_ridge():
        return {}
    return {"/".join(f.parts): f.why for f in _walk(iso, "rr", fd, end) if f.extents is None}


# ----------------------------------------------------------------- medium
class ExtentMedium:
    """What every sector-addressed medium shares: one descriptor on the image
    or device, an optional ``O_DIRECT`` descriptor for exact sector retries,
    and files streamed from their :class:`Extents` in LBA order.

    :class:`IsoMedium` (pycdlib) and :class:`~pdimport.media.udf.UdfMedium`
    (libudfread) only differ in how they find the extents.
    Subclasses set ``kind``, ``path``, ``_fd``, ``_size`` and fill ``_extents``.
    """

    kind: str
    path: str
    _fd: int
    _size: int
    _extents: dict[str, Extents]
    _direct_fd: int | None = None

    def _open_source(self, source: str) -> int:
        """Open the image or device read-only (``unreadable_medium`` if not)."""
        try:
            return os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise MediumOpenError("unreadable_medium", f"{source}: {exc.strerror}") from exc

    def open(self, entry: MediumEntry, pread: Pread = os.pread) -> BinaryIO:
        """Stream one file's bytes straight from its extents.

        ``pread`` is only for tests that simulate read errors or a drive's
        speed; with the real one, devices retry failing sectors through
        ``O_DIRECT``.
        """
        extents = self._extents[entry.path]
        sector_fd, sector_pread = self._fd, pread
        if pread is os.pread and self.kind == "device" and (direct := self._open_direct()) >= 0:
            sector_fd, sector_pread = direct, _direct_pread
        raw = ExtentReader(
            self._fd,
            entry.path,
            extents,
            self._size,
            pread=pread,
            sector_fd=sector_fd,
            sector_pread=sector_pread,
        )
        return io.BufferedReader(raw, CHUNK)

    def _open_direct(self) -> int:
        """An ``O_DIRECT`` descriptor on the device (exact sector errors), or
        -1 where the kernel refuses it."""
        if self._direct_fd is None:
            try:
                self._direct_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
            except OSError as exc:
                log.info(
                    "%s: no O_DIRECT (%s); sector retries use the page cache",
                    self.path,
                    exc.strerror,
                )
                self._direct_fd = -1
        return self._direct_fd

    def close(self) -> None:
        for fd in (self._fd, self._direct_fd):
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd, self._direct_fd = -1, None


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

    def __init__(self, source: str, settings: Settings, kind: str = "iso") -> None:
        self.kind = kind
        self.path = source
        self.label = ""
        self.namespace = ""
        self.problems: list[Problem] = []
        self._extents: dict[str, Extents] = {}
        self._direct_fd: int | None = None
        self._fd = self._open_source(source)
        try:
            self._size = medium_size(self._fd)
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
        iso, fp = self._parse()
        try:
            self.namespace = choose_namespace(iso)
            self.label = volume_label(iso)
            refused = _rr_nonregular(iso, self._fd, self._size) if self.namespace != "rr" else {}
            found = list(_walk(iso, self.namespace, self._fd, self._size))
        except (PyCdlibException, OSError, ValueError, struct.error, IndexError) as exc:
            raise MediumOpenError("unreadable_medium", f"{self.path}: {exc}") from exc
        finally:
            # The tree is all we need from pycdlib; free it (bounded memory).
            iso.close()
            fp.close()
        log.info("%s: %d records in the %s namespace", self.path, len(found), self.namespace)
        return self._admit(found, refused, budget)

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
