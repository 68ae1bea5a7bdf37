"""The fast header scanner: batched prefix reads, one numba walk per batch,
values decoded in Python with pydicom's own converters, memoised per series.

It plugs in like pydicom's pixel decoders (STYLE.md "Fast paths as
plugins"): :class:`NumbaScanner` has the :class:`~pdimport.model.Scanner`
interface, :meth:`~NumbaScanner.is_available`, and must match
:mod:`pdimport.scan.reference` and, file by file, the reference
:class:`~pdimport.scan.pydicom_scanner.PydicomScanner` (the oracle).

How one batch goes (performance notes §1):

1. read the first ``prefix`` bytes (8 KiB) of every file into one
   preallocated 2-D ``uint8`` buffer (no memmap, no per-file numpy objects);
2. one call of :func:`pdimport.scan._nbbatch.read_walk_batch` (no GIL) reads and walks every
   element header of every file (PS3.5 §7.1, §7.5), validating what
   :mod:`~pdimport.scan.walker` validates; files whose headers lie beyond the
   prefix are read again with a longer prefix and walked again;
3. the decoded values of everything that is constant within a series are
   looked up by an exact byte key; only the per-instance UIDs and numbers
   are decoded per file (fast paths for plain UI/IS values, proven equal to
   pydicom by tests/test_scan_numba.py);
4. a deflated body (PS3.5 §A.5) is inflated in Python, bounded, and walked
   again as explicit VR LE;
5. anything the fast path does not model or finds wrong (padding,
   unsorted tags, any structural error, ...) goes to the reference path, which
   then decides the Problem code: a fast result is only ever returned for a
   file the reference path would accept with the same values.

Fallbacks are counted in :attr:`NumbaScanner.fallbacks` (and per reason in
:attr:`NumbaScanner.fallback_reasons`); a Header produced by the fallback
carries ``extra["scan_fallback"]`` = the reason.

This module is the driver and the deflate path; the batches are cut,
pipelined and pooled in :mod:`~pdimport.scan.numba_batch`, their output
arrays live in :mod:`~pdimport.scan.numba_buffers` (columns as
:mod:`~pdimport.scan.numba_columns` lays them out), a walked row becomes a
Header in :mod:`~pdimport.scan.numba_decode`, and the numba kernels are the
``_nb*`` modules (:mod:`~pdimport.scan._nbwalk`).
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pdimport.model import Header
from pdimport.problems import Problem
from pdimport.scan import _nbcodes as nb
from pdimport.scan import walker
from pdimport.scan.numba_batch import _POOL, _Batch, _batch_bounds, _Split
from pdimport.scan.numba_buffers import _kernels, _Walked
from pdimport.scan.numba_columns import _ENCODINGS
from pdimport.scan.numba_decode import SeriesDecoder
from pdimport.scan.pydicom_scanner import PydicomScanner

log = logging.getLogger(__name__)

#: First read per file; most CT/MR headers end well before 8 KiB.
DEFAULT_PREFIX = 8192
#: Longest prefix re-read for a file whose headers go further; beyond it the
#: reference walker (which seeks over values) takes the file.
MAX_PREFIX = 4 << 20
#: Widest row of a batched re-read (bounds a batch to 16 MiB).
GROUP_PREFIX = 64 << 10

_MODES = {name: i for i, name in enumerate(_ENCODINGS)}


class NumbaScanner:
    """Header scanner with a numba fast path and the pydicom path as fallback.

    Parameters
    ----------
    limits : Settings, optional
        Supplies ``limits.max_nesting`` (and, for the fallback,
        ``limits.max_inflate``).
    prefix : int
        Bytes read per file at first (grown on demand).
    """

    name = "numba"

    def __init__(self, limits: Any = None, prefix: int = DEFAULT_PREFIX) -> None:
        self.limits = limits
        self.prefix = int(prefix)
        self.max_nesting = walker._limit(limits, "max_nesting", walker._DEFAULT_NESTING)
        self._reference = PydicomScanner(limits)
        self.decoder = SeriesDecoder()
        #: Files handed to the reference path, in total and by reason.
        self.fallbacks = 0
        self.fallback_reasons: Counter[str] = Counter()

    @property
    def fast(self) -> int:
        """Files answered by the fast path."""
        return self.decoder.fast

    # ------------------------------------------------------------ plugin
    def is_available(self) -> bool:
        """The kernels load (built ahead of time, or numba compiles or loads
        them from its cache) and a probe file reads and walks as valid."""
        import tempfile

        try:
            _kernels()
            probe = _probe_file()
            w = _Walked(1, len(probe))
            with tempfile.NamedTemporaryFile(prefix="pdimport-probe-") as fp:
                fp.write(probe)
                fp.flush()
                b = _Batch(w, [Path(fp.name)], ["part10"])
                b.set_files([0], [_MODES["part10"]])
                b.read_walk(self.max_nesting)
            return bool(w.info[0, 0] == 0 and w.lens[0] == len(probe))
        except Exception as exc:  # noqa: BLE001 - any failure means "use another backend"
            log.info("numba scanner unavailable: %r", exc)
            return False

    # ------------------------------------------------------------ scanning
    def scan(self, paths: list[Path], encodings: list[str]) -> list[Header | Problem]:
        """One :class:`Header` or :class:`Problem` per path, in order.

        Batches are pipelined: while Python decodes the values of batch
        ``k``, a thread reads and walks batch ``k + 1`` in one numba call
        that holds no GIL; the caller then reads and walks the tail of
        batch ``k + 1`` itself, as much as keeps both threads busy
        (:class:`_Split`). The first batch is small, so that a series with
        long headers (MR) teaches the prefix width before most files are
        read with it.
        """
        if len(paths) != len(encodings):
            raise ValueError("paths and encodings differ in length")
        bounds = _batch_bounds(len(paths))
        if not bounds:
            return []
        slots: list[_Walked | None] = [None, None]  # one decoded, one being read
        try:
            return self._scan(paths, encodings, bounds, slots)
        finally:
            for w in slots:
                if w is not None:
                    _POOL.give(w)

    def _scan(
        self,
        paths: list[Path],
        encodings: list[str],
        bounds: list[tuple[int, int]],
        slots: list[_Walked | None],
    ) -> list[Header | Problem]:
        out: list[Header | Problem] = []
        split = _Split()
        cur = self._prepare(slots, 0, paths, encodings, *bounds[0])
        cur.read_walk(self.max_nesting)
        for k in range(len(bounds)):
            self._learn(cur)
            nxt = None
            if k + 1 < len(bounds):
                nxt = self._prepare(slots, (k + 1) % 2, paths, encodings, *bounds[k + 1])
                cut = split.cut(len(nxt.rows), len(cur.rows))
                nxt.start(self.max_nesting, nxt.rows[:cut])
            try:
                start = time.perf_counter()
                out.extend(self._finish(cur))
                decode = (time.perf_counter() - start) / max(len(cur.rows), 1)
                if nxt is not None and cut < len(nxt.rows):
                    nxt.read_walk(self.max_nesting, nxt.rows[cut:])
            finally:
                # never leave a reader writing into buffers the next scan reuses
                if nxt is not None:
                    nxt.join()
            if nxt is not None:
                split.saw(nxt.per_file, decode, len(cur.rows))
                cur = nxt
        return out

    def scan_bytes(
        self, data: bytes, encoding: str = "part10"
    ) -> tuple[Header | Problem | None, str]:
        """Walk and decode one file held in memory (tests, fuzzing).

        Returns ``(result, "")`` from the fast path, or ``(None, reason)``
        when the file would go to the reference path.
        """
        n = len(data)
        w = _Walked(1, max(n, 1))
        if n:
            w.buf[0, :n] = np.frombuffer(data, dtype=np.uint8)
        w.lens[0] = w.sizes[0] = n
        w.modes[0] = _MODES.get(encoding, -1)
        if w.modes[0] < 0:
            return None, "encoding"
        w.run(np.zeros(1, dtype=np.int64), self.max_nesting)
        status = int(w.info[0, 0])
        if status != 0:
            reason = self._reason(w, 0)
            if reason != "deflate":
                return None, reason
            res = self._scan_inflated(io.BytesIO(data), int(w.modes[0]), int(w.info[0, nb.I_DSOFF]))
        else:
            res = self.decoder.decode_safe(w, 0)
        if isinstance(res, str):
            return None, res
        return res, ""

    def _prepare(
        self,
        slots: list[_Walked | None],
        slot: int,
        paths: list[Path],
        encodings: list[str],
        start: int,
        end: int,
    ) -> _Batch:
        """A batch ready to read: its buffer (at the current prefix width),
        the NUL-terminated file names and walk modes."""
        w = slots[slot]
        if w is None or w.buf.shape[1] != self.prefix:
            if w is not None:
                _POOL.give(w)
            w = slots[slot] = _POOL.take(self.prefix)
        b = _Batch(w, paths[start:end], encodings[start:end])
        rows: list[int] = []
        modes: list[int] = []
        for i, (path, enc) in enumerate(zip(b.paths, b.encodings)):
            mode = _MODES.get(enc, -1)
            if mode < 0:
                b.results[i] = self._fallback(path, enc, "encoding")
            elif "\0" in os.fspath(path):  # the reference path words it
                b.results[i] = self._fallback(path, enc, "read")
            else:
                rows.append(i)
                modes.append(mode)
        b.set_files(rows, modes)
        return b

    def _learn(self, b: _Batch) -> None:
        """A batch mostly of long headers (MR CSA blobs): read more at once
        from the next batch on instead of reading most files twice."""
        info = b.w.info
        need = [
            int(info[i, nb.I_NEED]) for i in b.rows.tolist() if info[i, nb.I_STATUS] == nb.NEED_MORE
        ]
        if len(need) * 4 > len(b.rows):
            self.prefix = min(GROUP_PREFIX, max(self.prefix, 1 << (max(need) - 1).bit_length()))

    def _finish(self, b: _Batch) -> list[Header | Problem]:
        """Decode a walked batch; re-read the files that need more."""
        w, paths, encodings, results = b.w, b.paths, b.encodings, b.results
        status = w.info[:, nb.I_STATUS].tolist()
        grow: list[int] = []
        for i in b.rows.tolist():
            st = status[i]
            if st == nb.OK:
                res = self.decoder.decode_safe(w, i)
                results[i] = (
                    self._fallback(paths[i], encodings[i], res) if isinstance(res, str) else res
                )
            elif st == nb.NEED_MORE:
                grow.append(i)
            elif st == nb.READ_FAILED:
                results[i] = self._fallback(paths[i], encodings[i], "read")
            else:
                self._walk_failed(w, i, paths, encodings, results)
        if grow:
            self._regrow(w, grow, paths, encodings, results)
        return results  # type: ignore[return-value]

    def _regrow(
        self,
        w: _Walked,
        grow: list[int],
        paths: list[Path],
        encodings: list[str],
        results: list[Header | Problem | None],
    ) -> None:
        """Files whose headers lie beyond the prefix: read them again, first
        together with up to :data:`GROUP_PREFIX` bytes each, then one by one
        up to :data:`MAX_PREFIX` (whole file when smaller); the reference
        walker, which seeks over values, takes anything longer."""
        # (file, bytes needed, walk mode, file size): the size is known from the first read
        pending = [
            (i, min(int(w.info[i, nb.I_NEED]), int(w.sizes[i])), int(w.modes[i]), int(w.sizes[i]))
            for i in grow
        ]
        group = [p for p in pending if p[1] <= GROUP_PREFIX]
        single = [p for p in pending if p[1] > GROUP_PREFIX]
        if group:
            width = min(GROUP_PREFIX, max(4 * self.prefix, 2 * max(p[1] for p in group)))
            single += self._rewalk(group, width, paths, encodings, results)
        for p in single:
            width = min(p[3], MAX_PREFIX)
            if p[1] > width:
                results[p[0]] = self._fallback(paths[p[0]], encodings[p[0]], "large_header")
                continue
            for q in self._rewalk([p], width, paths, encodings, results):
                results[q[0]] = self._fallback(paths[q[0]], encodings[q[0]], "large_header")

    def _rewalk(
        self,
        files: list[tuple[int, int, int, int]],
        width: int,
        paths: list[Path],
        encodings: list[str],
        results: list[Header | Problem | None],
    ) -> list[tuple[int, int, int, int]]:
        """Read ``width`` bytes of each file and walk them (the batch reader,
        one call); returns the files that need still more."""
        g = _Walked(len(files), max(width, 1))
        b = _Batch(g, [paths[f[0]] for f in files], [encodings[f[0]] for f in files])
        b.set_files(list(range(len(files))), [f[2] for f in files])
        b.read_walk(self.max_nesting)
        more = []
        for k, (i, _, mode, _) in enumerate(files):
            status = g.info[k, nb.I_STATUS]
            if status == nb.OK:
                res = self.decoder.decode_safe(g, k)
                results[i] = (
                    self._fallback(paths[i], encodings[i], res) if isinstance(res, str) else res
                )
            elif status == nb.NEED_MORE and g.lens[k] < g.sizes[k]:
                more.append(
                    (i, min(int(g.info[k, nb.I_NEED]), int(g.sizes[k])), mode, int(g.sizes[k]))
                )
            elif status == nb.READ_FAILED:
                results[i] = self._fallback(paths[i], encodings[i], "read")
            else:
                self._walk_failed(g, k, paths, encodings, results, row=i)
        return more

    def _walk_failed(
        self,
        w: _Walked,
        k: int,
        paths: list[Path],
        encodings: list[str],
        results: list[Header | Problem | None],
        row: int | None = None,
    ) -> None:
        """Row ``k`` of ``w`` (file ``row``, default ``k``) ended the walk:
        a deflated body is inflated and walked again, anything else goes to
        the reference path."""
        i = k if row is None else row
        reason = self._reason(w, k)
        if reason == "deflate":
            try:
                with open(paths[i], "rb") as fp:
                    res = self._scan_inflated(fp, int(w.modes[k]), int(w.info[k, nb.I_DSOFF]))
            except OSError:
                res = "read"
            results[i] = (
                self._fallback(paths[i], encodings[i], res) if isinstance(res, str) else res
            )
        else:
            results[i] = self._fallback(paths[i], encodings[i], reason)

    def _scan_inflated(self, fp: BinaryIO, mode: int, ds_offset: int) -> Header | Problem | str:
        """A Deflated Explicit VR LE file (PS3.5 §A.5): File Meta plus the
        inflated body in one buffer, walked as explicit VR LE. Bodies that
        do not inflate cleanly within :data:`MAX_PREFIX` (or
        ``limits.max_inflate``) go to the reference path, which words the
        problem (``deflate_bomb``, ``truncated``, ``ts_mismatch``)."""
        cap = min(MAX_PREFIX, walker._limit(self.limits, "max_inflate", MAX_PREFIX))
        data = _inflate(fp, ds_offset, cap)
        if data is None:
            return "deflate"
        g = _Walked(1, max(len(data), 1))
        g.buf[0, : len(data)] = np.frombuffer(data, dtype=np.uint8)
        g.lens[0] = g.sizes[0] = len(data)
        g.modes[0] = mode + nb.INFLATED
        g.run(np.zeros(1, dtype=np.int64), self.max_nesting)
        if g.info[0, nb.I_STATUS] != nb.OK:
            return "deflate" if g.info[0, nb.I_STATUS] == nb.NEED_MORE else self._reason(g, 0)
        res = self.decoder.decode_safe(g, 0)
        if isinstance(res, Header):
            # offsets in an inflated stream are not file offsets (as the
            # reference path reports it: no Pixel Data position)
            res.pixel_data_offset = -1
        return res

    @staticmethod
    def _reason(w: _Walked, i: int) -> str:
        if w.info[i, nb.I_STATUS] == nb.NEED_MORE:
            return "large_header"
        r = int(w.info[i, nb.I_REASON])
        return nb.REASONS[r] if 0 <= r < len(nb.REASONS) else "unknown"

    def _fallback(self, path: Path, encoding: str, reason: str) -> Header | Problem:
        self.fallbacks += 1
        self.fallback_reasons[reason] += 1
        res = self._reference.scan_one(path, encoding)
        if isinstance(res, Header):
            res.extra["scan_fallback"] = reason
        return res


def _inflate(fp: BinaryIO, offset: int, cap: int) -> bytes | None:
    """The first ``offset`` bytes of ``fp`` followed by the raw-deflate
    (RFC 1951) stream that starts there, inflated; None when the stream is
    corrupt, ends early, has bytes after its end (but the one pad byte) or
    inflates to more than ``cap`` bytes (the reference path then decides)."""
    import zlib

    try:
        fp.seek(0)
        head = fp.read(offset)
        if len(head) != offset:
            return None
        d = zlib.decompressobj(-zlib.MAX_WBITS)
        out = [head]
        room = cap
        while not d.eof:
            chunk = d.unconsumed_tail or fp.read(1 << 16)
            if not chunk:
                return None
            piece = d.decompress(chunk, room + 1)
            room -= len(piece)
            if room < 0:
                return None
            out.append(piece)
        # PS3.5 §A.5: one NUL byte pads a stream of odd length
        rest = d.unused_data + fp.read(2)
        if rest not in (b"", b"\0"):
            return None
    except (OSError, zlib.error):
        return None
    return b"".join(out)


def _probe_file() -> bytes:
    """A minimal valid Part 10 file used to compile/check the walker."""
    import struct

    def el(tag: int, vr: bytes, value: bytes) -> bytes:
        return (
            struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr + struct.pack("<H", len(value)) + value
        )

    ts = b"1.2.840.10008.1.2.1\0"
    meta_body = el(0x00020010, b"UI", ts)
    meta = el(0x00020000, b"UL", struct.pack("<I", len(meta_body))) + meta_body
    body = el(0x00080016, b"UI", b"1.2.3\0") + el(0x00080018, b"UI", b"1.2.3.4\0")
    return b"\0" * 128 + b"DICM" + meta + body


__all__ = ["NumbaScanner"]
