"""A tolerant ECMA-119 directory walker for images pycdlib refuses.

pycdlib parses the whole directory tree before it returns anything, so one
directory that leads back to an ancestor ("ISO Directory Records form a
loop") or one directory extent past the end of the image (a ``KeyError``
deep inside it) cost the whole disc. This walker reads the directory
records itself (ECMA-119 §9.1), Joliet names (UCS-2 in a Supplementary
Volume Descriptor, §8.5 and the Joliet specification) and Rock Ridge names
and file modes (RRIP ``NM``/``PX`` in the System Use field, SUSP §5), and
refuses one sub-tree at a time: a directory whose extent is already on the
path or already walked, lies past the end of the image, or does not parse,
costs the entries below it (``directory_loop``); the rest is listed.

Only what a damaged image needs is read: no SUSP continuation areas (``CE``),
no Rock Ridge relocation (``CL``/``RE``: relocated folders appear under
``rr_moved``), no El Torito. Memory is one directory at a time.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pdimport.media.base import SECTOR, MediumOpenError
from pdimport.media.extents import Extents
from pdimport.media.folder import display_name
from pdimport.problems import Problem

log = logging.getLogger(__name__)

_MAX_NAME = 255
_VERSION_SUFFIX = re.compile(r";\d*$")
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")


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


#: Volume descriptors looked at from sector 16 (real discs have < 10).
_MAX_DESCRIPTORS = 32
#: A directory larger than this is a hostile length, not a directory.
MAX_DIRECTORY_BYTES = 16 << 20
#: Directories walked at most; ECMA-119 allows 8 levels, real discs a few thousand folders.
MAX_DIRECTORIES = 100_000
MAX_DEPTH = 64
_JOLIET_ESCAPES = (b"%/@", b"%/C", b"%/E")
_FLAG_DIRECTORY, _FLAG_MULTI_EXTENT = 0x02, 0x80


@dataclass(frozen=True)
class Record:
    """One parsed directory record (ECMA-119 §9.1)."""

    name: bytes  # File Identifier as recorded
    lba: int
    length: int
    flags: int
    system_use: bytes

    @property
    def is_dir(self) -> bool:
        return bool(self.flags & _FLAG_DIRECTORY)


@dataclass(frozen=True)
class Volume:
    """The descriptor a namespace is read from."""

    namespace: str  # "iso" | "joliet" | "rr"
    root: Record
    label: str


def parse_records(data: bytes) -> Iterator[Record]:
    """Directory records of one directory extent; records never span a
    sector (§6.8.1.1), a zero length byte pads to the next one.

    Raises
    ------
    ValueError
        A record too short for its fixed part or its identifier.
    """
    pos = 0
    while pos < len(data):
        length = data[pos]
        if length == 0:
            pos = (pos // SECTOR + 1) * SECTOR
            continue
        if length < 34 or pos + length > len(data):
            raise ValueError(f"directory record of length {length} at byte {pos}")
        ident_len = data[pos + 32]
        if 33 + ident_len > length:
            raise ValueError(f"file identifier overruns its record at byte {pos}")
        lba, size = (
            struct.unpack_from("<I", data, pos + 2)[0],
            struct.unpack_from("<I", data, pos + 10)[0],
        )
        name = bytes(data[pos + 33 : pos + 33 + ident_len])
        su_start = (
            pos + 33 + ident_len + (1 - ident_len % 2)
        )  # padding byte after an even-length id
        yield Record(name, lba, size, data[pos + 25], bytes(data[su_start : pos + length]))
        pos += length


def _susp(system_use: bytes) -> Iterator[tuple[bytes, bytes]]:
    """``(signature, data)`` of the SUSP entries in one System Use field (SUSP §4)."""
    pos = 0
    while pos + 4 <= len(system_use):
        sig, length = system_use[pos : pos + 2], system_use[pos + 2]
        if length < 4 or pos + length > len(system_use):
            return
        yield sig, system_use[pos + 4 : pos + length]
        pos += length


def rr_name_and_mode(system_use: bytes) -> tuple[bytes | None, int | None]:
    """Rock Ridge alternate name (``NM``, RRIP §4.1.4, continued parts
    joined) and POSIX mode (``PX``, §4.1.1), None where absent."""
    name: bytes | None = None
    mode: int | None = None
    for sig, data in _susp(system_use):
        # ``data`` starts after the version byte (SUSP §4.1: signature,
        # length, version): NM flags then the name; PX the both-endian mode.
        if sig == b"NM" and len(data) >= 1:
            if not data[0] & 0x06:  # not CURRENT / PARENT
                name = (name or b"") + data[1:]
        elif sig == b"PX" and len(data) >= 4:
            mode = struct.unpack_from("<I", data, 0)[0]
        elif sig == b"SL":
            mode = stat.S_IFLNK
    return name, mode


def read_volumes(fd: int) -> list[Volume]:
    """The usable namespaces, best first: Rock Ridge, Joliet, ISO 9660.

    Raises
    ------
    MediumOpenError
        ``unreadable_medium`` when no Primary Volume Descriptor with
        2048-byte logical blocks is found.
    """
    pvd: Volume | None = None
    joliet: Volume | None = None
    for index in range(16, 16 + _MAX_DESCRIPTORS):
        desc = os.pread(fd, SECTOR, index * SECTOR)
        if len(desc) < SECTOR or desc[1:6] != b"CD001":
            break
        kind = desc[0]
        if kind == 255:  # Volume Descriptor Set Terminator (§8.3)
            break
        if kind not in (1, 2) or struct.unpack_from("<H", desc, 128)[0] != SECTOR:
            continue
        try:
            [root] = list(parse_records(desc[156:190].ljust(SECTOR, b"\0")[:34]))
        except ValueError:
            continue
        if kind == 1 and pvd is None:
            pvd = Volume("iso", root, display_name(desc[40:72]).strip())
        elif kind == 2 and desc[88:91] in _JOLIET_ESCAPES and joliet is None:
            label = desc[40:72].decode("utf-16-be", "replace").replace("\x00", "").strip()
            joliet = Volume("joliet", root, label)
    if pvd is None:
        raise MediumOpenError("unreadable_medium", "no usable ISO 9660 Primary Volume Descriptor")
    volumes = [joliet] if joliet is not None else []
    if _has_rock_ridge(fd, pvd.root):
        volumes.insert(0, Volume("rr", pvd.root, joliet.label if joliet else pvd.label))
    return [*volumes, pvd]


def _has_rock_ridge(fd: int, root: Record) -> bool:
    """The root's '.' record carries SUSP ``SP`` and an ``ER`` or RR entries (SUSP §5.3)."""
    try:
        first = next(parse_records(os.pread(fd, min(root.length, SECTOR), root.lba * SECTOR)))
    except (StopIteration, ValueError, OSError):
        return False
    return any(sig == b"SP" for sig, _ in _susp(first.system_use))


class TolerantWalker:
    """Walk one namespace of an image, refusing sub-trees, never the image.

    Parameters
    ----------
    fd : int
        The image or device (not owned).
    size : int
        Its size in bytes (extents past it are refused).
    volume : Volume
        The namespace to walk.
    problems : list of Problem
        Where refused sub-trees are recorded (``directory_loop``).
    """

    def __init__(self, fd: int, size: int, volume: Volume, problems: list[Problem]) -> None:
        self.fd = fd
        self.size = size
        self.volume = volume
        self.problems = problems

    def _name(self, rec: Record) -> str:
        if self.volume.namespace == "rr":
            alt, _ = rr_name_and_mode(rec.system_use)
            if alt is not None:
                return safe_component(display_name(alt))
        return safe_component(iso_name(rec.name, joliet=self.volume.namespace == "joliet"))

    def _refuse(self, parts: tuple[str, ...], why: str) -> None:
        self.problems.append(Problem("directory_loop", "/".join(parts), why))

    def _directory(self, rec: Record, parts: tuple[str, ...]) -> list[Record] | None:
        """The records of one directory, or None (recorded) when its extent is bad."""
        end = rec.lba * SECTOR + rec.length
        if rec.length > MAX_DIRECTORY_BYTES or end > self.size or rec.lba < 16:
            self._refuse(
                parts, f"bad directory extent (LBA {rec.lba}, {rec.length} bytes): not listed"
            )
            return None
        try:
            data = os.pread(self.fd, rec.length, rec.lba * SECTOR)
            if len(data) < rec.length:
                raise ValueError("short read")
            return [r for r in parse_records(data) if r.name not in (b"\x00", b"\x01")]
        except (OSError, ValueError) as exc:
            self._refuse(parts, f"directory at LBA {rec.lba} does not parse ({exc}): not listed")
            return None

    def walk(self) -> Iterator[tuple[tuple[str, ...], Extents | None, str]]:
        """``(parts, extents, why)`` of every file: extents None with a
        reason for links and special files (Rock Ridge ``PX``/``SL``)."""
        root = self.volume.root
        seen = {root.lba}
        stack: list[tuple[tuple[str, ...], Record, frozenset[int]]] = [((), root, frozenset())]
        walked = 0
        while stack:
            parts, rec, ancestors = stack.pop()
            records = self._directory(rec, parts)
            if records is None:
                continue
            walked += 1
            path_lbas = ancestors | {rec.lba}
            pending: list[Record] = []  # a multi-extent file's earlier records
            for child in records:
                path = parts + (self._name(child),)
                if child.is_dir:
                    if child.lba in path_lbas:
                        self._refuse(path, "directory leads back to one of its ancestors")
                    elif child.lba in seen:
                        self._refuse(path, "directory extent already listed elsewhere")
                    elif walked + len(stack) >= MAX_DIRECTORIES or len(path) > MAX_DEPTH:
                        self._refuse(path, f"over {MAX_DIRECTORIES} folders or {MAX_DEPTH} levels")
                    else:
                        seen.add(child.lba)
                        stack.append((path, child, path_lbas))
                    continue
                pending.append(child)
                if child.flags & _FLAG_MULTI_EXTENT:
                    continue  # ECMA-119 §6.5.1: the next record continues this file
                yield path, *self._file(pending)
                pending = []

    def _file(self, records: list[Record]) -> tuple[Extents | None, str]:
        if self.volume.namespace == "rr":
            _, mode = rr_name_and_mode(records[0].system_use)
            if mode is not None and stat.S_ISLNK(mode):
                return None, "Rock Ridge symbolic link not followed"
            if mode is not None and not stat.S_ISREG(mode):
                return None, f"Rock Ridge special file (mode {mode:o})"
        runs = tuple((r.lba * SECTOR, r.length) for r in records if r.length)
        return Extents(runs, sum(r.length for r in records)), ""
