"""An emulated optical drive as a real block device.

The drive model of :mod:`pdimport.capacity.drivemodel` (speed curve, seeks,
spin-up, unreadable sectors) serves disc images through FUSE; a read-only
loop device on one of them, with 2048-byte blocks, is then a block device
that udev announces and the daemon reads like a drive. Every read the loop
driver makes reaches the model: FUSE is mounted with ``direct_io``, so the
kernel keeps no page cache of the files. An unreadable sector answers EIO,
which the loop device passes on to its reader; so does a read that reaches
one, as a drive fails the whole command (the kernel then retries page by
page, and only what lies on the bad sector fails).

One FUSE process per drive, each with its own head: several drives run side
by side, and the model serialises the readers of one drive, as a drive does.
A drive serves a *library* folder: every ``*.iso`` in it is a disc that can
be put in the tray (:meth:`Drive.insert` attaches the loop device, the
daemon's eject detaches it). Each disc spins up on its first read. A disc's
unreadable sectors are listed in a sidecar ``NAME.iso.bad-lbas`` (comma
separated) or, for a one-disc drive, given on the command line.

Used by ``pdimport bench`` and by the reliability tests::

    with emulated_drive(image, "dvd", scale=4.0, bad_lbas=[1200]) as dev:
        ...  # dev is /dev/loopN

or from a shell (foreground, Ctrl-C unmounts)::

    python -m pdimport.capacity.drive LIBRARY MOUNTPOINT --profile dvd --scale 4
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any, Self

from pdimport.capacity import drivemodel as dm

#: Suffix of the sidecar file naming a disc's unreadable sectors.
BAD_SUFFIX = ".bad-lbas"


def _fuse_error(code: int) -> Exception:
    import mfusepy

    return mfusepy.FuseOSError(code)


class DriveFS:
    """The FUSE operations: the library's images, read through the model.

    An :class:`mfusepy.Operations` in all but name (it is created by
    :func:`serve`, so importing this module needs no libfuse). One lock per
    drive: one head, whatever the number of open files.
    """

    use_ns = True

    def __init__(
        self,
        library: Path,
        profile: dm.DriveProfile,
        scale: float,
        only: str = "",
        bad_lbas: Iterable[int] = (),
    ) -> None:
        self.library = library
        self.profile = profile
        self.scale = scale
        self.only = only
        self.bad_lbas = frozenset(bad_lbas)
        self.started = int(time.time() * 1e9)
        self._head = threading.Lock()
        self._open: dict[int, tuple[dm.ThrottledPread, int]] = {}
        self._next_fh = 1

    def _image(self, path: str) -> Path:
        name = path.lstrip("/")
        if not name or "/" in name or not name.endswith(".iso"):
            raise _fuse_error(errno.ENOENT)
        if self.only and name != self.only:
            raise _fuse_error(errno.ENOENT)
        image = self.library / name
        if not image.is_file():
            raise _fuse_error(errno.ENOENT)
        return image

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        times = {"st_atime": self.started, "st_mtime": self.started, "st_ctime": self.started}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, **times}
        size = self._image(path).stat().st_size
        return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": size, **times}

    def readdir(self, path: str, fh: int) -> list[str]:
        if path != "/":
            raise _fuse_error(errno.ENOTDIR)
        names = sorted(p.name for p in self.library.glob("*.iso"))
        return [".", "..", *(n for n in names if not self.only or n == self.only)]

    def open(self, path: str, flags: int) -> int:
        image = self._image(path)
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise _fuse_error(errno.EROFS)
        bad = set(self.bad_lbas)
        sidecar = image.with_name(image.name + BAD_SUFFIX)
        if sidecar.is_file():
            bad |= {int(x) for x in sidecar.read_text().split(",") if x.strip()}
        pread = dm.ThrottledPread(image, self.profile, scale=self.scale, bad_lbas=bad)
        with self._head:
            fh = self._next_fh
            self._next_fh += 1
            self._open[fh] = (pread, image.stat().st_size)
        return fh

    def release(self, path: str, fh: int) -> int:
        with self._head:
            entry = self._open.pop(fh, None)
        if entry is not None:
            entry[0].close()
        return 0

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        entry = self._open.get(fh)
        if entry is None:
            raise _fuse_error(errno.EBADF)
        pread, total = entry
        size = max(0, min(size, total - offset))
        if size == 0:
            return b""
        try:
            with self._head:
                data = pread(-1, size, offset)
        except OSError as exc:
            raise _fuse_error(exc.errno or errno.EIO) from None
        if len(data) < size:
            # The model stops short at an unreadable sector. A drive fails the
            # whole command instead, and the loop driver would zero-fill a
            # short read as if it were data: answer EIO, so the kernel retries
            # page by page and only the pages on the bad sector fail.
            raise _fuse_error(errno.EIO)
        return data


def serve(
    library: Path,
    mountpoint: Path,
    profile: dm.DriveProfile,
    scale: float,
    only: str = "",
    bad_lbas: Iterable[int] = (),
) -> None:
    """Mount the drive at ``mountpoint`` and serve it until unmounted."""
    import mfusepy

    ops = type("DriveOperations", (DriveFS, mfusepy.Operations), {})
    mfusepy.FUSE(
        ops(library, profile, scale, only, bad_lbas),
        str(mountpoint),
        foreground=True,
        ro=True,
        direct_io=True,
        fsname=f"pdimport-drive-{profile.name.split()[0].lower()}",
    )


def profile_of(profile: str | dm.DriveProfile) -> dm.DriveProfile:
    """A profile by name (``cd``, ``dvd``, ``bd``, ``usb``) or as given."""
    if isinstance(profile, dm.DriveProfile):
        return profile
    if profile not in dm.PROFILES:
        raise ValueError(f"unknown profile {profile!r}: one of {sorted(dm.PROFILES)}")
    return dm.PROFILES[profile]


def missing_requirements() -> str:
    """Why emulated drives cannot run here, or ``""`` when they can."""
    if os.geteuid() != 0:
        return "needs root (loop devices)"
    if not os.path.exists("/dev/fuse"):
        return "needs /dev/fuse"
    import shutil

    for tool in ("fusermount3", "losetup"):
        if not shutil.which(tool):
            return f"needs {tool} (Debian fuse3 / util-linux; hardware/setup.sh installs them)"
    return ""


class Drive:
    """One emulated drive: a FUSE process serving ``library`` at the model's
    speed, and the loop device that is its tray.

    Parameters
    ----------
    library : Path
        Folder of ``*.iso`` disc images.
    profile : str or DriveProfile
        The drive's speeds.
    scale : float
        Model seconds per real second (1 = real time).
    loop : str, optional
        The loop device to use (``/dev/loop120``); the first free one by default.
        A fixed node high above the ones ``losetup -f`` hands out keeps
        other users of loop devices off the tray between two discs.
    """

    def __init__(
        self,
        library: Path,
        profile: str | dm.DriveProfile = "dvd",
        scale: float = 1.0,
        loop: str = "",
        only: str = "",
        bad_lbas: Iterable[int] = (),
        timeout: float = 10.0,
    ) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.library = Path(library)
        self.profile = profile_of(profile)
        self.scale = scale
        self.loop = loop
        self.only = only
        self.bad_lbas = list(bad_lbas)
        self.timeout = timeout
        self.mountpoint = Path()
        self.proc: subprocess.Popen[bytes] | None = None
        self.devnode = ""
        self._errors: IO[str] | None = None

    # -------------------------------------------------------- the FUSE side
    def start(self) -> Self:
        self.mountpoint = Path(tempfile.mkdtemp(prefix="pdimport-drive-"))
        cmd = [sys.executable, "-P", "-m", "pdimport.capacity.drive", str(self.library)]
        cmd += [str(self.mountpoint), "--profile-json", json.dumps(asdict(self.profile))]
        cmd += ["--scale", str(self.scale)]
        if self.only:
            cmd += ["--only", self.only]
        if self.bad_lbas:
            cmd += ["--bad-lbas", ",".join(str(b) for b in self.bad_lbas)]
        # stderr to a file, not a pipe: it never fills
        self._errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  kept for the drive's life
        self.proc = subprocess.Popen(cmd, stderr=self._errors, env=_child_env())
        try:
            self._wait_mounted()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_mounted(self) -> None:
        assert self.proc is not None and self._errors is not None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._errors.seek(0)
                lines = self._errors.read().strip().splitlines()
                raise RuntimeError(f"the FUSE drive did not start: {lines[-1] if lines else ''}")
            if os.path.ismount(self.mountpoint):
                return
            time.sleep(0.02)
        raise RuntimeError(f"the FUSE drive did not mount within {self.timeout} s")

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    # -------------------------------------------------------------- the tray
    def insert(self, name: str) -> str:
        """Put disc ``name`` (a file of the library) in the tray: attach the
        loop device, read-only with 2048-byte blocks. Returns the device node."""
        target = self.mountpoint / name
        if not target.exists():
            raise RuntimeError(f"the drive does not see {name} (not an .iso in {self.library}?)")
        cmd = ["losetup", "-r", "-b", str(dm.SECTOR)]
        cmd += [self.loop] if self.loop else ["-f", "--show"]
        attach = subprocess.run(
            [*cmd, str(target)], capture_output=True, text=True, check=False, timeout=30
        )
        if attach.returncode != 0:
            raise RuntimeError(f"losetup failed: {attach.stderr.strip()}")
        self.devnode = self.loop or attach.stdout.strip()
        return self.devnode

    def loaded(self) -> bool:
        """True while a disc is in the tray (the loop device is attached)."""
        if not self.devnode:
            return False
        name = os.path.basename(self.devnode)
        return Path(f"/sys/block/{name}/loop/backing_file").exists()

    def eject(self) -> None:
        """Detach the loop device ourselves (the daemon normally does)."""
        if self.devnode and self.loaded():
            subprocess.run(["losetup", "-d", self.devnode], capture_output=True, check=False)

    def close(self) -> None:
        self.eject()
        if self.mountpoint != Path():
            subprocess.run(
                ["fusermount3", "-u", str(self.mountpoint)], capture_output=True, check=False
            )
        if self.proc is not None:
            try:
                self.proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._errors is not None:
            self._errors.close()
            self._errors = None
        if self.mountpoint != Path():
            with contextlib.suppress(OSError):
                self.mountpoint.rmdir()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _child_env() -> dict[str, str]:
    """The drive process finds this very package, wherever it was imported from."""
    here = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=here + (os.pathsep + path if path else ""))


@contextlib.contextmanager
def emulated_drive(
    image: Path,
    profile: str | dm.DriveProfile = "dvd",
    scale: float = 1.0,
    bad_lbas: Iterable[int] = (),
    timeout: float = 10.0,
    device: str | None = None,
) -> Iterator[str]:
    """An emulated drive holding ``image``, as a read-only loop device.

    Yields the device node: ``device`` when given (a free ``/dev/loopN`` the
    caller chose, e.g. one a daemon under test watches), else the first free
    one. Attaching it is inserting the disc. Needs root, ``/dev/fuse``,
    libfuse 3 (Debian ``fuse3``) and a loop driver; raises
    :class:`RuntimeError` naming what is missing otherwise.
    """
    image = Path(image)
    profile_of(profile)
    # The model serves .iso names; any other image is linked in under one.
    with tempfile.TemporaryDirectory(prefix="pdimport-tray-") as tray:
        library, name = image.parent, image.name
        if not name.endswith(".iso"):
            library, name = Path(tray), "disc.iso"
            if image.exists():
                os.symlink(image.resolve(), library / name)
        elif not image.exists():
            # Start the drive all the same: it reports the missing disc as a start error.
            library = Path(tray) / "missing"
        with Drive(
            library, profile, scale, loop=device or "", only=name, bad_lbas=bad_lbas,
            timeout=timeout,
        ) as d:  # fmt: skip
            yield d.insert(name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("library", type=Path, help="folder of .iso disc images")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--profile", choices=sorted(dm.PROFILES), default="dvd")
    p.add_argument("--profile-json", default="", help=argparse.SUPPRESS)
    p.add_argument("--scale", type=float, default=1.0, help="model seconds per real second")
    p.add_argument("--only", default="", help="serve this one image of the library")
    p.add_argument("--bad-lbas", default="", help="comma-separated unreadable sectors")
    args = p.parse_args(argv)
    if not args.library.is_dir():
        print(f"no such library folder: {args.library}", file=sys.stderr)
        return 2
    if args.only and not (args.library / args.only).is_file():
        print(f"no such image: {args.library / args.only}", file=sys.stderr)
        return 2
    profile: Any = dm.PROFILES[args.profile]
    if args.profile_json:
        profile = dm.DriveProfile(**json.loads(args.profile_json))
    bad = [int(x) for x in args.bad_lbas.split(",") if x.strip()]
    serve(args.library, args.mountpoint, profile, args.scale, args.only, bad)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
