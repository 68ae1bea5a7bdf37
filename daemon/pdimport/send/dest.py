"""Destination URLs: ``dicom://AET@host:port``, ``file:///path`` and
``dicomweb+http(s)://host[:port]/path`` (STOW-RS).

A destination is a plain value. Its :attr:`key` is the normalised URL; the
journal records deliveries under it, so two spellings of one destination
(``DICOM://pacs@Host:104`` and ``dicom://pacs@host:104``) share one history.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, quote, unquote, urlsplit

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


#: ``?syntaxes=`` of a DICOMweb destination: which transfer syntaxes it takes
#: as they are; everything else is decoded to Explicit VR Little Endian first.
WEB_SYNTAXES = ("all", "uncompressed")


@dataclass(frozen=True)
class WebDest:
    """A DICOMweb origin server that takes STOW-RS (PS3.18 10.5).

    ``base_url`` is the service root (``http(s)://host:port/path``);
    instances are posted to ``<base_url>/studies``. Options on the URL
    query: ``batch=N`` instances per request (0 = ``web.stow_batch_files``),
    ``connections=N`` requests in parallel (0 = ``web.connections``),
    ``syntaxes=all|uncompressed`` (what the server takes without decoding).
    Credentials never go in the URL (they would land in the journal and the
    audit trail): the ``web.*`` settings name the files that hold them.
    """

    scheme: str
    host: str
    port: int
    path: str
    batch: int = 0
    connections: int = 0
    syntaxes: str = "all"

    kind = "dicomweb"

    @property
    def key(self) -> str:
        return f"dicomweb+{self.scheme}://{self.host}:{self.port}{self.path}"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"

    def __str__(self) -> str:
        return self.key


Destination = DicomDest | FileDest | WebDest


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
        ``file:///absolute/path`` or
        ``dicomweb+http(s)://host[:port]/path[?batch=N&connections=N&syntaxes=all|uncompressed]``.

    Returns
    -------
    DicomDest, FileDest or WebDest

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
    if scheme in ("dicomweb+http", "dicomweb+https"):
        return _parse_web(text)
    raise ValueError(
        f"destination {url!r}: unknown scheme, expected dicom://AET@host:port, "
        "file:///path or dicomweb+http(s)://host/path"
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


def _parse_web(url: str) -> WebDest:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"destination {url!r}: {exc}") from None
    scheme = parts.scheme.lower().removeprefix("dicomweb+")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            # not echoed: the URL holds a secret
            "destination: no credentials in a dicomweb+ URL; set web.auth and "
            "web.password_file / web.token_file instead"
        )
    if parts.fragment:
        raise ValueError(f"destination {url!r}: a fragment is not allowed")
    host = _web_host(parts, url)
    path = _web_path(parts.path, url)
    return WebDest(
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        path=path,
        **_web_options(parts.query, url),
    )


def _web_host(parts: SplitResult, url: str) -> str:
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"destination {url!r}: no host")
    if ":" in host:  # IPv6, bracketed again as the URL wants it
        return f"[{host}]"
    return _check_host(host, url)


def _web_path(raw: str, url: str) -> str:
    """The service root path, normalised: no empty, ``.`` or ``..`` segments,
    percent-escapes decoded and re-encoded one way."""
    segments = []
    for seg in filter(None, raw.split("/")):
        value = unquote(seg)
        if value in (".", "..") or any(ord(c) < 0x21 or c in "/\\" for c in value):
            raise ValueError(
                f"destination {url!r}: path segment {value!r} is '.', '..' or has a "
                "blank, a slash or a control character"
            )
        segments.append(quote(value, safe="@:+-._~!$&'()*,;="))
    return "".join(f"/{seg}" for seg in segments)


def _web_options(query: str, url: str) -> dict:
    options: dict = {}
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        name, value = name.lower(), unquote(value).lower()
        if name in ("batch", "connections"):
            top = 10000 if name == "batch" else 64
            if not value.isdigit() or not 1 <= int(value) <= top:
                raise ValueError(f"destination {url!r}: {name} must be 1..{top}")
            options[name] = int(value)
        elif name == "syntaxes":
            if value not in WEB_SYNTAXES:
                raise ValueError(f"destination {url!r}: syntaxes must be all or uncompressed")
            options[name] = value
        else:
            raise ValueError(
                f"destination {url!r}: unknown option {name!r} (batch, connections, syntaxes)"
            )
    return options
