"""Where local patients are looked up: identity source URLs and
:func:`open_source`.

==============================  =================================================
``mwl://AET@host:port``         Modality Worklist C-FIND (:mod:`.dimse`)
``pdq://AET@host:port``         Patient Root C-FIND, PATIENT level (:mod:`.dimse`)
``csv:///path/patients.csv``    a table the site keeps (:mod:`.tables`)
``sqlite:///path/patients.db``  table ``patients`` in a database (:mod:`.tables`)
``expect:``                     expectations in STATE_DIR (:mod:`.expect`)
==============================  =================================================

A source never falls back to another: one that cannot be asked raises
:class:`~pdimport.reconcile.model.SourceDown`, and the caller holds the job.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

from pdimport.reconcile.expect import (
    ExpectSource,
    add_expectation,
    expectations_at,
    list_expectations,
    remove_expectation,
)
from pdimport.reconcile.model import IdentitySource
from pdimport.reconcile.tables import CsvSource, SqliteSource
from pdimport.store.db import is_url

ACCEPTED = (
    "mwl://AET@host:port, pdq://AET@host:port, csv:///absolute/path, "
    "sqlite:///absolute/path or expect:"
)

_DIMSE_URL = re.compile(
    r"^(?P<scheme>mwl|pdq)://(?P<aet>[^@/?#]+)@"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})/?$",
    re.IGNORECASE,
)


def open_source(
    url: str, *, timeout: float, calling_aet: str, state_dir: Path | str
) -> IdentitySource:
    """The identity source a URL names (nothing is contacted yet).

    Parameters
    ----------
    url : str
        One of the forms in the module's table. The AE title may be
        percent-escaped (``%20``); a path too.
    timeout : float
        Seconds for every network step of a question (connect, association,
        each C-FIND response); for a table, how long to wait for a lock.
    calling_aet : str
        Our AE title in associations.
    state_dir : Path or str
        Where ``expect:`` keeps ``expectations.sqlite``, or the
        ``postgresql://`` URL of the group's shared database.

    Raises
    ------
    ValueError
        An unknown scheme or a malformed URL; the message names the URL
        and the accepted forms.
    """
    if not timeout > 0:
        raise ValueError(f"identity source {url!r}: timeout {timeout!r} must be > 0 seconds")
    text = url.strip()
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme in ("mwl", "pdq"):
        return _dimse(text, url, timeout, calling_aet)
    if scheme == "csv":
        return CsvSource(url=text, path=_path(text, url))
    if scheme == "sqlite":
        return SqliteSource(url=text, path=_path(text, url), timeout=timeout)
    if scheme == "expect":
        if text.lower() not in ("expect:", "expect://"):
            raise _bad(url, "expect: takes nothing after the colon")
        return ExpectSource(
            url="expect:",
            state_dir=state_dir if is_url(state_dir) else Path(state_dir),
            timeout=timeout,
        )
    raise _bad(url, "unknown scheme")


def _bad(url: str, why: str) -> ValueError:
    return ValueError(f"identity source {url!r}: {why}; expected {ACCEPTED}")


def _dimse(text: str, url: str, timeout: float, calling_aet: str) -> IdentitySource:
    m = _DIMSE_URL.match(text)
    if not m:
        raise _bad(url, "malformed")
    aet = unquote(m["aet"]).strip(" ")
    problem = _aet_problem(aet)
    if problem:
        raise _bad(url, f"AE title {aet!r} {problem}")
    calling = calling_aet.strip(" ")
    problem = _aet_problem(calling)
    if problem:
        raise ValueError(f"calling AE title {calling!r} {problem}")
    port = int(m["port"])
    if not 1 <= port <= 65535:
        raise _bad(url, f"port {port} is outside 1..65535")
    host = m["host"].lower()
    key = f"{m['scheme'].lower()}://{aet}@{host}:{port}"
    # pynetdicom (≈ 0.4 s to import) only where a DIMSE source is configured
    from pdimport.reconcile.dimse import RegistrySource, WorklistSource

    kind = WorklistSource if m["scheme"].lower() == "mwl" else RegistrySource
    return kind(
        url=key,
        aet=aet,
        host=host.strip("[]"),
        port=port,
        calling_aet=calling,
        timeout=float(timeout),
    )


def _aet_problem(aet: str) -> str:
    """What is wrong with an AE title (stripped of spaces), or ``""``.

    PS3.5 6.2 VR AE: 1..16 characters of the default repertoire, no
    backslash, no control characters.
    """
    if not aet or len(aet) > 16:
        return "must be 1..16 characters"
    if "\\" in aet or any(ord(c) < 0x20 or ord(c) > 0x7E for c in aet):
        return "has a backslash, a control or a non-ASCII character"
    return ""


def _path(text: str, url: str) -> Path:
    rest = text.split(":", 1)[1]
    if not rest.startswith("///"):
        raise _bad(url, "the path must be absolute, after three slashes")
    if "?" in rest or "#" in rest:
        raise _bad(url, "a query or fragment is not allowed")
    path = unquote(rest[2:])
    if "\x00" in path:
        raise _bad(url, "NUL in path")
    norm = os.path.normpath(path)
    if norm == "/":
        raise _bad(url, "the path names no file")
    return Path(norm)


__all__ = [
    "ACCEPTED",
    "CsvSource",
    "ExpectSource",
    "SqliteSource",
    "add_expectation",
    "expectations_at",
    "list_expectations",
    "open_source",
    "remove_expectation",
]
