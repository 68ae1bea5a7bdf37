"""The bottleneck and the projection, by operational analysis: each disc
asks every resource for some service time (its *demand*), and no station can
be busier than 100 %. With N drives the throughput is bounded by

* the drives: ``N / D_drive`` (a drive is held for the whole cycle of a
  disc: detect, read, and with ``eject_after = delivered`` scan, delivery and
  label too; each drive has its own head, so they add up);
* the CPU: ``cores / D_cpu`` (CPU seconds of pdimport's processes per disc);
* the spool disk: ``1 / D_disk`` (the bytes pdimport's processes write per
  disc over the rate the disk takes durable writes);
* the PACS link: ``rate / bytes_per_disc`` (what the destination took per
  second with nothing else running, decode included);

and the lowest bound names the bottleneck. The demands come from the
smallest measured run (1 drive, where nothing queues), so the projection to
more drives is checked against the runs with more drives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Working days and hours of the yearly capacity line.
HOURS_PER_DAY = 8
DAYS_PER_YEAR = 250
#: How far a measured point may be from the projection before the report
#: must explain it.
TOLERANCE = 0.15

RESOURCES = ("drives", "CPU", "disk", "PACS link")


@dataclass(frozen=True)
class Demands:
    """Seconds of each resource one disc needs, and what there is of it."""

    drive_s: float  # drive-held seconds per disc (one drive)
    cpu_s: float  # CPU seconds of pdimport per disc
    disk_s: float  # seconds of the spool disk's write rate per disc
    bytes_sent: float  # bytes delivered per disc
    link_rate: float  # bytes/s the destination takes (0: not measured)
    cores: int

    def bounds(self, drives: int) -> dict[str, float]:
        """Discs per hour each resource allows with ``drives`` drives."""
        inf = float("inf")
        return {
            "drives": drives * 3600.0 / self.drive_s if self.drive_s > 0 else inf,
            "CPU": self.cores * 3600.0 / self.cpu_s if self.cpu_s > 0 else inf,
            "disk": 3600.0 / self.disk_s if self.disk_s > 0 else inf,
            "PACS link": (
                3600.0 * self.link_rate / self.bytes_sent
                if self.link_rate > 0 and self.bytes_sent > 0
                else inf
            ),
        }


@dataclass(frozen=True)
class Point:
    drives: int
    discs_per_hour: float
    bottleneck: str
    bounds: dict[str, float]


def project(demands: Demands, drives: int) -> Point:
    bounds = demands.bounds(drives)
    # On a tie the shared resource is named: it is saturated there, and more
    # drives will not help.
    bottleneck = min(bounds, key=lambda k: (bounds[k], k == "drives", RESOURCES.index(k)))
    return Point(drives, bounds[bottleneck], bottleneck, bounds)


def projection(demands: Demands, upto: int = 8) -> list[Point]:
    return [project(demands, n) for n in range(1, upto + 1)]


def utilisation(demands: Demands, discs_per_hour: float) -> dict[str, float]:
    """How busy each shared resource is at a throughput (0..1, and beyond
    when the demands were measured under less load)."""
    rate = discs_per_hour / 3600.0
    return {
        "CPU": rate * demands.cpu_s / max(demands.cores, 1),
        "disk": rate * demands.disk_s,
        "PACS link": (
            rate * demands.bytes_sent / demands.link_rate if demands.link_rate > 0 else 0.0
        ),
    }


def check(predicted: float, measured: float) -> dict[str, Any]:
    """A measured point against the projection."""
    error = (measured - predicted) / predicted if predicted > 0 else 0.0
    return {
        "predicted": predicted,
        "measured": measured,
        "error": error,
        "within": abs(error) <= TOLERANCE,
    }


def scaling(one: float, n: int, measured: float) -> float:
    """Measured throughput with ``n`` drives over ``n`` times one drive's."""
    return measured / (n * one) if one > 0 and n > 0 else 0.0


def yearly(discs_per_hour: float) -> float:
    return discs_per_hour * HOURS_PER_DAY * DAYS_PER_YEAR


def yearly_line(discs_per_hour: float, drives: int, media: str) -> str:
    n = yearly(discs_per_hour)
    rounded = round(n, -3) if n >= 10_000 else round(n, -2)
    return (
        f"at {HOURS_PER_DAY} h/day, {DAYS_PER_YEAR} days/year: {rounded:,.0f} discs/year "
        f"with {drives} {media.upper()} drive{'s' if drives != 1 else ''}"
    )


def as_dict(point: Point) -> dict[str, Any]:
    out = asdict(point)
    out["bounds"] = {k: (v if v != float("inf") else None) for k, v in point.bounds.items()}
    return out
