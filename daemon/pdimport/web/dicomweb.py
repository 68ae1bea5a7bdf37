"""The DICOMweb side of intake: intake URLs, QIDO-RS searches (PS3.18 §10.6)
and WADO-RS retrieves of one instance (PS3.18 §10.4), over the one client of
:mod:`pdimport.web.http`.

An intake URL names a study, or one series of it:
``dicomweb+https://host/path/studies/{StudyInstanceUID}[/series/{SeriesInstanceUID}]``.
Credentials in the URL are dropped (they would end up in reports, the audit
trail and ``ps``): the ``web.*`` settings authenticate.

Everything the peer answers is the sender's data: UIDs are checked before
they become part of a path, a search answer that is not DICOM JSON is
refused with a problem code, and an HTTP failure is a coded
:class:`RemoteError`, never an httpx exception leaving the job.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # httpx costs 60 ms: imported only by what talks HTTP
    import httpx

from pdimport.problems import CodedError

log = logging.getLogger(__name__)

SCHEME_PREFIX = "dicomweb+"
#: PS3.5 §9.1: digits and dots, at most 64 characters.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: PS3.18 §8.7.3.5.2 (Table 8.7.3-5): every stored transfer syntax as it is.
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
QIDO_ACCEPT = "application/dicom+json"


class RemoteError(CodedError):
    """The DICOMweb peer failed us; ``code`` is ``remote_unreachable`` (worth
    trying again later), ``remote_refused`` (an HTTP error status) or
    ``remote_answer_invalid``."""


def is_dicomweb(source: str) -> bool:
    """True for a ``dicomweb+http(s)://`` source."""
    return source.lower().startswith(("dicomweb+http://", "dicomweb+https://"))


def is_uid(value: str) -> bool:
    return len(value) <= 64 and bool(_UID.match(value))


def without_credentials(source: str) -> str:
    """``source`` with the ``user:password@`` of a dicomweb+ URL taken out
    (any other source as it is): what reports and logs may show."""
    if not is_dicomweb(source):
        return source
    head, sep, rest = source.partition("://")
    authority, slash, tail = rest.partition("/")
    return f"{head}{sep}{authority.rpartition('@')[2]}{slash}{tail}"


def _base(url: str) -> tuple[str, str]:
    """``(http(s)://host[:port], path)`` of a dicomweb+ URL, lower-cased
    scheme and host, credentials dropped, default ports left out."""
    if not is_dicomweb(url):
        raise ValueError(f"not a dicomweb+http(s) URL: {url}")
    parts = urlsplit(url[len(SCHEME_PREFIX) :])
    scheme = parts.scheme.lower()
    if not parts.hostname:
        raise ValueError(f"no host in {url}")
    if parts.username or parts.password:
        log.warning(
            "credentials in %s://…@%s are ignored: web.auth decides", scheme, parts.hostname
        )
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url}") from None
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host += f":{port}"
    return f"{scheme}://{host}", parts.path


@dataclass(frozen=True)
class StudyRef:
    """A study (or one of its series) on a DICOMweb server.

    ``root`` is the server's DICOMweb root as plain ``http(s)://host/path``,
    without credentials or a trailing slash.
    """

    root: str
    study: str
    series: str = ""

    @property
    def path(self) -> str:
        """The resource path below :attr:`root`."""
        tail = f"/series/{self.series}" if self.series else ""
        return f"studies/{self.study}{tail}"

    @property
    def url(self) -> str:
        """The normalised intake URL (what reports and the audit trail show)."""
        return f"{SCHEME_PREFIX}{self.root}/{self.path}"

    @property
    def key(self) -> str:
        """The journal's identity of this source: the same study (or series)
        again is the same source, whatever way the URL was spelt."""
        return f"dicomweb:{self.root}/{self.path}"


def parse_url(url: str) -> StudyRef:
    """The study (or series) an intake URL names.

    Raises
    ------
    ValueError
        Not ``dicomweb+http(s)://host/path/studies/UID[/series/UID]``.
    """
    origin, path = _base(url)
    parts = path.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "series" and parts[-4] == "studies":
        root, study, series = parts[:-4], parts[-3], parts[-1]
    elif len(parts) >= 2 and parts[-2] == "studies":
        root, study, series = parts[:-2], parts[-1], ""
    else:
        raise ValueError(f"{url}: expected …/studies/UID or …/studies/UID/series/UID")
    for uid in filter(None, (study, series)):
        if not is_uid(uid):
            raise ValueError(f"{url}: {uid[:80]!r} is not a UID")
    return StudyRef(origin + "/".join(root).rstrip("/"), study, series)


def parse_query(url: str) -> tuple[str, str, str]:
    """``(root, path, query)`` of a QIDO-RS studies search URL
    (``dicomweb+http://host/dicom-web/studies?ModalitiesInStudy=CT``).

    Raises
    ------
    ValueError
        The URL does not end in ``/studies``.
    """
    origin, path = _base(url)
    query = urlsplit(url).query
    head = path.rstrip("/")
    if not head.endswith("/studies") and head != "studies":
        raise ValueError(f"{url}: a QIDO-RS study search ends in …/studies")
    return origin + head[: -len("studies")].rstrip("/"), "studies", query


# ------------------------------------------------------------- errors
def check_status(rsp: httpx.Response, what: str) -> None:
    """Raise :class:`RemoteError` unless ``rsp`` is a success."""
    if rsp.is_success:
        return
    code = "remote_unreachable" if rsp.status_code in (408, 429) or rsp.status_code >= 500 else ""
    raise RemoteError(code or "remote_refused", f"{what}: HTTP {rsp.status_code}")


def transport_error(exc: httpx.HTTPError, what: str) -> RemoteError:
    """A transport failure (refused, reset, TLS, timeout) as a coded error."""
    return RemoteError("remote_unreachable", f"{what}: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------- QIDO-RS
def value(ds: dict[str, Any], tag: str) -> str:
    """The first value of ``tag`` in a DICOM JSON object (PS3.18 §F.2) as a
    string, "" when absent or not a plain value."""
    elem = ds.get(tag)
    if not isinstance(elem, dict):
        return ""
    values = elem.get("Value")
    if not isinstance(values, list) or not values:
        return ""
    first = values[0]
    return str(first) if isinstance(first, str | int | float) else ""


def search(
    client: httpx.Client, path: str, params: list[tuple[str, str]], page_size: int, limit: int
) -> Iterator[dict[str, Any]]:
    """Every match of a QIDO-RS search, page by page (``limit``/``offset``,
    PS3.18 §8.3.4.4), at most ``limit`` of them.

    Raises
    ------
    RemoteError
        Unreachable, refused, or an answer that is not a DICOM JSON array.
    """
    import httpx

    offset = 0
    while offset < limit:
        page = httpx.QueryParams([*params, ("limit", str(page_size)), ("offset", str(offset))])
        try:
            rsp = client.get(path, params=page, headers={"Accept": QIDO_ACCEPT})
        except httpx.HTTPError as exc:
            raise transport_error(exc, f"QIDO-RS {path}") from None
        check_status(rsp, f"QIDO-RS {path}")
        if rsp.status_code == 204 or not rsp.content.strip():
            return
        try:
            body = rsp.json()
        except ValueError:
            body = None
        if not isinstance(body, list) or not all(isinstance(ds, dict) for ds in body):
            raise RemoteError(
                "remote_answer_invalid", f"QIDO-RS {path}: the answer is not a DICOM JSON array"
            )
        yield from body[: limit - offset]
        if len(body) < page_size:
            return
        offset += len(body)
