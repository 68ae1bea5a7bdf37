"""The drive-control edge: CD-ROM ioctls, loop detach, USB mount and power-off.

Measured semantics this is built on (hardware notes §2, QEMU guest, kernel 6.1):

* open drives with ``O_NONBLOCK``: a blocking open closes an open tray
  (autoclose), fails with ``ENOMEDIUM`` on an empty drive, and locks the door
  for as long as the fd is open;
* ``CDROMEJECT`` on a locked tray does **not** fail in Python: the ioctl
  returns a positive SCSI status (2, CHECK CONDITION). ``rc != 0`` is a
  failure. Eject = clear ``CDO_LOCK``, ``CDROM_LOCKDOOR 0``, ``CDROMEJECT``;
* the kernel ejects under an active reader: the daemon's lifecycle must not.

The ioctl function is a parameter (default :func:`fcntl.ioctl`) so tests pass
a thin fake; there is no optical drive on the build machines.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# linux/cdrom.h
CDROMEJECT = 0x5309
CDROMCLOSETRAY = 0x5319
CDROM_SET_OPTIONS = 0x5320
CDROM_CLEAR_OPTIONS = 0x5321
CDROM_DRIVE_STATUS = 0x5326
CDROM_LOCKDOOR = 0x5329
CDO_LOCK = 0x8
CDSL_CURRENT = 0x7FFFFFFF
# CDROM_DRIVE_STATUS results
CDS_NO_INFO, CDS_NO_DISC, CDS_TRAY_OPEN, CDS_DRIVE_NOT_READY, CDS_DISC_OK = 0, 1, 2, 3, 4
DRIVE_STATUS_NAMES = {0: "no_info", 1: "no_disc", 2: "tray_open", 3: "not_ready", 4: "disc_ok"}
# linux/loop.h
LOOP_CLR_FD = 0x4C01

Ioctl = Callable[[int, int, int], int]


@dataclass(frozen=True)
class ControlResult:
    """Outcome of a drive operation: failures are values, not exceptions."""

    ok: bool
    attempts: int = 1
    detail: str = ""


def _open(devnode: str) -> int:
    # Never trigger autoclose or lock-on-open (hardware notes §2).
    return os.open(devnode, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


# ------------------------------------------------------------- optical
def drive_status(devnode: str, ioctl: Ioctl = fcntl.ioctl) -> int:
    """``CDROM_DRIVE_STATUS`` of the current slot (``CDS_*``); -1 if unknown."""
    try:
        fd = _open(devnode)
    except OSError as exc:
        log.warning("drive status of %s: %s", devnode, exc)
        return -1
    try:
        return int(ioctl(fd, CDROM_DRIVE_STATUS, CDSL_CURRENT))
    except OSError as exc:
        log.debug("CDROM_DRIVE_STATUS on %s: %s", devnode, exc)
        return -1
    finally:
        os.close(fd)


def lock_tray(devnode: str, lock: bool = True, ioctl: Ioctl = fcntl.ioctl) -> ControlResult:
    """Lock (or unlock) the tray, so the button cannot open it mid-read.

    ``CDO_LOCK`` is cleared first so the lock does not depend on our fd staying
    open (the kernel otherwise unlocks on the last close).
    """
    try:
        fd = _open(devnode)
    except OSError as exc:
        return ControlResult(False, detail=str(exc))
    try:
        _clear_lock_option(fd, ioctl)
        rc = int(ioctl(fd, CDROM_LOCKDOOR, 1 if lock else 0))
        return ControlResult(rc == 0, detail="" if rc == 0 else f"scsi status {rc}")
    except OSError as exc:
        return ControlResult(False, detail=str(exc))
    finally:
        os.close(fd)


def _clear_lock_option(fd: int, ioctl: Ioctl) -> None:
    try:
        ioctl(fd, CDROM_CLEAR_OPTIONS, CDO_LOCK)
    except OSError as exc:
        log.debug("CDROM_CLEAR_OPTIONS CDO_LOCK: %s", exc)


def eject_optical(
    devnode: str,
    ioctl: Ioctl = fcntl.ioctl,
    retries: int = 5,
    delay: float = 1.0,
    stop: threading.Event | None = None,
) -> ControlResult:
    """Unlock and eject, checking the return value; retry, then report.

    Parameters
    ----------
    devnode : str
        ``/dev/srN``.
    ioctl : callable
        ``ioctl(fd, request, arg) -> int``; :func:`fcntl.ioctl` by default.
    retries : int
        Attempts before giving up.
    delay : float
        Seconds between attempts (the drive may still be spinning down or
        another process may hold the lock for a moment).
    stop : threading.Event, optional
        Cuts the waits short at shutdown.

    Returns
    -------
    ControlResult
        ``ok`` False with the last SCSI status or errno after ``retries``.
    """
    wait = stop or threading.Event()
    last = ""
    for attempt in range(1, retries + 1):
        last = _eject_once(devnode, ioctl)
        if not last:
            log.info("ejected %s (attempt %d)", devnode, attempt)
            return ControlResult(True, attempt)
        log.warning("eject %s attempt %d failed: %s", devnode, attempt, last)
        if attempt < retries and wait.wait(delay):
            break
    return ControlResult(False, attempt, last)


def _eject_once(devnode: str, ioctl: Ioctl) -> str:
    """One unlock + eject; "" on success, else why not."""
    try:
        fd = _open(devnode)
    except OSError as exc:
        return f"open: {exc.strerror or exc}"
    try:
        _clear_lock_option(fd, ioctl)
        rc = int(ioctl(fd, CDROM_LOCKDOOR, 0))
        if rc != 0:
            return f"unlock: scsi status {rc}"
        # A positive value is the drive's refusal (tray still locked), not success.
        rc = int(ioctl(fd, CDROMEJECT, 0))
        return "" if rc == 0 else f"scsi status {rc}"
    except OSError as exc:
        return f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror or exc}"
    finally:
        os.close(fd)


# ---------------------------------------------------------------- loop
def detach_loop(devnode: str, ioctl: Ioctl = fcntl.ioctl) -> ControlResult:
    """A loop device's "eject": detach its backing file (``LOOP_CLR_FD``).

    With another opener still present the kernel sets autoclear and detaches
    on the last close, which is what an eject should do.
    """
    try:
        fd = _open(devnode)
    except OSError as exc:
        return ControlResult(False, detail=str(exc))
    try:
        ioctl(fd, LOOP_CLR_FD, 0)
        return ControlResult(True)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # not attached any more: already ejected
            return ControlResult(True, detail="not attached")
        detail = str(exc)
    finally:
        os.close(fd)
    return _losetup_detach(devnode, detail)


def _losetup_detach(devnode: str, first_error: str) -> ControlResult:
    if not shutil.which("losetup"):
        return ControlResult(False, detail=first_error)
    proc = subprocess.run(
        ["losetup", "-d", devnode], capture_output=True, text=True, timeout=30, check=False
    )
    if proc.returncode == 0:
        return ControlResult(True, detail=f"losetup -d after {first_error}")
    return ControlResult(False, detail=f"{first_error}; losetup: {proc.stderr.strip()}")


# ----------------------------------------------------------------- USB
def mount_point(state_dir: Path, kernel: str) -> Path:
    """Where a USB filesystem is mounted: ``STATE_DIR/mnt/<kernel name>``."""
    return Path(state_dir) / "mnt" / kernel


def mount_readonly(
    devnode: str,
    target: Path,
    fs_type: str = "",
    runner: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> ControlResult:
    """Mount read-only with ``nosuid,nodev,noexec``: a stick is hostile input.

    A kernel without the filesystem (vfat here) is a reported failure.
    """
    target.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-o", "ro,nosuid,nodev,noexec"]
    if fs_type:
        cmd += ["-t", fs_type]
    cmd += [devnode, str(target)]
    try:
        proc = runner(cmd, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ControlResult(False, detail=f"mount: {exc}")
    if proc.returncode != 0:
        _rmdir(target)
        return ControlResult(False, detail=f"mount: {proc.stderr.strip() or proc.returncode}")
    return ControlResult(True)


def unmount(
    target: Path, runner: Callable[..., subprocess.CompletedProcess] = subprocess.run
) -> ControlResult:
    """Unmount; lazily when the stick is already gone (EIO would block umount)."""
    if not os.path.ismount(target):
        _rmdir(target)
        return ControlResult(True, detail="not mounted")
    for cmd in (["umount", str(target)], ["umount", "-l", str(target)]):
        try:
            proc = runner(cmd, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            detail = str(exc)
            continue
        if proc.returncode == 0:
            _rmdir(target)
            return ControlResult(True)
        detail = proc.stderr.strip()
    return ControlResult(False, detail=f"umount: {detail}")


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def parent_disk(kernel: str, sys_block: Path = Path("/sys/class/block")) -> str:
    """``sdb`` for ``sdb1``; the name itself for a whole disk."""
    node = sys_block / kernel
    if (node / "partition").exists():
        return node.resolve().parent.name
    return kernel


def udisks_running(run_dir: Path = Path("/run/udisks2")) -> bool:
    """udisksd creates its run directory; no D-Bus round trip needed."""
    return run_dir.is_dir() and shutil.which("udisksctl") is not None


def power_off_usb(
    disk_devnode: str, runner: Callable[..., subprocess.CompletedProcess] = subprocess.run
) -> ControlResult:
    """Power the stick off through udisks2 (syncs, spins down, LED goes off)."""
    try:
        proc = runner(
            ["udisksctl", "power-off", "--no-user-interaction", "-b", disk_devnode],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ControlResult(False, detail=str(exc))
    if proc.returncode != 0:
        return ControlResult(False, detail=proc.stderr.strip())
    return ControlResult(True)


def release_usb(devnode: str, kernel: str, target: Path) -> ControlResult:
    """A USB stick's "eject": unmount, then power off when udisks2 runs."""
    result = unmount(target)
    if not result.ok:
        return result
    if udisks_running():
        disk = "/dev/" + parent_disk(kernel)
        off = power_off_usb(disk)
        if not off.ok:
            log.warning("power-off %s: %s (unmounted; safe to pull)", disk, off.detail)
        return ControlResult(True, detail="" if off.ok else f"unmounted only: {off.detail}")
    return ControlResult(True, detail="unmounted (udisks2 not running)")
