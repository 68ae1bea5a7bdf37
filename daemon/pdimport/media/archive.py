"""Zip packages (Net PDI uploads, e-mailed studies) as a medium.

Members are streamed, never extracted by name (reliability catalogue Z1),
and refused before reading when their names, types, flags or declared sizes
are hostile (Z1-Z3). The byte count is checked again while streaming,
because the declared sizes are the attacker's numbers (Z2).
"""

from __future__ import annotations

import io
import logging
import lzma
import re
import stat
import zipfile
import zlib
from typing import IO, BinaryIO

from pdimport.media.base import LargeReads, MediumOpenError, SizeBudget, unique_label
from pdimport.model import MediumEntry, MediumReadError
from pdimport.problems import Problem
from pdimport.settings import Settings

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: The ratio cap only applies above this size: small files of zeros compress
#: far beyond any sane ratio and are harmless.
RATIO_MIN_SIZE = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
#: General purpose bit 0: encrypted (APPNOTE 4.4.4).
_FLAG_ENCRYPTED = 0x1


def unsafe_reason(name: str) -> str:
    """Why a member name would escape the package root, or "" (catalogue Z1).

    Backslashes are treated as separators first, as Windows tools do.
    """
    norm = name.replace("\\", "/")
    if "\x00" in norm:
        return "NUL in name"
    if norm.startswith("/"):
        return "absolute path"
    if _DRIVE.match(norm):
        return "drive letter"
    if ".." in norm.split("/"):
        return "'..' component"
    return ""


def display_path(name: str) -> str:
    """'/'-separated label without empty or '.' components."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    # Unix mode lives in the high 16 bits of external_attr when the creator is
    # Unix (APPNOTE 4.4.15); the test is harmless for other creators.
    return stat.S_ISLNK(info.external_attr >> 16)


class _CountingReader(LargeReads):
    """Stream of one member that never yields more than it declared and maps
    zipfile's exceptions to problem codes."""

    def __init__(self, member: IO[bytes], label: str, declared: int) -> None:
        super().__init__()
        self._member = member
        self._label = label
        self._declared = declared
        self._count = 0

    def readinto(self, buf) -> int:
        try:
            data = self._member.read(min(len(buf), CHUNK))
        except zipfile.BadZipFile as exc:  # includes "Bad CRC-32"
            raise MediumReadError("archive_corrupt", f"{self._label}: {exc}") from exc
        except (zlib.error, lzma.LZMAError, EOFError, NotImplementedError, ValueError) as exc:
            raise MediumReadError("archive_corrupt", f"{self._label}: {exc}") from exc
        except OSError as exc:
            if exc.errno is not None:
                raise  # the package file itself could not be read
            # bz2 says "Invalid data stream" as an OSError without errno
            raise MediumReadError("archive_corrupt", f"{self._label}: {exc}") from exc
        self._count += len(data)
        if self._count > self._declared:
            raise MediumReadError(
                "zip_bomb", f"{self._label}: yields more than the declared {self._declared} bytes"
            )
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._member.close()
        super().close()


class ZipMedium:
    """A zip package, read member by member in local-header order.

    Parameters
    ----------
    source : str
        Path of the zip file.
    settings : Settings
        Supplies ``limits.max_file_size``, ``limits.max_medium_size``,
        ``limits.max_files`` and ``limits.max_zip_ratio``.

    Raises
    ------
    MediumOpenError
        ``unreadable_medium`` when the central directory cannot be read.
    """

    kind = "zip"

    def __init__(self, source: str, settings: Settings) -> None:
        self.path = source
        self.label = source.replace("\\", "/").rsplit("/", 1)[-1]
        self.problems: list[Problem] = []
        self._max_ratio = settings.get("limits.max_zip_ratio")
        try:
            self._zip = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, NotImplementedError, OSError, ValueError, EOFError) as exc:
            raise MediumOpenError("unreadable_medium", f"{source}: {exc}") from exc
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self._entries = self._list(SizeBudget.from_settings(settings))

    def _list(self, budget: SizeBudget) -> list[MediumEntry]:
        entries: list[MediumEntry] = []
        taken: set[str] = set()
        # Local-header order = the order the bytes sit in the file.
        for info in sorted(self._zip.infolist(), key=lambda i: i.header_offset):
            if not info.filename:  # zipfile's own is_dir() fails on it
                self.problems.append(Problem("archive_corrupt", "", "a member without a name"))
                continue
            if info.is_dir() or info.filename.endswith("\\"):
                continue
            code, why = self._refusal(info)
            if not code:
                limit, why = budget.admit(info.file_size)
                # Declared sizes over the caps are the bomb signature (Z2);
                # too many members is just too large.
                code = {"": "", "max_files": "too_large"}.get(limit, "zip_bomb")
            if code:
                self.problems.append(
                    Problem(code, display_path(info.filename) or info.filename, why)
                )
                continue
            label = unique_label(display_path(info.filename), taken)
            self._infos[label] = info
            entries.append(MediumEntry(label, info.file_size, order=info.header_offset))
        return entries

    def _refusal(self, info: zipfile.ZipInfo) -> tuple[str, str]:
        """(problem code, reason) for a member refused by its header alone."""
        why = unsafe_reason(info.filename)
        if why:
            return "unsafe_path", why
        if _is_symlink(info):
            return "link_ignored", "symbolic link entry"
        if info.flag_bits & _FLAG_ENCRYPTED:
            return "archive_encrypted", "encrypted entry (password needed)"
        if info.file_size > RATIO_MIN_SIZE:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > self._max_ratio:
                return (
                    "zip_bomb",
                    f"compression ratio {ratio:.0f} exceeds limits.max_zip_ratio={self._max_ratio}",
                )
        return "", ""

    # ----------------------------------------------------------- Medium API
    def entries(self) -> list[MediumEntry]:
        """Every accepted member, in local-header order."""
        return list(self._entries)

    def open(self, entry: MediumEntry) -> BinaryIO:
        """Stream one member; corrupt data raises ``archive_corrupt``, data
        beyond the declared size raises ``zip_bomb``."""
        info = self._infos[entry.path]
        try:
            member = self._zip.open(info)
        except (zipfile.BadZipFile, NotImplementedError, ValueError, EOFError, OSError) as exc:
            # Overlapping entries, bad local header, unsupported method.
            raise MediumReadError("archive_corrupt", f"{entry.path}: {exc}") from exc
        return io.BufferedReader(_CountingReader(member, entry.path, info.file_size), CHUNK)

    def close(self) -> None:
        self._zip.close()
