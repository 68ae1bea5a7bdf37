"""Byte-level helpers of the numba walker: unsigned reads in either byte
order, the data dictionary and wanted-tag lookups, and the Transfer Syntax
UID classification (PS3.5 Annex A). All ``cache=True, nogil=True``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pdimport.scan._nbcodes import (
    TS_DEFLATED,
    TS_EXPLICIT_BE,
    TS_EXPLICIT_LE,
    TS_IMPLICIT,
    TS_OTHER,
)


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
