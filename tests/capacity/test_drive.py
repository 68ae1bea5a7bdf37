"""The emulated drive as a real block device (pdimport.capacity.drive, also
hardware/fusedrive.py): the drive model served through FUSE behind a
read-only loop device.

These tests time the emulator itself, not pdimport: a long read must take the
model's time (never less, since the throttle is the point) and an unreadable
sector must reach the reader of the block device as EIO.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import shutil
import time
from pathlib import Path

import pytest

from pdimport.capacity import drive as fusedrive
from pdimport.capacity import drivemodel as de

SECTOR = de.SECTOR

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"),
    reason="needs root, /dev/fuse and fuse3 (hardware/setup.sh installs it)",
)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fusedrive") / "disc.iso"
    path.write_bytes(os.urandom(24 << 20))  # random: any misread shows
    return path


def read_through(dev: str, start: int = 0, block: int = 1 << 20) -> bytes:
    out = bytearray()
    fd = os.open(dev, os.O_RDONLY)
    try:
        while chunk := os.pread(fd, block, start + len(out)):
            out += chunk
    finally:
        os.close(fd)
    return bytes(out)


def test_a_long_read_takes_the_model_time_and_returns_the_image(image: Path):
    scale = 2.0
    want = de.time_to_read_sequentially(image.stat().st_size, de.DVD_16X) / scale
    with fusedrive.emulated_drive(image, "dvd", scale=scale) as dev:
        started = time.monotonic()
        data = read_through(dev)
        took = time.monotonic() - started
    assert hashlib.sha256(data).digest() == hashlib.sha256(image.read_bytes()).digest()
    assert took >= 0.9 * want, (took, want)  # the throttle holds
    assert took <= 1.5 * want + 0.5, (took, want)  # and costs little on top


def test_unreadable_sectors_are_eio_through_the_loop_device(image: Path):
    """Like /dev/sr0, the device has 2048-byte logical blocks: read with
    O_DIRECT, exactly the bad sectors fail; through the page cache, the 4 KiB
    page that holds one fails, and every other page reads."""
    bad = [100, 4001]
    data = image.read_bytes()
    with fusedrive.emulated_drive(image, "cd", scale=50.0, bad_lbas=bad) as dev:
        fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, SECTOR)  # page-aligned, as O_DIRECT needs
        try:
            for lba in bad:
                with pytest.raises(OSError) as err:
                    os.preadv(fd, [buf], lba * SECTOR)
                assert err.value.errno == errno.EIO
            for lba in (0, 99, 101, 4000, 4002, len(data) // SECTOR - 1):
                assert os.preadv(fd, [buf], lba * SECTOR) == SECTOR
                assert buf[:] == data[lba * SECTOR : (lba + 1) * SECTOR], lba
        finally:
            os.close(fd)
        fd = os.open(dev, os.O_RDONLY)
        try:
            with pytest.raises(OSError):
                os.pread(fd, 4096, 100 * SECTOR)  # the page of sectors 100-101
            assert os.pread(fd, 4096, 98 * SECTOR) == data[98 * SECTOR : 100 * SECTOR]
        finally:
            os.close(fd)
    assert read_through(image.as_posix()) == data  # the image itself is never touched


def test_two_drives_each_keep_their_own_rate(image: Path):
    """Each drive has its own head: two read side by side as fast as one."""
    import threading

    scale = 4.0
    want = de.time_to_read_sequentially(image.stat().st_size, de.DVD_16X) / scale
    took: list[float] = []
    with (
        fusedrive.emulated_drive(image, "dvd", scale=scale) as a,
        fusedrive.emulated_drive(image, "dvd", scale=scale) as b,
    ):

        def one(dev: str) -> None:
            started = time.monotonic()
            read_through(dev)
            took.append(time.monotonic() - started)

        threads = [threading.Thread(target=one, args=(d,)) for d in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(took) == 2
    assert max(took) <= 1.5 * want + 0.5, (took, want)


def test_a_missing_image_is_a_clear_error(tmp_path: Path):
    with (
        pytest.raises(RuntimeError, match="did not start"),
        fusedrive.emulated_drive(tmp_path / "none.iso", "dvd"),
    ):
        pass


def test_a_drive_takes_one_disc_after_another(tmp_path: Path):
    """The bench's tray: insert, eject, insert the next; each disc reads as
    itself, unreadable sectors from its sidecar only."""
    library = tmp_path / "library"
    library.mkdir()
    first, second = os.urandom(1 << 20), os.urandom(2 << 20)
    (library / "a.iso").write_bytes(first)
    (library / "b.iso").write_bytes(second)
    (library / "b.iso.bad-lbas").write_text("10")
    (library / "notes.txt").write_text("not a disc")
    with fusedrive.Drive(library, "usb", scale=20.0) as drive:
        assert sorted(os.listdir(drive.mountpoint)) == ["a.iso", "b.iso"]
        dev = drive.insert("a.iso")
        assert drive.loaded()
        assert read_through(dev) == first
        drive.eject()
        assert not drive.loaded()
        assert drive.insert("b.iso") == dev
        fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, SECTOR)
        try:
            with pytest.raises(OSError) as err:
                os.preadv(fd, [buf], 10 * SECTOR)
            assert err.value.errno == errno.EIO
            assert os.preadv(fd, [buf], 11 * SECTOR) == SECTOR
            assert buf[:] == second[11 * SECTOR : 12 * SECTOR]
        finally:
            os.close(fd)
        with pytest.raises(RuntimeError, match="does not see"):
            drive.insert("notes.txt")
    assert not drive.loaded()
