"""Builders for media used by tests: folder trees, real ISO images made by
genisoimage / xorriso, loop devices, and hostile zip packages.

Plain functions (``make_iso``, ``make_zip``, ...) can be called from any
test; the pytest fixtures below wrap the common cases.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import struct
import subprocess
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

__all__ = [
    "LONG_NAME",
    "SAMPLE_FILES",
    "corrupt_zip_member",
    "iso_dir_record_offset",
    "loop_device",
    "make_dir_loop_iso",
    "make_iso",
    "make_tree",
    "make_zip",
    "make_zip_bomb",
    "make_zip_encrypted_flag",
    "make_zip_symlink",
    "media_settings",
    "medium_digests",
    "sample_tree",
    "sha256",
    "tree_digests",
    "zip_member_data_offset",
]

#: A name that only survives in Rock Ridge, Joliet (-joliet-long) and UDF.
LONG_NAME = "Series_0003_MixedCase_Thin_Slice_CT_1mm.dcm"

#: Relative path -> content of the sample tree (nested dirs, mixed case,
#: long names, an empty file, a file over one 1 MiB read chunk).
SAMPLE_FILES: dict[str, bytes] = {
    "DICOMDIR": b"DICM-dir-" * 100,
    "README.txt": b"patient disc\n",
    "empty.dat": b"",
    f"DICOM/Study One/{LONG_NAME}": bytes(range(256)) * 4096 + b"tail",  # ~1 MiB + 4
    "DICOM/Study One/IM000001": os.urandom(70_000),
    "DICOM/Study Two/deep/er/IM000002": os.urandom(5_000),
}


# ------------------------------------------------------------------ trees
def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tree(root: Path, files: dict[str, bytes] | None = None) -> Path:
    """Write ``files`` (relative '/'-path -> bytes) under ``root``."""
    for rel, data in (SAMPLE_FILES if files is None else files).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def tree_digests(root: Path) -> dict[str, str]:
    """'/'-relative path -> sha256 of every regular file (links not followed)."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if stat.S_ISREG(path.lstat().st_mode):
                out[path.relative_to(root).as_posix()] = sha256(path.read_bytes())
    return out


def medium_digests(medium) -> dict[str, str]:
    """Read every entry of a medium in its order: path -> sha256 (streamed)."""
    out = {}
    for entry in medium.entries():
        h = hashlib.sha256()
        with medium.open(entry) as fp:
            while chunk := fp.read(1 << 20):
                h.update(chunk)
        out[entry.path] = h.hexdigest()
    return out


# ------------------------------------------------------------------- ISOs
def make_iso(
    src_dir: Path,
    out_path: Path,
    tool: str = "genisoimage",
    udf: bool = False,
    joliet: bool = True,
    rockridge: bool = True,
    volid: str = "PDIMPORT_TEST",
    extra: Iterable[str] = (),
) -> Path:
    """Master an image with the real tool: ``genisoimage`` or ``xorriso -as mkisofs``.

    Joliet is written with ``-joliet-long`` so names up to 103 characters
    survive, as mastering software on Windows does.
    """
    args = ["-quiet", "-V", volid, "-o", str(out_path)]
    if joliet:
        args += ["-J", "-joliet-long"]
    if rockridge:
        args += ["-R"]
    if udf:
        if tool != "genisoimage":
            raise ValueError("only genisoimage writes UDF (xorriso has none)")
        args += ["-udf"]
    args += list(extra) + [str(src_dir)]
    cmd = ["genisoimage", *args] if tool == "genisoimage" else ["xorriso", "-as", "mkisofs", *args]
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} is not installed")
    subprocess.run(cmd, check=True, capture_output=True)
    return out_path


def iso_dir_record_offset(image: Path, parent_extent: int, iso_ident: bytes) -> int:
    """Byte offset of the directory record named ``iso_ident`` inside the
    directory at ``parent_extent`` (ECMA-119 §9.1: ident at record offset 33)."""
    data = image.read_bytes()
    sector = data[parent_extent * 2048 : (parent_extent + 1) * 2048]
    pos = 0
    while pos < len(sector) and sector[pos]:
        length, ident_len = sector[pos], sector[pos + 32]
        if sector[pos + 33 : pos + 33 + ident_len] == iso_ident:
            return parent_extent * 2048 + pos
        pos += length
    raise LookupError(iso_ident)


def make_dir_loop_iso(src_dir: Path, out_path: Path) -> Path:
    """An image whose first subdirectory points back at the root (catalogue I1).

    ``src_dir`` must hold a directory named ``sub``.
    """
    import pycdlib

    make_iso(src_dir, out_path, joliet=False, rockridge=True)
    iso = pycdlib.PyCdlib()
    iso.open(str(out_path))
    root = iso.pvd.root_directory_record().extent_location()
    iso.close()
    offset = iso_dir_record_offset(out_path, root, b"SUB")
    data = bytearray(out_path.read_bytes())
    # Location of Extent is both-endian (ECMA-119 §9.1.3).
    struct.pack_into("<I", data, offset + 2, root)
    struct.pack_into(">I", data, offset + 6, root)
    out_path.write_bytes(bytes(data))
    return out_path


@contextlib.contextmanager
def loop_device(image: Path) -> Iterator[str]:
    """Attach ``image`` read-only to a free loop device; skip the test when
    that is impossible (not root, no loop driver)."""
    if shutil.which("losetup") is None:
        pytest.skip("losetup not installed")
    proc = subprocess.run(
        ["losetup", "-r", "-f", "--show", str(image)], capture_output=True, check=False, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"losetup failed (needs root and loop devices): {proc.stderr.strip()}")
    dev = proc.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], check=False, capture_output=True)


# -------------------------------------------------------------------- zips
def make_zip(
    out_path: Path,
    members: dict[str, bytes] | Iterable[tuple[str, bytes]],
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """A zip of ``members`` (name -> bytes, or (name, bytes) pairs, so that
    hostile names such as '../../x' or 'C:\\\\x' are written verbatim)."""
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(out_path, "w", compression) as zf:
        for name, data in items:
            zf.writestr(
                zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data, compress_type=compression
            )
    return out_path


def make_zip_symlink(
    out_path: Path,
    link_name: str = "evil",
    target: str = "/etc/passwd",
    good: dict[str, bytes] | None = None,
) -> Path:
    """A zip with a Unix symlink member (mode S_IFLNK in external_attr)."""
    with zipfile.ZipFile(out_path, "w") as zf:
        for name, data in (good or {}).items():
            zf.writestr(name, data)
        info = zipfile.ZipInfo(link_name, (2020, 1, 1, 0, 0, 0))
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
    return out_path


def _member_offsets(path: Path, name: str) -> tuple[int, int]:
    """(local header offset, central directory header offset) of a member."""
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(name).header_offset
    data = path.read_bytes()
    central = data.find(b"PK\x01\x02")
    needle = name.encode()
    while central >= 0 and data[central + 46 : central + 46 + len(needle)] != needle:
        central = data.find(b"PK\x01\x02", central + 4)
    if central < 0:
        raise LookupError(name)
    return local, central


def make_zip_encrypted_flag(out_path: Path, name: str, good: dict[str, bytes]) -> Path:
    """A zip whose member ``name`` has general purpose bit 0 (encrypted) set in
    both its local and central headers (APPNOTE 4.4.4)."""
    make_zip(out_path, {**good, name: b"secret data"}, compression=zipfile.ZIP_STORED)
    local, central = _member_offsets(out_path, name)
    data = bytearray(out_path.read_bytes())
    data[local + 6] |= 1
    data[central + 8] |= 1
    out_path.write_bytes(bytes(data))
    return out_path


def make_zip_bomb(
    out_path: Path,
    name: str = "bomb.bin",
    size: int = 50 << 20,
    good: dict[str, bytes] | None = None,
) -> Path:
    """``size`` bytes of zeros deflated (ratio ~1000:1), beside good members."""
    with zipfile.ZipFile(out_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in (good or {}).items():
            zf.writestr(member, data)
        with zf.open(name, "w") as fp:
            block = bytes(1 << 20)
            for _ in range(size >> 20):
                fp.write(block)
    return out_path


def zip_member_data_offset(path: Path, name: str) -> int:
    """Where a member's (compressed) data begins (APPNOTE 4.3.7)."""
    local, _ = _member_offsets(path, name)
    data = path.read_bytes()
    name_len, extra_len = struct.unpack_from("<HH", data, local + 26)
    return local + 30 + name_len + extra_len


def corrupt_zip_member(path: Path, name: str) -> Path:
    """Flip one data byte of a member so that its CRC-32 no longer matches."""
    offset = zip_member_data_offset(path, name)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def media_settings():
    """Default settings (limits as shipped)."""
    from pdimport.settings import defaults

    return defaults()


@pytest.fixture
def sample_tree(tmp_path) -> Path:
    """:data:`SAMPLE_FILES` under ``tmp_path/src`` plus a symlink ``link`` to /etc/passwd."""
    root = make_tree(tmp_path / "src")
    (root / "link").symlink_to("/etc/passwd")
    return root
