"""The numba walk's outputs as Python holds them: the output arrays of a
batch (:class:`_Walked`), the per-walk snapshot the decoder reads
(:class:`_View`) and the decoded values shared by a series
(:class:`_Template`), which the snapshot remembers for the next row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pdimport.problems import Problem
from pdimport.scan import _nbcodes as nb
from pdimport.scan.numba_columns import (
    _COL,
    _INSTANCE_NUMBER,
    _META_COL,
    _MS_INSTANCE,
    _NM,
    _SOP_INSTANCE,
    DS_LIST,
    _Tables,
)

#: Width of the per-file series key (see _nbkey.make_key).
KEY_WIDTH = 2048


_KERNELS: Any = None


def _kernels() -> Any:
    """The kernels, on first use: compiled ahead of time when there is a
    build of this code (:mod:`~pdimport.scan.aot`), else numba's
    (:mod:`~pdimport.scan._nbbatch`; importing numba costs ~0.3 s)."""
    global _KERNELS
    if _KERNELS is None:
        from pdimport.scan import aot

        _KERNELS = aot.load()
        if _KERNELS is None:
            from pdimport.scan import _nbbatch

            _KERNELS = _nbbatch
    return _KERNELS


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
