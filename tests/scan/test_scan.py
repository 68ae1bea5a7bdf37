"""Header scanning: the structure walker (gatekeeper) and the scanner plugins.

Every broken case must give its problem code; good files must give the same
values as pydicom ``dcmread``; no input may crash, hang or allocate its
declared length.
"""

from __future__ import annotations

import random
import struct
import time
import tracemalloc
import warnings
from pathlib import Path

import pytest
from fixtures_dicom import (
    fresh_copy,
    make_absurd_length,
    make_bad_vr,
    make_ct,
    make_deflate_bomb,
    make_deflated,
    make_duplicate_tag,
    make_empty,
    make_encapsulated_no_delimiter,
    make_implicit_body_explicit_meta,
    make_invalid_uid,
    make_japanese_pn,
    make_le_body_be_meta,
    make_missing_sop_uid,
    make_nested,
    make_noise_dcm,
    make_pixel_length_mismatch,
    make_raw,
    make_sjis_in_latin1,
    make_truncated_header,
    make_truncated_pixel_data,
    make_uid_mismatch,
    make_undefined_ob_no_delimiter,
    pydicom_test_file,
    pydicom_test_files,
    write_part10_bytes,
)
from pydicom import dcmread
from pydicom.multival import MultiValue

from pdimport.model import Header
from pdimport.problems import PROBLEM_CODES, FileProblem, Problem
from pdimport.scan import ScannerUnavailable, available_scanners, get_scanner
from pdimport.scan.encoding import detect_encoding, uid_usable
from pdimport.scan.pydicom_scanner import HEADER_KEYWORDS, uid_ok
from pdimport.scan.reference import REFERENCE, Reference
from pdimport.scan.walker import walk
from pdimport.settings import defaults

SMALL_INFLATE = defaults().replace(limits__max_inflate=8 << 20)


def _encoding(path: Path) -> str | None:
    return detect_encoding(path.read_bytes()[:65536])


def _scan(path: Path, limits=None, scanner: str = "pydicom") -> Header | Problem:
    enc = _encoding(path)
    assert enc is not None, f"{path.name} not detected as DICOM"
    return get_scanner(scanner, limits).scan([path], [enc])[0]


def _oracle(path: Path) -> dict[str, str]:
    """What pydicom itself says (the values every scanner must reproduce)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path, force=True, stop_before_pixels=True)
        out = {}
        for field, keyword in {
            **HEADER_KEYWORDS,
            "sop_class_uid": "SOPClassUID",
            "sop_instance_uid": "SOPInstanceUID",
        }.items():
            value = ds[keyword].value if keyword in ds else None
            if value is None:
                out[field] = ""
            elif isinstance(value, MultiValue):
                out[field] = "\\".join(str(v) for v in value)
            else:
                out[field] = str(value)
        if ds.file_meta and "TransferSyntaxUID" in ds.file_meta:
            out["transfer_syntax"] = str(ds.file_meta.TransferSyntaxUID)
    return out


# ------------------------------------------------------------------ plugins
def test_registry_offers_pydicom_and_auto():
    assert "pydicom" in available_scanners()
    assert get_scanner("auto").name in available_scanners()
    assert get_scanner("pydicom").is_available()
    with pytest.raises(ScannerUnavailable):
        get_scanner("nonesuch")


# ---------------------------------------------------------- reference table
@pytest.mark.parametrize("scanner", available_scanners())
@pytest.mark.parametrize("ref", REFERENCE, ids=lambda r: r.name)
def test_reference_table(ref: Reference, scanner: str):
    path = pydicom_test_file(ref.name)
    assert _encoding(path) == ref.encoding
    if ref.encoding is None:
        return
    result = get_scanner(scanner).scan([path], [ref.encoding])[0]
    if ref.problem:
        assert isinstance(result, Problem), result
        assert result.code == ref.problem
        return
    assert isinstance(result, Header), result
    assert result.encoding == ref.encoding
    expected = {"warnings": [], **ref.values}
    got = {k: getattr(result, k) for k in expected}
    assert got == expected


def test_every_pydicom_test_file_scans_or_is_a_problem():
    """Never a crash, never a hang; a Header means pydicom's values."""
    scanner = get_scanner("pydicom")
    headers = 0
    for path in pydicom_test_files():
        enc = _encoding(path)
        if enc is None:
            continue
        start = time.monotonic()
        result = scanner.scan([path], [enc])[0]
        assert time.monotonic() - start < 5, path.name
        if isinstance(result, Problem):
            assert result.code in PROBLEM_CODES
            # 'unparsable' from a Python programming error is a bug in us
            assert not result.detail.startswith(("AttributeError", "TypeError", "NameError")), (
                path.name,
                result.detail,
            )
            continue
        headers += 1
        oracle = _oracle(path)
        for field, value in oracle.items():
            assert getattr(result, field) == value, (path.name, field)
    assert headers > 60  # most bundled files are good


# ------------------------------------------------------------ broken files
BROKEN = [
    ("truncated_pixel_data", make_truncated_pixel_data, "truncated"),
    ("truncated_header", make_truncated_header, "truncated"),
    ("absurd_length", make_absurd_length, "length_exceeds_file"),
    ("bad_vr", make_bad_vr, "bad_vr"),
    ("undefined_ob", make_undefined_ob_no_delimiter, "undefined_length_misuse"),
    ("encapsulated_no_delimiter", make_encapsulated_no_delimiter, "undefined_length_misuse"),
    ("nesting_65", lambda p: make_nested(p, 65), "nesting_too_deep"),
    ("nesting_300", lambda p: make_nested(p, 300), "nesting_too_deep"),
    ("nesting_5000", lambda p: make_nested(p, 5000), "nesting_too_deep"),
    ("le_body_be_meta", make_le_body_be_meta, "ts_mismatch"),
    ("missing_sop_uid", make_missing_sop_uid, "missing_attribute"),
    ("control_char_sop_uid", lambda p: make_invalid_uid(p, "1.2.3\x01.4"), "missing_attribute"),
    ("multi_valued_sop_uid", lambda p: make_invalid_uid(p, "1.2.3\\1.2.4"), "missing_attribute"),
    ("duplicate_tag", make_duplicate_tag, "tag_order"),
    ("pixel_length", make_pixel_length_mismatch, "pixel_length_mismatch"),
]


@pytest.mark.parametrize("maker, code", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_file_gives_its_code(tmp_path: Path, maker, code):
    path = maker(tmp_path / "IM0001")
    result = _scan(path)
    assert isinstance(result, Problem), f"accepted: {result}"
    assert result.code == code, result.detail


@pytest.mark.parametrize("scanner", available_scanners())
def test_implicit_body_under_explicit_syntax_is_read_as_pydicom_reads_it(
    tmp_path: Path, scanner: str
):
    """D8: explicit VR declared, every element implicit: read as implicit VR
    (the values pydicom reads), with a warning; the copy sent is re-encoded."""
    path = make_implicit_body_explicit_meta(tmp_path / "IM0001")
    result = _scan(path, scanner=scanner)
    assert isinstance(result, Header), result
    assert result.warnings == ["vr_form_mismatch"]
    assert PROBLEM_CODES["vr_form_mismatch"][0] == "warning"
    for field, value in _oracle(path).items():
        assert getattr(result, field) == value, field


def test_explicit_body_with_one_odd_header_is_not_read_as_implicit(tmp_path: Path):
    """The body counts as implicit VR only on evidence: a body whose first
    element merely lacks VR bytes is still refused."""
    body = struct.pack("<HH", 0x0008, 0x0016) + b"ZZ" + struct.pack("<H", 4) + b"1.2\0"
    path = write_part10_bytes(tmp_path / "IM0001", body + bytes(range(64)))
    for scanner in available_scanners():
        result = _scan(path, scanner=scanner)
        assert isinstance(result, Problem) and result.code == "ts_mismatch", (scanner, result)


#: What storescp, dcmsend and Orthanc store although PS3.5 forbids it: a
#: Header with a warning that says which UID (the file is delivered).
UID_QUIRKS = [
    ("uid_mismatch", make_uid_mismatch, "uid_mismatch", "meta '"),
    ("invalid_uid", make_invalid_uid, "invalid_uid", "SOPInstanceUID '1.2.840.abc.0..5'"),
    ("long_uid", lambda p: make_invalid_uid(p, "1." + "2" * 64), "invalid_uid", "SOPInstanceUID"),
    ("padded_uid", lambda p: make_invalid_uid(p, "1.2.3.4 "), None, ""),
]


@pytest.mark.parametrize("scanner", available_scanners())
@pytest.mark.parametrize(
    "maker, code, detail", [q[1:] for q in UID_QUIRKS], ids=[q[0] for q in UID_QUIRKS]
)
def test_uid_quirk_is_a_warning_not_a_refusal(tmp_path: Path, scanner: str, maker, code, detail):
    path = maker(tmp_path / "IM0001")
    result = _scan(path, scanner=scanner)
    assert isinstance(result, Header), result
    assert result.warnings == ([code] if code else [])
    if code:
        assert detail in result.warning_detail(code), result.extra
        assert PROBLEM_CODES[code][0] == "warning"


@pytest.mark.parametrize(
    "usable, uid",
    [
        (True, "1.2.840.10008.1.2"),
        (True, "1.2.840.abc.0..5"),
        (True, "1." + "2" * 70),
        (False, ""),
        (False, "1.2 .3"),
        (False, "1.2\\3.4"),
        (False, "1.2.\x013"),
        (False, "1.2.\u00e93"),
    ],
)
def test_uid_usable(usable: bool, uid: str):
    assert uid_usable(uid) is usable


def test_empty_file_is_empty_file(tmp_path: Path):
    path = make_empty(tmp_path / "x.dcm")
    assert _encoding(path) is None
    with pytest.raises(FileProblem) as exc:
        walk(path, "part10")
    assert exc.value.code == "empty_file"


def test_noise_is_not_dicom(tmp_path: Path):
    path = make_noise_dcm(tmp_path / "noise.dcm")
    assert _encoding(path) is None
    with pytest.raises(FileProblem) as exc:
        walk(path, "part10")
    assert exc.value.code == "not_dicom"


def test_absurd_length_allocates_nothing(tmp_path: Path):
    path = make_absurd_length(tmp_path / "IM0001")
    tracemalloc.start()
    try:
        with pytest.raises(FileProblem):
            walk(path, "part10")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_deflate_bomb_is_capped_fast_and_small(tmp_path: Path):
    path = make_deflate_bomb(tmp_path / "IM0001", inflated=64 << 20)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    start = time.monotonic()
    try:
        result = _scan(path, SMALL_INFLATE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result, Problem) and result.code == "deflate_bomb"
    assert time.monotonic() - start < 5
    assert peak < 8 << 20


def test_deflate_bomb_before_pixel_data_never_reaches_pydicom(tmp_path: Path):
    """Under the inflate cap, a huge value before Pixel Data is still refused
    instead of being inflated whole for pydicom."""
    path = make_deflate_bomb(tmp_path / "IM0001", inflated=300 << 20)
    result = _scan(path)  # default cap 2 GiB: the walk passes
    assert isinstance(result, Problem) and result.code == "deflate_bomb"


def test_truncated_pixel_data_is_not_a_pydicom_success(tmp_path: Path):
    path = make_truncated_pixel_data(tmp_path / "IM0001")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcmread(path)  # pydicom accepts it silently (notes D1) ...
    assert _scan(path).code == "truncated"  # ... we do not


# ------------------------------------------------------------- good files
def test_synthetic_ct_equals_pydicom(tmp_path: Path):
    path = make_ct(tmp_path / "IM0001", patient_id="P123", patient_name="Doe^Jane")
    header = _scan(path)
    assert isinstance(header, Header)
    for field, value in _oracle(path).items():
        assert getattr(header, field) == value, field
    assert header.patient_id == "P123"
    assert header.image_type == "ORIGINAL\\PRIMARY\\AXIAL"
    assert header.encoding == "part10"
    data = path.read_bytes()
    assert data[header.pixel_data_offset : header.pixel_data_offset + 4] == b"\xe0\x7f\x10\x00"
    assert header.warnings == []


def test_fresh_copy_sets_patient_and_new_uids(tmp_path: Path):
    original = _scan(pydicom_test_file("CT_small.dcm"))
    path = fresh_copy("CT_small.dcm", tmp_path, patient_id="NEW1", PatientName="New^Name")
    header = _scan(path)
    assert isinstance(header, Header)
    assert header.patient_id == "NEW1" and header.patient_name == "New^Name"
    assert header.sop_instance_uid != original.sop_instance_uid
    assert header.study_uid != original.study_uid
    assert header.series_uid != original.series_uid


def test_nesting_64_is_accepted(tmp_path: Path):
    assert isinstance(_scan(make_nested(tmp_path / "IM0001", 64)), Header)


def test_nesting_limit_is_configurable(tmp_path: Path):
    path = make_nested(tmp_path / "IM0001", 10)
    result = _scan(path, defaults().replace(limits__max_nesting=9))
    assert isinstance(result, Problem) and result.code == "nesting_too_deep"


def test_valid_deflated_file_scans(tmp_path: Path):
    path = make_deflated(tmp_path / "IM0001")
    header = _scan(path)
    assert isinstance(header, Header), header
    assert header.transfer_syntax == "1.2.840.10008.1.2.1.99"
    assert header.patient_name == "Test^Patient"


@pytest.mark.parametrize("encoding", ["implicit_le", "explicit_le", "explicit_be"])
def test_raw_datasets_are_detected_and_scanned(tmp_path: Path, encoding: str):
    path = make_raw(tmp_path / "00000001", encoding)
    assert _encoding(path) == encoding
    header = _scan(path)
    assert isinstance(header, Header), header
    assert header.encoding == encoding
    assert header.dataset_offset == 0
    assert header.patient_name == "Raw^Dataset"
    assert (
        header.transfer_syntax
        == {
            "implicit_le": "1.2.840.10008.1.2",
            "explicit_le": "1.2.840.10008.1.2.1",
            "explicit_be": "1.2.840.10008.1.2.2",
        }[encoding]
    )


def test_japanese_pn_decoded_in_full(tmp_path: Path):
    header = _scan(make_japanese_pn(tmp_path / "IM0001"))
    assert isinstance(header, Header)
    assert header.patient_name == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"
    assert header.specific_character_set == "ISO 2022 IR 13\\ISO 2022 IR 87"
    assert "charset_suspect" not in header.warnings


def test_shift_jis_declared_latin1_is_suspect(tmp_path: Path):
    header = _scan(make_sjis_in_latin1(tmp_path / "IM0001"))
    assert isinstance(header, Header)
    assert "charset_suspect" in header.warnings


def test_latin1_names_are_not_suspect():
    header = _scan(pydicom_test_file("chrGerm.dcm"))
    assert header.patient_name == "Äneas^Rüdiger"
    assert header.warnings == []


def test_batch_continues_after_a_bad_file(tmp_path: Path):
    bad = make_truncated_header(tmp_path / "bad")
    good = make_ct(tmp_path / "good")
    results = get_scanner("pydicom").scan(
        [bad, tmp_path / "missing", good], ["part10", "part10", "part10"]
    )
    assert isinstance(results[0], Problem) and results[0].code == "truncated"
    assert isinstance(results[1], Problem)
    assert isinstance(results[2], Header)


# ------------------------------------------------------- walker details
def _el(tag: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr + struct.pack("<H", len(value)) + value


def test_unsorted_unique_tags_warn_only(tmp_path: Path):
    body = (
        _el(0x00080016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0")
        + _el(0x00100020, b"LO", b"ID")
        + _el(0x00080018, b"UI", b"1.2.3.4\0")
    )
    path = write_part10_bytes(tmp_path / "IM0001", body, sop_class_uid="1.2.840.10008.5.1.4.1.1.7")
    result = walk(path, "part10")
    assert "tag_unsorted" in result.warnings


def test_trailing_zero_padding_warns(tmp_path: Path):
    path = make_ct(tmp_path / "IM0001")
    path.write_bytes(path.read_bytes() + b"\0" * 2048)
    header = _scan(path)
    assert isinstance(header, Header)
    assert "trailing_data" in header.warnings


def test_trailing_garbage_is_refused(tmp_path: Path):
    path = make_ct(tmp_path / "IM0001")
    path.write_bytes(path.read_bytes() + b"\x01\x02\x03")
    result = _scan(path)
    assert isinstance(result, Problem) and result.code == "truncated"


def test_meta_without_preamble_is_read(tmp_path: Path):
    path = make_ct(tmp_path / "IM0001")
    path.write_bytes(path.read_bytes()[132:])
    header = _scan(path)
    assert isinstance(header, Header), header
    assert header.encoding == "explicit_le"
    assert header.dataset_offset > 0
    assert header.transfer_syntax == "1.2.840.10008.1.2.1"


def test_detect_encoding_rejects_other_formats():
    for prefix in (
        b"%PDF-1.4\n" + b" " * 200,
        b"\x89PNG\r\n\x1a\n" + b"\0" * 200,
        b"\xff\xd8\xff\xe0" + b"\0" * 200,
        b"Hello, world\n" * 20,
        b"",
        b"\0" * 300,
    ):
        assert detect_encoding(prefix) is None


@pytest.mark.parametrize(
    "ok, uid",
    [
        (True, "1.2.840.10008.1.2"),
        (True, "2.25.12345"),
        (False, ""),
        (False, "1..2"),
        (False, "1.2."),
        (False, "1.2.a"),
        (False, "../../etc"),
        (False, "1." + "2" * 63),
    ],
)
def test_uid_syntax(ok: bool, uid: str):
    assert uid_ok(uid) is ok


def test_mutated_files_only_ever_give_file_problems(tmp_path: Path):
    """A small fuzz: flipped bytes and cuts anywhere give a value, fast."""
    seed_file = make_ct(tmp_path / "seed", rows=16, cols=16)
    data = seed_file.read_bytes()
    rnd = random.Random(20240601)
    scanner = get_scanner("pydicom")
    target = tmp_path / "mutant"
    start = time.monotonic()
    for i in range(300):
        mutant = bytearray(data)
        for _ in range(rnd.randint(1, 4)):
            at = rnd.randrange(132, len(mutant))
            mutant[at] = rnd.getrandbits(8)
        if i % 3 == 0:
            mutant = mutant[: rnd.randrange(100, len(mutant))]
        target.write_bytes(bytes(mutant))
        enc = detect_encoding(bytes(mutant[:4096]))
        if enc is None:
            continue
        try:
            walk(target, enc)
        except FileProblem:
            pass
        result = scanner.scan([target], [enc])[0]
        assert isinstance(result, (Header, Problem))
        if isinstance(result, Problem):
            assert not result.detail.startswith(("AttributeError", "TypeError", "NameError")), (
                result
            )
    assert time.monotonic() - start < 30
