"""Per-file result decoding of the numba scanner: a walked row becomes a
:class:`~pdimport.model.Header` or a :class:`~pdimport.problems.Problem`
with pydicom's own value converters, the values constant within a series
decoded once per series key (:class:`~pdimport.scan.numba_buffers._Template`),
only the per-instance UIDs and numbers per file.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any

import numpy as np

from pdimport.model import Header
from pdimport.problems import FileProblem, Problem
from pdimport.scan import _nbcodes as nb
from pdimport.scan import walker
from pdimport.scan.encoding import META_TAGS, uid_ok
from pdimport.scan.numba_buffers import _Template, _View, _Walked
from pdimport.scan.numba_columns import (
    _COL,
    _ENCODINGS,
    _FIELD_TAGS,
    _INSTANCE_NUMBER,
    _KEYWORD,
    _META_COL,
    _MS_INSTANCE,
    _SOP_INSTANCE,
    _TEMPLATE_FIELDS,
    KEYWORD_TAGS,
)
from pdimport.scan.pydicom_scanner import (
    _CHARSET_WARNINGS,
    _check_identity,
    _matches,
    _text_fits,
    element_text,
)
from pdimport.scan.syntax import RAW_TRANSFER_SYNTAX, _clean_text
from pdimport.scan.walker import GEOMETRY_TAGS, WalkResult

log = logging.getLogger(__name__)

_MEMO_MAX = 1 << 16
_TEMPLATE_MAX = 4096

_RAW_TS = {
    1: RAW_TRANSFER_SYNTAX["implicit_le"],
    2: RAW_TRANSFER_SYNTAX["explicit_le"],
    3: RAW_TRANSFER_SYNTAX["explicit_be"],
}

#: Plain values whose pydicom conversion is a strip (values.convert_UI /
#: convert_IS_string); tests/test_scan_numba.py checks them against pydicom.
_UI_PLAIN = re.compile(rb"[0-9.]{1,64}[\0 ]*\Z")
_IS_PLAIN = re.compile(rb"[0-9]{1,9}[\0 ]*\Z")
#: encoding.uid_ok for a str already known to be at most 64 characters.
_UID_SYNTAX = re.compile(r"[0-9]+(?:\.[0-9]+)*\Z")
_VR_UI = (ord("U") << 8) | ord("I")
_VR_IS = (ord("I") << 8) | ord("S")


def _vr_code(vr: str) -> int:
    return (ord(vr[0]) << 8) | ord(vr[1])


#: The fields of a series (their PS3.6 VRs, for implicit VR files too) whose
#: plain values pydicom gives back unchanged but for padding: decoding them
#: here spares a scan of clean files importing pydicom (≈ 0.2-0.3 s).
#: tests/scan/test_scan_numba.py holds each to pydicom.
_PLAIN_FIELDS = {
    KEYWORD_TAGS.get(kw) or next(t for t, k in GEOMETRY_TAGS.items() if k == kw): _vr_code(vr)
    for kw, vr in {
        "PatientID": "LO",
        "IssuerOfPatientID": "LO",
        "PatientName": "PN",
        "PatientBirthDate": "DA",
        "PatientSex": "CS",
        "StudyDate": "DA",
        "StudyTime": "TM",
        "StudyDescription": "LO",
        "AccessionNumber": "SH",
        "SeriesNumber": "IS",
        "SeriesDescription": "LO",
        "Modality": "CS",
        "SpecificCharacterSet": "CS",
        "InstitutionName": "LO",
        "Manufacturer": "LO",
        "ManufacturerModelName": "LO",
        "ImageType": "CS",
        "LossyImageCompression": "CS",
        "SamplesPerPixel": "US",
        "PhotometricInterpretation": "CS",
        "NumberOfFrames": "IS",
        "Rows": "US",
        "Columns": "US",
        "BitsAllocated": "US",
    }.items()
}
_VR_US = _vr_code("US")
_VR_PN = _vr_code("PN")
#: Printable ASCII words, single spaces or '\\' between them, trailing spaces.
_TEXT_PLAIN = re.compile(rb"[!-\[\]-~]+(?:[ \\][!-\[\]-~]+)* *\Z")
#: Character sets in which printable ASCII bytes are those characters.
_ASCII_SETS = {b"", b"ISO_IR 6", b"ISO_IR 100", b"ISO_IR 192"}


def _vr_str(code: int) -> str | None:
    return None if code == 0 else chr(code >> 8) + chr(code & 0xFF)


def _plain(vr: int, raw: bytes, tpl: _Template) -> str | None:
    """The text of a plain value of a :data:`_PLAIN_FIELDS` field, or None
    when it takes pydicom's conversion (anything but plain ASCII in an
    ASCII-compatible character set, a multi-valued US, padding in front)."""
    if vr == _VR_US:
        return (
            str(int.from_bytes(raw, "little" if tpl.little else "big")) if len(raw) == 2 else None
        )
    if vr == _VR_IS:
        return raw.rstrip(b"\0 ").decode("ascii") if _IS_PLAIN.match(raw) else None
    if tpl.charset is not None and tpl.charset[1].strip(b" \0") not in _ASCII_SETS:
        return None
    if vr == _VR_PN and b"=" in raw:  # pydicom drops empty trailing groups ('A=' is 'A')
        return None
    return raw.rstrip(b" ").decode("ascii") if _TEXT_PLAIN.match(raw) else None


class SeriesDecoder:
    """Decodes walked rows; memoises the decoded values per series key and
    per raw value. One per :class:`~pdimport.scan.numba_scanner.NumbaScanner`."""

    def __init__(self) -> None:
        self._memo: dict[tuple[Any, ...], tuple[str, bool, str]] = {}
        self._templates: dict[bytes, _Template] = {}
        self._encodings_memo: dict[tuple[Any, ...], Any] = {}
        #: Files answered by the fast path.
        self.fast = 0

    def decode_safe(self, w: _Walked, i: int) -> Header | Problem | str:
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
        sop, warned, failed = self.field(_SOP_INSTANCE, sop_vr, sop_raw, tpl)
        suspect = tpl.suspect or warned
        number, warned, exc = self.field(_INSTANCE_NUMBER, num_vr, num_raw, tpl)
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
                quirks = _check_identity(_MetaOnly(meta), tpl.sop_class, sop, tpl.values)  # type: ignore[arg-type]  # reads .meta only
            except FileProblem as exc_:
                return Problem(exc_.code, "", exc_.detail)
            header = self._header(tpl, v, i, sop, number, suspect)
            for code, detail in quirks:  # delivered with a warning, as a PACS would
                header.warn(code, detail)
            return header
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

    def field(self, tag: int, vr: int, raw: bytes | None, tpl: _Template) -> tuple[str, bool, str]:
        """(text, charset warning, exception text) of one top-level value,
        exactly as ``pydicom_scanner.element_text`` gives it."""
        if raw is None:
            return "", False, ""
        if vr in (0, _VR_UI) and tag in (_SOP_INSTANCE, 0x00080016, 0x0020000D, 0x0020000E):
            if _UI_PLAIN.match(raw):
                return raw.rstrip(b"\0 ").decode("ascii"), False, ""
        elif vr in (0, _VR_IS) and tag == _INSTANCE_NUMBER and _IS_PLAIN.match(raw):
            return raw.rstrip(b"\0 ").decode("ascii"), False, ""
        elif tag in _PLAIN_FIELDS and vr in (0, _PLAIN_FIELDS[tag]):
            plain = _plain(_PLAIN_FIELDS[tag], raw, tpl)
            if plain is not None:
                return plain, False, ""
        mkey = (tag, vr, tpl.implicit, tpl.little, tpl.charset, raw)
        hit = self._memo.get(mkey)
        if hit is None:
            hit = self.decode_slow(tag, vr, raw, tpl)
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

    def decode_slow(self, tag: int, vr: int, raw: bytes, tpl: _Template) -> tuple[str, bool, str]:
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
            text, warned, exc_text = self.field(tag, int(vrs[c]), _raw(buf, off[c], lens[c]), tpl)
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
