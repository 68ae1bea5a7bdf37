"""Sector-addressed media read straight from their extents.

What :class:`~pdimport.media.iso.IsoMedium` (pycdlib) and
:class:`~pdimport.media.udf.UdfMedium` (libudfread) share once they have
found where each file's bytes are: the device size, the :class:`Extents`
runs, and :class:`ExtentReader`, which reads them with ``os.pread`` in
on-disc (LBA) order and never returns short data. Read errors follow hardware
notes §3.4: check every ``pread`` length, retry a failing chunk sector by
sector (through ``O_DIRECT`` on devices), and report the unreadable LBAs
instead of returning short data (reliability catalogue I7); an extent past
the medium end is refused before any byte is read (I3).
"""

from __future__ import annotations

import io
import logging
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from pdimport.media.base import SECTOR, LargeReads, MediumOpenError
from pdimport.model import MediumEntry, MediumReadError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: Extra attempts per sector before it counts as unreadable (hardware notes §3.4).
SECTOR_RETRIES = 2

Pread = Callable[[int, int, int], bytes]


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
        pos = offset + self._in_run
        view = memoryview(buf)[:want]
        got = -1
        if self._pread is os.pread:  # straight into the caller's buffer, no copy
            try:
                got = os.preadv(self._fd, [view], pos)
            except OSError:
                pass  # _read_checked reports it, or reads it sector by sector
        if got != want:
            view[:] = self._read_checked(pos, want)
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
                "unreadable_sector",
                f"{self._label}: unreadable LBA {', '.join(map(str, bad))}",
                lbas=tuple(bad),
            )
        return bytes(out)


# ----------------------------------------------------------------- medium
class ExtentMedium:
    """What every sector-addressed medium shares: one descriptor on the image
    or device, an optional ``O_DIRECT`` descriptor for exact sector retries,
    and files streamed from their :class:`Extents` in LBA order.

    :class:`~pdimport.media.iso.IsoMedium` (pycdlib) and :class:`~pdimport.media.udf.UdfMedium`
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
