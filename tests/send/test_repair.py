"""Repairs a sender owes the standard (send/repair.py) and named aborts.

Inputs are hand-built here: odd element lengths (also inside a sequence of
defined length), a deflated data set whose bitstream has an odd length, File
Meta without Media Storage SOP Class UID, and File Meta whose SOP Instance
UID disagrees with the data set. The repaired copy goes to dcmtk's storescp,
which refuses the originals.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import zlib
from pathlib import Path

import pydicom
import pytest
from fixtures_dicom import _el, make_uid_mismatch, write_part10_bytes
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)

from pdimport.model import SendItem, SendOutcome
from pdimport.send import deliver, parse_dest, repair
from pdimport.send.wire import fragment_size


def _ui(uid: str) -> bytes:
    return uid.encode() + (b"\0" if len(uid) % 2 else b"")


def _body(uid: str, extra: bytes = b"", name: bytes = b"Odd^Nam") -> bytes:
    return (
        _el(0x00080005, b"CS", b"ISO_IR 100")
        + _el(0x00080016, b"UI", _ui(CTImageStorage))
        + _el(0x00080018, b"UI", _ui(uid))
        + _el(0x00080060, b"CS", b"CT")
        + extra
        + _el(0x00100010, b"PN", name)  # 7 bytes: odd
        + _el(0x00100020, b"LO", b"ODD1")
    )


def odd_file(path: Path) -> tuple[Path, str]:
    """Odd PN at the top level; an odd LO and an odd OB inside a sequence item
    of defined length (so the item and sequence lengths must grow too)."""
    uid = generate_uid()
    item = _el(0x00081150, b"UI", _ui(CTImageStorage)) + _el(0x00081155, b"UI", _ui(uid))
    item += _el(0x00091010, b"LO", b"ABC") + _el(0x00091011, b"OB", b"\x01\x02\x03")
    seq_value = struct.pack("<HHI", 0xFFFE, 0xE000, len(item)) + item
    seq = _el(0x00081140, b"SQ", seq_value) + _el(0x00090010, b"LO", b"PRIVATE ")
    return write_part10_bytes(path, _body(uid, seq), sop_instance_uid=uid), uid


def deflated_odd(path: Path) -> tuple[Path, str]:
    """A deflated data set whose bitstream has an odd length (PS3.5 A.5)."""
    uid = generate_uid()
    for n in range(64):
        raw = _body(uid) + _el(0x00204000, b"LT", b"x" * (2 * n + 2))
        z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        stream = z.compress(raw) + z.flush()
        if len(stream) % 2:
            break
    assert len(stream) % 2
    return write_part10_bytes(
        path, stream, ts=DeflatedExplicitVRLittleEndian, sop_instance_uid=uid
    ), uid


def meta_without_class(path: Path) -> tuple[Path, str]:
    """File Meta with no Media Storage SOP Class UID (even lengths elsewhere)."""
    uid = generate_uid()
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    fp = DicomBytesIO()
    write_file_meta_info(fp, meta, enforce_standard=False)
    body = _body(uid, name=b"Even^Nam")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 128 + b"DICM" + fp.getvalue() + body)
    return path, uid


def item_for(path: Path, uid: str, ts: str = ExplicitVRLittleEndian) -> SendItem:
    return SendItem(f"key-{uid}", path, CTImageStorage, uid, ts, path.stat().st_size)


def repaired(path: Path, uid: str, ts: str = ExplicitVRLittleEndian) -> tuple[Path, repair.Repair]:
    fix = repair.plan(path, CTImageStorage, uid, ts)
    out = path.with_suffix(".repaired.dcm")
    repair.write(path, out, fix)
    return out, fix


def run(url: str, items: list[SendItem], cfg, tmp_path: Path) -> dict[str, SendOutcome]:
    outcomes: list[SendOutcome] = []
    deliver(parse_dest(url), items, cfg, outcomes.append, tmp_path / "work")
    return {o.key: o for o in outcomes}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dcmdump_ok(path: Path) -> None:
    proc = subprocess.run(
        ["dcmdump", "-q", "+E", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "odd" not in proc.stderr.lower(), proc.stderr


# ---------------------------------------------------------------- plan
def test_clean_file_needs_nothing(tmp_path: Path) -> None:
    from fixtures_dicom import make_ct

    path = make_ct(tmp_path / "ct.dcm")
    ds = pydicom.dcmread(path)
    assert not repair.plan(path, ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian)


def test_fragments_are_even_whatever_the_peer_announces() -> None:
    assert fragment_size(16385) % 2 == 0 and fragment_size(16384) == 16378
    assert fragment_size(7) == 0 or fragment_size(7) % 2 == 0


# ----------------------------------------------- odd lengths to storescp
def test_odd_lengths_are_padded_and_storescp_accepts(storescp, cfg, tmp_path) -> None:
    path, uid = odd_file(tmp_path / "spool" / "odd.dcm")
    before = sha(path)
    scp = storescp()
    # as it is: storescp aborts on the odd last fragment, and we say so
    out = run(scp.url, [item_for(path, uid)], cfg, tmp_path)[f"key-{uid}"]
    assert (out.state, out.code) == ("retry", "association_aborted"), out
    assert "A-ABORT" in out.detail or "closed" in out.detail
    fixed, fix = repaired(path, uid)
    assert not fix.meta and len(fix.lengths) == 3, fix.lengths
    assert any("PN length 7 padded with space" in w for w in fix.lengths)
    out = run(scp.url, [item_for(fixed, uid)], cfg, tmp_path)[f"key-{uid}"]
    assert out.state == "sent", out
    assert sha(path) == before  # the original is untouched
    (received,) = scp.files()
    dcmdump_ok(received)
    ds = pydicom.dcmread(received)
    assert ds.PatientName == "Odd^Nam" and ds.PatientID == "ODD1"
    ref = ds.ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == uid
    assert ref[0x00091010].value == "ABC"
    assert ref[0x00091011].value == b"\x01\x02\x03\x00"
    assert ds[0x00090010].value == "PRIVATE"


def test_odd_deflated_bitstream_is_padded(storescp, cfg, tmp_path) -> None:
    path, uid = deflated_odd(tmp_path / "spool" / "dfl.dcm")
    before = sha(path)
    fixed, fix = repaired(path, uid, DeflatedExplicitVRLittleEndian)
    assert fix.lengths and "deflated bitstream" in fix.lengths[0]
    assert fixed.stat().st_size == path.stat().st_size + 1
    scp = storescp(accept_all=True)
    out = run(scp.url, [item_for(fixed, uid, DeflatedExplicitVRLittleEndian)], cfg, tmp_path)
    assert out[f"key-{uid}"].state == "sent", out
    assert sha(path) == before
    (received,) = scp.files()
    ds = pydicom.dcmread(received)
    assert ds.SOPInstanceUID == uid and ds.PatientName == "Odd^Nam"
    assert pydicom.dcmread(fixed).PatientID == "ODD1"


# ---------------------------------------------------------------- meta
def test_missing_meta_class_sends_and_is_rebuilt(storescp, cfg, tmp_path) -> None:
    path, uid = meta_without_class(tmp_path / "spool" / "nometa.dcm")
    scp = storescp()
    # The sender takes SOP class and instance from the data set: no crash.
    out = run(scp.url, [item_for(path, uid)], cfg, tmp_path)[f"key-{uid}"]
    assert out.state == "sent", out
    fixed, fix = repaired(path, uid)
    # pydicom left out the version too when not enforcing the standard
    assert fix.meta == [
        "MediaStorageSOPClassUID missing",
        "FileMetaInformationVersion missing",
    ], fix.meta
    assert not fix.lengths
    meta = pydicom.dcmread(fixed).file_meta
    assert meta.MediaStorageSOPClassUID == CTImageStorage
    assert meta.MediaStorageSOPInstanceUID == uid
    assert meta.ImplementationClassUID == pydicom.uid.PYDICOM_IMPLEMENTATION_UID  # kept
    dcmdump_ok(fixed)


def test_meta_uid_mismatch_is_rebuilt_from_the_dataset(storescp, cfg, tmp_path) -> None:
    path = make_uid_mismatch(tmp_path / "spool" / "mis.dcm")
    ds = pydicom.dcmread(path)
    before = sha(path)
    uid = str(ds.SOPInstanceUID)
    assert ds.file_meta.MediaStorageSOPInstanceUID != uid
    fix = repair.plan(path, str(ds.SOPClassUID), uid, ExplicitVRLittleEndian)
    assert len(fix.meta) == 1 and fix.meta[0].startswith("MediaStorageSOPInstanceUID '")
    fixed = tmp_path / "fixed.dcm"
    repair.write(path, fixed, fix)
    assert pydicom.dcmread(fixed).file_meta.MediaStorageSOPInstanceUID == uid
    scp = storescp()
    item = SendItem(f"key-{uid}", fixed, str(ds.SOPClassUID), uid, ExplicitVRLittleEndian)
    assert run(scp.url, [item], cfg, tmp_path)[item.key].state == "sent"
    (received,) = scp.files()
    assert pydicom.dcmread(received).SOPInstanceUID == uid
    assert sha(path) == before


def test_unwalkable_file_is_left_alone(tmp_path: Path) -> None:
    path = write_part10_bytes(tmp_path / "junk.dcm", b"\x08\x00\x05\x00\x01\x02" * 5)
    assert not repair.plan(path, CTImageStorage, "1.2.3.4", ExplicitVRLittleEndian)


# --------------------------------------------------------------- abort
def test_peer_abort_is_named_and_retried(scripted_scp, cfg, tmp_path) -> None:
    from fixtures_dicom import make_ct

    scp = scripted_scp(abort=6)
    items = []
    for n in range(2):
        path = make_ct(tmp_path / "spool" / f"{n}.dcm")
        ds = pydicom.dcmread(path)
        items.append(item_for(path, str(ds.SOPInstanceUID)))
    outs = run(scp.url, items, cfg.replace(network__dimse_timeout=30.0), tmp_path)
    first = outs[items[0].key]
    assert (first.state, first.code, first.status) == ("retry", "association_aborted", None)
    assert "DUL service-provider" in first.detail
    assert "Invalid PDU parameter value" in first.detail
    # the next item goes on a fresh association; aborted twice in a row,
    # the link then goes down
    assert outs[items[1].key].code == "association_aborted"
    assert scp.stored == [i.sop_instance_uid for i in items]


@pytest.mark.parametrize("codes", [("meta_repaired", "length_repaired", "association_aborted")])
def test_problem_codes_exist(codes) -> None:
    from pdimport.problems import PROBLEM_CODES

    assert [PROBLEM_CODES[c][0] for c in codes] == ["warning", "warning", "error"]
