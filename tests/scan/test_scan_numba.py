"""The numba header scanner against its oracle, the pydicom path.

Differential: for every bundled pydicom test file and every generated good
and broken file, :class:`NumbaScanner` returns the same Header (or the same
Problem code) as :class:`PydicomScanner`, or reports the file as a fallback.
The reference table itself runs for both backends in tests/scan/test_scan.py.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from fixtures_dicom import (
    fresh_copy,
    make_absurd_length,
    make_bad_vr,
    make_ct,
    make_ct_series,
    make_deflate_bomb,
    make_deflated,
    make_duplicate_tag,
    make_encapsulated_no_delimiter,
    make_implicit_body_explicit_meta,
    make_invalid_uid,
    make_japanese_pn,
    make_le_body_be_meta,
    make_missing_sop_uid,
    make_nested,
    make_pixel_length_mismatch,
    make_raw,
    make_sjis_in_latin1,
    make_truncated_header,
    make_truncated_pixel_data,
    make_uid_mismatch,
    make_undefined_ob_no_delimiter,
    pydicom_test_file,
    pydicom_test_files,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from pdimport.model import Header
from pdimport.problems import Problem
from pdimport.scan import get_scanner
from pdimport.scan.encoding import detect_encoding
from pdimport.scan.numba_buffers import _Template
from pdimport.scan.numba_columns import KEYWORD_TAGS as _PLAIN_FIELDS_BY_KEYWORD
from pdimport.scan.numba_decode import _PLAIN_FIELDS
from pdimport.scan.numba_scanner import NumbaScanner
from pdimport.scan.pydicom_scanner import PydicomScanner
from pdimport.settings import defaults

pytest.importorskip("numba")

pytestmark = pytest.mark.usefixtures("kernels")  # the module runs once per kernel build


@pytest.fixture(scope="module")
def fast(kernels: str) -> NumbaScanner:
    scanner = NumbaScanner()
    assert scanner.is_available()
    return scanner


def _same(fast_result: Header | Problem, ref: Header | Problem) -> bool:
    if isinstance(fast_result, Header):
        fast_result.extra.pop("scan_fallback", None)
    if isinstance(ref, Header):
        return fast_result == ref
    return isinstance(fast_result, Problem) and fast_result.code == ref.code


def _compare(fast: NumbaScanner, paths: list[Path], encodings: list[str]) -> tuple[int, int]:
    """Scan ``paths`` with both backends; assert equality; (files, fallbacks)."""
    before = fast.fallbacks
    got = fast.scan(paths, encodings)
    ref = PydicomScanner().scan(paths, encodings)
    for path, a, b in zip(paths, got, ref):
        assert _same(a, b), (path.name, a, b)
    return len(paths), fast.fallbacks - before


# ------------------------------------------------------------------ plugin
def test_auto_prefers_numba():
    assert get_scanner("auto").name == "numba"
    assert get_scanner("numba").is_available()


def test_every_pydicom_test_file_matches_the_oracle(fast: NumbaScanner):
    paths, encs = [], []
    for path in pydicom_test_files():
        enc = detect_encoding(path.read_bytes()[:65536])
        if enc is not None:
            paths.append(path)
            encs.append(enc)
    files, fallbacks = _compare(fast, paths, encs)
    assert files > 150
    # deflate, the broken files and the odd ones only (measured: 6 of 183)
    assert fallbacks <= files // 10, dict(fast.fallback_reasons)


GOOD = [
    ("ct", make_ct),
    ("ct_implicit", lambda p: make_ct(p, ts=ImplicitVRLittleEndian)),
    ("ct_big_endian", lambda p: make_ct(p, ts=ExplicitVRBigEndian)),
    ("japanese_pn", make_japanese_pn),
    ("sjis_in_latin1", make_sjis_in_latin1),
    ("nested_64", lambda p: make_nested(p, 64)),
    ("raw_implicit", lambda p: make_raw(p, "implicit_le")),
    ("raw_explicit", lambda p: make_raw(p, "explicit_le")),
    ("raw_big_endian", lambda p: make_raw(p, "explicit_be")),
    ("deflated", make_deflated),
    ("fresh_ct_small", lambda p: fresh_copy("CT_small.dcm", p)),
    ("fresh_rtstruct", lambda p: fresh_copy("rtstruct.dcm", p)),
    ("fresh_jpeg", lambda p: fresh_copy("JPEG2000.dcm", p)),
    ("fresh_chrH32", lambda p: fresh_copy("chrH32.dcm", p)),
]
BROKEN = [
    ("truncated_pixel_data", make_truncated_pixel_data),
    ("truncated_header", make_truncated_header),
    ("absurd_length", make_absurd_length),
    ("bad_vr", make_bad_vr),
    ("undefined_ob", make_undefined_ob_no_delimiter),
    ("encapsulated_no_delimiter", make_encapsulated_no_delimiter),
    ("nesting_65", lambda p: make_nested(p, 65)),
    ("nesting_300", lambda p: make_nested(p, 300)),
    ("le_body_be_meta", make_le_body_be_meta),
    ("implicit_body_explicit_meta", make_implicit_body_explicit_meta),
    ("missing_sop_uid", make_missing_sop_uid),
    ("unusable_sop_uid", lambda p: make_invalid_uid(p, "1.2\\3.4")),
    ("duplicate_tag", make_duplicate_tag),
    ("pixel_length", make_pixel_length_mismatch),
    ("deflate_bomb", lambda p: make_deflate_bomb(p, inflated=4 << 20)),
]


#: Delivered with a warning (invalid_uid, uid_mismatch): both paths give the
#: same Header, warnings and their details included.
QUIRKS = [
    ("uid_mismatch", make_uid_mismatch),
    ("invalid_uid", make_invalid_uid),
    ("long_uid", lambda p: make_invalid_uid(p, "1." + "2" * 64)),
    ("leading_zero_uid", lambda p: make_invalid_uid(p, "1.02.3")),
]
CASES = GOOD + QUIRKS + BROKEN


@pytest.mark.parametrize("maker", [g[1] for g in CASES], ids=[g[0] for g in CASES])
def test_generated_file_matches_the_oracle(tmp_path: Path, fast: NumbaScanner, maker):
    path = maker(tmp_path / "IM0001")
    enc = detect_encoding(path.read_bytes()[:65536]) or "part10"
    _compare(fast, [path], [enc])


def test_good_generated_files_take_the_fast_path(tmp_path: Path):
    scanner = NumbaScanner()
    paths = [maker(tmp_path / name) for name, maker in GOOD]
    encs = [detect_encoding(p.read_bytes()[:65536]) for p in paths]
    results = scanner.scan(paths, encs)
    assert all(isinstance(r, Header) for r in results)
    assert scanner.fallbacks == 0, dict(scanner.fallback_reasons)


def test_deflated_files_are_inflated_and_take_the_fast_path(tmp_path: Path):
    scanner = NumbaScanner()
    paths = [make_deflated(tmp_path / f"IM{n:04d}") for n in range(3)]
    files, fallbacks = _compare(scanner, paths, ["part10"] * 3)
    assert (files, fallbacks) == (3, 0)
    assert scanner.fast == 3
    header = scanner.scan(paths[:1], ["part10"])[0]
    assert isinstance(header, Header) and header.transfer_syntax == "1.2.840.10008.1.2.1.99"
    assert header.pixel_data_offset == -1  # not a file offset once inflated


def test_deflate_stream_with_its_pad_byte(tmp_path: Path):
    """PS3.5 §A.5: an odd-length stream is padded with one NUL byte."""
    path = make_deflated(tmp_path / "IM0001")
    data = path.read_bytes()
    path.write_bytes(data + b"\0" if len(data) % 2 else data)
    scanner = NumbaScanner()
    _compare(scanner, [path], ["part10"])
    assert scanner.fallbacks == 0


@pytest.mark.parametrize("damage", ["bomb", "truncated", "garbage_after"])
def test_bad_deflate_streams_are_counted_fallbacks(tmp_path: Path, damage: str):
    """What does not inflate cleanly and small is the reference path's to word."""
    if damage == "bomb":
        path = make_deflate_bomb(tmp_path / "IM0001", inflated=8 << 20)
    else:
        path = make_deflated(tmp_path / "IM0001")
        data = path.read_bytes()
        path.write_bytes(data[:-40] if damage == "truncated" else data + b"JUNKJUNK")
    scanner = NumbaScanner()  # the fast path inflates at most 4 MiB
    _compare(scanner, [path], ["part10"])
    assert scanner.fallbacks == 1 and scanner.fallback_reasons["deflate"] == 1


def test_series_in_batches_with_a_bad_file(tmp_path: Path, fast: NumbaScanner):
    paths = make_ct_series(tmp_path / "S", 300, rows=8, cols=8)
    paths.insert(5, make_truncated_header(tmp_path / "bad"))
    paths.insert(7, tmp_path / "missing")
    encs = ["part10"] * len(paths)
    _compare(fast, paths, encs)


def test_split_batches_match_the_reference(tmp_path: Path, fast: NumbaScanner):
    """Several full batches, read partly by the reader thread and partly by
    the caller, with unreadable and broken files in both parts."""
    paths = make_ct_series(tmp_path / "S", 700, rows=4, cols=4)
    for at in (20, 300, 500, 690):  # reader's and caller's rows of three batches
        paths.insert(at, tmp_path / f"missing{at}")
    for at in (260, 510, 699):
        paths.insert(at, make_truncated_header(tmp_path / f"bad{at}"))
    files, _ = _compare(fast, paths, ["part10"] * len(paths))
    assert files == 707


def test_long_headers_are_read_again(tmp_path: Path):
    """A 20 kB private block before the image: re-read, not a fallback."""
    scanner = NumbaScanner(prefix=1024)
    blob = b"\x01" * 20000
    path = make_ct(tmp_path / "IM0001", rows=8, cols=8)
    from pydicom import dcmread

    ds = dcmread(path)
    ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", blob)
    ds.save_as(path)
    small = make_ct(tmp_path / "IM0002", rows=8, cols=8)
    _compare(scanner, [path, small], ["part10", "part10"])
    assert scanner.fallbacks == 0


def test_nesting_limit_is_honoured(tmp_path: Path):
    path = make_nested(tmp_path / "IM0001", 10)
    scanner = NumbaScanner(defaults().replace(limits__max_nesting=9))
    [res] = scanner.scan([path], ["part10"])
    assert isinstance(res, Problem) and res.code == "nesting_too_deep"


def test_scan_bytes_equals_scan(fast: NumbaScanner):
    path = pydicom_test_file("CT_small.dcm")
    header, reason = fast.scan_bytes(path.read_bytes())
    assert reason == ""
    assert header == fast.scan([path], ["part10"])[0]


def test_value_memo_is_per_character_set(tmp_path: Path, fast: NumbaScanner):
    """The same PN bytes under two character sets decode differently."""
    name = "Müller^Jürgen".encode("latin-1")
    a = make_ct(tmp_path / "a", rows=8, cols=8)
    b = make_ct(tmp_path / "b", rows=8, cols=8, SpecificCharacterSet="ISO_IR 192")
    for p in (a, b):
        data = bytearray(p.read_bytes())
        at = data.index(b"Test^Patient")
        data[at : at + 12] = name.ljust(12, b" ")[:12]
        p.write_bytes(bytes(data))
    _compare(fast, [a, b, a], ["part10"] * 3)


# ------------------------------------------------------- value fast paths
def _slow(scanner: NumbaScanner, tag: int, vr: int, raw: bytes) -> tuple[str, bool, str]:
    return scanner.decoder.decode_slow(tag, vr, raw, _Template())


@settings(max_examples=400, deadline=None)
@given(raw=st.from_regex(rb"\A[0-9.]{1,70}[\0 ]{0,3}\Z"), implicit=st.booleans())
def test_plain_ui_fast_path_equals_pydicom(raw: bytes, implicit: bool):
    scanner = NumbaScanner()
    vr = 0 if implicit else (ord("U") << 8) | ord("I")
    tpl = _Template()
    tpl.implicit = implicit
    assert scanner.decoder.field(0x00080018, vr, raw, tpl) == scanner.decoder.decode_slow(
        0x00080018, vr, raw, tpl
    )


@settings(max_examples=400, deadline=None)
@given(raw=st.from_regex(rb"\A[ 0-9+-]{0,12}[\0 ]{0,3}\Z"), implicit=st.booleans())
def test_plain_is_fast_path_equals_pydicom(raw: bytes, implicit: bool):
    scanner = NumbaScanner()
    vr = 0 if implicit else (ord("I") << 8) | ord("S")
    tpl = _Template()
    tpl.implicit = implicit
    assert scanner.decoder.field(0x00200013, vr, raw, tpl) == scanner.decoder.decode_slow(
        0x00200013, vr, raw, tpl
    )


def test_explicit_lengths_are_checked_against_items(tmp_path: Path, fast: NumbaScanner):
    """An element overrunning its defined-length item: the reference decides."""
    path = fresh_copy("rtplan.dcm", tmp_path)
    data = bytearray(path.read_bytes())
    at = data.index(struct.pack("<HH", 0xFFFE, 0xE000)) + 4
    (length,) = struct.unpack("<I", data[at : at + 4])
    if length != 0xFFFFFFFF:
        data[at : at + 4] = struct.pack("<I", max(length - 4, 0))
    path.write_bytes(bytes(data))
    _compare(fast, [path], ["part10"])


@settings(max_examples=600, deadline=None)
@given(
    field=st.sampled_from(sorted(_PLAIN_FIELDS.items())),
    raw=st.from_regex(rb"\A[ !-~]{0,20}\Z")
    | st.from_regex(rb"\A[A-Z0-9 \\^=.+-]{0,16}[\0 ]{0,2}\Z")
    | st.binary(min_size=0, max_size=6),
    implicit=st.booleans(),
    little=st.booleans(),
    charset=st.sampled_from([None, b"ISO_IR 100", b"ISO_IR 192 ", b"ISO_IR 6", b"ISO_IR 13"]),
)
def test_plain_field_fast_path_equals_pydicom(
    field: tuple[int, int], raw: bytes, implicit: bool, little: bool, charset: bytes | None
):
    scanner = NumbaScanner()
    tag, vr = field
    tpl = _Template()
    tpl.implicit = implicit
    tpl.little = little
    tpl.charset = None if charset is None else ("CS", charset)
    vr = 0 if implicit else vr
    assert scanner.decoder.field(tag, vr, raw, tpl) == scanner.decoder.decode_slow(
        tag, vr, raw, tpl
    )


@pytest.mark.parametrize(
    "raw", [b"=", b"==", b"A=", b"A==", b"=A", b"A=\\B", b"A^", b"^", b"A^B=C", b"A\\B"]
)
@pytest.mark.parametrize("implicit", [False, True])
def test_person_names_with_groups_match_pydicom(raw: bytes, implicit: bool):
    """pydicom drops a name's empty trailing component groups ('A=' is 'A')."""
    scanner = NumbaScanner()
    tag = _PLAIN_FIELDS_BY_KEYWORD["PatientName"]
    tpl = _Template()
    tpl.implicit = implicit
    vr = 0 if implicit else _PLAIN_FIELDS[tag]
    assert scanner.decoder.field(tag, vr, raw, tpl) == scanner.decoder.decode_slow(
        tag, vr, raw, tpl
    )
