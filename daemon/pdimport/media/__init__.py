"""Media: turn what the operator gave (folder, image, device, zip) into a
:class:`~pdimport.model.Medium`.

:func:`open_medium` recognises the kind by content, not by name: ISO 9660 /
UDF volume descriptors from sector 16 (ECMA-119 §8, ECMA-167 Part 2 §9.1),
zip signatures (APPNOTE 4.3.7 / 4.3.16), ``S_ISBLK`` for devices. File-name
extensions are only the last resort.

The pieces every kind of medium shares (:class:`MediumOpenError`,
:class:`SizeBudget`, ...) live in :mod:`pdimport.media.base`, which the
kind modules import; this package only re-exports them.
"""

from __future__ import annotations

import logging
import os
import stat
import zipfile
from pathlib import Path

from pdimport.media.archive import ZipMedium
from pdimport.media.base import ISO_IDENTIFIERS, SECTOR, MediumOpenError, SizeBudget
from pdimport.media.blockdev import device_size
from pdimport.media.folder import FolderMedium
from pdimport.media.iso import IsoMedium
from pdimport.media.nested import NestedMedium, is_package_name
from pdimport.media.udf import UdfMedium
from pdimport.model import Medium, MediumEntry, MediumReadError
from pdimport.problems import Problem
from pdimport.settings import Settings
from pdimport.web.dicomweb import is_dicomweb

log = logging.getLogger(__name__)

#: Volume descriptors scanned from sector 16 on; real discs have < 10.
_MAX_DESCRIPTORS = 32
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


__all__ = [
    "FolderMedium",
    "IsoMedium",
    "Medium",
    "MediumEntry",
    "MediumOpenError",
    "MediumReadError",
    "NestedMedium",
    "Problem",
    "SizeBudget",
    "UdfMedium",
    "ZipMedium",
    "detect_kind",
    "open_medium",
    "source_key",
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
    and for bridge discs whose ISO 9660 side pycdlib refuses; the tolerant
    ISO 9660 walk (:mod:`~pdimport.media.iso9660`) when neither can read
    the whole tree."""
    ids = volume_identifiers(source)
    udf = bool(ids & {b"NSR02", b"NSR03"})
    if udf and b"CD001" not in ids:
        log.info("%s: UDF-only volume, reading with libudfread", source)
        return UdfMedium(source, settings, kind=kind)
    try:
        # A bridge disc whose ISO 9660 side pycdlib refuses is read through
        # its intact UDF side before the tolerant ISO walk (which costs the
        # damaged sub-trees) is tried.
        return IsoMedium(source, settings, kind=kind, tolerant=not udf)
    except MediumOpenError as exc:
        if not udf:
            raise
        log.info("%s: ISO 9660 side unusable (%s), trying its UDF side", source, exc.detail)
        try:
            return UdfMedium(source, settings, kind=kind)
        except MediumOpenError:
            pass
        try:
            return IsoMedium(source, settings, kind=kind)
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


def open_medium(source: str, settings: Settings, workdir: Path | None = None) -> Medium:
    """Open ``source`` as a :class:`~pdimport.model.Medium`, with the
    packages on it (a zip in a zip, a ``PATIENT.ISO`` on a stick) opened in
    place (:class:`~pdimport.media.nested.NestedMedium`).

    Parameters
    ----------
    source : str
        A folder, an ISO 9660/UDF image file, a block device, a zip package,
        or a study on a DICOMweb server
        (``dicomweb+http(s)://host/path/studies/UID[/series/UID]``).
    settings : Settings
        Supplies the ``limits.*`` caps.
    workdir : Path, optional
        Where a package inside a zip or an image is copied to be opened (the
        spool's ``tmp``); the system's temporary folder when None.

    Raises
    ------
    MediumOpenError
        ``unreadable_medium`` when the source is missing, of an unknown kind,
        or cannot be parsed at all.
    """
    if is_dicomweb(source):  # a study on a DICOMweb server: no packages inside
        from pdimport.web.medium import DicomwebMedium

        return DicomwebMedium(source, settings)
    medium = open_medium_flat(source, settings)
    if not any(is_package_name(e.path) for e in medium.entries()):
        return medium
    return NestedMedium(medium, settings, open_medium_flat, workdir)


def open_medium_flat(source: str, settings: Settings) -> Medium:
    """Open ``source`` as one medium, packages on it left as plain files.

    Raises
    ------
    MediumOpenError
        As :func:`open_medium`.
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


def source_key(kind: str, source: str, label: str, size: int | None = None) -> str:
    """A stable identity for "the same source again" (resume after a crash).

    For a device the node alone is not enough (another disc may be in the
    drive now): the volume label and the medium size must match too.
    """
    real = os.path.realpath(source)
    try:
        st = os.stat(real)
    except OSError:
        return f"{kind}:{real}"
    if stat.S_ISDIR(st.st_mode):
        return f"dir:{real}"
    if stat.S_ISBLK(st.st_mode):
        return f"device:{real}:{label}:{size if size is not None else device_size(real)}"
    return f"{kind}:{real}:{st.st_size}:{st.st_mtime_ns}"
