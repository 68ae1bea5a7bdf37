"""Several associations to one destination, one worker process each.

Why processes: a C-STORE sender in Python is CPU-bound per association
(reading the spool, framing PDUs and decoding responses in one GIL,
performance.md §3c); a second process uses the second core.

How work is spread: the parent deals the batch's items out one at a time, in
medium order, to whichever worker has room (at most :data:`DEPTH`
outstanding each, so a worker never waits for the parent). Each association
therefore sends its instances in medium order, the medium as a whole arrives
roughly in order (the first series completes first, which is what a PACS
"series complete" rule and a reader opening the study need), and a slow
association simply gets fewer items: no chunk is left waiting on a stalled
link. Memory stays bounded: a worker holds at most :data:`DEPTH` items and
one read block (:data:`pdimport.send.association.READ_BLOCK`).

Outcomes come back over each worker's pipe and ``on_outcome`` is called in
this process as each arrives. The parent knows exactly which items every
worker holds, so a worker that dies loses nothing: its item in flight comes
back ``unknown`` (the peer may have stored it), the one queued behind it
``retry``. A worker that holds one item longer than it can legitimately
take (a conversion looping on a hostile file: the worker converts with the
same code as the decode pool, without its watchdog) is killed and counts
as dead; the retry of those few items goes over one association, where the
decode pool converts them and stops a stuck decode.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pdimport.model import SendItem, SendOutcome
from pdimport.send.dest import DicomDest
from pdimport.send.dicom import Batch, build_context, give_back
from pdimport.send.link import LinkDown, new_link
from pdimport.transcode.errors import DEFAULT_TIMEOUT
from pdimport.workers import Supervisor, Worker

LOGGER = logging.getLogger(__name__)

OutcomeCallback = Callable[[SendOutcome], None]

#: Items a worker holds at most: the one on the wire and the next, already
#: in its pipe, so the association never waits for this process between
#: two C-STOREs. A crash of this process therefore repeats at most DEPTH
#: instances per association, plus one journal commit group
#: (:mod:`pdimport.store.groupcommit`).
DEPTH = 2
#: Seconds a worker gets to release its association after "stop".
STOP_GRACE = 10.0


def _context() -> Any:
    # forkserver: workers fork from a clean single-threaded server, never
    # from the daemon with its journal, udev and watchdog threads (fork()
    # of a threaded process copies held locks); pynetdicom is preloaded
    # once, so a worker starts in ~10 ms instead of ~0.5 s for spawn.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["pdimport.send.pool"])
    return ctx


# ------------------------------------------------------------------ worker
def _worker(
    conn: Connection,
    dest: DicomDest,
    contexts: list[tuple[str, list[str]]],
    settings: Any,
    workdir: Path,
) -> None:
    """Worker process: connect, say "ready", then items in, outcomes out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    parent = mp.parent_process()
    link = new_link(dest, [build_context(c, ts) for c, ts in contexts], settings, workdir)
    # Nobody would journal what we send once the parent is gone (killed,
    # crashed): check right before every C-STORE, not only between items.
    link.guard = parent.is_alive if parent is not None else None
    try:
        try:
            link.connect()
        except LinkDown as down:
            conn.send(("down", None, down, 0))
            return
        conn.send(("ready",))
        while (msg := conn.recv()) is not None:
            index, item = msg
            try:
                outcome = link.send(item)
            except LinkDown as down:
                conn.send(("down", index, down, link.answered))
                break
            conn.send(("out", index, outcome))
    except (EOFError, OSError):
        link.abort()  # the parent is gone
        return
    link.close()


# ------------------------------------------------------------------ parent
@dataclass(eq=False)
class _Assoc:
    """A send worker and what the parent knows of its association."""

    worker: Worker
    ready: bool = False  # association established
    open: bool = True  # may still take items


def item_timeout_for(settings: Any) -> float:
    """Longest a worker may hold one item: a conversion (the decode pool's
    per-file limit) plus writing it and waiting for its response."""
    return DEFAULT_TIMEOUT + 2 * float(settings.get("network.dimse_timeout"))


def send_parallel(
    dest: DicomDest,
    batch: Batch,
    settings: Any,
    on_outcome: OutcomeCallback,
    workdir: Path,
    count: int,
    item_timeout: float | None = None,
) -> LinkDown | None:
    """Send `batch` over `count` associations in worker processes.

    Returns
    -------
    LinkDown or None
        When no worker got a single answer, why the last one stopped.
    """
    contexts = [
        (str(cx.abstract_syntax), [str(t) for t in cx.transfer_syntax]) for cx in batch.contexts
    ]
    if item_timeout is None:
        item_timeout = item_timeout_for(settings)
    workers = Supervisor(
        _context(),
        _worker,
        (dest, contexts, settings, workdir),
        name=f"pdimport-send-{dest.port}",
        timeout=item_timeout,
    )
    try:
        assocs = [_Assoc(workers.start()) for _ in range(count)]
        todo = deque(range(len(batch.items)))
        verdict = _serve(dest, batch.items, on_outcome, todo, workers, assocs)
    except BaseException:
        workers.kill()
        raise
    # A worker still waiting for its association holds nothing: it is
    # killed at once. The others release their association first.
    workers.stop(STOP_GRACE, asked=[a.worker for a in assocs if a.ready])
    return verdict


def _serve(
    dest: DicomDest,
    items: list[SendItem],
    on_outcome: OutcomeCallback,
    todo: deque[int],
    workers: Supervisor,
    assocs: list[_Assoc],
) -> LinkDown | None:
    """Deal items to ready workers and collect outcomes until every item has one.

    A worker gets items only once its association is up: against a peer
    that serves one association at a time, the others just wait and are
    stopped at the end, holding nothing.
    """
    by_worker = {a.worker: a for a in assocs}
    answered, last_down = 0, None
    while any(a.worker.held for a in assocs) or (todo and any(a.open for a in assocs)):
        watched = [a.worker for a in assocs if a.worker.held or a.open]
        for worker in workers.wait(watched):
            if worker.timed_out:
                LOGGER.error(
                    "%s: send worker held one instance for %.0f s: stopped",
                    dest.key,
                    workers.timeout,
                )
            got, down = _collect(dest, items, by_worker[worker], on_outcome, todo)
            answered += got
            last_down = down or last_down
        for assoc in assocs:  # also the idle ones: a dead worker's queue came back
            _fill(assoc, items, todo)
    if todo:
        # Every association is down: the rest goes back to the caller.
        rest = [items[i] for i in todo]
        todo.clear()
        if last_down is None:
            give_back(rest, "association_failed", f"{dest.key}: no association left", on_outcome)
        else:
            give_back(rest, last_down.code, last_down.detail, on_outcome, last_down.state)
    return last_down if answered == 0 else None


def _fill(assoc: _Assoc, items: list[SendItem], todo: deque[int]) -> None:
    while assoc.ready and assoc.open and todo and len(assoc.worker.held) < DEPTH:
        index = todo.popleft()
        try:
            assoc.worker.give(index, (index, items[index]))
        except OSError:
            todo.appendleft(index)  # it died: _collect reports what it held
            assoc.open = False


def _collect(
    dest: DicomDest,
    items: list[SendItem],
    assoc: _Assoc,
    on_outcome: OutcomeCallback,
    todo: deque[int],
) -> tuple[int, LinkDown | None]:
    """Read what a worker reported; (answers counted, why it went down or None)."""
    worker = assoc.worker
    answered, down = 0, None
    for msg in worker.messages():
        if msg[0] == "ready":
            assoc.ready = True
        elif msg[0] == "out":
            index = worker.done()
            assert index == msg[1], "answers come in order"
            answered += msg[2].status is not None
            on_outcome(msg[2])
        else:
            _, _, link_down, got = msg
            answered += got
            down = link_down if got == 0 else None  # only then may it stop further batches
            assoc.open = False
            rest = [items[i] for i in worker.take_back()]
            give_back(rest, link_down.code, link_down.detail, on_outcome, link_down.state)
        if not assoc.open:
            break
    if worker.hung_up or not worker.alive:
        assoc.open = False
    if worker.held and not worker.alive:
        _lost(dest, items, worker, on_outcome, todo)
    return answered, down


def _lost(
    dest: DicomDest,
    items: list[SendItem],
    worker: Worker,
    on_outcome: OutcomeCallback,
    todo: deque[int],
) -> None:
    """A worker died: its item in flight is unknown; the ones queued behind
    it never went out and go back to the front of `todo`, for another
    association (given back as ``retry`` when none is left)."""
    detail = f"{dest.key}: send worker exited with status {worker.exitcode}"
    LOGGER.error("%s with %d items outstanding", detail, len(worker.held))
    first, *rest = worker.take_back()
    on_outcome(
        SendOutcome(
            items[first].key,
            "unknown",
            None,
            "outcome_unknown",
            f"{detail} while this instance was in flight",
        )
    )
    todo.extendleft(reversed(rest))


__all__ = ["DEPTH", "send_parallel"]
