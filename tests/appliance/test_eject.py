"""The optical drive edge with a thin fake of the ioctl function (there is no
optical drive on this machine), plus loop detach and the USB mount edge."""

from __future__ import annotations

import errno
import subprocess
import threading

import pytest

from pdimport.appliance import drives
from pdimport.record.audit import AuditLog
from pdimport.record.auditchain import records
from pdimport.settings import declared

pytestmark = pytest.mark.usefixtures("no_leaked_threads")


@pytest.fixture
def devnode(tmp_path):
    # A real file stands in for /dev/sr0: open(O_NONBLOCK) works, ioctls go to the fake.
    node = tmp_path / "sr0"
    node.write_bytes(b"")
    return str(node)


class FakeDrive:
    """Answers CD-ROM ioctls like the QEMU-measured SATA drive (hardware notes §2)."""

    def __init__(self, locked=True, unlock_works=True, status=drives.CDS_DISC_OK):
        self.locked = locked
        self.unlock_works = unlock_works
        self.status = status
        self.calls: list[tuple[int, int]] = []
        self.tray_open = False

    def __call__(self, fd, request, arg=0):
        assert isinstance(fd, int) and fd >= 0
        self.calls.append((request, arg))
        if request == drives.CDROM_DRIVE_STATUS:
            assert arg == drives.CDSL_CURRENT
            return drives.CDS_TRAY_OPEN if self.tray_open else self.status
        if request == drives.CDROM_CLEAR_OPTIONS:
            return 0
        if request == drives.CDROM_LOCKDOOR:
            if arg == 1:
                self.locked = True
            elif self.unlock_works:
                self.locked = False
            return 0
        if request == drives.CDROMEJECT:
            if self.locked:
                return 2  # CHECK CONDITION: positive, no exception from fcntl.ioctl
            self.tray_open = True
            return 0
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")


def test_eject_unlocks_then_ejects(devnode):
    fake = FakeDrive(locked=True)
    result = drives.eject_optical(devnode, ioctl=fake, retries=3, delay=0)
    assert result.ok and result.attempts == 1
    assert fake.calls == [
        (drives.CDROM_CLEAR_OPTIONS, drives.CDO_LOCK),
        (drives.CDROM_LOCKDOOR, 0),
        (drives.CDROMEJECT, 0),
    ]
    assert drives.drive_status(devnode, ioctl=fake) == drives.CDS_TRAY_OPEN


def test_locked_tray_returns_2_retried_then_reported(devnode):
    # Someone else (a mount, another process) keeps the door locked.
    fake = FakeDrive(locked=True, unlock_works=False)
    result = drives.eject_optical(devnode, ioctl=fake, retries=3, delay=0)
    assert not result.ok
    assert result.attempts == 3
    assert "scsi status 2" in result.detail
    assert [c for c in fake.calls if c[0] == drives.CDROMEJECT] == [(drives.CDROMEJECT, 0)] * 3
    assert not fake.tray_open


def test_success_after_the_lock_goes_away(devnode):
    fake = FakeDrive(locked=True, unlock_works=False)
    ejects = []

    def flaky(fd, request, arg=0):
        if request == drives.CDROMEJECT:
            ejects.append(1)
            if len(ejects) == 3:  # refused twice, then the other holder let go
                fake.unlock_works = True
                fake.locked = False
        return fake(fd, request, arg)

    result = drives.eject_optical(devnode, ioctl=flaky, retries=5, delay=0)
    assert result.ok and result.attempts == 3


def test_ioctl_errors_are_values_not_exceptions(devnode):
    def eio(fd, request, arg=0):
        if request == drives.CDROMEJECT:
            raise OSError(errno.EIO, "Input/output error")
        return 0

    result = drives.eject_optical(devnode, ioctl=eio, retries=2, delay=0)
    assert not result.ok and "EIO" in result.detail
    missing = drives.eject_optical(devnode + ".missing", ioctl=eio, retries=1, delay=0)
    assert not missing.ok and "open" in missing.detail


def test_retry_wait_is_cut_short_by_stop(devnode):
    stop = threading.Event()
    stop.set()
    fake = FakeDrive(locked=True, unlock_works=False)
    result = drives.eject_optical(devnode, ioctl=fake, retries=5, delay=60, stop=stop)
    assert not result.ok and result.attempts == 1


def test_lock_tray_and_status(devnode):
    fake = FakeDrive(locked=False)
    assert drives.lock_tray(devnode, True, ioctl=fake).ok
    assert fake.locked
    assert fake.calls[:2] == [
        (drives.CDROM_CLEAR_OPTIONS, drives.CDO_LOCK),
        (drives.CDROM_LOCKDOOR, 1),
    ]
    assert drives.drive_status(devnode, ioctl=fake) == drives.CDS_DISC_OK
    assert drives.drive_status(devnode + ".missing", ioctl=fake) == -1


def test_a_regular_file_is_not_a_drive(devnode):
    # The real fcntl.ioctl on a non-device: ENOTTY becomes "unknown", not a crash.
    assert drives.drive_status(devnode) == -1
    result = drives.eject_optical(devnode, retries=1, delay=0)
    assert not result.ok and "ENOTTY" in result.detail


def test_loop_detach_uses_loop_clr_fd(devnode):
    calls = []
    assert drives.detach_loop(devnode, ioctl=lambda fd, req, arg=0: calls.append(req)).ok
    assert calls == [drives.LOOP_CLR_FD]

    def enxio(fd, req, arg=0):
        raise OSError(errno.ENXIO, "No such device or address")

    assert drives.detach_loop(devnode, ioctl=enxio).detail == "not attached"


def test_usb_mount_failure_is_reported(tmp_path):
    target = drives.mount_point(tmp_path, "sdb1")

    def runner(cmd, **kw):
        assert cmd[:3] == ["mount", "-o", "ro,nosuid,nodev,noexec"]
        return subprocess.CompletedProcess(cmd, 32, "", "unknown filesystem type 'vfat'.")

    result = drives.mount_readonly("/dev/sdb1", target, "vfat", runner=runner)
    assert not result.ok and "vfat" in result.detail
    assert not target.exists()


@pytest.mark.skipif(
    subprocess.run(["id", "-u"], capture_output=True, check=False, text=True).stdout.strip() != "0",
    reason="mount needs root",
)
def test_real_mount_of_missing_device_fails_cleanly(tmp_path):
    result = drives.mount_readonly(str(tmp_path / "nodev"), tmp_path / "mnt" / "x", "vfat")
    assert not result.ok
    assert drives.unmount(tmp_path / "mnt" / "x").ok  # nothing mounted: fine


def test_parent_disk(tmp_path):
    (tmp_path / "devices" / "sdb" / "sdb1").mkdir(parents=True)
    (tmp_path / "devices" / "sdb" / "sdb1" / "partition").write_text("1")
    (tmp_path / "sdb1").symlink_to(tmp_path / "devices" / "sdb" / "sdb1")
    (tmp_path / "sdb").symlink_to(tmp_path / "devices" / "sdb")
    assert drives.parent_disk("sdb1", sys_block=tmp_path) == "sdb"
    assert drives.parent_disk("sdb", sys_block=tmp_path) == "sdb"


def test_drive_worker_optical_path_with_fake_ioctl(tmp_path, monkeypatch):
    """The daemon's optical path: confirm, lock, read, deliver, unlock+eject,
    all through the fake ioctl; the pipeline is a stub."""
    from pdimport.appliance import daemon as dmod
    from pdimport.appliance.udev import MediaEvent
    from pdimport.job import lifecycle as lc
    from pdimport.job.importer import JobResult

    fake = FakeDrive(locked=False)
    node = tmp_path / "sr0"
    node.write_bytes(b"")
    transitions = []

    class StubRunner:
        audit = AuditLog(tmp_path / "audit")

        def read(self, source, on_job=None):
            assert source == str(node)
            assert fake.locked  # locked while reading
            job = type("J", (), {"id": "job-1"})()
            on_job(job)
            return job

    class StubApp:
        # Table defaults for every declared setting (an undeclared name raises).
        cfg = type("C", (), {"state_path": tmp_path, "get": lambda self, k: declared(k).default})()
        ioctl = fake
        stop = threading.Event()
        eject_after = "delivered"
        runner = StubRunner()
        board = dmod.StatusBoard(tmp_path / "status.json", dmod.Notifier({}))
        retrier = None

        def deliver(self, job_id):
            return JobResult(job_id, {"status": "imported"})

    event = MediaEvent(devnode=str(node), kernel="sr0", kind="data", bus="optical", diskseq=7)
    worker = dmod.DriveWorker(event, StubApp())
    worker.lifecycle.subscribe(lambda t: transitions.append(t.target))
    worker.handle(event)
    assert transitions == [lc.INSERTED, lc.READING, lc.READ, lc.DELIVERING, lc.EJECTING, lc.EMPTY]
    # the label is printed before the eject, and both leave an audit record
    events = [r["event"] for r in records(tmp_path / "audit")]
    assert events == ["label_printed", "medium_ejected"]
    assert fake.tray_open and not fake.locked
    # the tray then reports "no media": the drive stays empty
    worker.handle(
        MediaEvent(devnode=str(node), kernel="sr0", kind="no-media", bus="optical", diskseq=8)
    )
    assert worker.lifecycle.state == lc.EMPTY


def test_drive_worker_reports_a_stuck_tray(tmp_path):
    from pdimport.appliance import daemon as dmod
    from pdimport.appliance.udev import MediaEvent
    from pdimport.job import lifecycle as lc
    from pdimport.job.importer import JobResult

    fake = FakeDrive(locked=True, unlock_works=False)
    node = tmp_path / "sr1"
    node.write_bytes(b"")

    class StubApp:
        # Table defaults for every declared setting (an undeclared name raises).
        cfg = type("C", (), {"state_path": tmp_path, "get": lambda self, k: declared(k).default})()
        ioctl = fake
        stop = threading.Event()
        eject_after = "read"
        board = dmod.StatusBoard(tmp_path / "status.json", dmod.Notifier({}))
        runner = type("R", (), {"audit": AuditLog(tmp_path / "audit")})()

    app = StubApp()
    app.unreadable_medium = lambda event, what: JobResult("blank-job", {})  # no label to print
    event = MediaEvent(devnode=str(node), kernel="sr1", kind="blank", bus="optical", diskseq=3)
    worker = dmod.DriveWorker(event, app)
    worker.app.cfg.get = lambda k: {"eject_retries": 2}[k]
    worker.handle(event)
    assert worker.lifecycle.state == lc.FAILED
    snap = app.board.snapshot()["drives"][str(node)]
    [ejected] = [r for r in records(tmp_path / "audit") if r["event"] == "medium_ejected"]
    assert ejected["ok"] is False  # the failed eject is in the audit trail
    assert snap["state"] == "failed" and "scsi status 2" in snap["detail"]
