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
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

# ------------------------------------------------------------- statuses
OK = 0
NEED_MORE = 1
FALLBACK = 2
READ_FAILED = 3  # read_walk_batch could not open or read the file

# ------------------------------------------------------------- info columns
I_STATUS = 0
I_ENC = 1  # 0 part10, 1 implicit_le, 2 explicit_le, 3 explicit_be
I_TS = 2  # TS_* below
I_DSOFF = 3
I_PDOFF = 4  # offset of the top-level Pixel Data tag, -1 if none
I_PDLEN = 5
I_ENCAPS = 6
I_NEED = 7  # bytes needed when NEED_MORE
I_NNONPLAIN = 8
I_NPLAIN = 9  # non-empty plain-ASCII text elements before Pixel Data
I_KLEN = 10  # length of the key, -1 when it did not fit
I_ELEMS = 11
I_REASON = 12  # R_* below when FALLBACK
I_HASMETA = 13
I_SAMEKEY = 14  # 1: the key equals that of the previous good row of this walk
I_SOPLEN = 15  # SOP Instance UID: length without padding when plain and checked, else -1
I_NUMLEN = 16  # Instance Number: length without padding when plain, -2 absent, else -1
N_INFO = 17

# ------------------------------------------------------------- transfer syntaxes
TS_NONE = -1
TS_IMPLICIT = 0
TS_EXPLICIT_LE = 1
TS_EXPLICIT_BE = 2
TS_DEFLATED = 3
TS_OTHER = 4  # any other UID: explicit VR LE (encapsulated syntaxes, PS3.5 §A.4)

#: mode bit: the body after the File Meta is already inflated (see walk_one)
INFLATED = 8

# ------------------------------------------------------------- fallback reasons
R_NONE = 0
R_META = 1  # no DICM, File Meta malformed or too long
R_DEFLATE = 2
R_PROBE = 3  # first element does not fit the declared TS
R_STRUCT = 4  # item/delimiter misplaced, bad VR, undefined length misuse
R_ORDER = 5  # top-level tags not strictly ascending
R_LENGTH = 6  # a length beyond the file or the enclosing item
R_NESTING = 7
R_EOF = 8  # the file ends inside a header or an undefined-length container
R_TRAILING = 9  # a zero tag after the dataset (padding)
R_LIMIT = 10  # element count, wanted value or text list too large
R_BIGVALUE = 11  # a wanted value too long for the fast path
REASONS = (
    "none",
    "file_meta",
    "deflate",
    "ts_probe",
    "structure",
    "tag_order",
    "length",
    "nesting",
    "eof",
    "trailing",
    "limits",
    "big_value",
)

# ------------------------------------------------------------- VR table bits
V_VALID = 1
V_LONG = 2  # 2 reserved bytes + 4-byte length (PS3.5 Table 7.1-1)
V_TEXT = 4  # SH LO ST LT UT UC (charset-dependent text, PS3.5 §6.1.2.3)
V_PN = 8
V_SQ = 16
V_UN = 32
V_PIXEL = 64  # VRs allowed on undefined-length Pixel Data: OB OW UN

# dictionary classes (implicit VR lookup), same bits
UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIM = 0xFFFEE00D
SEQ_DELIM = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
MAX_ELEMENTS = 1_000_000
MAX_VALUE = 1 << 16  # pydicom defers longer values (defer_size); so do we: fall back
MAX_NONPLAIN = 32
PROBE = 256

# frame kinds
K_TOP = 0
K_SQ = 1
K_ITEM = 2
K_PIXEL = 3

_VRS = [
    "AE",
    "AS",
    "AT",
    "CS",
    "DA",
    "DS",
    "DT",
    "FD",
    "FL",
    "IS",
    "LO",
    "LT",
    "OB",
    "OD",
    "OF",
    "OL",
    "OV",
    "OW",
    "PN",
    "SH",
    "SL",
    "SQ",
    "SS",
    "ST",
    "SV",
    "TM",
    "UC",
    "UI",
    "UL",
    "UN",
    "UR",
    "US",
    "UT",
    "UV",
]
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_TEXT = {"SH", "LO", "ST", "LT", "UT", "UC"}


def vr_table() -> np.ndarray:
    """VR code (``b0 << 8 | b1``) -> V_* bits, for every VR of PS3.5 Table 6.2-1."""
    t = np.zeros(65536, dtype=np.uint8)
    for vr in _VRS:
        bits = V_VALID
        if vr in _LONG:
            bits |= V_LONG
        if vr in _TEXT:
            bits |= V_TEXT
        if vr == "PN":
            bits |= V_PN
        if vr == "SQ":
            bits |= V_SQ
        if vr == "UN":
            bits |= V_UN
        if vr in ("OB", "OW", "UN"):
            bits |= V_PIXEL
        t[(ord(vr[0]) << 8) | ord(vr[1])] = bits
    return t


def dictionary_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """pydicom's data dictionary as arrays for implicit VR (PS3.5 §7.1.3):
    sorted tags with their class bits, then the repeater masks in
    :func:`pydicom.datadict.mask_match` order (first match wins)."""
    from pydicom._dicom_dict import DicomDictionary, RepeatersDictionary
    from pydicom.datadict import masks

    def bits(vr: str) -> int:
        if vr == "SQ":
            return V_SQ
        if vr == "PN":
            return V_PN | V_TEXT
        if vr in _TEXT:
            return V_TEXT
        return 0

    tags = np.array(sorted(DicomDictionary), dtype=np.int64)
    cls = np.array([bits(DicomDictionary[int(t)][0]) for t in tags], dtype=np.uint8)
    m1 = np.array([v[0] for v in masks.values()], dtype=np.int64)
    m2 = np.array([v[1] for v in masks.values()], dtype=np.int64)
    mcls = np.array([bits(RepeatersDictionary[k][0]) for k in masks], dtype=np.uint8)
    return tags, cls, m1, m2, mcls


# ------------------------------------------------------------- byte helpers
@njit(cache=True, nogil=True, inline="always")
def _u16(b, p, little):
    if little:
        return np.int64(b[p]) | (np.int64(b[p + 1]) << 8)
    return (np.int64(b[p]) << 8) | np.int64(b[p + 1])


@njit(cache=True, nogil=True, inline="always")
def _u32(b, p, little):
    if little:
        return (
            np.int64(b[p])
            | (np.int64(b[p + 1]) << 8)
            | (np.int64(b[p + 2]) << 16)
            | (np.int64(b[p + 3]) << 24)
        )
    return (
        (np.int64(b[p]) << 24)
        | (np.int64(b[p + 1]) << 16)
        | (np.int64(b[p + 2]) << 8)
        | np.int64(b[p + 3])
    )


@njit(cache=True, nogil=True, inline="always")
def _plausible_first_group(g):
    # syntax._plausible_first_group: a low even group opens a dataset
    return 0x0002 <= g <= 0x00FF and g % 2 == 0


@njit(cache=True, nogil=True)
def _dict_class(tag, dtags, dcls, m1, m2, mcls):
    """pydicom ``dictionary_VR`` as class bits; 0 for unknown or private."""
    lo = 0
    hi = dtags.shape[0] - 1
    while lo <= hi:
        mid = (lo + hi) >> 1
        t = dtags[mid]
        if t == tag:
            return np.int64(dcls[mid])
        if t < tag:
            lo = mid + 1
        else:
            hi = mid - 1
    if (tag >> 16) % 2 == 1:
        return np.int64(0)  # private tags are never looked up in the repeaters
    for k in range(m1.shape[0]):
        if ((tag ^ m1[k]) & m2[k]) == 0:
            return np.int64(mcls[k])
    return np.int64(0)


@njit(cache=True, nogil=True)
def _find(tags, tag):
    """Index of ``tag`` in the sorted ``tags``, -1 when absent."""
    lo = 0
    hi = tags.shape[0] - 1
    while lo <= hi:
        mid = (lo + hi) >> 1
        t = tags[mid]
        if t == tag:
            return mid
        if t < tag:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


@njit(cache=True, nogil=True)
def _ts_code(b, off, length):
    """Classify a Transfer Syntax UID value (PS3.5 Annex A), padding ignored
    the way syntax._clean_text strips it."""
    s = off
    e = off + length
    while s < e and (b[s] == 0 or b[s] == 32):
        s += 1
    while e > s and (b[e - 1] == 0 or b[e - 1] == 32):
        e -= 1
    n = e - s
    # "1.2.840.10008.1.2" is the common stem of the four native syntaxes
    stem = np.array(
        [49, 46, 50, 46, 56, 52, 48, 46, 49, 48, 48, 48, 56, 46, 49, 46, 50], dtype=np.uint8
    )
    if n < 17:
        return TS_OTHER
    for k in range(17):
        if b[s + k] != stem[k]:
            return TS_OTHER
    if n == 17:
        return TS_IMPLICIT
    if n == 19 and b[s + 17] == 46 and b[s + 18] == 49:
        return TS_EXPLICIT_LE
    if n == 19 and b[s + 17] == 46 and b[s + 18] == 50:
        return TS_EXPLICIT_BE
    if (
        n == 22
        and b[s + 17] == 46
        and b[s + 18] == 49
        and b[s + 19] == 46
        and b[s + 20] == 57
        and b[s + 21] == 57
    ):
        return TS_DEFLATED
    return TS_OTHER


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
