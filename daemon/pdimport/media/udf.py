"""UDF-only discs (no ISO 9660 bridge) through libudfread.

Blu-ray discs (UDF 2.50/2.60 with a metadata partition) and Windows "Live
File System" discs (UDF 2.01) carry no ISO 9660 Primary Volume Descriptor, so
pycdlib refuses them ("Valid ISO9660 filesystems must have at least one
PVD", hardware notes §3.1). libudfread (Debian ``libudfread0``, the library
behind VLC/Kodi Blu-ray playback) parses them; it is loaded with ctypes.

libudfread only *finds* the files. Their bytes are read like
:class:`~pdimport.media.iso.IsoMedium` reads them: every file's blocks are
mapped to absolute LBAs with ``udfread_file_lba`` (ECMA-167 Part 4 §14.14
allocation descriptors, resolved by the library through the partition map,
OSTA UDF 2.60 §2.2.4), entries are sorted by LBA, and the data are fetched
with ``os.pread`` through the shared :class:`~pdimport.media.extents.ExtentReader`
(sequential reads, sector retries, exact ``unreadable_sector`` LBAs).
Only files whose blocks have no LBA -- data embedded in the File Entry
(ECMA-167 Part 4 §14.6.8, ICB flags 3), unrecorded extents that read as zeros
(§14.14.1.1, extent types 1 and 2) -- go through ``udfread_file_read``.

Not covered (libudfread cannot open them; the medium is ``unreadable_medium``):
UDF with a Virtual Allocation Table (write-once media written incrementally,
UDF 2.60 §2.2.11), hardware notes §3.1.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import io
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pdimport.media.base import SECTOR, MediumOpenError, SizeBudget, unique_label
from pdimport.media.blockdev import fd_size
from pdimport.media.extents import CHUNK, ExtentMedium, Extents, Pread
from pdimport.media.iso import safe_component
from pdimport.model import MediumEntry, MediumReadError
from pdimport.problems import Problem
from pdimport.settings import Settings

log = logging.getLogger(__name__)

#: Where Debian's libudfread0 puts the library when ``find_library`` cannot
#: run ``ldconfig`` (minimal containers, hardened services).
_LIBRARY_PATHS = (
    "libudfread.so.0",
    "/usr/lib/x86_64-linux-gnu/libudfread.so.0",
    "/usr/lib/aarch64-linux-gnu/libudfread.so.0",
    "/usr/lib/libudfread.so.0",
)
#: ``d_type`` values of ``struct udfread_dirent`` (udfread.h).
UDF_DT_DIR = 1
UDF_DT_REG = 2
#: UDF has no depth limit of its own (ISO 9660 has 8 levels); real discs use
#: fewer than 20. Deeper is a loop or a hostile image (catalogue I1/I2).
MAX_DEPTH = 128
#: Most directories walked: libudfread keeps every directory it reads in
#: memory until the volume is closed, so a loop with fan-out would explode.
MAX_DIRECTORIES = 100_000


class _Dirent(ctypes.Structure):
    """``struct udfread_dirent { unsigned d_type; const char *d_name; }``."""

    _fields_ = [("d_type", ctypes.c_uint), ("d_name", ctypes.c_char_p)]


# --------------------------------------------------------------- library
def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Prototypes of the calls used (libudfread 1.1, udfread.h). Without
    them ctypes would truncate pointers to ``int`` on 64-bit machines."""
    vp, cp, u32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32
    table = {
        "udfread_init": (vp, []),
        "udfread_open": (ctypes.c_int, [vp, cp]),
        "udfread_close": (None, [vp]),
        "udfread_get_volume_id": (cp, [vp]),
        "udfread_opendir": (vp, [vp, cp]),
        "udfread_opendir_at": (vp, [vp, cp]),
        "udfread_readdir": (ctypes.POINTER(_Dirent), [vp, ctypes.POINTER(_Dirent)]),
        "udfread_closedir": (None, [vp]),
        "udfread_file_openat": (vp, [vp, cp]),
        "udfread_file_close": (None, [vp]),
        "udfread_file_size": (ctypes.c_int64, [vp]),
        "udfread_file_lba": (u32, [vp, u32]),
        "udfread_file_read": (ctypes.c_ssize_t, [vp, vp, ctypes.c_size_t]),
    }
    for name, (restype, argtypes) in table.items():
        func = getattr(lib, name)
        func.restype, func.argtypes = restype, argtypes
    return lib


@functools.lru_cache(maxsize=1)
def load_libudfread() -> ctypes.CDLL | None:
    """libudfread with its prototypes declared, or None when not installed
    (or too old: ``udfread_file_openat`` and ``udfread_opendir_at`` came in
    1.1.0)."""
    found = ctypes.util.find_library("udfread")
    for name in ((found,) if found else ()) + _LIBRARY_PATHS:
        try:
            return _declare(ctypes.CDLL(name))
        except (OSError, AttributeError) as exc:
            log.debug("libudfread candidate %s: %s", name, exc)
    return None


def is_available() -> bool:
    """True when UDF-only media can be read (libudfread >= 1.1 is loadable)."""
    return load_libudfread() is not None


def display(raw: bytes) -> str:
    """A libudfread name as a display label. Names come as Modified UTF-8
    (OSTA CS0, UDF 2.60 §2.1.1, with U+0000 written as C0 80); undecodable
    bytes become U+FFFD."""
    return safe_component(raw.replace(b"\xc0\x80", b"\x00").decode("utf-8", "replace"))


# --------------------------------------------------------------- listing
@dataclass(frozen=True)
class UdfFile:
    """One regular file found on the volume.

    ``raw`` are the names as libudfread knows them, root to file, so that a
    file without LBAs can be opened again for ``udfread_file_read``.
    ``extents`` is None for those files.
    """

    parts: tuple[str, ...]
    raw: tuple[bytes, ...]
    size: int
    lba: int
    extents: Extents | None


def map_extents(lib: ctypes.CDLL, handle: int, size: int) -> Extents | None:
    """Byte runs of a file on the medium, from ``udfread_file_lba`` block by block.

    Checking only the first and last block is not enough: a file whose middle
    extent was rewritten elsewhere (packet-written media) keeps both ends in
    place. Every block is mapped (about 0.4 us per block, 0.2 s per GB) and
    consecutive LBAs are merged into runs, so a fragmented file still reads
    with large sequential ``pread`` calls.

    Returns
    -------
    Extents or None
        None when a block has no LBA (inline data, ICB flags 3, ECMA-167
        Part 4 §14.6.8; unrecorded extents, §14.14.1.1): such files are read
        with ``udfread_file_read``.
    """
    nblocks = -(-size // SECTOR)
    file_lba = lib.udfread_file_lba
    runs: list[tuple[int, int]] = []
    start = prev = file_lba(handle, 0) if nblocks else 0
    if nblocks and not start:
        return None
    for block in range(1, nblocks):
        lba = file_lba(handle, block)
        if not lba:
            return None
        if lba != prev + 1:
            runs.append((start * SECTOR, (prev - start + 1) * SECTOR))
            start = lba
        prev = lba
    if nblocks:
        # The last block is only partly used (ECMA-167 Part 4 §12.1).
        runs.append((start * SECTOR, (prev - start + 1) * SECTOR - (nblocks * SECTOR - size)))
    return Extents(tuple(runs), size)


class _Walker:
    """Iterative directory walk of an open volume (no recursion: depth is
    whatever the disc says).

    libudfread does not expose where a directory's File Entry is, so a loop
    (a File Identifier Descriptor pointing at an ancestor, ECMA-167 Part 4
    §14.4) cannot be caught by address as in ISO 9660. A directory is instead
    fingerprinted by its names and its files' first LBAs: a second directory
    with the same fingerprint holding recorded data is the same directory.
    Loops without any file data are stopped by :data:`MAX_DEPTH` and
    :data:`MAX_DIRECTORIES`.
    """

    def __init__(self, lib: ctypes.CDLL, udf: int, source: str, problems: list[Problem]) -> None:
        self.lib = lib
        self.udf = udf
        self.source = source
        self.problems = problems
        self.directories = 0
        self._seen: set[tuple] = set()

    def files(self) -> Iterator[UdfFile]:
        root = self.lib.udfread_opendir(self.udf, b"/")
        if not root:
            raise MediumOpenError(
                "unreadable_medium", f"{self.source}: UDF root directory unreadable"
            )
        stack: list[tuple[tuple[str, ...], tuple[bytes, ...], int]] = [((), (), root)]
        try:
            while stack:
                parts, raw, handle = stack.pop()
                try:
                    yield from self._directory(parts, raw, handle, stack)
                finally:
                    self.lib.udfread_closedir(handle)
        finally:
            for _, _, handle in stack:
                self.lib.udfread_closedir(handle)

    def _names(self, handle: int, parts: tuple[str, ...]) -> list[tuple[int, bytes]]:
        """``(d_type, name)`` of a directory, parent entry and repeated names dropped."""
        out, seen, dirent = [], set(), _Dirent()
        while self.lib.udfread_readdir(handle, ctypes.byref(dirent)):
            name = dirent.d_name or b""
            if name == b"..":
                continue
            if name in seen:
                # udfread_*_at find the first of equal names only: the second
                # cannot be reached, and reading the first under its label
                # would import the wrong bytes.
                label = "/".join(parts + (display(name),))
                self.problems.append(
                    Problem(
                        "unreadable_directory",
                        label,
                        "a second entry with the same name cannot be read",
                    )
                )
                continue
            seen.add(name)
            out.append((dirent.d_type, name))
        return out

    def _directory(self, parts, raw, handle, stack) -> Iterator[UdfFile]:
        names = self._names(handle, parts)
        files = [self._file(parts, raw, handle, name) for kind, name in names if kind != UDF_DT_DIR]
        found = [f for f in files if f is not None]
        if self._is_loop(parts, names, found):
            return  # this sub-tree was listed already: costs only itself
        yield from found
        for kind, name in names:
            if kind == UDF_DT_DIR:
                self._push(parts + (display(name),), raw + (name,), handle, name, stack)

    def _is_loop(self, parts, names, found: list[UdfFile]) -> bool:
        """A directory seen before (``directory_loop`` recorded): it and the
        entries below it are not listed again; the rest of the disc is."""
        fingerprint = (tuple(names), tuple(f.lba for f in found))
        if any(f.lba for f in found):
            if fingerprint in self._seen:
                self.problems.append(
                    Problem(
                        "directory_loop",
                        "/".join(parts),
                        "directory loop: the same directory as one already listed",
                    )
                )
                return True
            self._seen.add(fingerprint)
        return False

    def _push(self, parts, raw, parent: int, name: bytes, stack) -> None:
        label = "/".join(parts)
        if len(parts) > MAX_DEPTH or self.directories >= MAX_DIRECTORIES:
            self.problems.append(
                Problem(
                    "directory_loop",
                    label,
                    f"more than {MAX_DIRECTORIES} directories or deeper than {MAX_DEPTH} "
                    "(directory loop?): not listed",
                )
            )
            return
        handle = self.lib.udfread_opendir_at(parent, name)
        if not handle:
            self.problems.append(
                Problem("unreadable_directory", label, "UDF directory could not be read")
            )
            return
        self.directories += 1
        stack.append((parts, raw, handle))

    def _file(self, parts, raw, directory: int, name: bytes) -> UdfFile | None:
        label = "/".join(parts + (display(name),))
        handle = self.lib.udfread_file_openat(directory, name)
        if not handle:
            self.problems.append(
                Problem("unreadable_directory", label, "UDF File Entry could not be read")
            )
            return None
        try:
            size = self.lib.udfread_file_size(handle)
            if size < 0:
                self.problems.append(
                    Problem("unreadable_directory", label, "UDF File Entry has no length")
                )
                return None
            # The LBA of block 0 orders the reads; the full map waits until the
            # size caps have accepted the file (a hostile length costs nothing).
            lba = self.lib.udfread_file_lba(handle, 0) if size else 0
            return UdfFile(parts + (display(name),), raw + (name,), size, lba, None)
        finally:
            self.lib.udfread_file_close(handle)


# --------------------------------------------------------------- reading
class UdfStreamReader(io.RawIOBase):
    """Raw stream through ``udfread_file_read``, for files without LBAs.

    Never returns short data: a failing read is ``unreadable_sector``, an
    early end ``truncated_extent`` (model.Medium contract).
    """

    def __init__(self, medium: UdfMedium, label: str, raw: tuple[bytes, ...], size: int) -> None:
        super().__init__()
        self._medium = medium
        self._label = label
        self._raw = raw
        self._size = size
        self._done = 0
        self._handle: int | None = None
        self._buf = ctypes.create_string_buffer(min(CHUNK, max(size, 1)))

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._done >= self._size:
            return 0
        want = min(len(buf), len(self._buf), self._size - self._done)
        with self._medium.lock:
            handle = self._open_file()
            got = self._medium.lib.udfread_file_read(handle, self._buf, want)
        if got < 0:
            raise MediumReadError(
                "unreadable_sector", f"{self._label}: libudfread read error at byte {self._done}"
            )
        if got == 0:
            raise MediumReadError(
                "truncated_extent", f"{self._label}: data end at byte {self._done} of {self._size}"
            )
        buf[:got] = self._buf.raw[:got]
        self._done += got
        return got

    def _open_file(self) -> int:
        if self._handle is None:
            self._handle = self._medium.open_udffile(self._label, self._raw)
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            with self._medium.lock:
                self._medium.lib.udfread_file_close(self._handle)
            self._handle = None
        super().close()


# ----------------------------------------------------------------- medium
class UdfMedium(ExtentMedium):
    """A UDF-only image file or block device, listed by libudfread.

    Parameters
    ----------
    source : str
        Image path or block device.
    settings : Settings
        Supplies the ``limits.*`` caps.
    kind : str
        ``iso`` or ``device`` (as reported in ``source.kind``).

    Raises
    ------
    MediumOpenError
        ``unreadable_medium`` when libudfread is not installed, cannot open
        the volume (no Anchor Volume Descriptor Pointer, ECMA-167 Part 3
        §10.2; VAT discs), or the directory tree loops.
    """

    namespace = "udf"

    def __init__(self, source: str, settings: Settings, kind: str = "iso") -> None:
        lib = load_libudfread()
        if lib is None:
            raise MediumOpenError(
                "unreadable_medium", "UDF-only disc and libudfread is not installed"
            )
        self.lib = lib
        self.lock = threading.Lock()  # libudfread handles are not documented thread-safe
        self.kind = kind
        self.path = source
        self.label = ""
        self.problems: list[Problem] = []
        self._extents: dict[str, Extents] = {}
        self._streamed: dict[str, tuple[tuple[bytes, ...], int]] = {}
        self._direct_fd = None
        self._udf: int | None = None
        self._fd = self._open_source(source)
        try:
            self._size = fd_size(self._fd)
            self._udf = self._open_volume()
            self._entries = self._list(SizeBudget.from_settings(settings))
        except BaseException:
            self.close()
            raise

    def _open_volume(self) -> int:
        udf = self.lib.udfread_init()
        if not udf:
            raise MediumOpenError("unreadable_medium", f"{self.path}: libudfread out of memory")
        if self.lib.udfread_open(udf, os.fsencode(self.path)) < 0:
            self.lib.udfread_close(udf)
            raise MediumOpenError(
                "unreadable_medium",
                f"{self.path}: libudfread cannot open the UDF "
                "volume (no anchor, unsupported partition such as a VAT, or damaged)",
            )
        volume_id = self.lib.udfread_get_volume_id(udf)
        self.label = display(volume_id).strip() if volume_id else ""
        return udf

    def _list(self, budget: SizeBudget) -> list[MediumEntry]:
        assert self._udf is not None, "_list runs on an opened volume"
        found = list(_Walker(self.lib, self._udf, self.path, self.problems).files())
        log.info("%s: %d files on a UDF-only volume", self.path, len(found))
        # On-disc order: sequential reads, no seeks (hardware notes §3.3).
        found.sort(key=lambda f: (f.lba, f.parts))
        entries: list[MediumEntry] = []
        taken: set[str] = set()
        for item in found:
            label = unique_label("/".join(item.parts), taken)
            _, refusal = budget.admit(item.size)
            if refusal:
                self.problems.append(Problem("too_large", label, refusal))
                continue
            extents = self._map(label, item)
            if extents is None:
                self._streamed[label] = (item.raw, item.size)
            else:
                self._extents[label] = extents
            entries.append(MediumEntry(label, item.size, order=item.lba))
        return entries

    def _map(self, label: str, item: UdfFile) -> Extents | None:
        if not item.size:
            return Extents((), 0)
        handle = self.open_udffile(label, item.raw)
        try:
            extents = map_extents(self.lib, handle, item.size)
        finally:
            self.lib.udfread_file_close(handle)
        if extents is None:
            log.debug(
                "%s: no LBA for some blocks (inline or unrecorded); read via libudfread", label
            )
        elif len(extents.runs) > 1:
            log.debug("%s: fragmented, %d runs", label, len(extents.runs))
        return extents

    def open_udffile(self, label: str, raw: tuple[bytes, ...]) -> int:
        """``UDFFILE *`` of a file by its raw names (caller closes it).

        Raises
        ------
        MediumReadError
            ``unreadable_sector`` when a directory or the File Entry on the
            way can no longer be read.
        """
        handles = [self.lib.udfread_opendir(self._udf, b"/")]
        try:
            for name in raw[:-1]:
                if not handles[-1]:
                    break
                handles.append(self.lib.udfread_opendir_at(handles[-1], name))
            handle = self.lib.udfread_file_openat(handles[-1], raw[-1]) if handles[-1] else None
        finally:
            for directory in handles:
                if directory:
                    self.lib.udfread_closedir(directory)
        if not handle:
            raise MediumReadError("unreadable_sector", f"{label}: UDF File Entry could not be read")
        return handle

    # ----------------------------------------------------------- Medium API
    def entries(self) -> list[MediumEntry]:
        """Every accepted regular file, sorted by the LBA of its first block."""
        return list(self._entries)

    def open(self, entry: MediumEntry, pread: Pread = os.pread) -> BinaryIO:
        """Stream one file: ``pread`` over its mapped extents, or libudfread
        for inline and unrecorded data (``pread`` does not apply there)."""
        if entry.path in self._streamed:
            raw, size = self._streamed[entry.path]
            return io.BufferedReader(UdfStreamReader(self, entry.path, raw, size), CHUNK)
        return super().open(entry, pread=pread)

    def close(self) -> None:
        if self._udf:
            with self.lock:
                self.lib.udfread_close(self._udf)
            self._udf = None
        super().close()
