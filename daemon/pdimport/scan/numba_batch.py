"""The batch driver of the numba scanner: how a scan is cut into batches,
one batch's files read and walked in a thread of its own while the
previous batch is decoded, how much of the next batch the caller walks
itself, and the batch buffers kept between scans.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from pdimport.model import Header
from pdimport.problems import Problem
from pdimport.scan.numba_buffers import _kernels, _Walked
from pdimport.scan.numba_columns import _Tables

#: Files per numba call (the pipeline hands over up to 256 at a time).
BATCH = 256

#: Files in the first batch of a scan (see NumbaScanner.scan).
FIRST_BATCH = 16


def _batch_bounds(n: int) -> list[tuple[int, int]]:
    """(start, end) of each batch of ``n`` files: a small first batch, then
    :data:`BATCH` at a time."""
    out = []
    start = 0
    while start < n:
        end = min(n, start + (FIRST_BATCH if start == 0 and n > BATCH else BATCH))
        out.append((start, end))
        start = end
    return out


#: O_NONBLOCK: a FIFO where a file was expected must not hang the scan;
#: O_NOFOLLOW: a file of a medium read in place that became a link since it
#: was listed is not followed (spooled files are never links).
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | os.O_NOFOLLOW


class _Batch:
    """One batch of a scan: its files, buffer and results, and the thread
    that reads and walks it while the previous batch is decoded."""

    def __init__(self, w: _Walked, paths: list[Path], encodings: list[str]) -> None:
        self.w = w
        self.paths = paths
        self.encodings = encodings
        self.results: list[Header | Problem | None] = [None] * len(paths)
        self.names = np.zeros(1, dtype=np.uint8)
        self.starts = np.zeros(0, dtype=np.int64)
        self.rows = np.zeros(0, dtype=np.int64)
        self.started = threading.Event()
        self.done = threading.Event()
        self.per_file = 0.0
        self._error: BaseException | None = None

    def set_files(self, rows: list[int], modes: list[int]) -> None:
        """Name the files of ``rows`` for the C reader (NUL-terminated, one
        buffer) and give each its walk mode; other rows are not read."""
        names = [os.fsencode(self.paths[i]) for i in rows]
        self.starts = np.zeros(len(self.paths), dtype=np.int64)
        at = 0
        for i, name in zip(rows, names):
            if b"\0" in name:  # the C call would open a shorter name
                raise ValueError(f"NUL in file name {name!r}")
            self.starts[i] = at
            at += len(name) + 1
        self.names = np.frombuffer(b"\0".join(names) + b"\0", dtype=np.uint8)
        self.rows = np.array(rows, dtype=np.int64)
        self.w.modes[self.rows] = modes

    def read_walk(self, max_nesting: int, rows: np.ndarray | None = None) -> float:
        """Read and walk ``rows`` (default: all) in one numba call without
        the GIL; returns the seconds it took per file. Two threads may walk
        disjoint rows of one batch at once: every output is per row."""
        kernels = _kernels()
        w = self.w
        w.invalidate(self.rows)
        rows = self.rows if rows is None else rows
        meta, ds, keycols, idcols, vrt, dtags, dcls, m1, m2, mcls = _Tables.get()
        start = time.perf_counter()
        kernels.read_walk_batch(
            self.names,
            self.starts,
            _OPEN_FLAGS,
            w.buf,
            w.lens,
            w.sizes,
            w.modes,
            rows,
            max_nesting,
            meta,
            ds,
            keycols,
            idcols,
            w.off,
            w.len,
            w.vr,
            w.info,
            w.nonplain,
            w.key,
            vrt,
            dtags,
            dcls,
            m1,
            m2,
            mcls,
        )
        return (time.perf_counter() - start) / max(len(rows), 1)

    def start(self, max_nesting: int, rows: np.ndarray) -> None:
        """:meth:`read_walk` of ``rows`` in a thread of its own; returns once
        that thread holds no GIL, so the caller gets the GIL straight back
        (a thread that waits for the GIL may otherwise wait a whole switch
        interval, 5 ms). A thread per batch measured faster than one
        long-lived reader fed through a queue (MR corpus: 4.5 vs 6.5 ms)."""

        def run() -> None:
            self.started.set()
            try:
                self.per_file = self.read_walk(max_nesting, rows)
            except BaseException as exc:  # noqa: BLE001 - re-raised by join() in the caller
                self._error = exc
            finally:
                self.done.set()

        threading.Thread(target=run, name="pdimport-scan-read", daemon=True).start()
        self.started.wait()

    def join(self) -> None:
        """Wait for the reader thread to finish its rows of this batch."""
        self.done.wait()
        if self._error is not None:
            raise self._error


class _Split:
    """How much of the next batch the calling thread reads and walks itself
    once it has decoded the current one, so that neither thread idles:
    with ``r`` the per-file read-and-walk time and ``d`` the per-file
    decode time, the caller takes ``(r - d) / 2r`` of the files (none when
    decoding is the slower part). Both times are measured as the scan goes."""

    #: decode/read before anything is measured: about what the CT and MR
    #: corpora of bench/bench_scan.py show (decode 2-3 µs, read 6-9 µs a file)
    PRIOR = 0.3
    #: batches smaller than this do not teach the decode time (the first
    #: one of a series also builds its template: ~1 ms)
    LEARN_FROM = 64

    def __init__(self) -> None:
        self.read = 0.0
        self.decode = 0.0

    def cut(self, n: int, decoding: int) -> int:
        """Rows ``[:cut]`` of the next batch (``n`` files) go to the reader
        thread, the rest to the caller, who first decodes ``decoding`` files
        (a small first batch: mostly template building, time enough for
        the reader to take the whole next batch)."""
        if decoding < self.LEARN_FROM:
            return n
        ratio = self.decode / self.read if self.read > 0.0 and self.decode > 0.0 else self.PRIOR
        share = min(0.5, max(0.0, (1.0 - ratio) / 2))
        return n - int(share * n)

    def saw(self, read: float, decode: float, files: int) -> None:
        if read > 0.0:
            self.read = read if self.read == 0.0 else 0.5 * (self.read + read)
        if files >= self.LEARN_FROM:
            self.decode = decode if self.decode == 0.0 else 0.5 * (self.decode + decode)


class _Pool:
    """Batch buffers kept for the next scan in this process (the daemon's
    next disc, the next chunk of a prescan): a 256-row buffer is 2-16 MiB,
    and touching fresh pages costs about as much as reading the MR corpus'
    headers (the MR corpus under pytest: 5.6 vs 3.7 ms). At most :data:`KEEP`
    are kept; a buffer is only ever in one scan at a time."""

    KEEP = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[_Walked] = []

    def take(self, width: int) -> _Walked:
        with self._lock:
            for k, w in enumerate(self._free):
                if w.buf.shape[1] == width:
                    return self._free.pop(k)
        return _Walked(BATCH, width)

    def give(self, w: _Walked) -> None:
        with self._lock:
            self._free.append(w)
            del self._free[: -self.KEEP]


_POOL = _Pool()
