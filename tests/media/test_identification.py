"""Identification needs positive evidence of DICOM (issue 17, item 8).

A file without preamble is a dataset only when its first element is
plausible (a known VR for explicit VR, a dictionary tag for implicit VR) and
its lengths end inside the file. Random tiny files once passed 14 times in
100,000 and turned a fully delivered medium into ``partial``.
"""

from __future__ import annotations

import json
import random
import struct
import warnings
from pathlib import Path

import pytest
from fixtures_dicom import make_ct, make_ct_series, make_raw, pydicom_test_files
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from pdimport.cli import main
from pdimport.problems import PROBLEM_CODES
from pdimport.scan.encoding import detect_encoding
from pdimport.scan.identify import identify

SEED = 20261217


def _blobs(n: int, size: int = 64, seed: int = SEED, group: bytes = b""):
    rnd = random.Random(seed)
    for _ in range(n):
        data = bytearray(rnd.randbytes(size))
        if group:
            data[: len(group)] = group
        yield bytes(data)


def test_100000_random_tiny_files_are_never_dicom():
    taken = [b.hex() for b in _blobs(100_000) if detect_encoding(b, len(b)) is not None]
    assert taken == []


@pytest.mark.parametrize(
    "group",
    [b"\x08\x00", b"\x00\x08", b"\x02\x00", b"\x08\x00\x05\x00"],
    ids=["group_0008_le", "group_0008_be", "meta_group", "tag_0008_0005"],
)
def test_random_bytes_behind_a_plausible_first_tag_are_not_dicom(group: bytes):
    """The worst case for the old probe: the group (or whole tag) is right,
    the rest random. 20,000 files each."""
    taken = [
        b.hex()
        for b in _blobs(20_000, group=group, seed=SEED + len(group))
        if detect_encoding(b, len(b)) is not None
    ]
    assert taken == []


def test_random_files_through_identify_are_unsupported_content(tmp_path: Path):
    kinds = set()
    for i, blob in enumerate(_blobs(2_000, seed=SEED + 1)):
        local = tmp_path / f"F{i:05d}.BIN"
        local.write_bytes(blob)
        kinds.add(identify(f"DATA/F{i:05d}.BIN", local).kind)
    assert kinds == {"unknown"}


def _no_preamble(path: Path) -> bool:
    head = path.read_bytes()[:132]
    return not (len(head) == 132 and head[128:] == b"DICM")


def _pydicom_reads_a_dataset(path: Path) -> bool:
    """The oracle: pydicom, forced, finds a SOP instance in it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, force=True)
        return "SOPClassUID" in ds and len(ds) > 3
    except (InvalidDicomError, OSError, ValueError, KeyError, struct.error, EOFError):
        return False


def test_every_real_no_preamble_dataset_of_the_fixtures_is_still_dicom(tmp_path: Path):
    made = [make_raw(tmp_path / enc, enc) for enc in ("implicit_le", "explicit_le", "explicit_be")]
    meta_only = make_ct(tmp_path / "meta")
    meta_only.write_bytes(meta_only.read_bytes()[132:])  # File Meta, no preamble
    bundled = [p for p in pydicom_test_files() if _no_preamble(p) and _pydicom_reads_a_dataset(p)]
    assert len(bundled) >= 3, bundled  # rtstruct.dcm, ExplVR_{Big,Lit}EndNoMeta.dcm
    missed = []
    for path in [*made, meta_only, *bundled]:
        data = path.read_bytes()
        if detect_encoding(data[: 1 << 16], len(data)) is None:
            missed.append(path.name)
        if identify(f"DICOM/{path.name}", path).kind != "dicom":
            missed.append(f"identify:{path.name}")
    assert missed == []


def test_not_dicom_is_info():
    assert PROBLEM_CODES["not_dicom"][0] == "info"


def test_medium_of_images_and_random_bin_files_ends_imported(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    good = make_ct_series(disc / "DICOM", 3, patient_id="BIN1")
    (disc / "DATA").mkdir()
    for i, blob in enumerate(_blobs(400, seed=SEED + 2)):
        (disc / "DATA" / f"F{i:04d}.BIN").write_bytes(blob)
    # and random bytes where DICOM belongs: not_dicom, info
    (disc / "DICOM" / "IM9999").write_bytes(next(_blobs(1, seed=SEED + 3)))
    scp = storescp()
    rc = main(["import", str(disc), "--dest", scp.url, "--state-dir", str(state), "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert (rc, rep["status"]) == (0, "imported"), [
        p for p in rep["problems"] if PROBLEM_CODES[p["code"]][0] == "error"
    ]
    assert len(scp.files()) == len(good) == 3
    codes = {p["path"]: p["code"] for p in rep["problems"]}
    assert codes["DICOM/IM9999"] == "not_dicom"
    assert {codes[f"DATA/F{i:04d}.BIN"] for i in range(400)} == {"unsupported_content"}
