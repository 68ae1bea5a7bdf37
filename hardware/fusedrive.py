"""An emulated optical drive as a real block device.

The drive model of :mod:`drive_emulation` (speed curve, seeks, spin-up,
unreadable sectors) serves a disc image through FUSE as one read-only file,
``disc.img``; a read-only loop device on that file is then a block device
that udev announces and the daemon reads like a drive. Every read the loop
driver makes reaches the model: FUSE is mounted with ``direct_io``, so the
kernel keeps no page cache of the file. An unreadable sector answers EIO,
which the loop device passes on to its reader; so does a read that reaches
one, as a drive fails the whole command (the kernel then retries page by
page, and only what lies on the bad sector fails).

One FUSE process per drive, so that each drive has its own head and several
run side by side (the model serialises the readers of one drive, as a drive
does). Used by the capacity-planning and reliability tests and benchmarks::

    with emulated_drive(image, "dvd", scale=4.0, bad_lbas=[1200]) as dev:
        ...  # dev is /dev/loopN

or from a shell (foreground, Ctrl-C unmounts)::

    python hardware/fusedrive.py IMAGE MOUNTPOINT --profile dvd --scale 4
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drive_emulation as de

FILE_NAME = "disc.img"


class DriveFS:
    """The FUSE operations: a directory holding the image as ``disc.img``.

    An :class:`mfusepy.Operations` in all but name (it is created by
    :func:`serve`, so importing this module needs no libfuse).
    """

    use_ns = True

    def __init__(self, pread: de.ThrottledPread, size: int) -> None:
        self.pread = pread
        self.size = size
        self.started = int(time.time() * 1e9)

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        times = {"st_atime": self.started, "st_mtime": self.started, "st_ctime": self.started}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, **times}
        if path == "/" + FILE_NAME:
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.size, **times}
        raise _fuse_error(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        if path != "/":
            raise _fuse_error(errno.ENOTDIR)
        return [".", "..", FILE_NAME]

    def open(self, path: str, flags: int) -> int:
        if path != "/" + FILE_NAME:
            raise _fuse_error(errno.ENOENT)
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise _fuse_error(errno.EROFS)
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return b""
        try:
            data = self.pread(-1, size, offset)
        except OSError as exc:
            raise _fuse_error(exc.errno or errno.EIO) from None
        if len(data) < size:
            # The model stops short at an unreadable sector. A drive fails the
            # whole command instead, and the loop driver would zero-fill a
            # short read as if it were data: answer EIO, so the kernel retries
            # page by page and only the pages on the bad sector fail.
            raise _fuse_error(errno.EIO)
        return data


def _fuse_error(code: int) -> Exception:
    import mfusepy

    return mfusepy.FuseOSError(code)


def serve(
    image: Path, mountpoint: Path, profile: str, scale: float, bad_lbas: Iterable[int]
) -> None:
    """Mount the drive at ``mountpoint`` and serve it until unmounted."""
    import mfusepy

    ops = type("DriveOperations", (DriveFS, mfusepy.Operations), {})
    with de.ThrottledPread(image, de.PROFILES[profile], scale=scale, bad_lbas=bad_lbas) as pread:
        mfusepy.FUSE(
            ops(pread, image.stat().st_size),
            str(mountpoint),
            foreground=True,
            ro=True,
            direct_io=True,
            fsname=f"pdimport-drive-{profile}",
        )


@contextlib.contextmanager
def emulated_drive(
    image: Path,
    profile: str = "dvd",
    scale: float = 1.0,
    bad_lbas: Iterable[int] = (),
    timeout: float = 10.0,
    device: str | None = None,
) -> Iterator[str]:
    """An emulated drive holding ``image``, as a read-only loop device.

    Yields the device node: ``device`` when given (a free ``/dev/loopN`` the
    caller chose, e.g. one a daemon under test watches), else the first free
    one. Attaching the loop device is inserting the disc. Needs root, ``/dev/fuse``,
    libfuse 3 (Debian ``fuse3``) and a loop driver; raises
    :class:`RuntimeError` naming what is missing otherwise.
    """
    if profile not in de.PROFILES:
        raise ValueError(f"unknown profile {profile!r}: one of {sorted(de.PROFILES)}")
    mountpoint = Path(tempfile.mkdtemp(prefix="pdimport-drive-"))
    lbas = ",".join(str(lba) for lba in bad_lbas)
    cmd = [sys.executable, __file__, str(image), str(mountpoint), "--profile", profile]
    cmd += ["--scale", str(scale), *(["--bad-lbas", lbas] if lbas else [])]
    # stderr to a file, not a pipe: it never fills
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(cmd, stderr=errors)
        dev = ""
        try:
            _wait_mounted(proc, errors, mountpoint / FILE_NAME, timeout)
            where = [device] if device else ["-f", "--show"]
            attach = subprocess.run(
                ["losetup", "-r", "-b", str(de.SECTOR), *where, str(mountpoint / FILE_NAME)],
                capture_output=True,
                text=True,
                check=False,
            )
            if attach.returncode != 0:
                raise RuntimeError(f"losetup failed: {attach.stderr.strip()}")
            dev = device or attach.stdout.strip()
            yield dev
        finally:
            if dev:
                subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
            subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, check=False)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(OSError):
                mountpoint.rmdir()


def _wait_mounted(proc: subprocess.Popen, errors: IO[str], path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            errors.seek(0)
            lines = errors.read().strip().splitlines()
            raise RuntimeError(f"the FUSE drive did not start: {lines[-1] if lines else ''}")
        if path.exists():
            return
        time.sleep(0.02)
    raise RuntimeError(f"the FUSE drive did not mount within {timeout} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("image", type=Path)
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--profile", choices=sorted(de.PROFILES), default="dvd")
    p.add_argument("--scale", type=float, default=1.0, help="model seconds per real second")
    p.add_argument("--bad-lbas", default="", help="comma-separated unreadable sectors")
    args = p.parse_args(argv)
    bad = [int(x) for x in args.bad_lbas.split(",") if x.strip()]
    serve(args.image, args.mountpoint, args.profile, args.scale, bad)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
