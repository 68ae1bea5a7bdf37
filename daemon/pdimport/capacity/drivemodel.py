"""Optical drive emulation: an image served at a drive's speed, with seeks,
spin-up and unreadable sectors.

Used by ``pdimport bench`` (:mod:`pdimport.capacity.drive` serves it as a
block device), by tests (with a fake clock, so nothing really sleeps) and by
the benchmarks (with ``scale`` to run the model faster than real time).
:class:`ThrottledPread` has the ``os.pread`` signature, so it plugs into
``IsoMedium.open(entry, pread=...)`` / ``UdfMedium.open(entry, pread=...)``.

The model (hardware notes §3.3, figures marked there as estimates):

* CAV: the disc turns at a fixed angular speed, so the linear rate grows
  with the radius, from ``inner_rate`` at the start of the data zone to
  ``outer_rate`` at the rim of a full disc. Data fill the disc area, so the
  radius at byte ``x`` is ``sqrt(r_in^2 + x / C * (r_out^2 - r_in^2))``.
* A read not contiguous with the previous one moves the head: forward gaps
  cost the cheaper of reading through the gap and an average seek; backward
  or long jumps cost an average seek (a spin-speed change is included in
  the datasheet access times).
* The first read spins the disc up.
* Bad sectors (hardware notes §3.4): a read that starts on one raises
  ``EIO`` after the drive's retries; a read that reaches one returns short,
  up to the bad sector.

The drive has one head: concurrent callers are served one at a time.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Self

log = logging.getLogger(__name__)

SECTOR = 2048
#: Speed "1x" in bytes per second: CD (75 sectors/s x 2048, Yellow Book
#: mode 1), DVD (ECMA-267), BD (System Description Blu-ray Part 1).
CD_1X = 153_600
DVD_1X = 1_385_000
BD_1X = 4_495_500


@dataclass(frozen=True)
class DriveProfile:
    """Speed profile of a CAV drive with one kind of disc.

    Parameters
    ----------
    name : str
        Display name.
    outer_rate : float
        Bytes per second at ``outer_radius`` (the drive's "max x" speed).
    inner_radius, outer_radius : float
        Data zone radii in mm (CD 25-58, DVD/BD 24-58).
    capacity : int
        Bytes of a full disc: where ``outer_rate`` is reached.
    seek_time : float
        Average random access in seconds.
    spin_up : float
        Seconds before the first byte.
    error_time : float
        Seconds a bad sector costs before the drive gives up (its internal
        retries; the kernel's ``SR_TIMEOUT`` can make it far longer).
    """

    name: str
    outer_rate: float
    inner_radius: float
    outer_radius: float
    capacity: int
    seek_time: float
    spin_up: float
    error_time: float = 3.0

    @property
    def inner_rate(self) -> float:
        """Bytes per second at the start of the data zone (rate ~ radius)."""
        return self.outer_rate * self.inner_radius / self.outer_radius

    @property
    def constant_rate(self) -> bool:
        """True for a medium read at one rate throughout (a USB stick)."""
        return self.inner_radius >= self.outer_radius

    def rate_at(self, position: int) -> float:
        """Bytes per second at byte ``position`` (outer rate past a full disc)."""
        k = self.inner_radius / self.outer_radius
        f = min(max(position, 0) / self.capacity, 1.0)
        return self.outer_rate * math.sqrt(k * k + f * (1 - k * k))

    def transfer_time(self, start: int, end: int) -> float:
        """Seconds to read bytes ``[start, end)`` without a seek.

        The integral of ``dx / rate_at(x)`` in closed form:
        ``2C / (R (1 - k^2)) * (sqrt(k^2 + (1 - k^2) x / C))`` between the
        limits; bytes past ``capacity`` read at ``outer_rate``.
        """
        if end <= start:
            return 0.0
        if self.constant_rate:
            return (end - start) / self.outer_rate
        k2 = (self.inner_radius / self.outer_radius) ** 2
        b, cap = 1 - k2, self.capacity
        lo, hi = min(start, cap), min(end, cap)
        inside = (
            2
            * cap
            / (self.outer_rate * b)
            * (math.sqrt(k2 + b * hi / cap) - math.sqrt(k2 + b * lo / cap))
        )
        beyond = max(end - max(start, cap), 0) / self.outer_rate
        return inside + beyond


#: 52x CAV CD-ROM, 700 MB disc: ~3.4 MB/s inner, 8.0 MB/s outer, 90 ms access.
CD_52X = DriveProfile(
    "CD 52x CAV", 52 * CD_1X, 25.0, 58.0, 360_000 * SECTOR, seek_time=0.090, spin_up=2.5
)
#: 16x CAV DVD-ROM, DVD-5: ~9 MB/s inner, 22 MB/s outer, 120 ms access.
DVD_16X = DriveProfile(
    "DVD 16x CAV", 16 * DVD_1X, 24.0, 58.0, 2_295_104 * SECTOR, seek_time=0.120, spin_up=3.5
)
#: 12x BD-ROM, BD-R SL 25 GB: ~5x (22 MB/s) inner, 54 MB/s outer, 180 ms access.
BD_12X = DriveProfile(
    "BD 12x CAV", 12 * BD_1X, 24.0, 58.0, 12_219_392 * SECTOR, seek_time=0.180, spin_up=5.0
)

#: A USB 2.0 flash drive: ~30 MB/s throughout, no seek to speak of; "spin-up"
#: stands for the enumeration and the first read after the stick is plugged in.
USB_STICK = DriveProfile(
    "USB 2.0 stick", 30e6, 1.0, 1.0, 64 << 30, seek_time=0.0005, spin_up=1.0, error_time=0.5
)

PROFILES = {"cd": CD_52X, "dvd": DVD_16X, "bd": BD_12X, "usb": USB_STICK}


def custom_profile(
    name: str, inner_rate: float, outer_rate: float, seek_time: float, base: DriveProfile
) -> DriveProfile:
    """A profile from measured rates (``pdimport bench --real``): ``base``'s
    geometry and capacity with the measured inner and outer rates and access
    time. Equal rates make a constant-rate medium."""
    if outer_rate <= 0 or inner_rate <= 0:
        raise ValueError("rates must be positive")
    inner = min(inner_rate, outer_rate) / outer_rate * base.outer_radius
    return replace(
        base,
        name=name,
        outer_rate=outer_rate,
        inner_radius=inner,
        seek_time=max(seek_time, 0.0),
    )


def time_to_read_sequentially(image_size: int, profile: DriveProfile) -> float:
    """Model seconds to read an image from LBA 0 to its end in one pass:
    spin-up plus the CAV transfer time, no seeks.

    This is the floor that DESIGN.md's "import wall time <= 1.2x the
    sequential read time" target is measured against.
    """
    return profile.spin_up + profile.transfer_time(0, image_size)


@dataclass
class DriveStats:
    """What the emulated drive did, in model seconds (not scaled)."""

    reads: int = 0
    bytes: int = 0
    seeks: int = 0  # head moves that cost an average access
    skips: int = 0  # short forward gaps read through (cheaper than a seek)
    errors: int = 0  # reads that ended on a bad sector
    model_time: float = 0.0
    bad_reads: list[int] = field(default_factory=list)  # LBAs that failed, in order


class ThrottledPread:
    """An ``os.pread`` look-alike that serves an image at a drive's speed.

    Parameters
    ----------
    fd_or_path : int or str or os.PathLike
        The image. A path is opened (and closed by :meth:`close`); a
        descriptor is borrowed. Reads always come from here: the ``fd``
        passed to each call is accepted for signature compatibility only.
    profile : DriveProfile
        Speeds and access times.
    clock, sleep : callable
        Time source and sleeper; tests pass a fake pair so no time passes.
    scale : float
        Model seconds per real second: 100 runs the model 100x faster.
    bad_lbas : iterable of int
        Sectors that never read (scratches).
    """

    def __init__(
        self,
        fd_or_path: int | str | os.PathLike,
        profile: DriveProfile,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        scale: float = 1.0,
        bad_lbas: Iterable[int] = (),
    ) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        if isinstance(fd_or_path, int):
            self._fd, self._owned = fd_or_path, False
        else:
            self._fd, self._owned = os.open(fd_or_path, os.O_RDONLY | os.O_CLOEXEC), True
        self.profile = profile
        self.scale = scale
        self.bad_lbas = frozenset(bad_lbas)
        self.stats = DriveStats()
        self._clock = clock
        self._sleep = sleep
        self._head: int | None = None  # byte position after the last read; None = not spun up
        self._lock = threading.Lock()

    def __call__(self, fd: int, length: int, offset: int) -> bytes:
        with self._lock:
            started = self._clock()
            cost = self._position(offset)
            bad = self._first_bad(offset, length)
            if bad is not None:
                cost += self.profile.transfer_time(offset, bad * SECTOR) + self.profile.error_time
                data_or_error = self._fail(offset, bad)
            else:
                data_or_error = os.pread(self._fd, length, offset)
                cost += self.profile.transfer_time(offset, offset + len(data_or_error))
                self._head = offset + len(data_or_error)
                self.stats.bytes += len(data_or_error)
            self.stats.reads += 1
            self.stats.model_time += cost
            self._wait(started, cost)
        if isinstance(data_or_error, OSError):
            raise data_or_error
        return data_or_error

    def _position(self, offset: int) -> float:
        """Model seconds to bring the head to ``offset``."""
        if self._head is None:
            self._head = 0  # spun up, head at the start of the data zone
            return self.profile.spin_up + self._move(offset)
        return self._move(offset)

    def _move(self, offset: int) -> float:
        head = self._head or 0
        gap = offset - head
        if gap == 0:
            return 0.0
        through = self.profile.transfer_time(head, offset) if gap > 0 else math.inf
        if through < self.profile.seek_time:
            self.stats.skips += 1
            return through
        self.stats.seeks += 1
        return self.profile.seek_time

    def _first_bad(self, offset: int, length: int) -> int | None:
        if not self.bad_lbas or length <= 0:
            return None
        first, last = offset // SECTOR, (offset + length - 1) // SECTOR
        hits = [lba for lba in self.bad_lbas if first <= lba <= last]
        return min(hits) if hits else None

    def _fail(self, offset: int, bad: int) -> bytes | OSError:
        """A short read up to the bad sector, or EIO when the read starts on it."""
        self.stats.errors += 1
        self.stats.bad_reads.append(bad)
        self._head = bad * SECTOR  # the drive stops at the sector it could not read
        if bad * SECTOR <= offset:
            log.debug("emulated EIO at LBA %d", bad)
            return OSError(errno.EIO, os.strerror(errno.EIO))
        data = os.pread(self._fd, bad * SECTOR - offset, offset)
        self.stats.bytes += len(data)
        return data

    def _wait(self, started: float, cost: float) -> None:
        """Sleep until ``cost / scale`` after ``started``: the real pread's own
        duration counts towards the emulated time."""
        remaining = started + cost / self.scale - self._clock()
        if remaining > 0:
            self._sleep(remaining)

    def close(self) -> None:
        if self._owned and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
