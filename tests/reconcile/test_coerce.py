"""Coercion of an imported instance to the local identity (RAD-61, PS3.3
C.12.1.1.9): every object written is checked by dciodvfy (no errors, no
warning the source did not already have); UIDs, transfer syntax and the
pixel data bytes are unchanged; every replaced value is in Original
Attributes Sequence; text survives a character set change."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fixtures_dicom import fresh_copy, make_ct, make_deflated, make_japanese_pn, pydicom_test_file
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import JPEGBaseline8Bit
from test_convert import dciodvfy

from pdimport.convert.context import UTF8
from pdimport.problems import FileProblem
from pdimport.reconcile.coerce import LocalIdentity, coerce_dataset, coerce_file
from pdimport.reconcile.model import Candidate
from pdimport.reconcile.rewrite import read_head

JA = "Yamada^Taro=山田^太郎=やまだ^たろう"
LOCAL = LocalIdentity("L0042", "OURHOSP", JA, "19650412", "M", "mwl://RIS@127.0.0.1:4242", "A77")
NOW = dt.datetime(2026, 12, 3, 10, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=9)))
# attributes dciodvfy wants in a CT that make_ct leaves out (Type 2 / 2C)
CT_EXTRAS = {
    "ReferringPhysicianName": "",
    "Laterality": "",
    "PatientPosition": "HFS",
    "PositionReferenceIndicator": "",
    "KVP": "120",
    "AcquisitionNumber": "1",
    "InstitutionName": "Other Hospital",
}
# bookkeeping a coercion adds or changes besides the replaced values
BOOKKEEPING = {
    "SpecificCharacterSet",
    "InstanceCoercionDateTime",
    "OriginalAttributesSequence",
    "OtherPatientIDsSequence",
    "InstanceOriginStatus",
    "IssuerOfPatientIDQualifiersSequence",
}


# ------------------------------------------------------------------ helpers
def warnings_of(path: Path) -> set[str]:
    return set(dciodvfy(path))  # asserts no errors


def flat(ds: Dataset, skip: set[str] = frozenset(), prefix: str = "") -> dict[str, Any]:
    """Every value in ``ds`` by path, decoded: the text a reader sees."""
    out: dict[str, Any] = {}
    for elem in ds:
        if elem.keyword in skip or elem.tag in (0x7FE00010,):
            continue
        path = f"{prefix}{elem.tag}"
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                out.update(flat(item, prefix=f"{path}[{i}]"))
        elif isinstance(elem.value, bytes):
            out[path] = elem.value
        elif elem.VM > 1:
            out[path] = [str(v) for v in elem.value]
        else:
            out[path] = "" if elem.value is None else str(elem.value)
    return out


def tail_bytes(path: Path) -> bytes:
    """The file from its pixel data element to the end."""
    with open(path, "rb") as fp:
        _, at = read_head(fp)
        assert at is not None
        fp.seek(at)
        return fp.read()


def check(src: Path, dst: Path, changed: list[str]) -> tuple[Dataset, Dataset]:
    """The invariants of every coercion; returns (source, result) datasets."""
    assert warnings_of(dst) <= warnings_of(src)
    before, after = pydicom.dcmread(src), pydicom.dcmread(dst)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        assert after[keyword].value == before[keyword].value
    assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
    if "PixelData" in before:
        assert after.PixelData == before.PixelData
        if after.get("SpecificCharacterSet") == before.get("SpecificCharacterSet"):
            assert tail_bytes(dst) == tail_bytes(src)
    # every replaced value is recorded, with its prior value
    item = after.OriginalAttributesSequence[-1]
    assert item.ReasonForTheAttributeModification == "COERCE"
    assert item.ModifyingSystem == "pdimport"
    assert item.AttributeModificationDateTime == after.InstanceCoercionDateTime
    (prior,) = item.ModifiedAttributesSequence
    assert [e.keyword for e in prior] == changed
    for keyword in changed:
        if keyword in before and before[keyword].VR != "SQ":
            assert (
                flat(prior, prefix="")[str(prior[keyword].tag)]
                == flat(before)[str(before[keyword].tag)]
            ), keyword
        elif keyword not in before:
            assert prior[keyword].is_empty, keyword
    # nothing else changed, whatever the character set
    skip = set(changed) | BOOKKEEPING
    assert flat(after, skip) == flat(before, skip)
    assert after.InstanceOriginStatus == "IMPORTED"
    return before, after


# ------------------------------------------------------------ vendor files
VENDOR = [
    ("CT_small.dcm", {}),
    ("MR_small.dcm", {}),
    ("JPEG2000.dcm", {"Laterality": ""}),  # as shipped it lacks this Type 2C
    ("MR_small_bigendian.dcm", {}),
    ("MR_small_implicit.dcm", {}),
    ("MR_small_RLE.dcm", {}),
    ("chrH31.dcm", {"Laterality": ""}),  # ISO 2022 IR 87, Japanese names
    ("chrX1.dcm", {"Laterality": ""}),  # ISO_IR 192
    ("chrFren.dcm", {"Laterality": ""}),  # ISO_IR 100
]


@pytest.mark.parametrize(("name", "attrs"), VENDOR, ids=[n for n, _ in VENDOR])
def test_vendor_file(tmp_path, name, attrs):
    src = fresh_copy(name, tmp_path / "src.dcm", patient_id="EXT-1", **attrs)
    dst = tmp_path / "dst.dcm"
    changed = coerce_file(src, dst, LOCAL, foreign_issuer_fallback="Far Hospital", now=NOW)
    assert {"PatientID", "PatientName", "IssuerOfPatientID", "OtherPatientIDsSequence"} <= set(
        changed
    )
    before, after = check(src, dst, changed)
    assert after.PatientID == "L0042"
    assert after.IssuerOfPatientID == "OURHOSP"
    assert str(after.PatientName) == JA
    assert after.PatientBirthDate == "19650412"
    assert after.PatientSex == "M"
    *kept, other = after.OtherPatientIDsSequence  # CT_small.dcm lists two already
    assert kept == list(before.get("OtherPatientIDsSequence") or [])
    assert other.PatientID == "EXT-1"
    assert other.IssuerOfPatientID == (before.get("IssuerOfPatientID") or "Far Hospital")
    assert other.TypeOfPatientID == "TEXT"
    source = str(before.get("InstitutionName") or "Far Hospital")
    assert after.OriginalAttributesSequence[-1].SourceOfPreviousValues == source
    assert after.InstanceCoercionDateTime == "20261203100000.000000+0900"


# ----------------------------------------------------------- character sets
TEXTS = {
    "": ("Plain Hospital", "CT HEAD", "Doe^John"),
    "ISO_IR 100": ("Hôpital Saint-Éloi", "Tête sans injection", "Müller^Jürgen"),
    "\\ISO 2022 IR 87": ("東京病院", "頭部ＣＴ", "佐藤^花子"),
    "ISO_IR 192": ("Hôpital 東京", "Tête 頭部", "Øster^Åse=王^小明"),
}


def make_charset_ct(path: Path, charset: str) -> Path:
    """A CT whose text values (top level, nested, private) need ``charset``."""
    institution, description, physician = TEXTS[charset]
    extras = dict(CT_EXTRAS, InstitutionName=institution)
    make_ct(path, SpecificCharacterSet="ISO_IR 192", **extras)
    ds = pydicom.dcmread(path)
    if charset:
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    else:
        del ds.SpecificCharacterSet
    ds.StudyDescription = description
    ds.ReferringPhysicianName = physician
    ds.PatientName = physician
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "X1", "99LOCAL", description
    ds.ProcedureCodeSequence = Sequence([code])
    block = ds.private_block(0x0029, "PDIMPORT TEST", create=True)
    block.add_new(0x01, "LO", institution)
    ds.save_as(path)
    return path


CHARSET_CASES = [
    ("", JA, UTF8),
    ("", "Smith^Anna", None),
    ("ISO_IR 100", JA, UTF8),
    ("ISO_IR 100", "Lefèvre^Zoé", "ISO_IR 100"),
    ("\\ISO 2022 IR 87", JA, "\\ISO 2022 IR 87"),
    ("\\ISO 2022 IR 87", "Lefèvre^Zoé", UTF8),
    ("ISO_IR 192", JA, "ISO_IR 192"),
]


@pytest.mark.parametrize(("charset", "name", "expected"), CHARSET_CASES)
def test_character_set(tmp_path, charset, name, expected):
    src = make_charset_ct(tmp_path / "src.dcm", charset)
    dst = tmp_path / "dst.dcm"
    local = LocalIdentity("L1", "OURHOSP", name, "19650412", "F", accession_number="A1")
    changed = coerce_file(src, dst, local, accession="worklist", now=NOW)
    assert ("SpecificCharacterSet" in changed) == (expected != (charset or None))
    before, after = check(src, dst, changed)  # every other value reads back the same
    got = after.get("SpecificCharacterSet")
    got = "\\".join(got) if isinstance(got, pydicom.multival.MultiValue) else got
    assert got == expected
    assert str(after.PatientName) == name
    assert after.AccessionNumber == "A1"
    assert after.ProcedureCodeSequence[0].CodeMeaning == TEXTS[charset][1]
    assert after[0x0029, 0x1001].value == TEXTS[charset][0]
    prior = after.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0]
    assert str(prior.PatientName) == TEXTS[charset][2]  # in its old encoding
    if "SpecificCharacterSet" in changed:
        assert (prior.SpecificCharacterSet or "") == (before.get("SpecificCharacterSet") or "")
        with open(src, "rb") as a, open(dst, "rb") as b:
            old_name = bytes(read_head(a)[0].get_item("PatientName").value).rstrip(b" ")
            assert old_name in b.read()  # the prior value keeps its original bytes


def test_japanese_name_into_jis_file_with_half_width_katakana(tmp_path):
    """PS3.5 H.3.2 file (ISO 2022 IR 13 + IR 87): a name in its repertoire keeps it."""
    src = make_japanese_pn(tmp_path / "src.dcm")
    dst = tmp_path / "dst.dcm"
    name = "ｻﾄｳ^ﾊﾅｺ=佐藤^花子=さとう^はなこ"
    changed = coerce_file(src, dst, LocalIdentity("L2", name=name), now=NOW)
    assert "SpecificCharacterSet" not in changed
    ds = pydicom.dcmread(dst)
    assert list(ds.SpecificCharacterSet) == ["ISO 2022 IR 13", "ISO 2022 IR 87"]
    assert str(ds.PatientName) == name
    prior = ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert str(prior.PatientName) == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"


# ---------------------------------------------------------------- accession
@pytest.mark.parametrize(
    ("mode", "number", "expected", "recorded"),
    [
        ("keep", "A77", "ACC0001", False),
        ("clear", "A77", "", True),
        ("worklist", "A77", "A77", True),
        ("worklist", None, "ACC0001", False),  # no worklist entry: keep
    ],
)
def test_accession(tmp_path, mode, number, expected, recorded):
    src = make_ct(tmp_path / "src.dcm", **CT_EXTRAS)
    dst = tmp_path / "dst.dcm"
    local = LocalIdentity("L3", "OURHOSP", "Local^Name", accession_number=number)
    changed = coerce_file(src, dst, local, accession=mode, now=NOW)
    check(src, dst, changed)
    ds = pydicom.dcmread(dst)
    assert "AccessionNumber" in ds and ds.AccessionNumber == expected  # Type 2: kept present
    assert ("AccessionNumber" in changed) == recorded


def test_unknown_accession_mode_is_refused(tmp_path):
    src = make_ct(tmp_path / "src.dcm")
    with pytest.raises(ValueError, match="accession"):
        coerce_file(src, tmp_path / "dst.dcm", LOCAL, accession="merge")
    assert not (tmp_path / "dst.dcm").exists()


# --------------------------------------------------------------- idempotence
def test_same_identity_twice_changes_nothing(tmp_path):
    src = make_ct(tmp_path / "src.dcm", **CT_EXTRAS)
    once, twice = tmp_path / "once.dcm", tmp_path / "twice.dcm"
    assert coerce_file(src, once, LOCAL, accession="worklist", now=NOW)
    assert coerce_file(once, twice, LOCAL, accession="worklist") == []
    assert twice.read_bytes() == once.read_bytes()
    ds = pydicom.dcmread(twice)
    assert len(ds.OriginalAttributesSequence) == 1
    assert len(ds.OtherPatientIDsSequence) == 1


def test_second_identity_is_a_second_coercion(tmp_path):
    src = make_ct(tmp_path / "src.dcm", **CT_EXTRAS)
    once, twice = tmp_path / "once.dcm", tmp_path / "twice.dcm"
    coerce_file(src, once, LOCAL, now=NOW)
    other = LocalIdentity("L9999", "OURHOSP", "Other^Person", "19800101", "F")
    changed = coerce_file(once, twice, other, now=NOW)
    check(once, twice, changed)
    ds = pydicom.dcmread(twice)
    assert len(ds.OriginalAttributesSequence) == 2
    assert [(i.PatientID, i.IssuerOfPatientID) for i in ds.OtherPatientIDsSequence] == [
        ("PAT001", "TESTHOSP"),
        ("L0042", "OURHOSP"),
    ]
    assert "InstanceOriginStatus" not in changed  # already IMPORTED


def test_foreign_id_already_listed_is_not_added_again(tmp_path):
    src = make_ct(tmp_path / "src.dcm", **CT_EXTRAS)
    ds = pydicom.dcmread(src)
    known = Dataset()
    known.PatientID, known.IssuerOfPatientID, known.TypeOfPatientID = "PAT001", "TESTHOSP", "TEXT"
    ds.OtherPatientIDsSequence = Sequence([known])
    earlier = Dataset()
    earlier.AttributeModificationDateTime = "20200101000000"
    earlier.ModifyingSystem = "OTHER PACS"
    earlier.SourceOfPreviousValues = ""
    earlier.ReasonForTheAttributeModification = "CORRECT"
    old = Dataset()
    old.PatientName = "Old^Name"
    earlier.ModifiedAttributesSequence = Sequence([old])
    ds.OriginalAttributesSequence = Sequence([earlier])
    ds.InstanceOriginStatus = "LOCAL"
    ds.save_as(src)
    dst = tmp_path / "dst.dcm"
    changed = coerce_file(src, dst, LOCAL, now=NOW)
    assert "OtherPatientIDsSequence" not in changed
    check(src, dst, changed)
    out = pydicom.dcmread(dst)
    assert len(out.OtherPatientIDsSequence) == 1
    assert [i.ModifyingSystem for i in out.OriginalAttributesSequence] == ["OTHER PACS", "pdimport"]
    prior = out.OriginalAttributesSequence[1].ModifiedAttributesSequence[0]
    assert prior.InstanceOriginStatus == "LOCAL"


# ---------------------------------------------------------- patient details
def test_issuer_and_qualifiers_of_the_foreign_id(tmp_path):
    """No local issuer: the foreign one goes, and its qualifiers move with
    the foreign ID into Other Patient IDs; no InstitutionName: the fallback."""
    src = make_ct(tmp_path / "src.dcm", **dict(CT_EXTRAS, InstitutionName=""))
    ds = pydicom.dcmread(src)
    del ds.InstitutionName
    qualifier = Dataset()
    qualifier.UniversalEntityID, qualifier.UniversalEntityIDType = "1.2.3.4", "ISO"
    ds.IssuerOfPatientIDQualifiersSequence = Sequence([qualifier])
    ds.save_as(src)
    dst = tmp_path / "dst.dcm"
    local = LocalIdentity("L4", "", "Local^Name", "19650412", "M")
    changed = coerce_file(src, dst, local, foreign_issuer_fallback="Far Hospital", now=NOW)
    assert "IssuerOfPatientIDQualifiersSequence" in changed
    check(src, dst, changed)
    out = pydicom.dcmread(dst)
    assert "IssuerOfPatientID" not in out
    assert "IssuerOfPatientIDQualifiersSequence" not in out
    (other,) = out.OtherPatientIDsSequence
    assert other.IssuerOfPatientID == "TESTHOSP"
    assert other.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityID == "1.2.3.4"
    item = out.OriginalAttributesSequence[0]
    assert item.SourceOfPreviousValues == "Far Hospital"
    assert item.ModifiedAttributesSequence[0].IssuerOfPatientID == "TESTHOSP"


def test_empty_and_absent_values_are_recorded_zero_length(tmp_path):
    src = make_ct(tmp_path / "src.dcm", **CT_EXTRAS)
    ds = pydicom.dcmread(src)
    ds.PatientBirthDate = ""  # Type 2: present, empty
    del ds.IssuerOfPatientID  # Type 3: absent
    ds.save_as(src)
    dst = tmp_path / "dst.dcm"
    changed = coerce_file(src, dst, LOCAL, foreign_issuer_fallback="Other Hospital", now=NOW)
    check(src, dst, changed)
    prior = pydicom.dcmread(dst).OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert prior["PatientBirthDate"].is_empty
    assert prior["IssuerOfPatientID"].is_empty
    assert prior["OtherPatientIDsSequence"].value == []


def test_local_identity_is_checked_and_made_from_a_candidate():
    with pytest.raises(ValueError, match="sex"):
        LocalIdentity("L1", sex="X")
    with pytest.raises(ValueError, match="birth_date"):
        LocalIdentity("L1", birth_date="1965-04-12")
    with pytest.raises(ValueError, match="patient_id"):
        LocalIdentity(" ")
    chosen = Candidate("L5", JA, "19650412", "M", "mwl://RIS", issuer="OURHOSP")
    local = LocalIdentity.from_candidate(chosen)
    assert (local.patient_id, local.issuer, local.source) == ("L5", "OURHOSP", "mwl://RIS")
    assert local.accession_number is None  # not from a worklist entry: keep


def test_coerce_dataset_in_memory():
    ds = pydicom.dcmread(pydicom_test_file("CT_small.dcm"))
    changed = coerce_dataset(ds, LOCAL, now=NOW)
    assert ds.PatientID == "L0042" and "PatientID" in changed
    assert coerce_dataset(ds, LOCAL, now=NOW) == []


# --------------------------------------------------- transfer syntaxes, size
def test_deflated_file(tmp_path):
    src = make_deflated(tmp_path / "src.dcm")
    dst = tmp_path / "dst.dcm"
    changed = coerce_file(src, dst, LOCAL, now=NOW)
    ds = pydicom.dcmread(dst)
    assert ds.file_meta.TransferSyntaxUID == pydicom.dcmread(src).file_meta.TransferSyntaxUID
    assert ds.PixelData == pydicom.dcmread(src).PixelData
    assert ds.PatientID == "L0042" and "PatientID" in changed


def test_not_dicom_is_a_file_problem(tmp_path):
    src = tmp_path / "src.dcm"
    src.write_bytes(b"not a DICOM file at all" * 20)
    with pytest.raises(FileProblem) as err:
        coerce_file(src, tmp_path / "dst.dcm", LOCAL)
    assert err.value.code == "unparsable"
    assert not (tmp_path / "dst.dcm").exists()


def test_elements_after_pixel_data_are_re_encoded(tmp_path):
    """A private group above 7FE0 and trailing padding, in ISO 2022 IR 87;
    the new name needs UTF-8, so the text after the pixel data changes
    encoding too while the pixel element stays byte for byte."""
    src = make_charset_ct(tmp_path / "src.dcm", "\\ISO 2022 IR 87")
    ds = pydicom.dcmread(src)
    block = ds.private_block(0x7FE1, "PDIMPORT TAIL", create=True)
    block.add_new(0x01, "LO", "後ろの値")
    ds.DataSetTrailingPadding = b"\0" * 16
    ds.save_as(src)
    dst = tmp_path / "dst.dcm"
    changed = coerce_file(src, dst, LocalIdentity("L6", name="Lefèvre^Zoé"), now=NOW)
    assert "SpecificCharacterSet" in changed
    check(src, dst, changed)
    out = pydicom.dcmread(dst)
    assert out[0x7FE1, 0x1001].value == "後ろの値"
    assert out.DataSetTrailingPadding == b"\0" * 16
    pixel = pydicom.dcmread(src).PixelData
    assert tail_bytes(dst).startswith(tail_bytes(src)[: len(pixel) + 12])  # the whole element


def _big_file(path: Path, size: int, encapsulated: bool) -> Path:
    """A CT header written by pydicom, then ``size`` bytes of pixel data
    written in chunks (native OW, or JPEG fragments of 1 MiB)."""
    head = fresh_copy("CT_small.dcm", path, patient_id="BIG")
    ds = pydicom.dcmread(head, stop_before_pixels=True)
    if encapsulated:
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    side = int((size // 2) ** 0.5)
    ds.Rows = ds.Columns = side
    dcmwrite(path, ds, enforce_file_format=True)
    chunk = os.urandom(1 << 20)
    with open(path, "ab") as fp:
        if encapsulated:
            fp.write(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OB", 0xFFFFFFFF))
            fp.write(struct.pack("<HHI", 0xFFFE, 0xE000, 0))
            item = struct.pack("<HHI", 0xFFFE, 0xE000, len(chunk))
            fp.writelines(item + chunk for _ in range(size >> 20))
            fp.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
        else:
            fp.write(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", side * side * 2))
            left = side * side * 2
            while left:
                fp.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
    return path


def _digest_from(path: Path, at: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        fp.seek(at)
        while block := fp.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@pytest.mark.parametrize("encapsulated", [False, True], ids=["native", "encapsulated"])
def test_large_file_memory_stays_bounded(tmp_path, encapsulated):
    size = 192 << 20
    src = _big_file(tmp_path / "src.dcm", size, encapsulated)
    with open(src, "rb") as fp:
        head, src_at = read_head(fp)
    assert "PixelData" not in head and src_at is not None
    dst = tmp_path / "dst.dcm"
    tracemalloc.start()
    try:
        changed = coerce_file(src, dst, LOCAL, now=NOW)  # Japanese name: re-encoded too
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "SpecificCharacterSet" in changed
    assert peak < 16 << 20, f"peak {peak >> 20} MiB for a {size >> 20} MiB file"
    with open(dst, "rb") as fp:
        out, dst_at = read_head(fp)
    assert out.PatientID == "L0042" and dst_at is not None
    assert _digest_from(dst, dst_at) == _digest_from(src, src_at)


def test_long_values_before_the_pixel_data_are_deferred(tmp_path):
    src = fresh_copy("CT_small.dcm", tmp_path / "src.dcm", patient_id="DEF")
    ds = pydicom.dcmread(src)
    block = ds.private_block(0x0029, "PDIMPORT BLOB", create=True)
    block.add_new(0x01, "OB", b"\x01" * (1 << 20))
    tag = block.get_tag(0x01)
    ds.save_as(src)
    with open(src, "rb") as fp:
        head, _ = read_head(fp)
    assert head.get_item(tag, keep_deferred=True).value is None  # not read
    dst = tmp_path / "dst.dcm"
    check(src, dst, coerce_file(src, dst, LOCAL, now=NOW))
    assert pydicom.dcmread(dst)[tag].value == b"\x01" * (1 << 20)
