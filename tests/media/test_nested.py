"""Packages inside a medium are opened as part of the same job (issue 17, item 3).

A zip inside a zip and a ``PATIENT.ISO`` inside a folder or a zip, each
holding 3 images: all 3 are sent, with their own paths. Packages nested
deeper than 2 levels are ``nesting_limit``; the rest is imported. Bombs and
hostile names inside are refused as at the top level.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from fixtures_dicom import make_ct_series
from fixtures_media import make_iso, make_zip, make_zip_bomb, sha256
from pydicom import dcmread

from pdimport.cli import main
from pdimport.media import NestedMedium, open_medium


def _images(tmp_path: Path, n: int = 3, patient_id: str = "NEST", tag: str = "ct") -> dict:
    series = make_ct_series(tmp_path / tag, n, patient_id=patient_id)
    return {f"IM{i + 1}": p.read_bytes() for i, p in enumerate(series)}


def _uids(blobs) -> set[str]:
    return {str(dcmread(io.BytesIO(b)).SOPInstanceUID) for b in blobs}


def _patient_iso(tmp_path: Path, images: dict[str, bytes]) -> Path:
    stage = tmp_path / "iso_stage"
    (stage / "DICOM").mkdir(parents=True)
    for name, data in images.items():
        (stage / "DICOM" / name).write_bytes(data)
    return make_iso(stage, tmp_path / "PATIENT.ISO")


def _import(capsys, source: Path, scp, state: Path) -> tuple[int, dict]:
    rc = main(["import", str(source), "--dest", scp.url, "--state-dir", str(state), "--json"])
    return rc, json.loads(capsys.readouterr().out)


def _sent(rep: dict) -> set[str]:
    return {i["path"] for i in rep["instances"] if i["state"] == "sent"}


def test_zip_inside_zip_sends_all_three(tmp_path, state, storescp, capsys):
    images = _images(tmp_path)
    inner = make_zip(tmp_path / "INNER.ZIP", {f"DICOM/{k}": v for k, v in images.items()})
    outer = make_zip(tmp_path / "outer.zip", {"INNER.ZIP": inner.read_bytes(), "README.TXT": b"x"})
    scp = storescp()
    rc, rep = _import(capsys, outer, scp, state)
    assert (rc, rep["status"]) == (0, "imported"), rep["problems"]
    assert _sent(rep) == {f"INNER.ZIP/DICOM/IM{i}" for i in (1, 2, 3)}
    assert _uids(p.read_bytes() for p in scp.files()) == _uids(images.values())
    assert list((state / "spool" / "tmp").iterdir()) == []  # the inner copy is gone


def test_patient_iso_on_a_folder_medium_sends_all_three(tmp_path, state, storescp, capsys):
    images = _images(tmp_path)
    usb = tmp_path / "usb"
    usb.mkdir()
    _patient_iso(tmp_path, images).rename(usb / "PATIENT.ISO")
    scp = storescp()
    rc, rep = _import(capsys, usb, scp, state)
    assert (rc, rep["status"]) == (0, "imported"), rep["problems"]
    assert _sent(rep) == {f"PATIENT.ISO/DICOM/IM{i}" for i in (1, 2, 3)}
    assert _uids(p.read_bytes() for p in scp.files()) == _uids(images.values())


def test_patient_iso_inside_a_zip_sends_all_three(tmp_path, state, storescp, capsys):
    images = _images(tmp_path)
    iso = _patient_iso(tmp_path, images)
    package = make_zip(tmp_path / "study.zip", {"CD/PATIENT.ISO": iso.read_bytes()})
    scp = storescp()
    rc, rep = _import(capsys, package, scp, state)
    assert (rc, rep["status"]) == (0, "imported"), rep["problems"]
    assert _sent(rep) == {f"CD/PATIENT.ISO/DICOM/IM{i}" for i in (1, 2, 3)}
    assert _uids(p.read_bytes() for p in scp.files()) == _uids(images.values())


def test_depth_three_is_nesting_limit_and_the_rest_is_imported(tmp_path, state, storescp, capsys):
    """outer.zip > L1.ZIP > L2.ZIP > L3.ZIP, one image at each level: L3.ZIP
    is not opened, the images of the levels above arrive."""
    images = _images(tmp_path, 4)
    level3 = make_zip(tmp_path / "L3.ZIP", {"IM4": images["IM4"]})
    level2 = make_zip(tmp_path / "L2.ZIP", {"IM3": images["IM3"], "L3.ZIP": level3.read_bytes()})
    level1 = make_zip(tmp_path / "L1.ZIP", {"IM2": images["IM2"], "L2.ZIP": level2.read_bytes()})
    outer = make_zip(tmp_path / "outer.zip", {"IM1": images["IM1"], "L1.ZIP": level1.read_bytes()})
    scp = storescp()
    rc, rep = _import(capsys, outer, scp, state)
    assert (rc, rep["status"]) == (1, "partial")
    assert ("nesting_limit", "L1.ZIP/L2.ZIP/L3.ZIP") in {
        (p["code"], p["path"]) for p in rep["problems"]
    }
    assert _sent(rep) == {"IM1", "L1.ZIP/IM2", "L1.ZIP/L2.ZIP/IM3"}
    assert _uids(p.read_bytes() for p in scp.files()) == _uids(
        [images["IM1"], images["IM2"], images["IM3"]]
    )


def test_bombs_and_hostile_names_inside_are_refused(tmp_path, media_settings):
    good = {"good/a.dcm": b"A" * 3000}
    bomb = make_zip_bomb(tmp_path / "BOMB.ZIP", good=good)
    hostile = make_zip(
        tmp_path / "HOSTILE.ZIP",
        [("../../etc/evil", b"e"), ("/abs", b"a"), ("C:\\x", b"c"), ("ok.dcm", b"O" * 100)],
    )
    outer = make_zip(
        tmp_path / "outer.zip",
        {"BOMB.ZIP": bomb.read_bytes(), "HOSTILE.ZIP": hostile.read_bytes()},
        compression=zipfile.ZIP_STORED,
    )
    medium = open_medium(str(outer), media_settings, workdir=tmp_path)
    try:
        assert isinstance(medium, NestedMedium)
        problems = {(p.code, p.path) for p in medium.problems}
        assert ("zip_bomb", "BOMB.ZIP/bomb.bin") in problems
        assert {c for c, p in problems if p.startswith("HOSTILE.ZIP/")} == {"unsafe_path"}
        digests = {}
        for entry in medium.entries():
            with medium.open(entry) as fp:
                digests[entry.path] = sha256(fp.read())
        assert digests == {
            "BOMB.ZIP/good/a.dcm": sha256(b"A" * 3000),
            "HOSTILE.ZIP/ok.dcm": sha256(b"O" * 100),
        }
        assert [p.name for p in tmp_path.glob("nest-*")] != []  # copies while open
    finally:
        medium.close()
    assert list(tmp_path.glob("nest-*")) == []  # and removed on close


def test_entries_inside_packages_count_against_the_medium_caps(tmp_path, media_settings):
    inner = make_zip(tmp_path / "INNER.ZIP", {f"f{i}": b"x" * 10 for i in range(5)})
    outer = make_zip(tmp_path / "outer.zip", {"a": b"1", "INNER.ZIP": inner.read_bytes()})
    settings = media_settings.replace(limits__max_files=4)
    medium = open_medium(str(outer), settings, workdir=tmp_path)
    try:
        assert len(medium.entries()) == 4
        assert [p.code for p in medium.problems] == ["too_large"] * 2
    finally:
        medium.close()


@pytest.mark.parametrize("name", ["NOTAZIP.ZIP", "FAKE.ISO"])
def test_a_package_name_without_package_bytes_stays_a_plain_file(tmp_path, media_settings, name):
    usb = tmp_path / "usb"
    usb.mkdir()
    (usb / name).write_bytes(b"just bytes" * 100)
    medium = open_medium(str(usb), media_settings)
    try:
        assert [e.path for e in medium.entries()] == [name]
        assert medium.problems == []
    finally:
        medium.close()


def test_a_corrupt_package_is_recorded_and_kept_as_a_file(tmp_path, media_settings):
    usb = tmp_path / "usb"
    usb.mkdir()
    (usb / "BROKEN.ZIP").write_bytes(b"PK\x03\x04" + b"\0" * 200)
    (usb / "IM1").write_bytes(b"i" * 10)
    medium = open_medium(str(usb), media_settings)
    try:
        assert sorted(e.path for e in medium.entries()) == ["BROKEN.ZIP", "IM1"]
        assert [(p.code, p.path) for p in medium.problems] == [("unreadable_medium", "BROKEN.ZIP")]
    finally:
        medium.close()
