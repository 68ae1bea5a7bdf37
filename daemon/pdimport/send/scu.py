"""C-STORE delivery: one attempt over one or several associations.

:func:`send_dicom` plans the presentation contexts (at most 128 per
association, :func:`~pdimport.send.dicom.plan_batches`), then sends each
batch either on one :class:`~pdimport.send.link.Link` in this thread, or on
several links in worker processes (:mod:`pdimport.send.pool`) when the batch
is large enough to pay for them. Every item gets exactly one outcome, through
``on_outcome``, in this process.

How many associations: ``network.associations`` (default
:data:`DEFAULT_ASSOCIATIONS`), or ``?associations=N`` on the destination URL.

Conversion: when the peer refuses the transfer syntax of items of a batch
(a compressed series for an uncompressed-only PACS),
:func:`pdimport.transcode.decode.decode_many` converts them in worker processes, on
every core, a bounded number ahead of the item being sent. Never in this
process: a codec that crashes on a hostile file must fail that file
(``decode_failed``), not the daemon.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, Protocol

from pdimport.model import SendItem, SendOutcome
from pdimport.send.dest import DicomDest
from pdimport.send.dicom import MAX_CONTEXTS, Batch, NetSettings, give_back, plan_batches
from pdimport.send.link import LinkDown, converted_path, decode_failed, new_link
from pdimport.send.pool import send_parallel

LOGGER = logging.getLogger(__name__)

OutcomeCallback = Callable[[SendOutcome], None]

#: Associations per destination when ``network.associations`` is not set.
#: Measured on the 2-core machine (bench/bench_send.py, 1,000 CT images):
#: images/s with 1 / 2 / 4 associations were 502 / 853 / 1148 into storescp
#: (TCP_NODELAY=1) and 223 / 314 / 398 into Orthanc. Even on 2 cores 4 wins:
#: each association spends most of its time waiting for its response.
DEFAULT_ASSOCIATIONS = 4
#: An extra association (and worker process, ~0.1 s to start) pays off only
#: for this many instances or bytes; smaller deliveries use one association
#: in the caller's thread, which also keeps "journal before next C-STORE".
MIN_ITEMS_PER_ASSOCIATION = 64
MIN_BYTES_PER_ASSOCIATION = 64 << 20


def association_count(dest: DicomDest, settings: Any, items: list[SendItem]) -> int:
    """How many associations to use for `items` (at least 1).

    The destination's ``?associations=N`` wins over ``network.associations``;
    small deliveries use fewer (see :data:`MIN_ITEMS_PER_ASSOCIATION`).
    """
    wanted = dest.associations or int(settings.get("network.associations"))
    by_items = len(items) // MIN_ITEMS_PER_ASSOCIATION
    by_bytes = sum(i.size for i in items) // MIN_BYTES_PER_ASSOCIATION
    return max(1, min(wanted, max(by_items, by_bytes)))


def send_dicom(
    dest: DicomDest,
    items: list[SendItem],
    settings: Any,
    on_outcome: OutcomeCallback,
    workdir: Path,
) -> None:
    """Deliver `items` to `dest` by C-STORE; one outcome per item.

    Parameters
    ----------
    dest : DicomDest
        The called AE, its address and its socket options.
    items : list of SendItem
        Spooled Part 10 files, in medium order.
    settings : pdimport.settings.Settings
        ``calling_aet``, ``network.*`` timeouts, ``network.max_pdu`` and
        ``network.associations``.
    on_outcome : callable
        Called in this process with each :class:`SendOutcome` as soon as its
        response arrives (or the item is given back). An exception from it
        stops the delivery (associations aborted, workers stopped) and
        propagates.
    workdir : pathlib.Path
        Where converted files are written (named from a hash of the item key
        and the target syntax, so a resend sends the same bytes).
    """
    if not items:
        return
    net = NetSettings.of(settings)
    batches = plan_batches(items)
    for index, batch in enumerate(batches):
        count = association_count(dest, settings, batch.items)
        if count > 1:
            verdict = send_parallel(dest, batch, net, on_outcome, workdir, count)
        else:
            verdict = send_batch(dest, batch, net, on_outcome, workdir)
        if verdict is not None and verdict.code in ("association_rejected", "association_failed"):
            # The peer is unreachable or refuses us: do not knock again for
            # every batch (a blackhole costs acse_timeout each time).
            rest = [i for b in batches[index + 1 :] for i in b.items]
            give_back(
                rest, verdict.code, f"not attempted: {verdict.detail}", on_outcome, verdict.state
            )
            return


def send_batch(
    dest: DicomDest, batch: Batch, settings: Any, on_outcome: OutcomeCallback, workdir: Path
) -> LinkDown | None:
    """Send one batch on one association in this thread.

    Returns
    -------
    LinkDown or None
        Why the link stopped before any item was answered, else None.
    """
    link = new_link(dest, batch.contexts, settings, workdir)
    try:
        try:
            # Connect first: which items need converting depends on what
            # the peer accepted.
            link.connect()
        except LinkDown as down:
            give_back(batch.items, down.code, down.detail, on_outcome, down.state)
            return down
        stopped = _send_on(link, batch.items, settings, on_outcome, workdir)
    except BaseException:
        link.abort()
        raise
    if stopped is None:
        link.close()
    return stopped if stopped is not None and link.answered == 0 else None


def _send_on(
    link: Any, items: list[SendItem], settings: Any, on_outcome: OutcomeCallback, workdir: Path
) -> LinkDown | None:
    """Send `items` on the connected `link`, one outcome each; the LinkDown
    that stopped it (the rest given back), else None."""
    budget = int(settings.get("decode.memory_budget_mb"))
    stream = converted_ahead(link, items, workdir, budget)
    try:
        for n, (item, failed) in enumerate(stream):
            if failed is not None:
                on_outcome(failed)
                continue
            try:
                outcome = link.send(item)
            except LinkDown as down:
                give_back(items[n:], down.code, down.detail, on_outcome, down.state)
                return down
            on_outcome(outcome)
    finally:
        stream.close()  # stops the decode pool, if any
    return None


class StoreSession:
    """One association to a DICOM destination kept open across deliveries.

    For a medium still being read (:class:`~pdimport.job.overlap.EarlyDelivery`):
    its instances come in small chunks as they are spooled, and a fresh
    association per chunk (or four send workers started for it) costs more
    than the chunk. The association proposes the contexts of every chunk so
    far; a chunk that needs another one is sent on a new association that
    proposes them all. An association the peer ended while idle is replaced
    by the link itself (:meth:`~pdimport.send.link.Link.send`). Every item
    gets one outcome through ``on_outcome``, in this thread, before the next
    C-STORE.
    """

    def __init__(self, dest: DicomDest, settings: Any, workdir: Path) -> None:
        self._dest = dest
        self._settings = settings
        self._net = NetSettings.of(settings)
        self._workdir = workdir
        self._contexts: list[Any] = []
        self._link: Any = None
        #: Mean seconds a C-STORE of the last :meth:`send` waited for its
        #: response (None before one was answered on the open association).
        self.response_wait: float | None = None

    def send(self, items: list[SendItem], on_outcome: OutcomeCallback) -> LinkDown | None:
        """Deliver `items`; the LinkDown that stopped them (the rest given back)."""
        if not items:
            return None
        batches = plan_batches(items)
        if len(batches) > 1:  # more SOP classes than one association carries
            self.close()
            send_dicom(self._dest, items, self._settings, on_outcome, self._workdir)
            return None
        known = {(c.abstract_syntax, c.transfer_syntax) for c in self._contexts}
        wanted = [
            c for c in batches[0].contexts if (c.abstract_syntax, c.transfer_syntax) not in known
        ]
        if wanted:
            self.close()
            if len(self._contexts) + len(wanted) > MAX_CONTEXTS:
                self._contexts = []
                wanted = batches[0].contexts
            self._contexts += wanted
        if self._link is None:
            link = new_link(self._dest, list(self._contexts), self._net, self._workdir)
            try:
                link.connect()
            except LinkDown as down:
                give_back(items, down.code, down.detail, on_outcome, down.state)
                return down
            self._link = link
        link = self._link
        waited, waits = link.waited, link.waits
        try:
            stopped = _send_on(link, items, self._net, on_outcome, self._workdir)
        except BaseException:
            link.abort()
            self._link = None
            raise
        if link.waits > waits:
            self.response_wait = (link.waited - waited) / (link.waits - waits)
        if stopped is not None:
            self._link.abort()
            self._link = None
        return stopped

    def close(self) -> None:
        """Release the association, if one is open."""
        link, self._link = self._link, None
        if link is not None:
            link.close()


class Converts(Protocol):
    """What :func:`converted_ahead` asks of a link: the syntax an item must
    be converted to (a C-STORE :class:`Link`, a STOW-RS destination)."""

    def conversion_target(self, item: SendItem) -> str | None: ...


def converted_ahead(
    link: Converts, items: list[SendItem], workdir: Path, budget_mb: int | None = None
) -> Generator[tuple[SendItem, SendOutcome | None]]:
    """`items` in order, each with None (send it) or its ``decode_failed`` outcome.

    Items the peer takes only in another transfer syntax are converted by
    the decode pool into :func:`~pdimport.send.link.converted_path`, where
    :meth:`Link.send` finds and sends them; the pool runs ahead of the send
    by its bounded lookahead, so decoding and sending overlap and memory
    stays bounded. A failed, crashed or stuck decode is reported here and
    never reaches the link. One pool per conversion target (almost always
    one: Explicit VR Little Endian); a copy made by an earlier attempt is
    sent again as it is. The pools share `budget_mb` of memory
    (``decode.memory_budget_mb``).
    """
    plan = _pool_plan(link, items, workdir)
    if not plan:
        yield from ((item, None) for item in items)
        return
    from pdimport.transcode import decode  # the codecs only when something is converted

    streams: dict[str, Generator[decode.DecodeResult]] = {}
    try:
        for target, pooled in plan.items():
            jobs = ((items[n].path, converted_path(workdir, items[n], target), n) for n in pooled)
            # every core; fewer workers for fewer items (one starts in ~0.1 s)
            workers = min(len(pooled), os.cpu_count() or 1)
            streams[target] = decode.decode_many(jobs, target, workers, budget_mb=budget_mb)
        waiting = {n: target for target, pooled in plan.items() for n in pooled}
        for n, item in enumerate(items):
            wanted = waiting.get(n)
            if wanted is None:
                yield item, None
                continue
            res = next(streams[wanted])
            assert res.item[2] == n, "decode_many answers in submission order"
            yield item, None if res.ok else decode_failed(item, wanted, res.detail, res.code)
    finally:
        for stream in streams.values():
            stream.close()


def _pool_plan(link: Converts, items: list[SendItem], workdir: Path) -> dict[str, list[int]]:
    """Conversion target -> indices of the items to decode for it, in order.

    Items with a converted copy already (a resend) are not decoded again.
    """
    plan: dict[str, list[int]] = {}
    for n, item in enumerate(items):
        target = link.conversion_target(item)
        if target and not converted_path(workdir, item, target).exists():
            plan.setdefault(target, []).append(n)
    return plan


__all__ = [
    "DEFAULT_ASSOCIATIONS",
    "MIN_ITEMS_PER_ASSOCIATION",
    "association_count",
    "converted_ahead",
    "send_batch",
    "send_dicom",
]
