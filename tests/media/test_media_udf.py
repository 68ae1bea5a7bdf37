"""UDF-only discs through libudfread (pdimport.media.udf).

Images are real: genisoimage writes a UDF 1.02 bridge, and the ISO 9660
descriptors are then removed from its Volume Recognition Sequence so only
the UDF part remains (what a Blu-ray or a Windows "Live File System" disc
looks like to a reader). The VRS is moved, not blanked: an all-zero sector
ends the sequence (ECMA-167 Part 2 §8.3) and libudfread would stop there.
Hostile layouts (fragmented files, inline data, loops, duplicate names,
absurd lengths) are made by editing descriptors and re-sealing their tags
(ECMA-167 Part 3 §7.2: checksum and CRC-ITU-T).
"""

from __future__ import annotations

import binascii
import errno
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pycdlib
import pytest
from fixtures_media import (
    SAMPLE_FILES,
    loop_device,
    make_iso,
    make_tree,
    medium_digests,
    sha256,
    tree_digests,
)
from pycdlib.pycdlibexception import PyCdlibException

from pdimport.media import IsoMedium, MediumOpenError, UdfMedium, open_medium
from pdimport.media import udf as udf_module
from pdimport.model import MediumReadError

S = 2048
TAG_PD, TAG_FID, TAG_FE, TAG_EFE = 5, 257, 261, 266

pytestmark = pytest.mark.skipif(
    not udf_module.is_available(), reason="libudfread0 is not installed"
)


# ------------------------------------------------------------ image tools
def make_udf_only(src: Path, out: Path, volid: str = "UDF_ONLY") -> Path:
    """A UDF-only image: genisoimage's bridge with the ISO 9660 descriptors
    (CD001) taken out of the Volume Recognition Sequence."""
    bridge = make_iso(src, out.with_suffix(".bridge"), udf=True, volid=volid)
    data = bytearray(bridge.read_bytes())
    vrs = []
    for lba in range(16, 48):
        sector = bytes(data[lba * S : (lba + 1) * S])
        if sector[1:6] in (b"BEA01", b"NSR02", b"NSR03", b"TEA01"):
            vrs.append(sector)
        if sector[1:6] in (b"CD001", b"BEA01", b"NSR02", b"NSR03", b"TEA01"):
            data[lba * S : (lba + 1) * S] = bytes(S)
    assert [v[1:6] for v in vrs] == [b"BEA01", b"NSR02", b"TEA01"]
    for k, sector in enumerate(vrs):
        data[(16 + k) * S : (17 + k) * S] = sector
    out.write_bytes(bytes(data))
    return out


def seal(data: bytearray, offset: int, length: int | None = None) -> None:
    """Recompute a descriptor tag's CRC (over ``length`` - 16 bytes after the
    tag, or the recorded CRC Length) and its checksum (ECMA-167 3/7.2)."""
    if length is not None:
        struct.pack_into("<H", data, offset + 10, length - 16)
    crc_len = struct.unpack_from("<H", data, offset + 10)[0]
    struct.pack_into(
        "<H",
        data,
        offset + 8,
        binascii.crc_hqx(bytes(data[offset + 16 : offset + 16 + crc_len]), 0),
    )
    data[offset + 4] = sum(data[offset + i] for i in range(16) if i != 4) & 0xFF


def partition_start(data: bytes) -> int:
    """Partition Starting Location of the Partition Descriptor (ECMA-167 3/10.5.7)."""
    for lba in range(16, 300):
        if struct.unpack_from("<H", data, lba * S)[0] == TAG_PD:
            return struct.unpack_from("<I", data, lba * S + 188)[0]
    raise LookupError("no Partition Descriptor")


def file_entries(data: bytes):
    """``(sector, file type, info length, short_ad list)`` of every File Entry
    (ECMA-167 4/14.9; genisoimage writes short_ads, ICB flags 0)."""
    for lba in range(len(data) // S):
        base = lba * S
        if struct.unpack_from("<H", data, base)[0] != TAG_FE:
            continue
        l_ea, l_ad = struct.unpack_from("<II", data, base + 168)
        ads = [struct.unpack_from("<II", data, base + 176 + l_ea + i) for i in range(0, l_ad, 8)]
        yield lba, data[base + 27], struct.unpack_from("<Q", data, base + 56)[0], ads


def entry_for(data: bytes, lba: int) -> int:
    """Sector of the File Entry whose first extent starts at absolute ``lba``."""
    start = partition_start(data)
    for sector, ftype, _, ads in file_entries(data):
        if ftype == 5 and ads and ads[0][1] + start == lba:
            return sector
    raise LookupError(lba)


def write_ads(
    data: bytearray, fe: int, ads: list[tuple[int, int]], flags: int = 0, inline: bytes = b""
) -> None:
    """Replace a File Entry's allocation descriptors (or make its data inline)."""
    base = fe * S
    l_ea = struct.unpack_from("<I", data, base + 168)[0]
    body = inline if flags == 3 else b"".join(struct.pack("<II", n, pos) for n, pos in ads)
    icb_flags = struct.unpack_from("<H", data, base + 34)[0]
    struct.pack_into("<H", data, base + 34, (icb_flags & ~7) | flags)
    struct.pack_into("<I", data, base + 172, len(body))
    data[base + 176 + l_ea : base + S] = body + bytes(S - 176 - l_ea - len(body))
    seal(data, base, 176 + l_ea + len(body))


def fragment(
    image: Path, lba: int, size: int, cuts: tuple[int, ...], placement: tuple[int, ...]
) -> None:
    """Split a contiguous file at block ``cuts`` into segments and store them
    in its own blocks in ``placement`` order, the allocation descriptors
    staying in file order (a rewritten packet-written file looks like this)."""
    data = bytearray(image.read_bytes())
    fe, start = entry_for(data, lba), partition_start(data)
    nblocks = -(-size // S)
    bounds = (0, *cuts, nblocks)
    segments = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    original = bytes(data[lba * S : (lba + nblocks) * S])
    where, pos = {}, lba
    for index in placement:
        first, end = segments[index]
        data[pos * S : (pos + end - first) * S] = original[first * S : end * S]
        where[index], pos = pos, pos + end - first
    ads = []
    for index, (first, end) in enumerate(segments):
        length = (end - first) * S if end < nblocks else size - first * S
        ads.append((length, where[index] - start))
    write_ads(data, fe, ads)
    image.write_bytes(bytes(data))


def make_inline(image: Path, lba: int, content: bytes) -> None:
    """Embed a small file's data in its File Entry (ICB flags 3, ECMA-167
    4/14.6.8) and wipe its old block, so only an inline-aware read is right."""
    data = bytearray(image.read_bytes())
    write_ads(data, entry_for(data, lba), [], flags=3, inline=content)
    data[lba * S : (lba + 1) * S] = b"\xee" * S
    image.write_bytes(bytes(data))


def set_length(image: Path, lba: int, length: int) -> None:
    """Declare an absurd Information Length (ECMA-167 4/14.9.10)."""
    data = bytearray(image.read_bytes())
    fe = entry_for(data, lba)
    struct.pack_into("<Q", data, fe * S + 56, length)
    seal(data, fe * S)
    image.write_bytes(bytes(data))


def fids(data: bytes):
    """``(byte offset, characteristics, name, ICB bytes)`` of every File
    Identifier Descriptor in every directory (ECMA-167 4/14.4)."""
    start = partition_start(data)
    for _, ftype, length, ads in file_entries(data):
        if ftype != 4:
            continue
        pos, end = (start + ads[0][1]) * S, (start + ads[0][1]) * S + length
        while pos < end and struct.unpack_from("<H", data, pos)[0] == TAG_FID:
            l_fi, l_iu = data[pos + 19], struct.unpack_from("<H", data, pos + 36)[0]
            raw = data[pos + 38 + l_iu : pos + 38 + l_iu + l_fi]
            yield (
                pos,
                data[pos + 18],
                raw[1:].decode("latin-1") if raw else "",
                bytes(data[pos + 20 : pos + 36]),
            )
            pos += (38 + l_iu + l_fi + 3) & ~3


def edit_fid(
    image: Path, name: str, new_name: str | None = None, icb_of_parent: bool = False
) -> None:
    """Rename the FID ``name`` (same length) or point it at its directory's parent."""
    data = bytearray(image.read_bytes())
    entries = list(fids(bytes(data)))
    pos = next(p for p, _, n, _ in entries if n == name)
    if new_name is not None:
        l_iu = struct.unpack_from("<H", data, pos + 36)[0]
        data[pos + 38 + l_iu + 1 : pos + 38 + l_iu + 1 + len(new_name)] = new_name.encode()
    if icb_of_parent:
        # the '..' FID of the same directory precedes ``name``
        parent = [icb for p, chars, _, icb in entries if p < pos and chars & 8][-1]
        data[pos + 20 : pos + 36] = parent
    seal(data, pos)
    image.write_bytes(bytes(data))


# ------------------------------------------------------------------ tests
@pytest.fixture
def udf_tree(tmp_path) -> Path:
    """The shared sample files (no symlink: UDF written by genisoimage turns
    links into empty files, which the bridge tests already cover)."""
    return make_tree(tmp_path / "src")


def entry(medium, path: str):
    return next(e for e in medium.entries() if e.path == path)


def read(medium, path: str) -> bytes:
    with medium.open(entry(medium, path)) as fp:
        return fp.read()


def test_udf_only_image_reads_identical_in_lba_order(udf_tree, tmp_path, media_settings):
    image = make_udf_only(udf_tree, tmp_path / "udf.img", volid="PAT_UDF_1")
    iso = pycdlib.PyCdlib()
    with pytest.raises(PyCdlibException, match="PVD"):  # the case this module exists for
        iso.open(str(image))
    medium = open_medium(str(image), media_settings)
    try:
        assert (
            isinstance(medium, UdfMedium) and medium.kind == "iso" and medium.label == "PAT_UDF_1"
        )
        orders = [e.order for e in medium.entries()]
        assert orders == sorted(orders)
        assert sum(1 for o in orders if o > 256) == len(SAMPLE_FILES) - 1  # all but the empty file
        assert medium_digests(medium) == tree_digests(udf_tree)
        assert medium.problems == []
        # contiguous files are read with pread from the image, one run each
        assert all(len(x.runs) == 1 for p, x in medium._extents.items() if SAMPLE_FILES[p])
        assert medium._streamed == {}
    finally:
        medium.close()


def test_bridge_image_still_goes_through_isomedium(udf_tree, tmp_path, media_settings):
    image = make_iso(udf_tree, tmp_path / "bridge.iso", udf=True)
    medium = open_medium(str(image), media_settings)
    try:
        assert isinstance(medium, IsoMedium) and medium.namespace == "udf"
        assert medium_digests(medium) == tree_digests(udf_tree)
    finally:
        medium.close()


def test_bridge_with_broken_iso_side_falls_back_to_udf(udf_tree, tmp_path, media_settings):
    image = make_iso(udf_tree, tmp_path / "bridge.iso", udf=True)
    data = bytearray(image.read_bytes())
    struct.pack_into("<H", data, 16 * S + 128, 1000)  # PVD Logical Block Size (ECMA-119 §8.4.12)
    struct.pack_into(">H", data, 16 * S + 130, 1000)
    image.write_bytes(bytes(data))
    with pytest.raises(MediumOpenError):
        IsoMedium(str(image), media_settings)
    medium = open_medium(str(image), media_settings)
    try:
        assert isinstance(medium, UdfMedium)
        assert medium_digests(medium) == tree_digests(udf_tree)
    finally:
        medium.close()


@pytest.mark.parametrize(
    "cuts, placement, runs",
    [
        ((40,), (1, 0), 2),  # tail first: the first block is no longer the lowest
        ((100, 200, 300), (0, 2, 1, 3), 4),  # middle swapped: first and last block still in place
    ],
)
def test_fragmented_file_reads_in_runs(cuts, placement, runs, tmp_path, media_settings):
    name, content = "CT/big.dcm", os.urandom(400 * S + 77)  # random: any misplaced block shows
    src = make_tree(tmp_path / "src", {**SAMPLE_FILES, name: content})
    image = make_udf_only(src, tmp_path / "frag.img")
    medium = UdfMedium(str(image), media_settings)
    big = entry(medium, name)
    medium.close()
    fragment(image, big.order, big.size, cuts, placement)
    with open(image, "rb") as fp:  # a contiguous read from the first LBA is now wrong
        fp.seek(big.order * S)
        assert fp.read(big.size) != content
    medium = UdfMedium(str(image), media_settings)
    try:
        extents = medium._extents[name]
        assert len(extents.runs) == runs and sum(n for _, n in extents.runs) == big.size
        assert {off // S for off, _ in extents.runs} <= set(range(big.order, big.order + 401))
        assert medium_digests(medium) == tree_digests(src)
    finally:
        medium.close()


def test_inline_file_reads_through_libudfread(udf_tree, tmp_path, media_settings):
    image = make_udf_only(udf_tree, tmp_path / "inline.img")
    medium = UdfMedium(str(image), media_settings)
    readme = entry(medium, "README.txt")
    medium.close()
    make_inline(image, readme.order, SAMPLE_FILES["README.txt"])
    medium = UdfMedium(str(image), media_settings)
    try:
        assert "README.txt" in medium._streamed and "README.txt" not in medium._extents
        assert medium_digests(medium) == tree_digests(udf_tree)
    finally:
        medium.close()


class EioAt:
    """pread failing on ``bad`` LBAs: a short read up to the first bad one,
    then EIO (hardware notes §3.4)."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad

    def __call__(self, fd: int, length: int, offset: int) -> bytes:
        first, last = offset // S, (offset + length - 1) // S
        for lba in range(first, last + 1):
            if lba in self.bad:
                if lba == first:
                    raise OSError(errno.EIO, "Input/output error")
                return os.pread(fd, lba * S - offset, offset)
        return os.pread(fd, length, offset)


def test_read_error_is_unreadable_sector(udf_tree, tmp_path, media_settings):
    image = make_udf_only(udf_tree, tmp_path / "scratched.img")
    medium = UdfMedium(str(image), media_settings)
    try:
        big = max(medium.entries(), key=lambda e: e.size)
        flaky = EioAt({big.order + 5})
        with pytest.raises(MediumReadError) as exc, medium.open(big, pread=flaky) as fp:
            fp.read()
        assert exc.value.code == "unreadable_sector" and str(big.order + 5) in exc.value.detail
        for other in medium.entries():
            if other != big:
                with medium.open(other, pread=flaky) as fp:
                    assert sha256(fp.read()) == sha256(SAMPLE_FILES[other.path])
    finally:
        medium.close()


def test_size_caps_and_absurd_length(udf_tree, tmp_path, media_settings):
    image = make_udf_only(udf_tree, tmp_path / "huge.img")
    medium = UdfMedium(str(image), media_settings)
    victim = entry(medium, "DICOM/Study One/IM000001")
    medium.close()
    set_length(image, victim.order, 1 << 60)
    medium = UdfMedium(str(image), media_settings.replace(limits__max_file_size=2 << 20))
    try:
        assert {p.path: p.code for p in medium.problems} == {
            "DICOM/Study One/IM000001": "too_large"
        }
        assert "DICOM/Study One/IM000001" not in [e.path for e in medium.entries()]
        assert read(medium, "DICOMDIR") == SAMPLE_FILES["DICOMDIR"]
    finally:
        medium.close()


def test_directory_loop_costs_only_the_looping_directory(tmp_path, media_settings):
    src = make_tree(
        tmp_path / "src", {"top.dcm": b"T" * 5000, "a/inner.dcm": b"I" * 3000, "a/b/leaf.dcm": b"L"}
    )
    image = make_udf_only(src, tmp_path / "loop.img")
    edit_fid(image, "b", icb_of_parent=True)  # a/b -> the root again
    medium = open_medium(str(image), media_settings)
    try:
        # caught at the first repeat by its fingerprint, not by the depth cap
        assert [(p.code, p.path) for p in medium.problems] == [("directory_loop", "a/b")]
        assert medium_digests(medium) == {
            "top.dcm": sha256(b"T" * 5000),
            "a/inner.dcm": sha256(b"I" * 3000),
        }
    finally:
        medium.close()


def test_loop_without_file_data_hits_the_depth_cap(tmp_path, media_settings, monkeypatch):
    src = make_tree(tmp_path / "src", {"a/b/empty": b""})
    image = make_udf_only(src, tmp_path / "loop0.img")
    edit_fid(image, "b", icb_of_parent=True)
    monkeypatch.setattr(udf_module, "MAX_DEPTH", 20)
    medium = UdfMedium(str(image), media_settings)
    try:
        [problem] = medium.problems
        assert problem.code == "directory_loop" and "deeper than 20" in problem.detail
        assert problem.path.count("/") == 20  # a/b/a/b/...: stopped there, not raised
    finally:
        medium.close()


def test_duplicate_name_is_reported_not_misread(tmp_path, media_settings):
    src = make_tree(tmp_path / "src", {"d/x1.dcm": b"1" * 3000, "d/x2.dcm": b"2" * 3000})
    image = make_udf_only(src, tmp_path / "dup.img")
    edit_fid(image, "x2.dcm", new_name="x1.dcm")
    medium = UdfMedium(str(image), media_settings)
    try:
        assert [e.path for e in medium.entries()] == ["d/x1.dcm"]
        assert read(medium, "d/x1.dcm") == b"1" * 3000
        assert {p.path: p.code for p in medium.problems} == {"d/x1.dcm": "unreadable_directory"}
    finally:
        medium.close()


def _mkudffs(image: Path, *args: str) -> Path:
    if shutil.which("mkudffs") is None:
        pytest.skip("udftools (mkudffs) is not installed")
    subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
    subprocess.run(["mkudffs", *args, str(image)], check=True, capture_output=True)
    return image


def test_mkudffs_udf201_volume_opens(tmp_path, media_settings):
    image = _mkudffs(
        tmp_path / "empty.img",
        "--media-type=hd",
        "--blocksize=2048",
        "--udfrev=0x0201",
        "--label=LIVE_FS",
    )
    medium = open_medium(str(image), media_settings)
    try:
        assert (
            isinstance(medium, UdfMedium) and medium.label == "LIVE_FS" and medium.entries() == []
        )
    finally:
        medium.close()


def test_vat_disc_is_unreadable_medium(tmp_path, media_settings):
    # mkudffs writes UDF 2.50 for BD-R only with a VAT, which libudfread cannot map.
    image = _mkudffs(tmp_path / "bdr.img", "--media-type=bdr", "--label=BDR")
    with pytest.raises(MediumOpenError) as exc:
        open_medium(str(image), media_settings)
    assert exc.value.code == "unreadable_medium"


def test_without_libudfread(udf_tree, tmp_path, media_settings, monkeypatch):
    image = make_udf_only(udf_tree, tmp_path / "udf.img")
    monkeypatch.setattr(udf_module, "load_libudfread", lambda: None)
    with pytest.raises(MediumOpenError) as exc:
        open_medium(str(image), media_settings)
    assert (exc.value.code, exc.value.detail) == (
        "unreadable_medium",
        "UDF-only disc and libudfread is not installed",
    )


def test_block_device_via_loop(udf_tree, tmp_path, media_settings):
    image = make_udf_only(udf_tree, tmp_path / "dev.img")
    with loop_device(image) as dev:
        medium = open_medium(dev, media_settings)
        try:
            assert isinstance(medium, UdfMedium) and medium.kind == "device"
            assert medium_digests(medium) == tree_digests(udf_tree)
        finally:
            medium.close()
