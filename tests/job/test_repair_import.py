"""End to end: vendor files that break sender rules are repaired in a copy,
delivered to dcmtk's storescp and reported (``meta_repaired``,
``length_repaired``); the spool keeps the originals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fixtures_dicom import dciodvfy_errors, make_ct
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pynetdicom.dsutils import split_dataset

from pdimport.cli import main

NAME = "Test^Patien"


def run_cli(capsys, *args: str) -> tuple[int, dict]:
    rc = main([*args, "--json"])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if out.strip() else {})


def odd_name(path: Path) -> Path:
    """A CT whose Patient's Name has an odd length (11 bytes, the pad dropped)."""
    make_ct(path, patient_id="REPAIR", patient_name=NAME)
    data = path.read_bytes()
    old = b"PN\x0c\x00Test^Patien "
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, b"PN\x0b\x00Test^Patien"))
    return path


def no_meta_class(path: Path) -> Path:
    """A CT whose File Meta lacks Media Storage SOP Class UID."""
    make_ct(path, patient_id="REPAIR", patient_name=NAME)
    meta, offset = split_dataset(path)
    del meta.MediaStorageSOPClassUID
    fp = DicomBytesIO()
    write_file_meta_info(fp, meta, enforce_standard=False)
    path.write_bytes(b"\0" * 128 + b"DICM" + fp.getvalue() + path.read_bytes()[offset:])
    return path


def test_vendor_faults_are_repaired_reported_and_delivered(tmp_path, storescp, capsys):
    disc = tmp_path / "disc"
    disc.mkdir()
    odd, nometa = odd_name(disc / "IM1"), no_meta_class(disc / "IM2")
    good = make_ct(disc / "IM3", patient_id="REPAIR", patient_name=NAME)
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (odd, nometa, good)}
    scp = storescp()
    state = tmp_path / "state"
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    codes = {(p["code"], p["path"]) for p in rep["problems"]}
    assert ("length_repaired", "IM1") in codes, rep["problems"]
    assert ("meta_repaired", "IM2") in codes, rep["problems"]
    assert not any(c in ("internal_error", "outcome_unknown") for c, _ in codes), codes
    assert rc == 0, rep["problems"]
    assert {i["path"]: i["state"] for i in rep["instances"]} == dict.fromkeys(
        ("IM1", "IM2", "IM3"), "sent"
    )
    received = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in scp.files()}
    assert len(received) == 3
    assert received[str(dcmread(odd).SOPInstanceUID)].PatientName == "Test^Patien"
    # the spool still holds each original, byte for byte
    spool = state / "spool"
    held = {hashlib.sha256(f.read_bytes()).hexdigest() for f in spool.rglob("*") if f.is_file()}
    assert set(sha.values()) <= held
    # a second import finds the repaired copies in the journal: nothing sent again
    rc, _again = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 0 and len(scp.files()) == 3


def rle_with_implicit_body(path: Path, twin: Path) -> Path:
    """An RLE Lossless CT whose body was written in implicit VR, as some
    vendors do: the meta declares RLE (explicit VR LE by PS3.5 A.4). `twin`
    gets the same object written correctly, by pydicom."""
    from pydicom.uid import RLELossless

    ct = dcmread(make_ct(path, patient_id="REPAIR", patient_name=NAME))
    ct.compress(RLELossless, encoding_plugin="pydicom")
    ct.save_as(twin, enforce_file_format=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    from pydicom.filewriter import write_dataset

    write_dataset(body, ct)
    meta = DicomBytesIO()
    ct.file_meta.TransferSyntaxUID = RLELossless
    write_file_meta_info(meta, ct.file_meta)
    path.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + body.getvalue())
    return path


def test_implicit_body_under_an_encapsulated_syntax_is_sent_re_encoded(tmp_path, storescp, capsys):
    disc = tmp_path / "disc"
    disc.mkdir()
    src = rle_with_implicit_body(disc / "IM1", tmp_path / "twin.dcm")
    original = hashlib.sha256(src.read_bytes()).hexdigest()
    scp = storescp(accept_all=True)
    state = tmp_path / "state"
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 0, rep["problems"]
    assert [(p["code"], p["path"]) for p in rep["problems"]] == [("vr_form_mismatch", "IM1")]
    [got] = [dcmread(p) for p in scp.files()]
    with pytest.warns(UserWarning, match="found implicit VR"):
        sent = dcmread(src)  # pydicom reads the implicit body too
    assert got.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    assert not got.is_implicit_VR
    assert got.SOPInstanceUID == sent.SOPInstanceUID and got.PatientName == NAME
    assert (got.pixel_array == sent.pixel_array).all()
    # what we wrote is as valid as the object written right in the first place
    assert set(dciodvfy_errors(got.filename)) <= set(dciodvfy_errors(tmp_path / "twin.dcm"))
    spool = state / "spool"
    held = {hashlib.sha256(f.read_bytes()).hexdigest() for f in spool.rglob("*") if f.is_file()}
    assert original in held  # the original stays, byte for byte
