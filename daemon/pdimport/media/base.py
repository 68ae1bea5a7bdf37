"""What every kind of medium shares: the sector size, the error for a medium
that is unusable as a whole, the raw-reader base with large reads, the
``limits.*`` budget and unique display labels.

A plain module, so the medium kinds (:mod:`~pdimport.media.folder`,
:mod:`~pdimport.media.archive`, :mod:`~pdimport.media.iso`,
:mod:`~pdimport.media.udf`) import it without importing the package that
imports them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from pdimport.problems import CodedError
from pdimport.settings import Settings

SECTOR = 2048
#: Standard Identifiers of ISO 9660 (ECMA-119 §8.1.2) and UDF's Volume
#: Recognition Sequence (ECMA-167 Part 2 §9.1: BEA01, NSR02, NSR03, TEA01).
ISO_IDENTIFIERS = (b"CD001", b"BEA01", b"NSR02", b"NSR03", b"TEA01")


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
