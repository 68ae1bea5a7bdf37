"""The numba entry points the scanner calls, one per batch: walk prefixes
already in a buffer (:func:`walk_batch`), or read them with libc calls and
walk them (:func:`read_walk_batch`), both without the GIL.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

from pdimport.scan._nbcodes import I_KLEN, I_NUMLEN, I_SAMEKEY, I_SOPLEN, I_STATUS, OK, READ_FAILED
from pdimport.scan._nbkey import make_key, plain_ids
from pdimport.scan._nbwalk import walk_one


@njit(cache=True, nogil=True)
def walk_batch(
    buf,
    lens,
    sizes,
    modes,
    rows,
    max_nesting,
    meta_tags,
    ds_tags,
    key_fields,
    id_cols,
    out_off,
    out_len,
    out_vr,
    info,
    nonplain,
    key,
    vrt,
    dtags,
    dcls,
    m1,
    m2,
    mcls,
):
    """Walk the files ``rows`` of a batch (row ``i`` of ``buf`` holds the
    first ``lens[i]`` bytes of a ``sizes[i]``-byte file) without the GIL."""
    cap = 2 * max_nesting + 8
    st_kind = np.zeros(cap, dtype=np.int64)
    st_end = np.zeros(cap, dtype=np.int64)
    st_impl = np.zeros(cap, dtype=np.int64)
    st_depth = np.zeros(cap, dtype=np.int64)
    prev = -1
    for r in range(rows.shape[0]):
        i = rows[r]
        b = buf[i]
        st = walk_one(
            b,
            lens[i],
            sizes[i],
            modes[i],
            max_nesting,
            i,
            meta_tags,
            ds_tags,
            out_off,
            out_len,
            out_vr,
            info,
            nonplain,
            vrt,
            dtags,
            dcls,
            m1,
            m2,
            mcls,
            st_kind,
            st_end,
            st_impl,
            st_depth,
        )
        if st == OK:
            klen = make_key(b, i, key, key_fields, out_off, out_len, out_vr, info, nonplain)
            info[i, I_KLEN] = klen
            same = 0
            if klen >= 0 and prev >= 0 and info[prev, I_KLEN] == klen:
                same = 1
                for q in range(klen):
                    if key[i, q] != key[prev, q]:
                        same = 0
                        break
            info[i, I_SAMEKEY] = same
            if klen >= 0:
                prev = i
            info[i, I_SOPLEN], info[i, I_NUMLEN] = plain_ids(
                b, i, id_cols, out_off, out_len, out_vr
            )


# ------------------------------------------------------------- reading
# The C library's calls, bound by symbol (resolved in this process when the
# compiled code is linked, so the functions stay cacheable; ctypes functions
# as globals would not be, and as arguments cost ~250 µs of typing per call).
# Pointers travel as intp: the same register on x86-64 and AArch64.
_c_open = types.ExternalFunction("open", types.int32(types.intp, types.int32))
_c_lseek = types.ExternalFunction("lseek", types.int64(types.int32, types.int64, types.int32))
_c_pread = types.ExternalFunction(
    "pread", types.int64(types.int32, types.intp, types.uint64, types.int64)
)
_c_close = types.ExternalFunction("close", types.int32(types.int32))
SEEK_END = 2


@njit(cache=True, nogil=True)
def read_prefix(name, flags, row):
    """Read the first ``len(row)`` bytes of the file named by the
    NUL-terminated bytes ``name`` into ``row`` with libc calls (no GIL, no
    Python object per file). Returns (bytes read, file size), or (-1, -1)
    when the file cannot be opened or read."""
    fd = _c_open(name.ctypes.data, flags)
    if fd < 0:
        return -1, -1
    size = _c_lseek(fd, 0, SEEK_END)  # the size, in one syscall
    want = min(size, row.shape[0])
    got = 0
    while got < want:  # short reads happen on some FUSE file systems
        n = _c_pread(fd, row[got:].ctypes.data, want - got, got)
        if n <= 0:
            break
        got += n
    _c_close(fd)
    if size < 0 or got < want:
        return -1, -1
    return got, size


@njit(cache=True, nogil=True)
def read_walk_batch(
    names,
    starts,
    flags,
    buf,
    lens,
    sizes,
    modes,
    rows,
    max_nesting,
    meta_tags,
    ds_tags,
    key_fields,
    id_cols,
    out_off,
    out_len,
    out_vr,
    info,
    nonplain,
    key,
    vrt,
    dtags,
    dcls,
    m1,
    m2,
    mcls,
):
    """Read the prefix of every file of ``rows`` (row ``i`` named by
    ``names[starts[i]:]``) and walk them, all in one call without the GIL,
    so a thread can read and walk the next batch while Python decodes this
    one. A file that cannot be read gets ``READ_FAILED``."""
    ok = np.empty(rows.shape[0], dtype=np.int64)
    n = 0
    for r in range(rows.shape[0]):
        i = rows[r]
        got, size = read_prefix(names[starts[i] :], flags, buf[i])
        if got < 0:
            info[i, I_STATUS] = READ_FAILED
            continue
        lens[i] = got
        sizes[i] = size
        ok[n] = i
        n += 1
    walk_batch(
        buf,
        lens,
        sizes,
        modes,
        ok[:n],
        max_nesting,
        meta_tags,
        ds_tags,
        key_fields,
        id_cols,
        out_off,
        out_len,
        out_vr,
        info,
        nonplain,
        key,
        vrt,
        dtags,
        dcls,
        m1,
        m2,
        mcls,
    )
