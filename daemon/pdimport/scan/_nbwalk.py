"""The numba hot loop of :mod:`pdimport.scan.numba_scanner`: a bounded DICOM
structure walker over raw bytes, many files per call.

Input is one preallocated 2-D ``uint8`` buffer holding a prefix of each file
(row ``i`` holds the first ``lens[i]`` bytes of a file of ``sizes[i]``
bytes). For each file the walker

* reads the File Meta group (PS3.10 §7.1, always explicit VR LE) and
  classifies its Transfer Syntax,
* walks every element header of the dataset (PS3.5 §7.1.1–7.1.3) in implicit
  VR LE, explicit VR LE or explicit VR BE, skipping values by their length
  and following sequences and items (PS3.5 §7.5) with an explicit stack, so
  a 500 MB file costs its element count,
* validates exactly what :mod:`pdimport.scan.walker` validates, and more
  strictly: whatever the Python walker would reject or only warn about, and
  whatever this walker does not model (trailing padding, unsorted tags,
  ...) ends the walk with ``FALLBACK`` so the caller hands the file to
  the reference path (walker + pydicom), which then decides,
* records the value offsets of the wanted top-level attributes, the text
  elements that are not plain ASCII (for the Specific Character Set check,
  PS3.5 §6.1) and a byte key of everything that is usually constant within a
  series (the caller memoises decoded values on it).

A walk that needs bytes beyond the prefix ends with ``NEED_MORE`` and the
byte count it needs; the caller re-reads a longer prefix and walks again.

Every read is bounds-checked against both the buffer and the file size,
every declared length against the bytes left and the enclosing item, the
nesting depth is capped and the loop ends within ``2 * size / 8`` iterations.
Nothing here allocates per element. The functions are compiled with
``cache=True`` (``NUMBA_CACHE_DIR`` is honoured by numba itself) and
``nogil=True``, so a batch runs without the GIL.

The kernels live in small modules, each calling the one below:
:mod:`~pdimport.scan._nbbatch` (the batch entry points and the libc reader)
→ this module (one file's walk) and :mod:`~pdimport.scan._nbkey` (series
key, plain per-instance values) → :mod:`~pdimport.scan._nbbytes` (byte
reads, lookups); :mod:`~pdimport.scan._nbcodes` holds the numbers they and
the Python caller share. numba's cache does not notice a change in a callee
defined in another module: after editing one of them, clear the cache
(``__pycache__/*.nbi``/``*.nbc``, or ``NUMBA_CACHE_DIR``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pdimport.scan._nbbytes import _dict_class, _find, _plausible_first_group, _ts_code, _u16, _u32
from pdimport.scan._nbcodes import (
    FALLBACK,
    I_DSOFF,
    I_ELEMS,
    I_ENC,
    I_ENCAPS,
    I_HASMETA,
    I_KLEN,
    I_NEED,
    I_NNONPLAIN,
    I_NPLAIN,
    I_PDLEN,
    I_PDOFF,
    I_REASON,
    I_STATUS,
    I_TS,
    INFLATED,
    MAX_NONPLAIN,
    N_INFO,
    NEED_MORE,
    OK,
    R_BIGVALUE,
    R_DEFLATE,
    R_EOF,
    R_LENGTH,
    R_LIMIT,
    R_META,
    R_NESTING,
    R_ORDER,
    R_PROBE,
    R_STRUCT,
    R_TRAILING,
    TS_DEFLATED,
    TS_EXPLICIT_BE,
    TS_EXPLICIT_LE,
    TS_IMPLICIT,
    V_LONG,
    V_PIXEL,
    V_PN,
    V_SQ,
    V_TEXT,
    V_UN,
    V_VALID,
)

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIM = 0xFFFEE00D
SEQ_DELIM = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
MAX_ELEMENTS = 1_000_000
MAX_VALUE = 1 << 16  # pydicom defers longer values (defer_size); so do we: fall back
PROBE = 256

# frame kinds
K_TOP = 0
K_SQ = 1
K_ITEM = 2
K_PIXEL = 3


# ------------------------------------------------------------- one file
@njit(cache=True, nogil=True)
def _fail(info, i, reason):
    info[i, I_STATUS] = FALLBACK
    info[i, I_REASON] = reason
    return FALLBACK


@njit(cache=True, nogil=True)
def _need(info, i, n):
    info[i, I_STATUS] = NEED_MORE
    info[i, I_NEED] = n
    return NEED_MORE


@njit(cache=True, nogil=True)
def _walk_meta(b, blen, size, i, mstart, meta_tags, out_off, out_len, out_vr, info, vrt):
    """File Meta group (PS3.10 §7.1): explicit VR LE, group 0x0002 only.
    Returns the dataset offset, or -1 after setting the status."""
    lim = min(size, 65536)  # encoding._read_meta_prefix reads 64 KiB
    p = mstart
    for _ in range(65536):  # bounded: each pass consumes >= 8 bytes
        if p + 8 > lim:
            if p == size and size < 65536:
                return p  # nothing but File Meta: an empty dataset
            _fail(info, i, R_META)
            return -1
        if p + 8 > blen:
            _need(info, i, p + 8)
            return -1
        if _u16(b, p, True) != 2:
            return p
        vr = (np.int64(b[p + 4]) << 8) | np.int64(b[p + 5])
        bits = vrt[vr]
        if bits & V_VALID == 0:
            _fail(info, i, R_META)
            return -1
        if bits & V_LONG:
            if p + 12 > lim:
                _fail(info, i, R_META)
                return -1
            if p + 12 > blen:
                _need(info, i, p + 12)
                return -1
            length = _u32(b, p + 8, True)
            hdr = 12
        else:
            length = _u16(b, p + 6, True)
            hdr = 8
        if length == UNDEFINED or p + hdr + length > lim:
            _fail(info, i, R_META)
            return -1
        if p + hdr + length > blen:
            _need(info, i, p + hdr + length)
            return -1
        tag = (np.int64(2) << 16) | _u16(b, p + 2, True)
        k = _find(meta_tags, tag)
        if k >= 0:
            out_off[i, k] = p + hdr
            out_len[i, k] = length
            out_vr[i, k] = vr
        p += hdr + length
    _fail(info, i, R_META)
    return -1


@njit(cache=True, nogil=True)
def _probe_ok(b, blen, size, ds, little, implicit, vrt):
    """walker._check_first_element never raises when this holds (PS3.5
    §A.1–A.3): the first tag is plausible in the declared byte order and
    the VR bytes are present exactly when explicit VR is declared."""
    n = min(size - ds, PROBE)
    if n < 8:
        return True
    group = _u16(b, ds, little)
    swapped = _u16(b, ds, not little)
    if not _plausible_first_group(group) and _plausible_first_group(swapped):
        return False
    if group == 0xFFFE:
        return True
    has_vr = vrt[(np.int64(b[ds + 4]) << 8) | np.int64(b[ds + 5])] & V_VALID != 0
    if not implicit and not has_vr:
        return False
    # implicit and has_vr: the Python probe looks deeper; let it decide
    return not (implicit and has_vr)


@njit(cache=True, nogil=True)
def walk_one(
    b,
    blen,
    size,
    mode,
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
):
    """Walk one file; fill row ``i`` of the output arrays; return the status.

    ``mode``: 0 Part 10, 1 implicit VR LE, 2 explicit VR LE, 3 explicit VR
    BE (a dataset without preamble, PS3.10 §7.1 / PS3.5 §A.1–A.3), plus
    :data:`INFLATED` when the caller has already inflated a Deflated
    Explicit VR LE body (PS3.5 §A.5) in place after the File Meta: the
    dataset is then walked as explicit VR LE. Without that bit a deflated
    file ends with ``R_DEFLATE`` and the caller inflates it.
    """
    inflated = mode >= INFLATED
    if inflated:
        mode -= INFLATED
    nm = meta_tags.shape[0]
    for k in range(out_off.shape[1]):
        out_off[i, k] = -1
        out_len[i, k] = -1
        out_vr[i, k] = 0
    for k in range(N_INFO):
        info[i, k] = 0
    info[i, I_PDOFF] = -1
    info[i, I_KLEN] = -1
    if size == 0 or blen < min(size, 8):
        return _fail(info, i, R_META)
    # ---------------------------------------------------------- File Meta
    has_meta = False
    mstart = 0
    if mode == 0:
        if size < 132:
            return _fail(info, i, R_META)
        if blen < 132:
            return _need(info, i, 132)
        if b[128] != 68 or b[129] != 73 or b[130] != 67 or b[131] != 77:  # "DICM"
            return _fail(info, i, R_META)
        has_meta = True
        mstart = 132
    elif size >= 8 and _u16(b, 0, True) == 2:
        has_meta = True
    enc = mode
    if has_meta:
        ds = _walk_meta(b, blen, size, i, mstart, meta_tags, out_off, out_len, out_vr, info, vrt)
        if ds < 0:
            return info[i, I_STATUS]
        k_ts = _find(meta_tags, 0x00020010)
        if out_off[i, k_ts] < 0:
            return _fail(info, i, R_META)
        ts = _ts_code(b, out_off[i, k_ts], out_len[i, k_ts])
        if mode != 0:
            enc = 1 if ts == TS_IMPLICIT else (3 if ts == TS_EXPLICIT_BE else 2)
    else:
        ds = 0
        ts = TS_IMPLICIT if mode == 1 else (TS_EXPLICIT_LE if mode == 2 else TS_EXPLICIT_BE)
    info[i, I_ENC] = enc
    info[i, I_TS] = ts
    info[i, I_DSOFF] = ds
    info[i, I_HASMETA] = 1 if has_meta else 0
    if ts == TS_DEFLATED and not inflated:
        return _fail(info, i, R_DEFLATE)
    little = ts != TS_EXPLICIT_BE
    implicit = ts == TS_IMPLICIT
    if min(size, ds + 8) > blen:
        return _need(info, i, ds + 8)
    if not _probe_ok(b, blen, size, ds, little, implicit, vrt):
        return _fail(info, i, R_PROBE)
    if size - ds >= 2 and _u16(b, ds, True) == 0:
        # pydicom reads a leading group 0x0000 as an implicit VR command set
        return _fail(info, i, R_PROBE)
    if not has_meta and mode == 3 and size >= 2 and _u16(b, 0, True) < 1024:
        # pydicom guesses big endian for a dataset without meta only when the
        # first group read little endian is >= 0x0400 (filereader.read_partial)
        return _fail(info, i, R_PROBE)
    # ---------------------------------------------------------- dataset
    depth_cap = max_nesting
    cap = st_kind.shape[0]  # 2 * max_nesting + 8: items do not deepen; one pixel frame
    sp = 0
    st_kind[0] = K_TOP
    st_end[0] = -1
    st_impl[0] = 1 if implicit else 0
    st_depth[0] = 0
    pos = ds
    last_top = np.int64(-1)
    elements = 0
    stopped = False  # pydicom stop_before_pixels: nothing after a Pixel Data tag is read
    n_nonplain = 0
    n_plain = 0
    max_iter = 2 * (size // 8) + 2 * cap + 16
    for _ in range(max_iter):
        kind = st_kind[sp]
        end = st_end[sp]
        if end >= 0 and pos >= end:
            sp -= 1  # a defined-length item or sequence is complete
            continue
        if pos >= size:
            if kind == K_TOP:
                info[i, I_ELEMS] = elements
                info[i, I_NNONPLAIN] = n_nonplain
                info[i, I_NPLAIN] = n_plain
                info[i, I_STATUS] = OK
                return OK
            return _fail(info, i, R_EOF)
        if pos + 8 > size:
            return _fail(info, i, R_EOF)  # truncated header or NUL padding: the walker decides
        if pos + 8 > blen:
            return _need(info, i, pos + 12)
        elements += 1
        if elements > MAX_ELEMENTS:
            return _fail(info, i, R_LIMIT)
        group = _u16(b, pos, little)
        tag = (group << 16) | _u16(b, pos + 2, little)
        if kind == K_TOP and tag == 0 and last_top >= 0:
            return _fail(info, i, R_TRAILING)
        if kind == K_SQ or kind == K_PIXEL or group == 0xFFFE:
            # items and delimiters (PS3.5 §7.5.1–7.5.2; fragments §A.4)
            length = _u32(b, pos + 4, little)
            pos += 8
            if (kind == K_SQ or kind == K_PIXEL) and tag == SEQ_DELIM:
                if end >= 0 or length != 0:
                    return _fail(info, i, R_STRUCT)
                sp -= 1
                continue
            if kind == K_ITEM and tag == ITEM_DELIM:
                if end >= 0 or length != 0:
                    return _fail(info, i, R_STRUCT)
                sp -= 1
                continue
            if tag != ITEM or not (kind == K_SQ or kind == K_PIXEL):
                return _fail(info, i, R_STRUCT)
            if length == UNDEFINED:
                if kind == K_PIXEL:
                    return _fail(info, i, R_STRUCT)
                if sp + 1 >= cap:
                    return _fail(info, i, R_NESTING)
                sp += 1
                st_kind[sp] = K_ITEM
                st_end[sp] = -1
                st_impl[sp] = st_impl[sp - 1]
                st_depth[sp] = st_depth[sp - 1]
                continue
            # a defined length: inside the file and inside the enclosing item
            if length > size - pos:
                return _fail(info, i, R_LENGTH)
            for f in range(sp, -1, -1):
                if st_end[f] >= 0:
                    if pos + length > st_end[f]:
                        return _fail(info, i, R_LENGTH)
                    break
            if kind == K_PIXEL:
                pos += length  # a fragment: never looked at
                continue
            if sp + 1 >= cap:
                return _fail(info, i, R_NESTING)
            sp += 1
            st_kind[sp] = K_ITEM
            st_end[sp] = pos + length
            st_impl[sp] = st_impl[sp - 1]
            st_depth[sp] = st_depth[sp - 1]
            continue
        # ------------------------------------------------ a data element
        frame_implicit = st_impl[sp] == 1
        vr = np.int64(0)
        bits = np.int64(0)
        if frame_implicit:
            length = _u32(b, pos + 4, little)
            hdr = 8
        else:
            vr = (np.int64(b[pos + 4]) << 8) | np.int64(b[pos + 5])
            bits = np.int64(vrt[vr])
            if bits & V_VALID == 0:
                return _fail(info, i, R_STRUCT)
            if bits & V_LONG:
                if pos + 12 > size:
                    return _fail(info, i, R_EOF)
                if pos + 12 > blen:
                    return _need(info, i, pos + 12)
                length = _u32(b, pos + 8, little)
                hdr = 12
            else:
                length = _u16(b, pos + 6, little)
                hdr = 8
        top = kind == K_TOP
        if top:
            # PS3.5 §7.1: ascending and unique; unsorted-but-unique only warns
            # in the walker, so it is left to the reference path
            if tag <= last_top:
                return _fail(info, i, R_ORDER)
            last_top = tag
            if tag == PIXEL_DATA or tag == 0x7FE00008 or tag == 0x7FE00009:
                stopped = True
        vpos = pos + hdr
        if top and tag == PIXEL_DATA and info[i, I_PDOFF] < 0:
            info[i, I_PDOFF] = pos
            info[i, I_PDLEN] = length
        if length == UNDEFINED:
            # SQ, UN holding a sequence (PS3.5 §6.2.2), encapsulated Pixel
            # Data (§A.4); implicit VR: private or SQ by dictionary
            dcl = np.int64(0)
            if frame_implicit:
                dcl = _dict_class(tag, dtags, dcls, m1, m2, mcls)
            new_kind = K_SQ
            new_impl = st_impl[sp]
            if bits & V_SQ:
                pass
            elif bits & V_UN and tag != PIXEL_DATA:
                new_impl = 1
            elif tag == PIXEL_DATA and (frame_implicit or bits & V_PIXEL):
                new_kind = K_PIXEL
                if top:
                    info[i, I_ENCAPS] = 1
            elif frame_implicit and ((tag >> 16) % 2 == 1 or dcl & V_SQ):
                pass
            else:
                return _fail(info, i, R_STRUCT)
            if sp + 1 >= cap:
                return _fail(info, i, R_NESTING)
            if new_kind == K_SQ:
                if st_depth[sp] + 1 > depth_cap:
                    return _fail(info, i, R_NESTING)
                st_depth[sp + 1] = st_depth[sp] + 1
            else:
                st_depth[sp + 1] = st_depth[sp]
            sp += 1
            st_kind[sp] = new_kind
            st_end[sp] = -1
            st_impl[sp] = new_impl
            pos = vpos
            continue
        if length > size - vpos:
            return _fail(info, i, R_LENGTH)
        for f in range(sp, -1, -1):
            if st_end[f] >= 0:
                if vpos + length > st_end[f]:
                    return _fail(info, i, R_LENGTH)
                break
        is_sq = bits & V_SQ != 0
        if frame_implicit and not is_sq:
            is_sq = _dict_class(tag, dtags, dcls, m1, m2, mcls) & V_SQ != 0
        if is_sq:
            if sp + 1 >= cap or st_depth[sp] + 1 > depth_cap:
                return _fail(info, i, R_NESTING)
            sp += 1
            st_kind[sp] = K_SQ
            st_end[sp] = vpos + length
            st_impl[sp] = st_impl[sp - 1]
            st_depth[sp] = st_depth[sp - 1] + 1
            pos = vpos
            continue
        if top and not stopped:
            k = _find(ds_tags, tag)
            if k >= 0:
                if length > MAX_VALUE:
                    return _fail(info, i, R_BIGVALUE)
                if vpos + length > blen:
                    return _need(info, i, vpos + length + 8)
                out_off[i, nm + k] = vpos
                out_len[i, nm + k] = length
                out_vr[i, nm + k] = vr
            # text elements for the Specific Character Set check (PS3.5 §6.1):
            # pydicom defers values longer than its defer_size and skips them
            tbits = bits
            if frame_implicit:
                tbits = _dict_class(tag, dtags, dcls, m1, m2, mcls)
            if tbits & (V_TEXT | V_PN) and 0 < length <= MAX_VALUE:
                if vpos + length > blen:
                    return _need(info, i, vpos + length + 8)
                plain = True
                for q in range(vpos, vpos + length):
                    c = b[q]
                    if c >= 0x80 or c == 0x1B:  # ESC starts an ISO 2022 switch
                        plain = False
                        break
                if plain:
                    n_plain += 1
                else:
                    if n_nonplain >= MAX_NONPLAIN:
                        return _fail(info, i, R_LIMIT)
                    nonplain[i, n_nonplain, 0] = tag
                    nonplain[i, n_nonplain, 1] = 1 if tbits & V_PN else 0
                    nonplain[i, n_nonplain, 2] = vpos
                    nonplain[i, n_nonplain, 3] = length
                    n_nonplain += 1
        pos = vpos + length
    return _fail(info, i, R_LIMIT)
