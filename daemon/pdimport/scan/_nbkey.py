"""The per-file outputs the numba batch walk adds after a good walk: the
series key (everything usually constant within a series, as exact bytes,
that the caller memoises decoded values on) and the proof that the
per-instance UID and number are plain enough to take as they are.
"""

from __future__ import annotations

from numba import njit

from pdimport.scan._nbcodes import (
    I_ENC,
    I_ENCAPS,
    I_HASMETA,
    I_NNONPLAIN,
    I_NPLAIN,
    I_PDLEN,
    I_PDOFF,
    I_TS,
)


@njit(cache=True, nogil=True)
def _put(key, i, k, v, nbytes):
    """Append ``v`` as ``nbytes`` little-endian bytes to key row ``i`` at ``k``."""
    for q in range(nbytes):
        key[i, k + q] = (v >> (8 * q)) & 0xFF
    return k + nbytes


@njit(cache=True, nogil=True)
def make_key(b, i, key, key_fields, out_off, out_len, out_vr, info, nonplain):
    """The series key of file ``i``: every input of the memoised decode
    except the per-instance fields, as bytes (exact, no hash)."""
    width = key.shape[1]
    k = 0
    for c in (I_ENC, I_TS, I_ENCAPS, I_HASMETA):
        k = _put(key, i, k, info[i, c], 1)
    k = _put(key, i, k, 1 if info[i, I_PDOFF] >= 0 else 0, 1)
    k = _put(key, i, k, 1 if info[i, I_NPLAIN] > 0 else 0, 1)
    k = _put(key, i, k, info[i, I_PDLEN], 8)
    for f in range(key_fields.shape[0]):
        c = key_fields[f]
        n = out_len[i, c]
        if k + 7 + max(n, 0) > width:
            return -1
        k = _put(key, i, k, out_vr[i, c], 2)
        k = _put(key, i, k, n + 1, 4)  # 0 = absent
        o = out_off[i, c]
        for q in range(max(n, 0)):
            key[i, k + q] = b[o + q]
        k += max(n, 0)
    for e in range(info[i, I_NNONPLAIN]):
        n = nonplain[i, e, 3]
        if k + 9 + n > width:
            return -1
        k = _put(key, i, k, nonplain[i, e, 0], 4)
        k = _put(key, i, k, nonplain[i, e, 1], 1)
        k = _put(key, i, k, n, 4)
        o = nonplain[i, e, 2]
        for q in range(n):
            key[i, k + q] = b[o + q]
        k += n
    return k


@njit(cache=True, nogil=True)
def _padded_end(b, off, n):
    """End of a value without its trailing NUL/space padding."""
    e = off + n
    while e > off and (b[e - 1] == 0 or b[e - 1] == 32):
        e -= 1
    return e


@njit(cache=True, nogil=True)
def plain_ids(b, i, id_cols, out_off, out_len, out_vr):
    """The per-instance values the caller can take as they are, proven here
    so Python does no regular expression per file: (SOP Instance UID length,
    Instance Number length), each without padding, or -1 when Python must
    decode and check the value itself (-2: no Instance Number).

    The SOP Instance UID qualifies when its VR is UI (or implicit), it is
    1-64 digits and dots forming a UID (PS3.5 §9.1: no empty component),
    padding only at its end, and the File Meta's Media Storage SOP Instance
    UID, if present, is the same once stripped of NUL/space on both sides.
    The Instance Number qualifies as 1-9 digits, VR IS (or implicit),
    padding only at its end."""
    vr_ui = (85 << 8) | 73
    vr_is = (73 << 8) | 83
    soplen = -1
    c = id_cols[0]
    o = out_off[i, c]
    if o >= 0 and (out_vr[i, c] == 0 or out_vr[i, c] == vr_ui):
        e = _padded_end(b, o, out_len[i, c])
        n = e - o
        good = 1 <= n <= 64 and b[o] != 46 and b[e - 1] != 46
        for q in range(o, e):
            ch = b[q]
            if ch == 46:
                if b[q - 1] == 46:
                    good = False
            elif ch < 48 or ch > 57:
                good = False
            if not good:
                break
        m = id_cols[2]
        mo = out_off[i, m]
        if good and mo >= 0:
            ms = mo
            me = _padded_end(b, mo, out_len[i, m])
            while ms < me and (b[ms] == 0 or b[ms] == 32):
                ms += 1
            if me - ms != n:
                good = False
            else:
                for q in range(n):
                    if b[ms + q] != b[o + q]:
                        good = False
                        break
        if good:
            soplen = n
    numlen = -1
    c = id_cols[1]
    o = out_off[i, c]
    if o < 0:
        numlen = -2
    elif out_vr[i, c] == 0 or out_vr[i, c] == vr_is:
        e = _padded_end(b, o, out_len[i, c])
        n = e - o
        good = 1 <= n <= 9
        for q in range(o, e):
            if b[q] < 48 or b[q] > 57:
                good = False
                break
        if good:
            numlen = n
    return soplen, numlen
