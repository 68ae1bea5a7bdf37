"""Several associations to one destination, one worker process each.

Why processes: a C-STORE sender in Python is CPU-bound per association
(pynetdicom's DUL and DIMSE threads share one GIL, performance.md §3c); a
second process uses the second core.

How work is spread: the parent deals the batch's items out one at a time, in
medium order, to whichever worker has room (at most :data:`DEPTH`
outstanding each, so a worker never waits for the parent). Each association
therefore sends its instances in medium order, the medium as a whole arrives
roughly in order (the first series completes first, which is what a PACS
"series complete" rule and a reader opening the study need), and a slow
association simply gets fewer items: no chunk is left waiting on a stalled
link. Memory stays bounded: a worker holds at most :data:`DEPTH` items and
one read block (:data:`pdimport.send.link.READ_BLOCK`).

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
import math
import multiprocessing as mp
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from pynetdicom.presentation import build_context

from pdimport.model import SendItem, SendOutcome
from pdimport.send.dest import DicomDest
from pdimport.send.dicom import Batch
from pdimport.send.link import LinkDown

LOGGER = logging.getLogger(__name__)

OutcomeCallback = Callable[[SendOutcome], None]

#: Items handed to a worker before it reports. One: the next C-STORE on an
#: association goes out only after the previous outcome was journaled, so a
#: crash of this process repeats at most one instance per association.
DEPTH = 1
#: Seconds a worker gets to release its association after "stop".
STOP_GRACE = 10.0


def _context() -> Any:
    # forkserver: workers fork from a clean single-threaded server, never
    # from the daemon with its journal, udev and watchdog threads (fork()
    # of a threaded process copies held locks); pynetdicom is preloaded
    # once, so a worker starts in ~10 ms instead of ~0.5 s for spawn.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["pdimport.send.link", "pdimport.send.scu"])
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
    from pdimport.send.scu import new_link

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
@dataclass
class _Worker:
    proc: Any
    conn: Connection
    held: deque[int] = field(default_factory=deque)
    ready: bool = False  # association established
    open: bool = True  # may still take items
    deadline: float = math.inf  # by when the first held item must be answered

    def give(self, index: int, item: SendItem, timeout: float) -> None:
        self.conn.send((index, item))
        if not self.held:
            self.deadline = time.monotonic() + timeout
        self.held.append(index)


def item_timeout_for(settings: Any) -> float:
    """Longest a worker may hold one item: a conversion (the decode pool's
    per-file limit) plus writing it and waiting for its response."""
    from pdimport.transcode.decode import DEFAULT_TIMEOUT

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
    ctx = _context()
    contexts = [
        (str(cx.abstract_syntax), [str(t) for t in cx.transfer_syntax]) for cx in batch.contexts
    ]
    workers = []
    for _ in range(count):
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(
            target=_worker,
            args=(child_end, dest, contexts, settings, workdir),
            daemon=True,
            name=f"pdimport-send-{dest.port}",
        )
        proc.start()
        child_end.close()
        workers.append(_Worker(proc, parent_end))
    todo = deque(range(len(batch.items)))
    if item_timeout is None:
        item_timeout = item_timeout_for(settings)
    try:
        verdict = _serve(dest, batch.items, on_outcome, todo, workers, item_timeout)
    except BaseException:
        for worker in workers:
            _kill(worker)
        raise
    _stop(workers)
    return verdict


def _serve(
    dest: DicomDest,
    items: list[SendItem],
    on_outcome: OutcomeCallback,
    todo: deque[int],
    workers: list[_Worker],
    item_timeout: float,
) -> LinkDown | None:
    """Deal items to ready workers and collect outcomes until every item has one.

    A worker gets items only once its association is up: against a peer
    that serves one association at a time, the others just wait and are
    stopped at the end, holding nothing.
    """
    answered, last_down = 0, None
    while any(w.held for w in workers) or (todo and any(w.open for w in workers)):
        watched = [w for w in workers if w.held or w.open]
        first = min((w.deadline for w in watched if w.held), default=math.inf)
        ready = wait(
            [w.conn for w in watched] + [w.proc.sentinel for w in watched],
            timeout=None if first == math.inf else max(0.0, first - time.monotonic()),
        )
        now = time.monotonic()
        for worker in watched:
            stuck = bool(worker.held) and worker.deadline <= now and worker.proc.is_alive()
            if stuck:
                LOGGER.error(
                    "%s: send worker held one instance for %.0f s: stopped", dest.key, item_timeout
                )
                worker.proc.kill()
                worker.proc.join(5)
            if stuck or worker.conn in ready or worker.proc.sentinel in ready:
                got, down = _collect(dest, items, worker, on_outcome, item_timeout)
                answered += got
                last_down = down or last_down
                _fill(worker, items, todo, item_timeout)
    if todo:
        # Every association is down: the rest goes back to the caller.
        rest = [items[i] for i in todo]
        todo.clear()
        if last_down is None:
            _give_back(rest, "association_failed", f"{dest.key}: no association left", on_outcome)
        else:
            _give_back(rest, last_down.code, last_down.detail, on_outcome, last_down.state)
    return last_down if answered == 0 else None


def _fill(worker: _Worker, items: list[SendItem], todo: deque[int], timeout: float) -> None:
    while worker.ready and worker.open and todo and len(worker.held) < DEPTH:
        index = todo.popleft()
        try:
            worker.give(index, items[index], timeout)
        except OSError:
            todo.appendleft(index)  # it died: _collect reports what it held
            worker.open = False


def _collect(
    dest: DicomDest,
    items: list[SendItem],
    worker: _Worker,
    on_outcome: OutcomeCallback,
    timeout: float,
) -> tuple[int, LinkDown | None]:
    """Read what `worker` reported; (answers counted, why it went down or None)."""
    answered, down = 0, None
    try:
        while worker.open and worker.conn.poll():
            msg = worker.conn.recv()
            if msg[0] == "ready":
                worker.ready = True
            elif msg[0] == "out":
                assert worker.held and msg[1] == worker.held[0], "answers come in order"
                worker.held.popleft()
                worker.deadline = time.monotonic() + timeout if worker.held else math.inf
                answered += msg[2].status is not None
                on_outcome(msg[2])
            else:
                answered += msg[3]
                down = msg[2] if msg[3] == 0 else None  # only then may it stop further batches
                _went_down(items, worker, msg[2], on_outcome)
    except (EOFError, OSError):
        worker.open = False
    if not worker.proc.is_alive():
        worker.open = False
        if worker.held:
            _lost(dest, items, worker, on_outcome)
    return answered, down


def _went_down(
    items: list[SendItem], worker: _Worker, down: LinkDown, on_outcome: OutcomeCallback
) -> None:
    worker.open = False
    _give_back([items[i] for i in worker.held], down.code, down.detail, on_outcome, down.state)
    worker.held.clear()


def _lost(
    dest: DicomDest, items: list[SendItem], worker: _Worker, on_outcome: OutcomeCallback
) -> None:
    """A worker died: its item in flight is unknown, the rest retry."""
    worker.proc.join(0)
    detail = f"{dest.key}: send worker exited with status {worker.proc.exitcode}"
    LOGGER.error("%s with %d items outstanding", detail, len(worker.held))
    worker.open = False
    first, *rest = (items[i] for i in worker.held)
    worker.held.clear()
    on_outcome(
        SendOutcome(
            first.key,
            "unknown",
            None,
            "outcome_unknown",
            f"{detail} while this instance was in flight",
        )
    )
    _give_back(rest, "association_failed", detail, on_outcome)


def _give_back(
    items: list[SendItem], code: str, detail: str, on_outcome: OutcomeCallback, state: str = "retry"
) -> None:
    for item in items:
        on_outcome(SendOutcome(item.key, state, None, code, detail))


def _stop(workers: list[_Worker]) -> None:
    # A worker still waiting for its association holds nothing: end it now.
    # The others release their association first.
    for worker in workers:
        if worker.ready:
            try:
                worker.conn.send(None)
            except OSError:
                pass
    for worker in workers:
        if worker.ready:
            worker.proc.join(STOP_GRACE)
        _kill(worker)


def _kill(worker: _Worker) -> None:
    if worker.proc.is_alive():
        worker.proc.terminate()
        worker.proc.join(5)
    worker.conn.close()


__all__ = ["DEPTH", "send_parallel"]
