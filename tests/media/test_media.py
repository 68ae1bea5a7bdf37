"""The media layer: folders, ISO images and devices, zip packages.

Every hostile case asserts the exact problem code AND that the good entries
are still listed and readable byte for byte.
"""

from __future__ import annotations

import errno
import io
import os
import zipfile
from pathlib import Path

import pytest
from fixtures_media import (
    LONG_NAME,
    SAMPLE_FILES,
    corrupt_zip_member,
    loop_device,
    make_dir_loop_iso,
    make_iso,
    make_tree,
    make_zip,
    make_zip_bomb,
    make_zip_encrypted_flag,
    make_zip_symlink,
    medium_digests,
    sha256,
    tree_digests,
)

from pdimport.media import (
    FolderMedium,
    IsoMedium,
    MediumOpenError,
    ZipMedium,
    detect_kind,
    open_medium,
)
from pdimport.media.archive import _CountingReader
from pdimport.media.extents import ExtentReader, _direct_pread
from pdimport.model import MediumReadError

GOOD = {"good/a.dcm": b"A" * 3000, "good/b.txt": b"report\n"}


def codes(medium) -> dict[str, str]:
    return {p.path: p.code for p in medium.problems}


def read_all(medium, path: str) -> bytes:
    entry = next(e for e in medium.entries() if e.path == path)
    with medium.open(entry) as fp:
        return fp.read()


# ------------------------------------------------------------------ folder
def test_folder_walk_nested_symlink_and_fifo(sample_tree, media_settings):
    os.mkfifo(sample_tree / "pipe")
    (sample_tree / "DICOM" / "dirlink").symlink_to(sample_tree / "DICOM" / "Study One")
    medium = open_medium(str(sample_tree), media_settings)
    assert isinstance(medium, FolderMedium) and medium.kind == "dir"
    assert codes(medium) == {
        "link": "link_ignored",
        "pipe": "link_ignored",
        "DICOM/dirlink": "link_ignored",
    }
    # the linked directory is not walked: each file appears once
    assert (
        medium_digests(medium)
        == tree_digests(sample_tree)
        == {k: sha256(v) for k, v in SAMPLE_FILES.items()}
    )
    assert [e.order for e in medium.entries()] == list(range(len(SAMPLE_FILES)))


def test_folder_order_is_deterministic_and_bytes_names_safe(tmp_path, media_settings):
    root = tmp_path / "usb"
    root.mkdir()
    for raw in (b"b.dcm", b"a.dcm", b"\x83e\x83X\x83g.dcm", b"z\xff.dcm"):
        with open(os.path.join(os.fsencode(root), raw), "wb") as fp:
            fp.write(raw)
    first = [e.path for e in FolderMedium(str(root), media_settings).entries()]
    assert first == [e.path for e in FolderMedium(str(root), media_settings).entries()]
    assert first[:2] == ["a.dcm", "b.dcm"]
    assert "z\ufffd.dcm" in first
    for path in first:
        path.encode("utf-8")  # strict: no surrogates leak into labels
    medium = FolderMedium(str(root), media_settings)
    assert read_all(medium, "z\ufffd.dcm") == b"z\xff.dcm"


def test_folder_limits(sample_tree, media_settings):
    settings = media_settings.replace(limits__max_file_size=100_000, limits__max_files=4)
    medium = FolderMedium(str(sample_tree), settings)
    problems = codes(medium)
    assert problems[f"DICOM/Study One/{LONG_NAME}"] == "too_large"
    assert sum(1 for c in problems.values() if c == "too_large") == 2  # big file + 6th file
    assert len(medium.entries()) == 4
    assert read_all(medium, "DICOM/Study One/IM000001") == SAMPLE_FILES["DICOM/Study One/IM000001"]


def test_folder_file_shrinking_while_read(sample_tree, media_settings):
    medium = FolderMedium(str(sample_tree), media_settings)
    entry = next(e for e in medium.entries() if e.path.endswith(LONG_NAME))
    fp = medium.open(entry)
    fp.read(1000)
    os.truncate(sample_tree / entry.path, 5000)
    with pytest.raises(MediumReadError) as exc:
        fp.read()
    assert exc.value.code == "truncated"
    fp.close()
    assert read_all(medium, "README.txt") == SAMPLE_FILES["README.txt"]


def test_folder_missing_source_is_unreadable_medium(tmp_path, media_settings):
    with pytest.raises(MediumOpenError) as exc:
        open_medium(str(tmp_path / "nope"), media_settings)
    assert exc.value.code == "unreadable_medium"


# --------------------------------------------------------------------- ISO
ISO_VARIANTS = {
    "genisoimage-joliet-rr": ({"tool": "genisoimage"}, "rr"),
    "genisoimage-udf": ({"tool": "genisoimage", "udf": True}, "udf"),
    "xorriso": ({"tool": "xorriso"}, "rr"),
    "genisoimage-joliet-only": ({"tool": "genisoimage", "rockridge": False}, "joliet"),
}


@pytest.mark.parametrize("variant", sorted(ISO_VARIANTS))
def test_iso_lists_in_lba_order_and_reads_identical(variant, sample_tree, tmp_path, media_settings):
    kwargs, namespace = ISO_VARIANTS[variant]
    image = make_iso(sample_tree, tmp_path / "disc.iso", volid="PAT_DISC_1", **kwargs)
    medium = open_medium(str(image), media_settings)
    try:
        assert isinstance(medium, IsoMedium) and medium.kind == "iso"
        assert medium.namespace == namespace
        assert medium.label == "PAT_DISC_1"
        orders = [e.order for e in medium.entries()]
        assert orders == sorted(orders) and orders[-1] > 16
        # long mixed-case names survive; the content is byte-identical
        assert medium_digests(medium) == tree_digests(sample_tree)
        if namespace != "joliet":  # Joliet has no symlinks: genisoimage drops the link
            assert codes(medium) == {"link": "link_ignored"}
    finally:
        medium.close()


def test_iso_plain_9660_strips_version(tmp_path, media_settings):
    src = make_tree(tmp_path / "src", {"A.BIN": b"x" * 5000, "SUB/NOEXT": b"y"})
    image = make_iso(src, tmp_path / "plain.iso", joliet=False, rockridge=False)
    medium = IsoMedium(str(image), media_settings)
    assert medium.namespace == "iso"
    assert sorted(e.path for e in medium.entries()) == ["A.BIN", "SUB/NOEXT"]
    assert read_all(medium, "A.BIN") == b"x" * 5000
    medium.close()


def test_iso_extent_past_end_is_truncated_extent(sample_tree, tmp_path, media_settings):
    # -no-pad: the last file's extent is the last thing in the image
    image = make_iso(sample_tree, tmp_path / "cut.iso", extra=["-no-pad"])
    medium = IsoMedium(str(image), media_settings)
    last = medium.entries()[-1]
    medium.close()
    os.truncate(image, last.order * 2048 + 100)
    medium = IsoMedium(str(image), media_settings)
    try:
        assert last in medium.entries()  # still listed
        with pytest.raises(MediumReadError) as exc:
            read_all(medium, last.path)
        assert exc.value.code == "truncated_extent"
        others = [e for e in medium.entries() if e != last]
        assert others
        for entry in others:
            assert sha256(read_all(medium, entry.path)) == sha256(SAMPLE_FILES[entry.path])
    finally:
        medium.close()


class FlakyDisc:
    """A pread that behaves like a scratched disc (hardware notes §3.4): a
    short read at the start of the bad area, EIO on the bad sectors
    themselves, optionally healing after ``heal_after`` failures per sector."""

    def __init__(self, bad_lbas: set[int], heal_after: int | None = None) -> None:
        self.bad = bad_lbas
        self.heal_after = heal_after
        self.failures: dict[int, int] = {}

    def __call__(self, fd: int, length: int, offset: int) -> bytes:
        first, last = offset // 2048, (offset + length - 1) // 2048
        for lba in range(first, last + 1):
            if lba in self.bad and not self._healed(lba):
                self.failures[lba] = self.failures.get(lba, 0) + 1
                if lba == first:
                    raise OSError(errno.EIO, "Input/output error")
                return os.pread(fd, lba * 2048 - offset, offset)  # short read
        return os.pread(fd, length, offset)

    def _healed(self, lba: int) -> bool:
        return self.heal_after is not None and self.failures.get(lba, 0) >= self.heal_after


def test_iso_read_error_is_unreadable_sector_with_lbas(sample_tree, tmp_path, media_settings):
    image = make_iso(sample_tree, tmp_path / "scratched.iso")
    medium = IsoMedium(str(image), media_settings)
    try:
        big = next(e for e in medium.entries() if e.path.endswith(LONG_NAME))
        bad = {big.order + 3, big.order + 7}
        with pytest.raises(MediumReadError) as exc, medium.open(big, pread=FlakyDisc(bad)) as fp:
            fp.read()
        assert exc.value.code == "unreadable_sector"
        assert f"{big.order + 3}, {big.order + 7}" in exc.value.detail
        # a sector that reads on retry gives byte-identical data
        with medium.open(big, pread=FlakyDisc(bad, heal_after=1)) as fp:
            assert fp.read() == SAMPLE_FILES[f"DICOM/Study One/{LONG_NAME}"]
        # the other files are unaffected
        assert read_all(medium, "README.txt") == SAMPLE_FILES["README.txt"]
    finally:
        medium.close()


def test_iso_hostile_rock_ridge_names(tmp_path, media_settings):
    src = tmp_path / "src"
    src.mkdir()
    files = {
        b"\x83e\x83X\x83g.dcm": b"sjis",
        b"L" * 240 + b".dcm": b"long",
        b"evilname01": b"evil",
        b"ok.dcm": b"ok",
    }
    for raw, data in files.items():
        with open(os.path.join(os.fsencode(src), raw), "wb") as fp:
            fp.write(data)
    image = make_iso(src, tmp_path / "hostile.iso", joliet=False)
    raw = image.read_bytes()
    assert raw.count(b"evilname01") == 1  # only in the Rock Ridge NM entry
    image.write_bytes(raw.replace(b"evilname01", b"../..\x00/etc"))
    medium = IsoMedium(str(image), media_settings)
    try:
        paths = {e.path: read_all(medium, e.path) for e in medium.entries()}
        assert paths.pop("ok.dcm") == b"ok"
        assert paths.pop("\ufffde\ufffdX\ufffdg.dcm") == b"sjis"
        assert paths.pop(".._..__etc") == b"evil"  # '/' and NUL neutralised: one component
        ((long_name, data),) = paths.items()
        assert data == b"long" and long_name.startswith("LLLL") and len(long_name) <= 255
        for path in [e.path for e in medium.entries()]:
            assert ".." not in path.split("/") and "\x00" not in path
    finally:
        medium.close()


def test_iso_directory_loop_costs_only_the_looping_directory(tmp_path, media_settings):
    src = make_tree(tmp_path / "src", {"sub/f.dcm": b"f", "g.dcm": b"g"})
    image = make_dir_loop_iso(src, tmp_path / "loop.iso")
    medium = open_medium(str(image), media_settings)
    try:
        assert codes(medium) == {"sub": "directory_loop"}
        assert medium_digests(medium) == {"g.dcm": sha256(b"g")}
    finally:
        medium.close()


def test_iso_garbage_image_is_unreadable_medium(tmp_path, media_settings):
    image = tmp_path / "junk.iso"
    image.write_bytes(os.urandom(100_000))
    assert detect_kind(str(image)) == "iso"  # by extension only
    with pytest.raises(MediumOpenError) as exc:
        open_medium(str(image), media_settings)
    assert exc.value.code == "unreadable_medium"


def test_iso_limits(sample_tree, tmp_path, media_settings):
    image = make_iso(sample_tree, tmp_path / "disc.iso")
    settings = media_settings.replace(limits__max_files=3)
    medium = IsoMedium(str(image), settings)
    try:
        assert len(medium.entries()) == 3
        assert [c for c in codes(medium).values() if c == "too_large"] == ["too_large"] * 3
        for entry in medium.entries():
            assert sha256(read_all(medium, entry.path)) == sha256(SAMPLE_FILES[entry.path])
    finally:
        medium.close()


def test_block_device_via_loop(sample_tree, tmp_path, media_settings):
    image = make_iso(sample_tree, tmp_path / "dev.iso", udf=True, volid="LOOPDISC")
    with loop_device(image) as dev:
        assert detect_kind(dev) == "device"
        medium = open_medium(dev, media_settings)
        try:
            assert medium.kind == "device" and medium.label == "LOOPDISC"
            assert medium.namespace == "udf"
            assert medium_digests(medium) == tree_digests(sample_tree)
            # a chunk that fails in the page cache is re-read through O_DIRECT
            big = next(e for e in medium.entries() if e.path.endswith(LONG_NAME))
            extents = medium._extents[big.path]
            direct = os.open(dev, os.O_RDONLY | os.O_DIRECT)
            try:
                raw = ExtentReader(
                    medium._fd,
                    big.path,
                    extents,
                    medium._size,
                    pread=FlakyDisc({big.order + 2}),
                    sector_fd=direct,
                    sector_pread=_direct_pread,
                )
                assert io.BufferedReader(raw).read() == SAMPLE_FILES[f"DICOM/Study One/{LONG_NAME}"]
            finally:
                os.close(direct)
        finally:
            medium.close()


# --------------------------------------------------------------------- zip
def test_zip_normal(tmp_path, media_settings):
    members = {"DICOM/IM1": os.urandom(10_000), "DICOM/IM2": b"x" * 10, "dir/": b""}
    path = make_zip(tmp_path / "pkg.zip", members)
    medium = open_medium(str(path), media_settings)
    assert isinstance(medium, ZipMedium) and medium.problems == []
    entries = medium.entries()
    assert [e.path for e in entries] == ["DICOM/IM1", "DICOM/IM2"]  # dir entry skipped
    assert [e.order for e in entries] == sorted(e.order for e in entries)
    assert medium_digests(medium) == {k: sha256(v) for k, v in members.items() if k != "dir/"}
    medium.close()


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "C:\\x", "a\\..\\..\\x", "c:/win.ini"])
def test_zip_slip_refused(name, tmp_path, media_settings):
    path = make_zip(tmp_path / "slip.zip", [*GOOD.items(), (name, b"payload")])
    medium = ZipMedium(str(path), media_settings)
    assert [p.code for p in medium.problems] == ["unsafe_path"]
    assert medium_digests(medium) == {k: sha256(v) for k, v in GOOD.items()}


def test_zip_symlink_entry(tmp_path, media_settings):
    path = make_zip_symlink(tmp_path / "link.zip", "evil", "/etc/passwd", good=GOOD)
    medium = ZipMedium(str(path), media_settings)
    assert codes(medium) == {"evil": "link_ignored"}
    assert medium_digests(medium) == {k: sha256(v) for k, v in GOOD.items()}


def test_zip_encrypted_entry(tmp_path, media_settings):
    path = make_zip_encrypted_flag(tmp_path / "enc.zip", "secret.dcm", GOOD)
    medium = ZipMedium(str(path), media_settings)
    assert codes(medium) == {"secret.dcm": "archive_encrypted"}
    assert medium_digests(medium) == {k: sha256(v) for k, v in GOOD.items()}


def test_zip_ratio_bomb(tmp_path, media_settings):
    path = make_zip_bomb(tmp_path / "bomb.zip", "bomb.bin", 50 << 20, good=GOOD)
    medium = ZipMedium(str(path), media_settings)
    assert codes(medium) == {"bomb.bin": "zip_bomb"}
    assert medium_digests(medium) == {k: sha256(v) for k, v in GOOD.items()}


def test_zip_size_caps(tmp_path, media_settings):
    path = make_zip(tmp_path / "many.zip", {f"f{i}": os.urandom(1000) for i in range(5)})
    small = media_settings.replace(limits__max_files=3)
    assert [p.code for p in ZipMedium(str(path), small).problems] == ["too_large"] * 2
    total = media_settings.replace(limits__max_medium_size=2500)
    medium = ZipMedium(str(path), total)
    assert [p.code for p in medium.problems] == ["zip_bomb"] * 3
    assert [e.path for e in medium.entries()] == ["f0", "f1"]
    per_file = media_settings.replace(limits__max_file_size=999)
    assert [p.code for p in ZipMedium(str(path), per_file).problems] == ["zip_bomb"] * 5


def test_zip_crc_error(tmp_path, media_settings):
    path = make_zip(
        tmp_path / "crc.zip", {**GOOD, "bad.dcm": b"B" * 4000}, compression=zipfile.ZIP_STORED
    )
    corrupt_zip_member(path, "bad.dcm")
    medium = ZipMedium(str(path), media_settings)
    assert medium.problems == []  # the header alone looks fine
    with pytest.raises(MediumReadError) as exc:
        read_all(medium, "bad.dcm")
    assert exc.value.code == "archive_corrupt"
    for name, data in GOOD.items():
        assert read_all(medium, name) == data


def test_zip_member_yielding_more_than_declared():
    reader = io.BufferedReader(_CountingReader(io.BytesIO(b"x" * 5000), "m", declared=4096))
    with pytest.raises(MediumReadError) as exc:
        reader.read()
    assert exc.value.code == "zip_bomb"


def test_non_zip_named_zip(tmp_path, media_settings):
    path = tmp_path / "fake.zip"
    path.write_bytes(b"this is not a zip at all" * 100)
    with pytest.raises(MediumOpenError) as exc:
        open_medium(str(path), media_settings)
    assert exc.value.code == "unreadable_medium"


def test_zip_corrupt_central_directory(tmp_path, media_settings):
    path = make_zip(tmp_path / "cd.zip", GOOD)
    data = bytearray(path.read_bytes())
    central = data.find(b"PK\x01\x02")
    data[central : central + 4] = b"XXXX"
    path.write_bytes(bytes(data))
    with pytest.raises(MediumOpenError) as exc:
        open_medium(str(path), media_settings)
    assert exc.value.code == "unreadable_medium"


def test_kind_detected_by_content_not_name(sample_tree, tmp_path, media_settings):
    iso_named_zip = make_iso(sample_tree, tmp_path / "disc.zip")
    zip_named_iso = make_zip(tmp_path / "pkg.iso", GOOD)
    assert detect_kind(str(iso_named_zip)) == "iso"
    assert detect_kind(str(zip_named_iso)) == "zip"
    medium = open_medium(str(zip_named_iso), media_settings)
    assert medium.kind == "zip" and medium_digests(medium) == {
        k: sha256(v) for k, v in GOOD.items()
    }


def test_unknown_kind(tmp_path, media_settings):
    path = Path(tmp_path / "notes.bin")
    path.write_bytes(b"\0" * 10)
    with pytest.raises(MediumOpenError) as exc:
        open_medium(str(path), media_settings)
    assert exc.value.code == "unreadable_medium"
