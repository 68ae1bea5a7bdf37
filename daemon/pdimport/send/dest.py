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
    r"^dicom://(?P<aet>[^@/?]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})"
    r"/?(?:\?(?P<query>[^#]*))?$",
    re.IGNORECASE,
)
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


@dataclass(frozen=True)
class DicomDest:
    """A C-STORE SCP: the called AE title, its TCP address and how to talk to it.

    ``nodelay`` / ``quickack``: set TCP_NODELAY and re-arm TCP_QUICKACK on
    our sockets (default on; ``?nodelay=0``, ``?quickack=0`` on the URL turn
    them off). ``associations``: parallel associations for this destination
    (``?associations=N``; 0 = the ``network.associations`` setting).
    ``commitment``: after delivery, ask the destination to commit what it
    acknowledged (Storage Commitment, ``?commitment=1``). None of them is part
    of :attr:`key`: they change how, not where, we deliver.
    """

    aet: str
    host: str
    port: int
    nodelay: bool = True
    quickack: bool = True
    associations: int = 0
    commitment: bool = False

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
        ``dicom://AET@host:port[?options]`` (AE title per PS3.5 6.2 VR AE:
        1-16 characters of the default repertoire, no backslash, no control
        characters; percent-escapes allowed, e.g. ``%20``; options
        ``nodelay=0|1``, ``quickack=0|1``, ``associations=N`` joined by
        ``&``) or
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
    raise ValueError(
        f"destination {url!r}: unknown scheme, expected dicom://AET@host:port or file:///path"
    )


def _parse_dicom(url: str) -> DicomDest:
    m = _DICOM_URL.match(url)
    if not m:
        raise ValueError(f"destination {url!r}: expected dicom://AET@host:port")
    aet = _check_aet(unquote(m["aet"]), url)
    host = _check_host(m["host"], url)
    port = int(m["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"destination {url!r}: port {port} is outside 1..65535")
    return DicomDest(aet=aet, host=host, port=port, **_dicom_options(m["query"] or "", url))


#: URL query options of a dicom:// destination and their parsers.
_FLAGS = {"0": False, "1": True, "false": False, "true": True, "off": False, "on": True}


def _dicom_options(query: str, url: str) -> dict:
    options: dict = {}
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        name, value = name.lower(), unquote(value).lower()
        if name in ("nodelay", "quickack", "commitment"):
            if value not in _FLAGS:
                raise ValueError(f"destination {url!r}: {name} must be 0 or 1")
            options[name] = _FLAGS[value]
        elif name == "associations":
            if not value.isdigit() or not 1 <= int(value) <= 32:
                raise ValueError(f"destination {url!r}: associations must be 1..32")
            options[name] = int(value)
        else:
            raise ValueError(
                f"destination {url!r}: unknown option {name!r} "
                "(nodelay, quickack, associations, commitment)"
            )
    return options


def _check_aet(aet: str, url: str) -> str:
    # PS3.5 6.2: leading and trailing spaces are not significant; 16 characters
    # at most; no backslash (the value delimiter) and no control characters.
    value = aet.strip(" ")
    if not value:
        raise ValueError(f"destination {url!r}: empty AE title")
    if len(value) > 16:
        raise ValueError(f"destination {url!r}: AE title {value!r} is longer than 16 characters")
    if "\\" in value or any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise ValueError(
            f"destination {url!r}: AE title {value!r} has a backslash, a control "
            "or a non-ASCII character"
        )
    return value


def _check_host(host: str, url: str) -> str:
    if host.startswith("["):
        return host.lower()
    if not _HOSTNAME.match(host):
        raise ValueError(f"destination {url!r}: invalid host name {host!r}")
    return host.lower().rstrip(".")


def _parse_file(url: str) -> FileDest:
    rest = url[len("file:") :]
    if rest.startswith("//localhost/"):
        rest = rest[len("//localhost") :]
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
