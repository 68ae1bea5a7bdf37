"""Folders are walked on directory descriptors: no PATH_MAX limit (issue 17, item 7)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fixtures_dicom import make_ct_series
from pydicom import dcmread

from pdimport.cli import main
from pdimport.media import folder as folder_module
from pdimport.media import open_medium
from pdimport.model import MediumReadError

DEPTH = 300
NAME = b"folder_level_%03d"  # 16 bytes + "/" per level


def make_deep(root: Path, depth: int, files: dict[bytes, bytes]) -> tuple[bytes, ...]:
    """Folders ``depth`` levels below ``root``, made with ``mkdirat`` (a path
    this long cannot be named to the kernel); ``files`` at the bottom."""
    root.mkdir(parents=True, exist_ok=True)
    parts = tuple(NAME % i for i in range(depth))
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in parts:
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        for name, data in files.items():
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
            with os.fdopen(out, "wb") as fp:
                fp.write(data)
    finally:
        os.close(fd)
    return parts


def test_image_300_folders_deep_is_listed_and_read(tmp_path, media_settings):
    [image] = make_ct_series(tmp_path / "src", 1, patient_id="DEEP")
    data = image.read_bytes()
    parts = make_deep(tmp_path / "usb", DEPTH, {b"IM0001": data})
    assert len(b"/".join(parts)) > 4096  # longer than PATH_MAX
    medium = open_medium(str(tmp_path / "usb"), media_settings)
    try:
        assert medium.problems == []
        [entry] = medium.entries()
        assert entry.path == "/".join(p.decode() for p in parts) + "/IM0001"
        with medium.open(entry) as fp:
            assert fp.read() == data
    finally:
        medium.close()


def test_image_300_folders_deep_is_imported(tmp_path, state, storescp, capsys):
    images = make_ct_series(tmp_path / "src", 2, patient_id="DEEP")
    usb = tmp_path / "usb"
    make_deep(usb, DEPTH, {b"IM0001": images[0].read_bytes()})
    (usb / "IM0002").write_bytes(images[1].read_bytes())
    scp = storescp()
    rc = main(["import", str(usb), "--dest", scp.url, "--state-dir", str(state), "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert (rc, rep["status"]) == (0, "imported"), rep["problems"]
    assert sorted(str(dcmread(p).SOPInstanceUID) for p in scp.files()) == sorted(
        str(dcmread(p).SOPInstanceUID) for p in images
    )


def test_deeper_than_the_cap_costs_only_the_folders_below(tmp_path, media_settings, monkeypatch):
    monkeypatch.setattr(folder_module, "MAX_DEPTH", 20)
    make_deep(tmp_path / "usb", 25, {b"LOST": b"x" * 10})
    (tmp_path / "usb" / "TOP").write_bytes(b"t" * 10)
    medium = open_medium(str(tmp_path / "usb"), media_settings)
    try:
        assert [e.path for e in medium.entries()] == ["TOP"]
        [problem] = medium.problems
        assert problem.code == "unreadable_directory" and "deeper than 20" in problem.detail
        assert problem.path.count("/") == 19
    finally:
        medium.close()


def test_folder_swapped_for_a_link_after_listing_is_refused(tmp_path, media_settings):
    (tmp_path / "usb" / "A").mkdir(parents=True)
    (tmp_path / "usb" / "A" / "IM1").write_bytes(b"1" * 100)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "IM1").write_bytes(b"secret")
    medium = open_medium(str(tmp_path / "usb"), media_settings)
    try:
        [entry] = medium.entries()
        (tmp_path / "usb" / "A").rename(tmp_path / "usb" / "B")
        (tmp_path / "usb" / "A").symlink_to(tmp_path / "elsewhere")
        with pytest.raises(MediumReadError) as exc:
            medium.open(entry)
        assert exc.value.code == "link_ignored"
    finally:
        medium.close()


def test_image_300_folders_deep_is_scanned_in_place(tmp_path, state, capsys):
    """`pdimport scan` reads folders in place (by name): a path over PATH_MAX
    is read through the directory descriptors instead."""
    images = make_ct_series(tmp_path / "src", 2, patient_id="DEEP")
    usb = tmp_path / "usb"
    make_deep(usb, DEPTH, {b"IM0001": images[0].read_bytes()})
    (usb / "IM0002").write_bytes(images[1].read_bytes())
    rc = main(["scan", str(usb), "--state-dir", str(state), "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0, rep["problems"]
    assert sorted(i["sop_instance_uid"] for i in rep["instances"]) == sorted(
        str(dcmread(p).SOPInstanceUID) for p in images
    )
