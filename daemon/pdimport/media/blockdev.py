"""Sizes of block devices and images (the one block ioctl the readers need)."""

from __future__ import annotations

import fcntl
import os
import stat
import struct

#: <linux/fs.h> BLKGETSIZE64 = _IOR(0x12, 114, size_t): device size in bytes.
BLKGETSIZE64 = 0x80081272


def fd_size(fd: int) -> int:
    """Bytes on the image or device open at ``fd``: ``BLKGETSIZE64`` for block
    devices (``st_size`` is 0 there), ``st_size`` for files."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
        return int(struct.unpack("Q", buf)[0])
    return st.st_size


def device_size(path: str) -> int:
    """Bytes on the device or image at ``path``; -1 when it cannot be asked."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return -1
    try:
        return fd_size(fd)
    except OSError:
        return -1
    finally:
        os.close(fd)
