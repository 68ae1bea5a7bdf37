"""Decode compressed objects for destinations that refuse their transfer syntax,
on every core, with bounded memory.

A destination that only accepts uncompressed little endian (PS3.4 B.5) makes
us decompress; JPEG 2000 at about 15 MB/s of pixels per core is then the CPU
bottleneck of a whole import (performance notes §2, §5). So:

* one worker process per core, each decoding one file at a time;
* instances stream through: at most ``lookahead`` files are in flight or
  waiting to be handed back, whatever the series size;
* results come back in submission order;
* a worker that dies (a segfault in a C codec, the OOM killer) fails only the
  file it was decoding, as ``decode_failed``; a fresh worker takes its place;
* so does a worker that spends longer than ``timeout`` seconds on one file
  (a codec looping on hostile input): it is killed;
* before any codec runs, the codestream's own header is checked against
  the dataset (:mod:`pdimport.transcode.codestream`): a mismatch is
  ``decode_refused``, a broken structure ``decode_failed``;
* the workers share one memory budget (``decode.memory_budget_mb``): each
  worker's address space is capped at its share, each file lower still,
  from its expected decoded size (:mod:`pdimport.transcode.memory`), so a
  file that makes a codec ask for absurd buffers fails with ``MemoryError``
  instead of taking a worker's share or waking the OOM killer.

Each worker runs :func:`pdimport.transcode.reencode.convert`, the same
single-file conversion the sender uses in-process: the decoder per transfer
syntax comes from its :data:`~pdimport.transcode.reencode.DECODER_PREFERENCE`
(measured by ``bench/bench_decode.py``), lossless results are pixel-identical
to dcmtk's (tests/test_decode.py), lossy sources keep Lossy Image Compression
"01" with method and ratio (PS3.3 C.7.6.1.1.5), and explicit VR big endian
sources are byte-swapped.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Self

from pdimport.transcode import memory as mem
from pdimport.transcode.errors import DEFAULT_TIMEOUT
from pdimport.transcode.reencode import (
    DECODER_PREFERENCE,
    TARGETS,
    TranscodeError,
    convert,
    decoder_for,
)
from pdimport.workers import Supervisor, Worker

log = logging.getLogger(__name__)

#: Seconds a worker gets to finish its file when the pool closes.
STOP_GRACE = 5.0

#: What the workers run by default: the one single-file conversion (decode to
#: uncompressed little endian, lossy marking and photometric fix included).
decode_file = convert


#: Memory budget of a pool when none is given: the setting's default.
DEFAULT_BUDGET_MB = 4096


@dataclass(frozen=True)
class DecodeResult:
    """Outcome of one item. ``detail`` is the transfer syntax written when
    ``ok``, else why it failed; ``code`` the problem code of a failure
    (``decode_failed`` or ``decode_refused``); ``peak_rss`` the worker's peak
    resident memory in bytes so far (0 when it died)."""

    item: Any
    ok: bool
    detail: str
    code: str = ""
    peak_rss: int = 0


# ------------------------------------------------------------ the pool
def _worker_main(conn: Connection, memory: int = 0) -> None:
    """Worker process: decode one task at a time until told to stop.

    The address space is capped at `memory` (the worker's share of the
    budget) for life, and each file at its own need within that.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    mem.cap_worker(memory)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        seq, src, dst, target_ts, decode = task
        limit = mem.address_space() + mem.file_need(src) if memory > 0 else 0
        with mem.capped(limit) as cap:
            reply = _run(decode, src, dst, target_ts, cap)
        conn.send((seq, *reply, mem.peak_rss()))


def _run(decode: Any, src: str, dst: str, target_ts: str, cap: int) -> tuple[bool, str, str]:
    """``(ok, detail, code)`` of one decode: failure is a value per file."""
    try:
        return True, decode(src, dst, target_ts), ""
    except TranscodeError as exc:
        detail, code = str(exc), exc.code
    except Exception as exc:  # noqa: BLE001 - failure is a value per file
        detail, code = f"{type(exc).__name__}: {exc}", TranscodeError.code
    if "MemoryError" in detail and cap > 0:
        detail += f" (this file may take {cap >> 20} MB of address space)"
    return False, detail, code


class DecodePool:
    """Decode many files on every core, streaming, in submission order.

    Parameters
    ----------
    workers : int, optional
        Worker processes (default: ``os.cpu_count()``).
    lookahead : int, optional
        Most items submitted but not yet handed back (default ``2 * workers``):
        memory stays bounded by that many decodes whatever the series size.
    start_method : str
        ``forkserver`` by default: the daemon has threads, and forking a
        threaded process can copy a held lock into the child.
    decode : callable
        ``decode(src, dst, target_ts) -> str`` run in the workers; a
        module-level function (it is pickled). :func:`decode_file` by default.
    timeout : float, optional
        Seconds one file may take before its worker is killed and the file
        fails (default :data:`DEFAULT_TIMEOUT`).
    budget_mb : int, optional
        Memory of all workers together, MB (default
        :data:`DEFAULT_BUDGET_MB`, the setting ``decode.memory_budget_mb``):
        each worker's address space is capped at an equal share, and there
        are no more workers than shares of :data:`~pdimport.transcode.memory.MIN_WORKER`.
    memory : int, optional
        The share of each worker in bytes, instead of one from `budget_mb`
        (0: no cap).

    Examples
    --------
    >>> with DecodePool(2) as pool:                      # doctest: +SKIP
    ...     for res in pool.map([(src, dst)], ExplicitVRLittleEndian):
    ...         print(res.item, res.ok, res.detail)
    """

    def __init__(
        self,
        workers: int | None = None,
        lookahead: int | None = None,
        start_method: str = "forkserver",
        decode: Any = None,
        timeout: float | None = None,
        memory: int | None = None,
        budget_mb: int | None = None,
    ) -> None:
        self._decode = decode or decode_file
        self.timeout = float(timeout or DEFAULT_TIMEOUT)
        self.workers = max(1, workers or os.cpu_count() or 1)
        if memory is None:
            budget = int(budget_mb or DEFAULT_BUDGET_MB) << 20
            self.workers = mem.workers_within(budget, self.workers)
            memory = budget // self.workers
        #: Address space cap of each worker, bytes (0: none).
        self.memory = int(memory)
        self.lookahead = max(self.workers, lookahead or 2 * self.workers)
        ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # Workers fork from a server that has pydicom and numpy loaded
            # already: a replacement after a crash starts in milliseconds.
            ctx.set_forkserver_preload(
                ["pdimport.transcode.decode", "pdimport.transcode.reencode", "pydicom", "numpy"]
            )
        self._pool = Supervisor(
            ctx, _worker_main, (self.memory,), name="pdimport-decode", timeout=self.timeout
        )
        #: Largest number of items ever in flight or waiting (tests check the bound).
        self.peak_outstanding = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.stop(STOP_GRACE)

    def map(self, items: Iterable[tuple[Any, ...]], target_ts: str) -> Iterator[DecodeResult]:
        """Decode items; one :class:`DecodeResult` per item, in order.

        An item is a ``(src, dst, ...)`` tuple: anything after ``dst`` (a
        SendItem, a key) rides along untouched. ``items`` is consumed lazily: at most ``lookahead`` pairs are taken
        ahead of the one being handed back.
        """
        self._ensure_workers()
        source = iter(items)
        taken: dict[int, tuple[Any, Any]] = {}
        done: dict[int, DecodeResult] = {}
        queued: list[int] = []  # taken, not yet given to a worker
        next_seq = next_out = 0
        exhausted = False
        while not exhausted or next_out < next_seq:
            while not exhausted and next_seq - next_out < self.lookahead:
                try:
                    taken[next_seq] = next(source)
                except StopIteration:
                    exhausted = True
                    break
                queued.append(next_seq)
                next_seq += 1
            self.peak_outstanding = max(self.peak_outstanding, next_seq - next_out)
            self._dispatch(queued, taken, target_ts)
            while next_out in done:
                taken.pop(next_out)
                yield done.pop(next_out)
                next_out += 1
            if next_out < next_seq and next_out not in done:
                self._collect(taken, done)

    def _ensure_workers(self) -> None:
        while len(self._pool.workers) < self.workers:
            self._pool.start()

    def _dispatch(
        self, queued: list[int], taken: dict[int, tuple[Any, Any]], target_ts: str
    ) -> None:
        for worker in self._pool.workers:
            if not queued:
                return
            if not worker.held:
                seq = queued[0]
                src, dst = taken[seq][0], taken[seq][1]
                try:
                    worker.give(seq, (seq, os.fspath(src), os.fspath(dst), target_ts, self._decode))
                except OSError:
                    continue  # it died idle: _collect replaces it, the file waits
                queued.pop(0)

    def _collect(self, taken: dict[int, tuple[Any, Any]], done: dict[int, DecodeResult]) -> None:
        """Wait for at least one worker to answer, die or overrun its file."""
        # All of them: an idle worker that died is replaced before it is given a file.
        for worker in self._pool.wait(self._pool.workers):
            for seq, ok, detail, code, peak in worker.messages():
                held = worker.done()
                assert held == seq, "a worker answers the one file it holds"
                done[seq] = DecodeResult(taken[seq], ok, detail, code, peak)
            if worker.alive and not worker.hung_up:
                continue
            if worker.held:
                self._fail(worker, taken, done)
            self._pool.replace(worker)

    def _fail(
        self, worker: Worker, taken: dict[int, tuple[Any, Any]], done: dict[int, DecodeResult]
    ) -> None:
        """The worker died (or was killed past its deadline) mid-file: that file fails."""
        worker.kill()  # reaped, so that its exit status is known
        seq = worker.done()
        why = worker.exit_reason()
        killed = f"took longer than {self.timeout:g} s; stopped" if worker.timed_out else ""
        log.warning(
            "decode worker %s (%s) on %s",
            "stopped" if killed else "died",
            killed or why,
            taken[seq][0],
        )
        detail = f"decoder {killed}" if killed else f"decoder crashed ({why})"
        done[seq] = DecodeResult(taken[seq], False, detail, TranscodeError.code)


def decode_many(
    items: Iterable[tuple[Any, ...]],
    target_ts: str,
    workers: int | None = None,
    lookahead: int | None = None,
    budget_mb: int | None = None,
) -> Generator[DecodeResult]:
    """Decode ``(src, dst, ...)`` items on every core; a :class:`DecodeResult` each, in order.

    A failed one carries its problem code (``decode_failed`` or
    ``decode_refused``) and the reason. The pool lives as long as the
    iterator: exhaust or close it.
    """
    with DecodePool(workers, lookahead, budget_mb=budget_mb) as pool:
        yield from pool.map(items, target_ts)


__all__ = [
    "DECODER_PREFERENCE",
    "DEFAULT_BUDGET_MB",
    "TARGETS",
    "DecodePool",
    "DecodeResult",
    "decode_file",
    "decode_many",
    "decoder_for",
]
