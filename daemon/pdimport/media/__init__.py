"""Media: turn what the operator gave (folder, image, device, zip) into a
:class:`~pdimport.model.Medium`.

:func:`open_medium` recognises the kind by content, not by name: ISO 9660 /
UDF volume descriptors from sector 16 (ECMA-119 §8, ECMA-167 Part 2 §9.1),
zip signatures (APPNOTE 4.3.7 / 4.3.16), ``S_ISBLK`` for devices. File-name
extensions are only the last resort.

The shared pieces (:class:`MediumOpenError`, :class:`SizeBudget`) are defined
before the sub-modules are imported because those modules import them from
here.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import zipfile
from dataclasses import dataclass

from pdimport.model import Medium, MediumEntry, MediumReadError
from pdimport.problems import CodedError, Problem
from pdimport.settings import Settings

log = logging.getLogger(__name__)

SECTOR = 2048
#: Standard Identifiers of ISO 9660 (ECMA-119 §8.1.2) and UDF's Volume
#: Recognition Sequence (ECMA-167 Part 2 §9.1: BEA01, NSR02, NSR03, TEA01).
ISO_IDENTIFIERS = (b"CD001", b"BEA01", b"NSR02", b"NSR03", b"TEA01")
#: Volume descriptors scanned from sector 16 on; real discs have < 10.
_MAX_DESCRIPTORS = 32
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class MediumOpenError(CodedError):
    """The medium as a whole is unusable; ``code`` is a problem code.

    Parameters
    ----------
    code : str
        A key of :data:`pdimport.problems.PROBLEM_CODES`, usually
        ``unreadable_medium``.
    detail : str
        Human-readable reason.
    """


class LargeReads(io.RawIOBase):
    """Raw reader base for medium entries: reads stay 1 MiB large
    (``RawIOBase.readall`` would read in 8 KiB pieces, a seek per piece on
    an optical drive)."""

    CHUNK = 1 << 20

    def readable(self) -> bool:
        return True

    def readall(self) -> bytes:
        out = bytearray()
        while chunk := self.read(self.CHUNK):
            out += chunk
        return bytes(out)


@dataclass
class SizeBudget:
    """The ``limits.*`` caps of one medium, counted while listing.

    Hostile media (reliability catalogue Z2, I5) are refused entry by entry:
    an entry over a cap is skipped with a ``too_large`` problem (or the code
    the caller passes), the rest of the medium is still listed.
    """

    max_file_size: int
    max_files: int
    max_medium_size: int
    files: int = 0
    total: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> SizeBudget:
        return cls(
            max_file_size=settings.get("limits.max_file_size"),
            max_files=settings.get("limits.max_files"),
            max_medium_size=settings.get("limits.max_medium_size"),
        )

    def admit(self, size: int) -> tuple[str, str]:
        """Count one entry of ``size`` bytes.

        Returns
        -------
        (limit, reason) : tuple of str
            ``("", "")`` if accepted, else the exceeded setting
            (``max_file_size``, ``max_files`` or ``max_medium_size``) and a
            human-readable reason.
        """
        if size > self.max_file_size:
            return (
                "max_file_size",
                f"{size} bytes exceeds limits.max_file_size={self.max_file_size}",
            )
        if self.files + 1 > self.max_files:
            return "max_files", f"more than limits.max_files={self.max_files} entries"
        if self.total + size > self.max_medium_size:
            return (
                "max_medium_size",
                f"medium expands beyond limits.max_medium_size={self.max_medium_size}",
            )
        self.files += 1
        self.total += size
        return "", ""


def unique_label(path: str, taken: set[str]) -> str:
    """Make a display path unique on its medium (names that only differ in
    undecodable bytes collapse to the same label after replacement)."""
    label, n = path, 1
    while label in taken:
        n += 1
        label = f"{path}~{n}"
    taken.add(label)
    return label


# Sub-modules import the names above from this package.
from pdimport.media.archive import ZipMedium
from pdimport.media.folder import FolderMedium
from pdimport.media.iso import IsoMedium
from pdimport.media.udf import UdfMedium

__all__ = [
    "FolderMedium",
    "IsoMedium",
    "Medium",
    "MediumEntry",
    "MediumOpenError",
    "MediumReadError",
    "Problem",
    "SizeBudget",
    "UdfMedium",
    "ZipMedium",
    "detect_kind",
    "open_medium",
]


def _read_head(fd: int, length: int, offset: int) -> bytes:
    try:
        return os.pread(fd, length, offset)
    except OSError:
        return b""


def has_volume_descriptors(fd: int) -> bool:
    """True when a sector from 16 on starts with an ISO 9660 or UDF Standard
    Identifier (ECMA-119 §8.1, ECMA-167 Part 2 §9.1: bytes 1-5 of the
    descriptor)."""
    for index in range(16, 16 + _MAX_DESCRIPTORS):
        head = _read_head(fd, 6, index * SECTOR)
        if len(head) < 6:
            return False
        if head[1:6] in ISO_IDENTIFIERS:
            return True
    return False


def volume_identifiers(source: str) -> set[bytes]:
    """Standard Identifiers in the Volume Recognition Sequence from sector 16
    (ECMA-119 §8.1 ``CD001``; ECMA-167 Part 2 §9.1 ``BEA01``/``NSR0x``)."""
    found: set[bytes] = set()
    try:
        fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return found
    try:
        for index in range(16, 16 + _MAX_DESCRIPTORS):
            head = _read_head(fd, 6, index * SECTOR)
            if len(head) < 6:
                break
            if head[1:6] in ISO_IDENTIFIERS:
                found.add(head[1:6])
    finally:
        os.close(fd)
    return found


def _open_sector_medium(source: str, settings: Settings, kind: str) -> Medium:
    """pycdlib for ISO 9660 and bridge discs; libudfread for UDF-only ones
    (Blu-ray, Windows Live File System: no ``CD001``, hardware notes §3.1),
    and for bridge discs whose ISO 9660 side pycdlib refuses."""
    ids = volume_identifiers(source)
    udf = bool(ids & {b"NSR02", b"NSR03"})
    if udf and b"CD001" not in ids:
        log.info("%s: UDF-only volume, reading with libudfread", source)
        return UdfMedium(source, settings, kind=kind)
    try:
        return IsoMedium(source, settings, kind=kind)
    except MediumOpenError as exc:
        if not udf:
            raise
        log.info("%s: ISO 9660 side unusable (%s), trying its UDF side", source, exc.detail)
        try:
            return UdfMedium(source, settings, kind=kind)
        except MediumOpenError:
            raise exc from None


def detect_kind(source: str) -> str:
    """Kind of ``source``: ``dir``, ``device``, ``iso``, ``zip`` or "" if unknown.

    Content wins over the name: a zip named ``.iso`` is a zip; the
    ``.iso``/``.img``/``.zip`` extensions only decide when the content says
    nothing (e.g. an image too damaged to show its descriptors).
    """
    st = os.stat(source)
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISBLK(st.st_mode):
        return "device"
    if not stat.S_ISREG(st.st_mode):
        return ""
    fd = os.open(source, os.O_RDONLY)
    try:
        if has_volume_descriptors(fd):
            return "iso"
        if _read_head(fd, 4, 0) in _ZIP_MAGIC:
            return "zip"
    finally:
        os.close(fd)
    # Self-extracting or prefixed zips keep their central directory at the end.
    if zipfile.is_zipfile(source):
        return "zip"
    ext = os.path.splitext(source)[1].lower()
    return {".iso": "iso", ".img": "iso", ".zip": "zip"}.get(ext, "")


def open_medium(source: str, settings: Settings) -> Medium:
    """Open ``source`` as a :class:`~pdimport.model.Medium`.

    Parameters
    ----------
    source : str
        A folder, an ISO 9660/UDF image file, a block device or a zip package.
    settings : Settings
        Supplies the ``limits.*`` caps.

    Raises
    ------
    MediumOpenError
        ``unreadable_medium`` when the source is missing, of an unknown kind,
        or cannot be parsed at all.
    """
    try:
        kind = detect_kind(source)
    except OSError as exc:
        raise MediumOpenError("unreadable_medium", f"{source}: {exc.strerror or exc}") from exc
    log.debug("medium %s detected as %r", source, kind)
    if kind == "dir":
        return FolderMedium(source, settings)
    if kind in ("iso", "device"):
        return _open_sector_medium(source, settings, kind)
    if kind == "zip":
        return ZipMedium(source, settings)
    raise MediumOpenError(
        "unreadable_medium", f"{source}: not a folder, ISO/UDF image, device or zip"
    )
