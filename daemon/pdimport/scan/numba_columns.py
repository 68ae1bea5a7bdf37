"""What the numba walk records and where: the tags the fast scanner wants
(File Meta, the Header fields, the image geometry), the column of each in
the walk's output arrays, which columns make the series key, and the
lookup tables every walk call is given.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from pdimport.scan import _nbcodes as nb
from pdimport.scan.encoding import META_TAGS
from pdimport.scan.pydicom_scanner import HEADER_KEYWORDS
from pdimport.scan.walker import GEOMETRY_TAGS

#: Walk modes: a row's ``mode`` is the index of its encoding here.
_ENCODINGS = ("part10", "implicit_le", "explicit_le", "explicit_be")

# -------------------------------------------------------------- wanted tags
#: Header field -> tag: what model.Header needs and the policies read
#: (pydicom_scanner.HEADER_KEYWORDS), plus the SOP UIDs.
_FIELD_TAGS: dict[str, int] = {}


#: The tags of those keywords (PS3.6), written out: looking them up would
#: import pydicom (≈ 0.2-0.3 s) into every scan that never needs it. A test
#: holds this table to pydicom's dictionary.
KEYWORD_TAGS: dict[str, int] = {
    "PatientID": 0x00100020,
    "IssuerOfPatientID": 0x00100021,
    "PatientName": 0x00100010,
    "PatientBirthDate": 0x00100030,
    "PatientSex": 0x00100040,
    "StudyInstanceUID": 0x0020000D,
    "StudyDate": 0x00080020,
    "StudyTime": 0x00080030,
    "StudyDescription": 0x00081030,
    "AccessionNumber": 0x00080050,
    "SeriesInstanceUID": 0x0020000E,
    "SeriesNumber": 0x00200011,
    "SeriesDescription": 0x0008103E,
    "Modality": 0x00080060,
    "InstanceNumber": 0x00200013,
    "SpecificCharacterSet": 0x00080005,
    "InstitutionName": 0x00080080,
    "Manufacturer": 0x00080070,
    "ManufacturerModelName": 0x00081090,
    "ImageType": 0x00080008,
    "LossyImageCompression": 0x00282110,
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
}

for _field, _kw in {
    **HEADER_KEYWORDS,
    "sop_class_uid": "SOPClassUID",
    "sop_instance_uid": "SOPInstanceUID",
}.items():
    _FIELD_TAGS[_field] = KEYWORD_TAGS[_kw]

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
