"""Destination URLs: ``dicom://AET@host:port`` and ``file:///path``.

A destination is a plain value. Its :attr:`key` is the normalised URL; the
journal records deliveries under it, so two spellings of one destination
(``DICOM://pacs@Host:104`` and ``dicom://pacs@host:104``) share one history.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

_DICOM_URL = re.compile(
    r"^dicom://(?P<aet>[^@/]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})/?$",
    re.IGNORECASE,
)
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


@dataclass(frozen=True)
class DicomDest:
    """A C-STORE SCP: the called AE title and its TCP address."""

    aet: str
    host: str
    port: int

    kind = "dicom"

    @property
    def key(self) -> str:
        return f"dicom://{self.aet}@{self.host}:{self.port}"

    @property
    def connect_host(self) -> str:
        """The host as the socket layer wants it (IPv6 without brackets)."""
        return self.host.strip("[]")

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class FileDest:
    """A local folder that receives Part 10 files."""

    path: Path

    kind = "file"

    @property
    def key(self) -> str:
        return f"file://{self.path}"

    def __str__(self) -> str:
        return self.key


Destination = DicomDest | FileDest


def parse_dest(url: str) -> Destination:
    """Parse a destination URL.

    Parameters
    ----------
    url : str
        ``dicom://AET@host:port`` (AE title per PS3.5 6.2 VR AE: 1-16
        characters of the default repertoire, no backslash, no control
        characters; percent-escapes allowed, e.g. ``%20``) or
        ``file:///absolute/path``.

    Returns
    -------
    DicomDest or FileDest

    Raises
    ------
    ValueError
        With a message that names what is wrong with `url`.
    """
    text = url.strip()
    scheme = text.split(":", 1)[0].lower()
    if scheme == "dicom":
        return _parse_dicom(text)
    if scheme == "file":
        return _parse_file(text)
    raise ValueError(f"destination {url!r}: unknown scheme, expected dicom://AET@host:port "
                     "or file:///path")


def _parse_dicom(url: str) -> DicomDest:
    m = _DICOM_URL.match(url)
    if not m:
        raise ValueError(f"destination {url!r}: expected dicom://AET@host:port")
    aet = _check_aet(unquote(m["aet"]), url)
    host = _check_host(m["host"], url)
    port = int(m["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"destination {url!r}: port {port} is outside 1..65535")
    return DicomDest(aet=aet, host=host, port=port)


def _check_aet(aet: str, url: str) -> str:
    # PS3.5 6.2: leading and trailing spaces are not significant; 16 characters
    # at most; no backslash (the value delimiter) and no control characters.
    value = aet.strip(" ")
    if not value:
        raise ValueError(f"destination {url!r}: empty AE title")
    if len(value) > 16:
        raise ValueError(f"destination {url!r}: AE title {value!r} is longer than 16 characters")
    if "\\" in value or any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise ValueError(f"destination {url!r}: AE title {value!r} has a backslash, a control "
                         "or a non-ASCII character")
    return value


def _check_host(host: str, url: str) -> str:
    if host.startswith("["):
        return host.lower()
    if not _HOSTNAME.match(host):
        raise ValueError(f"destination {url!r}: invalid host name {host!r}")
    return host.lower().rstrip(".")


def _parse_file(url: str) -> FileDest:
    rest = url[len("file:"):]
    if rest.startswith("//localhost/"):
        rest = rest[len("//localhost"):]
    elif rest.startswith("///"):
        rest = rest[2:]
    else:
        raise ValueError(f"destination {url!r}: expected file:///absolute/path")
    if "?" in rest or "#" in rest:
        raise ValueError(f"destination {url!r}: a query or fragment is not allowed")
    path = unquote(rest)
    if "\x00" in path:
        raise ValueError(f"destination {url!r}: NUL in path")
    norm = os.path.normpath(path)
    if not norm.startswith("/") or norm == "/":
        raise ValueError(f"destination {url!r}: the path must be an absolute folder, not /")
    return FileDest(path=Path(norm))
