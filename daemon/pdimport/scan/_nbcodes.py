"""Numbers shared by the numba walker (:mod:`~pdimport.scan._nbwalk`) and its
Python caller (:mod:`~pdimport.scan.numba_scanner`): walk statuses, the
columns of the per-file ``info`` row, transfer syntax and fallback reason
codes, and the VR and data dictionary tables the walker looks things up in.

Plain Python and numpy: importing it does not import numba.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

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

#: most non-plain text elements recorded per file (rows of ``nonplain``)
MAX_NONPLAIN = 32

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


def dictionary_tables() -> tuple[np.ndarray, ...]:
    """pydicom's data dictionary as arrays for implicit VR (PS3.5 §7.1.3):
    sorted tags with their class bits, then the repeater masks in
    :func:`pydicom.datadict.mask_match` order (first match wins).

    Kept beside the kernels built ahead of time (:mod:`~pdimport.scan.aot`)
    once made, keyed by pydicom's dictionary file and this module: making
    them imports pydicom, ≈ 0.2-0.3 s a process that needs nothing else of it."""
    from pdimport.scan import cachedir

    return cachedir.cached_arrays(
        "dictionary", [_dictionary_source(), Path(__file__)], _dictionary_tables
    )


def _dictionary_source() -> Path:
    """pydicom's dictionary module, found without importing pydicom."""
    spec = importlib.util.find_spec("pydicom")
    if spec is None or spec.origin is None:
        raise ImportError("pydicom is not installed")
    return Path(spec.origin).with_name("_dicom_dict.py")


def _dictionary_tables() -> tuple[np.ndarray, ...]:
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
