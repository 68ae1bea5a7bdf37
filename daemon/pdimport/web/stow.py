"""STOW-RS delivery (PS3.18 10.5) to a ``dicomweb+http(s)://`` destination.

One call of :func:`send_stow` makes one delivery attempt, like
:func:`pdimport.send.scu.send_dicom`: every item gets exactly one
:class:`~pdimport.model.SendOutcome`, reported in the caller's thread as soon
as its request is answered; retrying ``retry`` and ``unknown`` is the
caller's job.

Instances go in batches of at most ``web.stow_batch_files`` instances (or
the URL's ``?batch=N``) and ``web.stow_batch_mb`` megabytes, each batch one
POST to ``<root>/studies`` with a streamed multipart body
(:mod:`pdimport.web.multipart`), up to ``web.connections`` requests at once
on one keep-alive client (:func:`pdimport.web.http.make_client`). The
answer of each instance is read from the response body, never from the HTTP
status alone.

Transfer syntaxes: a destination with ``?syntaxes=uncompressed`` gets every
compressed instance decoded to Explicit VR Little Endian first, by the same
decode pool C-STORE uses (:func:`pdimport.send.scu.converted_ahead`: worker
processes, a bounded number ahead of the request). An instance the server
fails with 0xC122 (transfer syntax not supported) is decoded and sent once
more within the same attempt.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pdimport.model import SendItem, SendOutcome
from pdimport.send.dest import WebDest
from pdimport.send.dicom import give_back
from pdimport.send.link import converted_path
from pdimport.send.scu import converted_ahead
from pdimport.web import multipart
from pdimport.web.http import WebConfigError, make_client
from pdimport.web.multipart import MultipartBody, Part

LOGGER = logging.getLogger(__name__)

OutcomeCallback = Callable[[SendOutcome], None]

#: What ``?syntaxes=uncompressed`` takes as it is.
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass(frozen=True)
class Stop:
    """Why no more requests should go to this destination in this attempt."""

    state: str
    code: str
    detail: str


class _Syntaxes:
    """Which items go decoded: the :func:`converted_ahead` side of a link."""

    def __init__(self, dest: WebDest, refused: set[str]) -> None:
        self.uncompressed_only = dest.syntaxes == "uncompressed"
        self.refused = refused  # keys the server failed with 0xC122

    def conversion_target(self, item: SendItem) -> str | None:
        if item.transfer_syntax in UNCOMPRESSED:
            return None
        if self.uncompressed_only or item.key in self.refused:
            return ExplicitVRLittleEndian
        return None


def send_stow(
    dest: WebDest,
    items: list[SendItem],
    settings: Any,
    on_outcome: OutcomeCallback,
    workdir: Path,
) -> None:
    """Deliver `items` to `dest` by STOW-RS; one outcome per item.

    Parameters
    ----------
    dest : WebDest
        The DICOMweb service root and its options.
    items : list of SendItem
        Spooled Part 10 files, in medium order.
    settings : pdimport.settings.Settings
        ``web.*`` (auth, TLS, connections, batch limits, timeout) and
        ``decode.memory_budget_mb``.
    on_outcome : callable
        Called in this thread with each outcome as soon as it is known.
    workdir : pathlib.Path
        Where decoded copies are written (:func:`converted_path`).
    """
    if not items:
        return
    if dest.connections:
        settings = settings.replace(web__connections=dest.connections)
    try:
        client = make_client(settings, dest.base_url)
    except (WebConfigError, OSError, ssl.SSLError) as exc:
        give_back(items, "association_failed", f"{dest.key}: {exc}", on_outcome, "failed")
        return
    refused: set[str] = set()
    with client:
        pending = items
        while pending:
            # at most twice: an instance the server failed with 0xC122
            # (transfer syntax not supported) goes once more, decoded
            pending = _attempt(dest, pending, settings, on_outcome, workdir, client, refused)
            refused.update(i.key for i in pending)


def _attempt(
    dest: WebDest,
    items: list[SendItem],
    settings: Any,
    on_outcome: OutcomeCallback,
    workdir: Path,
    client: httpx.Client,
    refused: set[str],
) -> list[SendItem]:
    """Send `items` once; the items the server failed with 0xC122 and that
    can still be decoded (their outcome not reported yet)."""
    connections = int(settings.get("web.connections"))
    budget = int(settings.get("decode.memory_budget_mb"))
    syntaxes = _Syntaxes(dest, refused)
    stream = converted_ahead(syntaxes, items, workdir, budget)
    batches = _batches(stream, syntaxes, workdir, _limits(dest, settings))
    inflight: dict[Future[tuple[list[SendOutcome], Stop | None]], list[Part]] = {}
    stop: list[Stop] = []
    again: list[SendItem] = []

    def settle(done: set[Future[tuple[list[SendOutcome], Stop | None]]]) -> None:
        for future in done:
            parts = inflight.pop(future)
            results, verdict = future.result()
            if verdict is not None and not stop:
                stop.append(verdict)
            for part, out in zip(parts, results, strict=True):
                if (
                    out.status == multipart.SYNTAX_REFUSED
                    and part.converted is None
                    and part.transfer_syntax not in UNCOMPRESSED
                ):
                    again.append(part.item)
                else:
                    on_outcome(out)

    pool = ThreadPoolExecutor(max_workers=connections, thread_name_prefix="stow")
    try:
        for entry in batches:
            if isinstance(entry, SendOutcome):
                on_outcome(entry)
                continue
            if stop:
                give_back(
                    [p.item for p in entry], stop[0].code, stop[0].detail, on_outcome, stop[0].state
                )
                continue
            while len(inflight) >= connections:
                settle(wait(inflight, return_when=FIRST_COMPLETED).done)
            inflight[pool.submit(_post, client, dest, entry)] = entry
        while inflight:
            settle(wait(inflight, return_when=FIRST_COMPLETED).done)
    finally:
        batches.close()
        stream.close()  # stops the decode pool, if any
        pool.shutdown(wait=True, cancel_futures=True)
    return again


def _limits(dest: WebDest, settings: Any) -> tuple[int, int]:
    files = dest.batch or int(settings.get("web.stow_batch_files"))
    return files, int(settings.get("web.stow_batch_mb")) << 20


def _batches(
    stream: Iterator[tuple[SendItem, SendOutcome | None]],
    syntaxes: _Syntaxes,
    workdir: Path,
    limits: tuple[int, int],
) -> Generator[list[Part] | SendOutcome]:
    """Requests' parts, at most ``limits`` (files, bytes) each; an instance
    larger than the byte limit goes alone. A failed decode comes through as
    its outcome. Two instances with one SOP Instance UID never share a
    request: the answer names instances by UID only."""
    max_files, max_bytes = limits
    batch: list[Part] = []
    size = 0
    uids: set[str] = set()
    for item, failed in stream:
        if failed is not None:
            yield failed
            continue
        part = _part(item, syntaxes, workdir)
        nbytes = part.path.stat().st_size
        if batch and (
            len(batch) >= max_files or size + nbytes > max_bytes or item.sop_instance_uid in uids
        ):
            yield batch
            batch, size, uids = [], 0, set()
        batch.append(part)
        size += nbytes
        uids.add(item.sop_instance_uid)
    if batch:
        yield batch


def _part(item: SendItem, syntaxes: _Syntaxes, workdir: Path) -> Part:
    target = syntaxes.conversion_target(item)
    if target is None:
        return Part(item, item.path, item.transfer_syntax)
    copy = converted_path(workdir, item, target)
    return Part(item, copy, target, copy)


def _post(
    client: httpx.Client, dest: WebDest, parts: list[Part]
) -> tuple[list[SendOutcome], Stop | None]:
    """One STOW-RS request; the outcome of each part and, when the
    destination should not be asked again in this attempt, why."""
    body = MultipartBody(parts)
    headers = {
        "Content-Type": body.content_type,
        "Accept": "application/dicom+json",
        "Content-Length": str(len(body)),
    }
    try:
        rsp = client.post("studies", content=body, headers=headers)
    except httpx.HTTPStatusError as exc:  # the OAuth 2.0 token endpoint refused us
        return _all(parts, Stop("failed", "auth_refused", f"{dest.key}: {exc}"))
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        # nothing reached the server: safe to say "not sent"
        if _is_tls(exc):
            detail = f"{dest.key}: TLS handshake failed: {_tls_reason(exc)}"
            return _all(parts, Stop("failed", "tls_failed", detail))
        return _all(parts, Stop("retry", "association_failed", f"{dest.key}: {exc}"))
    except (httpx.TransportError, multipart.BoundaryInData, OSError) as exc:
        # the request may have reached the server, whole or in part
        LOGGER.warning("%s: STOW-RS request of %d lost: %s", dest.key, len(parts), exc)
        detail = f"{dest.key}: no STOW-RS answer ({type(exc).__name__}: {exc})"
        return [
            SendOutcome(
                p.item.key,
                "unknown",
                None,
                "outcome_unknown",
                detail,
                p.transfer_syntax,
                p.converted,
            )
            for p in parts
        ], None
    LOGGER.debug("%s: STOW-RS of %d answered %d", dest.key, len(parts), rsp.status_code)
    doc = multipart.parse_response(rsp.content)
    if rsp.status_code in (401, 403) and not doc:
        detail = f"{dest.key}: HTTP {rsp.status_code}: credentials refused (check web.auth)"
        return _all(parts, Stop("failed", "auth_refused", detail))
    if 400 <= rsp.status_code < 500 and not multipart.has_module(doc):
        # The request refused as a whole (400 from a proxy that wants a
        # client certificate, 413, 415) with no word on any instance:
        # failed, not unknown, so that it is not sent again and again within
        # this delivery; a later import sends it again.
        detail = (
            f"{dest.key}: HTTP {rsp.status_code} without a Store Instances Response: "
            f"{multipart.brief(rsp.content)}"
        )
        return [
            SendOutcome(p.item.key, "failed", None, "store_failed", detail) for p in parts
        ], None
    return multipart.outcomes(parts, rsp.status_code, doc), None


def _all(parts: list[Part], stop: Stop) -> tuple[list[SendOutcome], Stop]:
    return [SendOutcome(p.item.key, stop.state, None, stop.code, stop.detail) for p in parts], stop


def _is_tls(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "SSL" in str(exc) or "certificate" in str(exc).lower()


def _tls_reason(exc: BaseException) -> str:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"certificate not verified ({seen.verify_message}; check web.ca_bundle)"
        seen = seen.__cause__ or seen.__context__
    return str(exc)


__all__ = ["UNCOMPRESSED", "send_stow"]
