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
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pdimport.model import Header
from pdimport.problems import FileProblem, Problem
from pdimport.scan import _nbcodes as nb
from pdimport.scan import walker
from pdimport.scan.encoding import META_TAGS, uid_ok
from pdimport.scan.pydicom_scanner import (
    _CHARSET_WARNINGS,
    HEADER_KEYWORDS,
    PydicomScanner,
    _check_identity,
    _matches,
    _text_fits,
    element_text,
)
from pdimport.scan.syntax import RAW_TRANSFER_SYNTAX, _clean_text
from pdimport.scan.walker import GEOMETRY_TAGS, WalkResult

log = logging.getLogger(__name__)

#: First read per file; most CT/MR headers end well before 8 KiB.
DEFAULT_PREFIX = 8192
#: Files per numba call (the pipeline hands over up to 256 at a time).
BATCH = 256
#: Longest prefix re-read for a file whose headers go further; beyond it the
#: reference walker (which seeks over values) takes the file.
MAX_PREFIX = 4 << 20
#: Widest row of a batched re-read (bounds a batch to 16 MiB).
GROUP_PREFIX = 64 << 10
#: Width of the per-file series key (see _nbkey.make_key).
KEY_WIDTH = 2048
_MEMO_MAX = 1 << 16
_TEMPLATE_MAX = 4096

_ENCODINGS = ("part10", "implicit_le", "explicit_le", "explicit_be")
_MODES = {name: i for i, name in enumerate(_ENCODINGS)}
_RAW_TS = {
    1: RAW_TRANSFER_SYNTAX["implicit_le"],
    2: RAW_TRANSFER_SYNTAX["explicit_le"],
    3: RAW_TRANSFER_SYNTAX["explicit_be"],
}

# -------------------------------------------------------------- wanted tags
#: Header field -> tag: what model.Header needs and the policies read
#: (pydicom_scanner.HEADER_KEYWORDS), plus the SOP UIDs.
_FIELD_TAGS: dict[str, int] = {}


def _tag_of(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    return int(tag)


for _field, _kw in {
    **HEADER_KEYWORDS,
    "sop_class_uid": "SOPClassUID",
    "sop_instance_uid": "SOPInstanceUID",
}.items():
    _FIELD_TAGS[_field] = _tag_of(_kw)

META_LIST = sorted(META_TAGS)  # File Meta tags (PS3.10 §7.1)
DS_LIST = sorted(set(_FIELD_TAGS.values()) | set(GEOMETRY_TAGS))  # dataset tags
_NM = len(META_LIST)
_COL = {tag: _NM + k for k, tag in enumerate(DS_LIST)}  # dataset tag -> column
_META_COL = {tag: k for k, tag in enumerate(META_LIST)}
_KEYWORD: dict[int, str] = {}  # dataset tag -> keyword
for _field, _tag in _FIELD_TAGS.items():
    _KEYWORD[_tag] = {
        **HEADER_KEYWORDS,
        "sop_class_uid": "SOPClassUID",
        "sop_instance_uid": "SOPInstanceUID",
    }[_field]
for _tag, _kw in GEOMETRY_TAGS.items():
    _KEYWORD.setdefault(_tag, _kw)

_SOP_INSTANCE = _FIELD_TAGS["sop_instance_uid"]
_INSTANCE_NUMBER = _FIELD_TAGS["instance_number"]
_MS_INSTANCE = 0x00020003
#: Per-instance columns, decoded per file; every other column is in the key.
_PER_INSTANCE = {_COL[_SOP_INSTANCE], _COL[_INSTANCE_NUMBER], _META_COL[_MS_INSTANCE]}
_KEY_COLS = [c for c in range(_NM + len(DS_LIST)) if c not in _PER_INSTANCE]
_TEMPLATE_FIELDS = [f for f in _FIELD_TAGS if f not in ("sop_instance_uid", "instance_number")]

#: Plain values whose pydicom conversion is a strip (values.convert_UI /
#: convert_IS_string); tests/test_scan_numba.py checks them against pydicom.
_UI_PLAIN = re.compile(rb"[0-9.]{1,64}[\0 ]*\Z")
_IS_PLAIN = re.compile(rb"[0-9]{1,9}[\0 ]*\Z")
#: encoding.uid_ok for a str already known to be at most 64 characters.
_UID_SYNTAX = re.compile(r"[0-9]+(?:\.[0-9]+)*\Z")
_VR_UI = (ord("U") << 8) | ord("I")
_VR_IS = (ord("I") << 8) | ord("S")


_KERNELS: Any = None


def _kernels() -> Any:
    """The numba kernels (:mod:`~pdimport.scan._nbbatch`), imported on first
    use (importing numba costs ~0.3 s)."""
    global _KERNELS
    if _KERNELS is None:
        from pdimport.scan import _nbbatch

        _KERNELS = _nbbatch
    return _KERNELS


def _vr_str(code: int) -> str | None:
    return None if code == 0 else chr(code >> 8) + chr(code & 0xFF)


class _Tables:
    """The lookup tables the walker needs, built once per process."""

    _lock = threading.Lock()
    _value: tuple[Any, ...] | None = None

    @classmethod
    def get(cls) -> tuple[Any, ...]:
        with cls._lock:
            if cls._value is None:
                cls._value = (
                    np.array(META_LIST, dtype=np.int64),
                    np.array(DS_LIST, dtype=np.int64),
                    np.array(_KEY_COLS, dtype=np.int64),
                    np.array(
                        [_COL[_SOP_INSTANCE], _COL[_INSTANCE_NUMBER], _META_COL[_MS_INSTANCE]],
                        dtype=np.int64,
                    ),
                    nb.vr_table(),
                    *nb.dictionary_tables(),
                )
            return cls._value


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


#: O_NONBLOCK: a FIFO where a file was expected must not hang the scan.
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


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


class _Walked:
    """The numba outputs for a set of files (one batch or one re-read)."""

    def __init__(self, n: int, width: int) -> None:
        ncol = _NM + len(DS_LIST)
        self.buf = np.empty((n, width), dtype=np.uint8)
        self.lens = np.zeros(n, dtype=np.int64)
        self.sizes = np.zeros(n, dtype=np.int64)
        self.modes = np.zeros(n, dtype=np.int64)
        self.off = np.empty((n, ncol), dtype=np.int64)
        self.len = np.empty((n, ncol), dtype=np.int64)
        self.vr = np.empty((n, ncol), dtype=np.int64)
        self.info = np.zeros((n, nb.N_INFO), dtype=np.int64)
        self.nonplain = np.zeros((n, nb.MAX_NONPLAIN, 4), dtype=np.int64)
        self.key = np.zeros((n, KEY_WIDTH), dtype=np.uint8)
        self.width = width

        self._view: _View | None = None
        self.walked = np.zeros(0, dtype=np.int64)

    def view(self) -> _View:
        """Python-side snapshot of the last walk (bytes and the few columns
        decoded per file), made once per walk: numpy scalar access per
        file would cost more than the decoding itself."""
        if self._view is None:
            self._view = _View(self)
        return self._view

    def invalidate(self, rows: np.ndarray) -> None:
        """Forget the view of the last walk: ``rows`` are about to change."""
        self._view = None
        self.walked = rows

    def run(self, rows: np.ndarray, max_nesting: int) -> None:
        kernels = _kernels()
        self.invalidate(rows)

        meta, ds, keycols, idcols, vrt, dtags, dcls, m1, m2, mcls = _Tables.get()
        kernels.walk_batch(
            self.buf,
            self.lens,
            self.sizes,
            self.modes,
            rows,
            max_nesting,
            meta,
            ds,
            keycols,
            idcols,
            self.off,
            self.len,
            self.vr,
            self.info,
            self.nonplain,
            self.key,
            vrt,
            dtags,
            dcls,
            m1,
            m2,
            mcls,
        )


class _View:
    """See :meth:`_Walked.view`."""

    __slots__ = (
        "data",
        "dsoff",
        "inst",
        "keys",
        "klen",
        "kwidth",
        "numlen",
        "pdoff",
        "prev",
        "same",
        "soplen",
        "width",
    )

    def __init__(self, w: _Walked) -> None:
        # rows past the last one walked are not looked at (a prescan of a
        # few files must not pay for a 256-row buffer)
        n = int(w.walked.max()) + 1 if len(w.walked) else 0
        off, lens, vrs, info = w.off[:n], w.len[:n], w.vr[:n], w.info[:n]
        cols = [_COL[_SOP_INSTANCE], _COL[_INSTANCE_NUMBER], _META_COL[_MS_INSTANCE]]
        stacked = np.stack(
            [
                off[:, cols[0]],
                lens[:, cols[0]],
                vrs[:, cols[0]],
                off[:, cols[1]],
                lens[:, cols[1]],
                vrs[:, cols[1]],
                off[:, cols[2]],
                lens[:, cols[2]],
            ],
            axis=1,
        )
        # copy only the bytes up to the last per-instance value, not the
        # rows, judged by the rows this walk found good (the others hold
        # stale or no values)
        good = w.walked[info[w.walked, nb.I_STATUS] == nb.OK]
        ends = np.maximum.reduce(
            [
                stacked[good, 0] + stacked[good, 1],
                stacked[good, 3] + stacked[good, 4],
                stacked[good, 6] + stacked[good, 7],
            ]
        )
        self.width = min(max(int(ends.max(initial=1)), 1), w.buf.shape[1])
        self.data = w.buf[:n, : self.width].tobytes()
        klen = info[:, nb.I_KLEN]
        self.kwidth = min(max(int(klen[good].max(initial=1)), 1), KEY_WIDTH)
        self.keys = w.key[:n, : self.kwidth].tobytes()
        self.klen = klen.tolist()
        self.dsoff = info[:, nb.I_DSOFF].tolist()
        self.pdoff = info[:, nb.I_PDOFF].tolist()
        self.inst = stacked.tolist()
        self.same = info[:, nb.I_SAMEKEY].tolist()
        self.soplen = info[:, nb.I_SOPLEN].tolist()
        self.numlen = info[:, nb.I_NUMLEN].tolist()
        #: the template of the row decoded last (rows are decoded in walk order)
        self.prev: _Template | None = None


class _Template:
    """Decoded values shared by the files of one series key."""

    __slots__ = (
        "base",
        "charset",
        "fallback",
        "ids_ok",
        "implicit",
        "little",
        "meta",
        "problem",
        "sop_class",
        "suspect",
        "values",
    )

    def __init__(self) -> None:
        self.base: dict[str, Any] = {}
        self.problem: Problem | None = None
        self.fallback = ""
        self.sop_class = ""
        self.values: dict[str, str] = {}
        self.meta: dict[str, str] = {}
        self.suspect = False
        self.charset: tuple[str | None, bytes] | None = None
        self.implicit = False
        self.little = True
        self.ids_ok = False  # class/study/series valid, class present, meta class agrees


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
        self._memo: dict[tuple[Any, ...], tuple[str, bool, str]] = {}
        self._templates: dict[bytes, _Template] = {}
        self._encodings_memo: dict[tuple[Any, ...], Any] = {}
        #: Files handed to the reference path, in total and by reason.
        self.fallbacks = 0
        self.fallback_reasons: Counter[str] = Counter()
        #: Files answered by the fast path.
        self.fast = 0

    # ------------------------------------------------------------ plugin
    def is_available(self) -> bool:
        """numba imports, the walker and the reader compile (or load from
        the cache) and a probe file reads and walks as valid."""
        import tempfile

        try:
            from pdimport.scan import _nbbatch  # noqa: F401

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
            res = self._decode_safe(w, 0)
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
                res = self._decode_safe(w, i)
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
                res = self._decode_safe(g, k)
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
        res = self._decode_safe(g, 0)
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

    # ------------------------------------------------------------ values
    def _decode_safe(self, w: _Walked, i: int) -> Header | Problem | str:
        """:meth:`_decode`, with a bug of ours turned into a fallback."""
        try:
            return self._decode(w, i)
        except Exception:
            log.exception("numba scanner: decoding failed; the reference path takes the file")
            return "internal"

    def _decode(self, w: _Walked, i: int) -> Header | Problem | str:
        """Header or Problem for walked file ``i``; a str (the reason) when
        the reference path must decide. The per-file work of the fast path:
        one memo lookup, three small values, the identity check."""
        v = w.view()
        klen = v.klen[i]
        tpl = v.prev if v.same[i] else None  # the walker compared the keys
        if tpl is None and klen >= 0:
            key = v.keys[i * v.kwidth : i * v.kwidth + klen]
            tpl = self._templates.get(key)
        if tpl is None:
            tpl = self._template(w, i)
            if klen >= 0:
                if len(self._templates) >= _TEMPLATE_MAX:
                    self._templates.clear()
                self._templates[key] = tpl
        v.prev = tpl
        if tpl.fallback:
            return tpl.fallback
        base = i * v.width
        sop_off, sop_len, sop_vr, num_off, num_len, num_vr, ms_off, ms_len = v.inst[i]
        soplen, numlen = v.soplen[i], v.numlen[i]
        if soplen > 0 and numlen != -1 and tpl.ids_ok:
            # both values proven plain by the walker (_nbkey.plain_ids)
            if tpl.problem is not None:
                return tpl.problem
            sop = v.data[base + sop_off : base + sop_off + soplen].decode("ascii")
            number = (
                v.data[base + num_off : base + num_off + numlen].decode("ascii")
                if numlen > 0
                else ""
            )
            return self._header(tpl, v, i, sop, number, tpl.suspect)
        sop_raw = v.data[base + sop_off : base + sop_off + sop_len] if sop_off >= 0 else None
        num_raw = v.data[base + num_off : base + num_off + num_len] if num_off >= 0 else None
        sop, warned, failed = self._field(_SOP_INSTANCE, sop_vr, sop_raw, tpl)
        suspect = tpl.suspect or warned
        number, warned, exc = self._field(_INSTANCE_NUMBER, num_vr, num_raw, tpl)
        suspect = suspect or warned
        if tpl.problem is not None:
            return tpl.problem
        if failed or exc:
            return Problem("unparsable", "", failed or exc)
        ms_sop = ""
        if ms_off >= 0:
            ms_sop = _clean_text(v.data[base + ms_off : base + ms_off + ms_len])
        # the common case proven valid without encoding.uid_ok per UID; any
        # doubt runs the reference check for its exact Problem
        if not (
            tpl.ids_ok
            and len(sop) <= 64
            and _UID_SYNTAX.match(sop)
            and (ms_off < 0 or ms_sop == sop)
        ):
            meta = tpl.meta
            if ms_off >= 0:
                meta = {**meta, "MediaStorageSOPInstanceUID": ms_sop}
            try:
                _check_identity(_MetaOnly(meta), tpl.sop_class, sop, tpl.values)  # type: ignore[arg-type]  # reads .meta only
            except FileProblem as exc_:
                return Problem(exc_.code, "", exc_.detail)
        return self._header(tpl, v, i, sop, number, suspect)

    def _header(
        self, tpl: _Template, v: _View, i: int, sop: str, number: str, suspect: bool
    ) -> Header:
        d = tpl.base.copy()
        d["sop_instance_uid"] = sop
        d["instance_number"] = number
        d["dataset_offset"] = v.dsoff[i]
        d["pixel_data_offset"] = v.pdoff[i]
        d["extra"] = d["extra"].copy()
        d["warnings"] = d["warnings"].copy()
        if suspect and "charset_suspect" not in d["warnings"]:
            d["warnings"].append("charset_suspect")
        header = Header.__new__(Header)
        header.__dict__ = d
        self.fast += 1
        return header

    def _field(self, tag: int, vr: int, raw: bytes | None, tpl: _Template) -> tuple[str, bool, str]:
        """(text, charset warning, exception text) of one top-level value,
        exactly as ``pydicom_scanner.element_text`` gives it."""
        if raw is None:
            return "", False, ""
        if vr in (0, _VR_UI) and tag in (_SOP_INSTANCE, 0x00080016, 0x0020000D, 0x0020000E):
            if _UI_PLAIN.match(raw):
                return raw.rstrip(b"\0 ").decode("ascii"), False, ""
        elif vr in (0, _VR_IS) and tag == _INSTANCE_NUMBER and _IS_PLAIN.match(raw):
            return raw.rstrip(b"\0 ").decode("ascii"), False, ""
        mkey = (tag, vr, tpl.implicit, tpl.little, tpl.charset, raw)
        hit = self._memo.get(mkey)
        if hit is None:
            hit = self._decode_slow(tag, vr, raw, tpl)
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[mkey] = hit
        return hit

    def _encodings(self, tpl: _Template) -> Any:
        """The dataset's character encodings as pydicom's reader computes
        them (filereader.read_dataset), warnings not counted there."""
        key = (tpl.charset, tpl.implicit, tpl.little)
        if key not in self._encodings_memo:
            from pydicom.charset import convert_encodings, default_encoding
            from pydicom.dataelem import RawDataElement, convert_raw_data_element
            from pydicom.tag import BaseTag

            if tpl.charset is None:
                enc: Any = default_encoding
            else:
                vr, value = tpl.charset
                raw = RawDataElement(
                    BaseTag(0x00080005), vr, len(value), value, 0, tpl.implicit, tpl.little
                )
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    enc = convert_encodings(convert_raw_data_element(raw).value)
            self._encodings_memo[key] = enc
        return self._encodings_memo[key]

    def _decode_slow(self, tag: int, vr: int, raw: bytes, tpl: _Template) -> tuple[str, bool, str]:
        """pydicom's conversion of one raw element in a one-element dataset
        carrying the file's encoding: the same code path as dcmread +
        ``element_text``, so the same text and the same warnings."""
        from pydicom.dataelem import RawDataElement
        from pydicom.dataset import Dataset
        from pydicom.tag import BaseTag

        try:
            enc = self._encodings(tpl)
            elem = RawDataElement(
                BaseTag(tag), _vr_str(vr), len(raw), raw, 0, tpl.implicit, tpl.little
            )
            ds = Dataset({BaseTag(tag): elem})
            ds.set_original_encoding(tpl.implicit, tpl.little, enc)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                text = element_text(ds, _KEYWORD[tag])
            return text, any(_matches(w, _CHARSET_WARNINGS) for w in caught), ""
        except Exception as exc:  # noqa: BLE001 - the reference path gives 'unparsable' too
            return "", False, f"{type(exc).__name__}: {exc}"

    def _template(self, w: _Walked, i: int) -> _Template:
        """Everything but the per-instance values, in the order
        ``pydicom_scanner.scan_file`` checks them."""
        tpl = _Template()
        info, off, lens, vrs, buf = w.info[i], w.off[i], w.len[i], w.vr[i], w.buf[i]
        enc_code = int(info[nb.I_ENC])
        tpl.little = int(info[nb.I_TS]) != nb.TS_EXPLICIT_BE
        tpl.implicit = int(info[nb.I_TS]) == nb.TS_IMPLICIT
        meta: dict[str, str] = {}
        for tag, name in META_TAGS.items():
            c = _META_COL[tag]
            if off[c] >= 0 and tag != _MS_INSTANCE:
                meta[name] = _clean_text(_raw(buf, off[c], lens[c]) or b"")
        has_meta = bool(info[nb.I_HASMETA])
        if has_meta:
            ts = meta.get("TransferSyntaxUID", "")
            if not ts or not uid_ok(ts):
                tpl.fallback = "file_meta"  # bad_file_meta: the walker words it
                return tpl
        else:
            ts = _RAW_TS[enc_code]
        tpl.meta = meta
        # --- walker: Pixel Data checks (PS3.5 §8.1.1, §A.4)
        res = WalkResult(
            encoding=_ENCODINGS[enc_code],
            transfer_syntax=ts,
            dataset_offset=int(info[nb.I_DSOFF]),
            meta=dict(meta),
            pixel_data_offset=int(info[nb.I_PDOFF]),
            pixel_data_length=int(info[nb.I_PDLEN]),
            encapsulated=bool(info[nb.I_ENCAPS]),
        )
        if has_meta and off[_META_COL[_MS_INSTANCE]] >= 0:
            res.meta["MediaStorageSOPInstanceUID"] = "x"  # presence only (encapsulated check)
        geometry = _GeometryReader(tpl.little)
        for tag, name in GEOMETRY_TAGS.items():
            c = _COL[tag]
            if off[c] >= 0 and lens[c] <= walker._SMALL_VALUE:
                raw = _raw(buf, off[c], lens[c]) or b""
                # _geometry_value reads only what _GeometryReader carries
                value = walker._Walker._geometry_value(geometry, raw, tag)  # type: ignore[arg-type]
                res.values[name] = value
        try:
            walker._check_pixel_data(res)
        except FileProblem as exc:
            tpl.problem = Problem(exc.code, "", exc.detail)
        # --- charset check (pydicom_scanner.charset_suspect)
        c = _COL[0x00080005]
        cs_raw = _raw(buf, off[c], lens[c])
        tpl.charset = None if cs_raw is None else (_vr_str(int(vrs[c])), cs_raw)
        terms = (
            [t.strip(" \0") for t in cs_raw.decode("ascii", "replace").split("\\")] or [""]
            if cs_raw is not None
            else [""]
        )
        suspect = False
        try:
            if info[nb.I_NPLAIN] > 0 and not _plain_fits(tuple(terms)):
                suspect = True
            for e in range(int(info[nb.I_NNONPLAIN])):
                if suspect:
                    break
                _tag, is_pn, o, n = (int(x) for x in w.nonplain[i, e])
                if not _text_fits(bytes(buf[o : o + n]), terms, bool(is_pn)):
                    suspect = True
        except Exception as exc:  # noqa: BLE001 - the reference path fails the same way
            tpl.problem = tpl.problem or Problem("unparsable", "", f"{type(exc).__name__}: {exc}")
        # --- values (element_text for every field)
        failed = ""
        values: dict[str, str] = {}
        for name in _TEMPLATE_FIELDS:
            tag = _FIELD_TAGS[name]
            c = _COL[tag]
            text, warned, exc_text = self._field(tag, int(vrs[c]), _raw(buf, off[c], lens[c]), tpl)
            values[name] = text
            suspect |= warned
            failed = failed or exc_text
        if failed and tpl.problem is None:
            tpl.problem = Problem("unparsable", "", failed)
        tpl.suspect = suspect
        tpl.sop_class = values.pop("sop_class_uid")
        tpl.values = values
        meta_class = meta.get("MediaStorageSOPClassUID", "")
        tpl.ids_ok = (
            uid_ok(tpl.sop_class)
            and (meta_class == "" or meta_class == tpl.sop_class)
            and all(uid_ok(values[k]) for k in ("study_uid", "series_uid") if values[k])
        )
        extra = {
            k: meta[k]
            for k in ("ImplementationClassUID", "ImplementationVersionName")
            if meta.get(k)
        }
        tpl.base = {
            "encoding": res.encoding,
            "transfer_syntax": ts,
            "sop_class_uid": tpl.sop_class,
            **values,
            "extra": extra,
            "warnings": list(res.warnings),
        }
        return tpl


class _MetaOnly:
    """What ``_check_identity`` reads of a WalkResult."""

    __slots__ = ("meta",)

    def __init__(self, meta: dict[str, str]) -> None:
        self.meta = meta


class _GeometryReader:
    """Stands in for the walker in ``_Walker._geometry_value`` (byte order only)."""

    __slots__ = ("little",)

    def __init__(self, little: bool) -> None:
        self.little = little


_PLAIN_FITS: dict[tuple[str, ...], bool] = {}


def _plain_fits(terms: tuple[str, ...]) -> bool:
    """Whether plain ASCII text (no ESC) fits the declared character set;
    constant per set of terms (pydicom_scanner._text_fits)."""
    hit = _PLAIN_FITS.get(terms)
    if hit is None:
        hit = _PLAIN_FITS[terms] = _text_fits(b"A", list(terms), False) and _text_fits(
            b"A", list(terms), True
        )
    return hit


def _raw(buf: np.ndarray, off: Any, n: Any) -> bytes | None:
    if off < 0:
        return None
    return buf[off : off + n].tobytes()


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
