"""The optical drive model, now :mod:`pdimport.capacity.drivemodel` (``pdimport
bench`` ships it). This name stays for the tests and benchmarks that import
it from ``hardware/``."""

from __future__ import annotations

from pdimport.capacity.drivemodel import (
    BD_1X,
    BD_12X,
    CD_1X,
    CD_52X,
    DVD_1X,
    DVD_16X,
    PROFILES,
    SECTOR,
    USB_STICK,
    DriveProfile,
    DriveStats,
    ThrottledPread,
    custom_profile,
    time_to_read_sequentially,
)

__all__ = [
    "BD_1X",
    "BD_12X",
    "CD_1X",
    "CD_52X",
    "DVD_1X",
    "DVD_16X",
    "PROFILES",
    "SECTOR",
    "USB_STICK",
    "DriveProfile",
    "DriveStats",
    "ThrottledPread",
    "custom_profile",
    "time_to_read_sequentially",
]
