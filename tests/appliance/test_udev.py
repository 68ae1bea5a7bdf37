"""udev classification, de-duplication and debouncing on property dicts
taken from the measured event sequences (hardware notes §1.3, §1.4, §4)."""

from __future__ import annotations

import pytest

from pdimport.appliance import udev
from pdimport.appliance.udev import Debouncer, MediaEvent, classify, classify_optical

PATTERNS = ["sr*", "sd*"]


pytestmark = pytest.mark.usefixtures("no_leaked_threads")


def sr0(diskseq, **props):
    base = {
        "ACTION": "change",
        "SUBSYSTEM": "block",
        "DEVNAME": "/dev/sr0",
        "DEVTYPE": "disk",
        "ID_CDROM": "1",
        "ID_CDROM_DVD": "1",
        "ID_BUS": "ata",
        "DISKSEQ": str(diskseq),
    }
    base.update(props)
    return base


DVD_DATA = {
    "DISK_MEDIA_CHANGE": "1",
    "ID_CDROM_MEDIA": "1",
    "ID_CDROM_MEDIA_DVD": "1",
    "ID_CDROM_MEDIA_STATE": "complete",
    "ID_CDROM_MEDIA_SESSION_COUNT": "1",
    "ID_CDROM_MEDIA_TRACK_COUNT": "1",
    "ID_CDROM_MEDIA_TRACK_COUNT_DATA": "1",
}


def test_insert_with_fs_type_is_data():
    props = sr0(
        6,
        **DVD_DATA,
        ID_FS_TYPE="iso9660",
        ID_FS_LABEL="IMPORT_JR",
        ID_FS_VERSION="Joliet Extension",
    )
    ev = classify(props, PATTERNS)
    assert ev == MediaEvent(
        devnode="/dev/sr0",
        kernel="sr0",
        kind="data",
        bus="optical",
        diskseq=6,
        fs_type="iso9660",
        label="IMPORT_JR",
        action="change",
    )


def test_insert_without_fs_type_is_still_data():
    # 62.02 UDEV change sr0 DISKSEQ=10 | ID_CDROM_MEDIA=1 STATE=complete (ID_FS_TYPE missing)
    ev = classify(sr0(10, **DVD_DATA), PATTERNS)
    assert ev.kind == udev.DATA and ev.fs_type == ""


def test_eject_request_comes_before_media_gone():
    # 58.91 UDEV change sr0 DISKSEQ=7 DISK_EJECT_REQUEST=1 | ID_CDROM=1 only
    assert classify(sr0(7, DISK_EJECT_REQUEST="1"), PATTERNS).kind == udev.EJECT_BUTTON


def test_tray_opened_is_no_media():
    # 60.13 UDEV change sr0 DISKSEQ=8 DISK_MEDIA_CHANGE=1 | SYSTEMD_READY=0, no ID_CDROM_MEDIA
    props = sr0(8, DISK_MEDIA_CHANGE="1", SYSTEMD_READY="0")
    assert classify(props, PATTERNS).kind == udev.NO_MEDIA


def test_blank_and_audio():
    blank = sr0(3, ID_CDROM_MEDIA="1", ID_CDROM_MEDIA_CD_R="1", ID_CDROM_MEDIA_STATE="blank")
    audio = sr0(
        4,
        ID_CDROM_MEDIA="1",
        ID_CDROM_MEDIA_CD="1",
        ID_CDROM_MEDIA_STATE="complete",
        ID_CDROM_MEDIA_TRACK_COUNT="12",
        ID_CDROM_MEDIA_TRACK_COUNT_AUDIO="12",
    )
    mixed = sr0(
        5,
        ID_CDROM_MEDIA="1",
        ID_CDROM_MEDIA_TRACK_COUNT_AUDIO="11",
        ID_CDROM_MEDIA_TRACK_COUNT_DATA="1",
    )
    assert classify_optical(blank) == udev.BLANK
    assert classify_optical(audio) == udev.AUDIO
    assert classify_optical(mixed) == udev.DATA  # enhanced CD: the data track is read


def test_optical_remove_action():
    assert classify(sr0(9, ACTION="remove"), PATTERNS).kind == udev.REMOVED


def usb(name, devtype, **props):
    base = {
        "ACTION": "add",
        "SUBSYSTEM": "block",
        "DEVNAME": f"/dev/{name}",
        "DEVTYPE": devtype,
        "ID_BUS": "usb",
        "ID_USB_DRIVER": "usb-storage",
        "DISKSEQ": "13",
    }
    base.update(props)
    return base


def test_usb_partitions_with_fs_are_data_the_disk_is_not():
    disk = usb("sda", "disk", ID_PART_TABLE_TYPE="dos", ID_PART_TABLE_UUID="353fd478")
    part = usb(
        "sda1",
        "partition",
        PARTN="1",
        ID_FS_TYPE="vfat",
        ID_FS_LABEL="STICKFAT",
        ID_FS_VERSION="FAT16",
        ID_FS_USAGE="filesystem",
    )
    assert classify(disk, PATTERNS) is None
    ev = classify(part, PATTERNS)
    assert (ev.kind, ev.bus, ev.fs_type, ev.label) == ("data", "usb", "vfat", "STICKFAT")


def test_usb_superfloppy_and_removal():
    floppy = usb("sdb", "disk", ID_FS_TYPE="exfat")
    assert classify(floppy, PATTERNS).kind == udev.DATA
    assert classify(usb("sdb1", "partition", ACTION="remove"), PATTERNS).kind == udev.REMOVED


def test_non_usb_disk_is_never_ours():
    system = {
        "ACTION": "add",
        "SUBSYSTEM": "block",
        "DEVNAME": "/dev/sda",
        "DEVTYPE": "disk",
        "ID_BUS": "ata",
        "ID_FS_TYPE": "ext4",
    }
    assert classify(system, PATTERNS) is None
    assert classify(system, ["*"]) is None


def test_swap_partition_on_usb_is_not_imported():
    assert (
        classify(usb("sdc1", "partition", ID_FS_TYPE="swap", ID_FS_USAGE="other"), PATTERNS) is None
    )


def loop(diskseq, size, **props):
    base = {
        "ACTION": "change",
        "SUBSYSTEM": "block",
        "DEVNAME": "/dev/loop0",
        "DEVTYPE": "disk",
        "DISKSEQ": str(diskseq),
        udev.SIZE_KEY: str(size),
    }
    base.update(props)
    return base


def test_loop_devices_follow_the_configured_globs():
    attached = loop(15, 4096, ID_FS_TYPE="udf", ID_FS_LABEL="IMPORT_UDF")
    assert classify(attached, PATTERNS) is None  # default globs: sr* sd*
    ev = classify(attached, ["loop*"])
    assert (ev.kind, ev.bus, ev.diskseq, ev.label) == ("data", "loop", 15, "IMPORT_UDF")
    # attached before udevd ran: no ID_FS_* yet, but a size
    assert classify(loop(16, 4096), ["loop*"]).kind == udev.DATA
    # losetup -d: DISK_MEDIA_CHANGE=1 SYSTEMD_READY=0, size 0
    detached = loop(15, 0, DISK_MEDIA_CHANGE="1", SYSTEMD_READY="0")
    assert classify(detached, ["loop*"]).kind == udev.NO_MEDIA
    assert classify(loop(15, 4096, DEVNAME="/dev/loop0p1", DEVTYPE="partition"), ["loop*"]) is None
    assert classify(loop(15, 4096), ["loop1"]) is None


def ev(diskseq, kind=udev.DATA, devnode="/dev/sr0", fs=""):
    return MediaEvent(
        devnode=devnode, kernel=devnode[5:], kind=kind, bus="optical", diskseq=diskseq, fs_type=fs
    )


def test_debounce_one_insertion_with_two_diskseqs():
    # 34.35 UDEV DISKSEQ=6 ..., 34.99 UDEV DISKSEQ=7 (same properties)
    d = Debouncer(quiet=1.5)
    assert d.offer(ev(6, fs="iso9660"), now=34.35) == []
    assert d.offer(ev(7, fs="iso9660"), now=34.99) == []
    assert d.due(now=36.0) == []  # 1.01 s after the newest: not yet
    assert d.next_deadline() == pytest.approx(36.49)
    released = d.due(now=36.5)
    assert [e.diskseq for e in released] == [7]
    # late repeats of the same medium instance (a second udev pass) are dropped
    assert d.offer(ev(7, fs="iso9660"), now=40.0) == []
    assert d.due(now=50.0) == []
    assert d.next_deadline() is None


def test_debounce_fast_reinsert_takes_the_newest_event():
    # DISKSEQ 10 and 11 without ID_FS_TYPE, then 12 with it
    d = Debouncer(quiet=1.5)
    d.offer(ev(10), now=62.02)
    d.offer(ev(11), now=62.35)
    d.offer(ev(12, fs="udf"), now=63.10)
    d.offer(ev(11), now=63.20)  # a late event of an older instance
    (released,) = d.due(now=64.7)
    assert (released.diskseq, released.fs_type) == (12, "udf")


def test_exact_duplicates_same_diskseq_release_once():
    d = Debouncer(quiet=1.0)
    for t in (0.0, 0.2, 0.4):
        d.offer(ev(25), now=t)
    assert len(d.due(now=5.0)) == 1
    d.offer(ev(25), now=6.0)
    assert d.due(now=10.0) == []


def test_eject_request_and_removal_are_immediate():
    d = Debouncer(quiet=1.5)
    d.offer(ev(7), now=0.0)
    assert [e.kind for e in d.offer(ev(7, udev.EJECT_BUTTON), now=0.1)] == [udev.EJECT_BUTTON]
    removed = d.offer(ev(None, udev.REMOVED), now=0.2)
    assert [e.kind for e in removed] == [udev.REMOVED]
    assert d.due(now=10.0) == []  # the pending insert died with the removal


def test_media_gone_then_back_is_a_new_medium():
    d = Debouncer(quiet=1.0)
    d.offer(ev(7), now=0.0)
    assert [e.diskseq for e in d.due(now=2.0)] == [7]
    d.offer(ev(8, udev.NO_MEDIA), now=3.0)  # software eject
    assert [e.kind for e in d.due(now=4.5)] == [udev.NO_MEDIA]
    d.offer(ev(9), now=5.0)  # closed again
    assert [e.diskseq for e in d.due(now=6.5)] == [9]


def test_devices_are_debounced_independently():
    d = Debouncer(quiet=1.0)
    d.offer(ev(1, devnode="/dev/sr0"), now=0.0)
    d.offer(ev(1, devnode="/dev/sr1"), now=0.9)
    assert [e.devnode for e in d.due(now=1.0)] == ["/dev/sr0"]
    assert [e.devnode for e in d.due(now=2.0)] == ["/dev/sr1"]


def test_media_polling_is_set_when_off(tmp_path):
    param = tmp_path / "events_dfl_poll_msecs"
    param.write_text("0\n")
    assert udev.ensure_media_polling(param) == "set"
    assert param.read_text().strip() == "2000"
    assert udev.ensure_media_polling(param) == "ok"
    assert udev.ensure_media_polling(tmp_path / "missing") == "unknown"


def test_media_polling_unwritable_param(tmp_path, caplog, monkeypatch):
    param = tmp_path / "p"
    param.write_text("0")
    real_write = type(param).write_text

    def refuse(self, *a, **k):
        if self == param:
            raise OSError(30, "Read-only file system")
        return real_write(self, *a, **k)

    monkeypatch.setattr(type(param), "write_text", refuse)
    assert udev.ensure_media_polling(param) == "off"
    assert "cannot be set" in caplog.text


def test_a_late_event_of_an_older_medium_after_release_is_dropped():
    """A newly created loop device announces two DISKSEQs; the older one,
    arriving after the newer was released, must not start a second job."""
    d = Debouncer(quiet=1.0)
    d.offer(ev(31), now=0.0)
    assert [e.diskseq for e in d.due(now=2.0)] == [31]
    d.offer(ev(30), now=3.0)  # late, older
    assert d.due(now=10.0) == []
    d.offer(ev(32), now=11.0)  # the next disc
    assert [e.diskseq for e in d.due(now=13.0)] == [32]


def test_an_event_the_drive_has_moved_past_is_stale(tmp_path):
    """An event queued behind a read: the kernel's DISKSEQ says another
    medium is in the drive by now."""
    (tmp_path / "sr0").mkdir()
    (tmp_path / "sr0" / "diskseq").write_text("12\n")
    assert udev.is_stale(ev(11), sys_block=tmp_path)
    assert not udev.is_stale(ev(12), sys_block=tmp_path)
    assert not udev.is_stale(ev(None), sys_block=tmp_path)  # unknown: acted on
    assert not udev.is_stale(ev(11, devnode="/dev/sr1"), sys_block=tmp_path)  # no sysfs entry
