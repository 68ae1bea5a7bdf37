"""End to end (issue 17 items 1-2): a disc with damaged and hostile
compressed images imported into dcmtk storescp.

Into an uncompressed-only receiver the damaged files get their codes
(``decode_failed`` for the J2K with its second half zeroed,
``decode_refused`` for the J2K whose SIZ says 30000x30000), the rest
arrives with its pixels, and the job is partial. Into a receiver that takes
JPEG 2000 the original bytes go, as before: nothing is decoded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fixtures_codestream import damaged_j2k_file, good_file, hostile_j2k_file
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from pdimport.cli import main


def build_disc(disc: Path) -> dict[str, tuple[Path, np.ndarray | None]]:
    files: dict[str, tuple[Path, np.ndarray | None]] = {
        "GOOD/RLE1": good_file("rle", disc / "GOOD" / "RLE1", seed=1),
        "GOOD/RLE2": good_file("rle", disc / "GOOD" / "RLE2", seed=2),
        "GOOD/J2K1": good_file("j2k", disc / "GOOD" / "J2K1", seed=3),
        "GOOD/JLS1": good_file("jpegls", disc / "GOOD" / "JLS1", seed=4),
        "BAD/ZEROED": damaged_j2k_file(disc / "BAD" / "ZEROED"),
        "BAD/HOSTILE": (hostile_j2k_file(disc / "BAD" / "HOSTILE"), None),
    }
    return files


def run_import(capsys, disc: Path, url: str, state: Path) -> tuple[int, dict]:
    rc = main(["import", str(disc), "--dest", url, "--state-dir", str(state), "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_damaged_images_get_their_codes_and_the_rest_arrives(tmp_path, storescp, capsys):
    files = build_disc(tmp_path / "disc")
    scp = storescp()  # uncompressed syntaxes only: everything must be decoded
    rc, rep = run_import(capsys, tmp_path / "disc", scp.url, tmp_path / "state")
    assert rc == 1 and rep["status"] == "partial"
    codes = {p["path"]: p["code"] for p in rep["problems"] if p["code"].startswith("decode_")}
    assert codes == {"BAD/ZEROED": "decode_failed", "BAD/HOSTILE": "decode_refused"}
    detail = {p["path"]: p["detail"] for p in rep["problems"]}
    assert "without EOC" in detail["BAD/ZEROED"] and "30000x30000" in detail["BAD/HOSTILE"]
    states = {i["path"]: i["state"] for i in rep["instances"]}
    assert states == {name: "sent" if name.startswith("GOOD") else "failed" for name in files}
    received = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, scp.files())}
    assert len(received) == 4
    for name, (path, pixels) in files.items():
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        if name.startswith("BAD"):
            assert uid not in received
            continue
        ds = received[uid]
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(ds.pixel_array, pixels)


def test_a_receiver_that_takes_the_original_syntax_gets_the_original_bytes(
    tmp_path, storescp, capsys
):
    files = build_disc(tmp_path / "disc")
    scp = storescp(accept_all=True, bit_preserving=True)
    rc, rep = run_import(capsys, tmp_path / "disc", scp.url, tmp_path / "state")
    assert rc == 0, rep["problems"]
    assert not [p for p in rep["problems"] if p["code"].startswith("decode_")]
    received = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, scp.files())}
    for path, _pixels in files.values():
        src = dcmread(path)
        got = received[str(src.SOPInstanceUID)]
        assert got.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
        assert got.PixelData == src.PixelData  # not decoded: the medium's bytes
    zeroed = dcmread(files["BAD/ZEROED"][0])
    assert zeroed.file_meta.TransferSyntaxUID == JPEG2000Lossless
