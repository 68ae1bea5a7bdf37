"""The udev edge: which block device events mean "a medium to import".

Facts this module is built on (hardware notes §1, measured with systemd-udevd
252 on real ``sr`` drives in QEMU and on loop devices here):

* the kernel polls drives (``events_dfl_poll_msecs``, 0 = off unless udev's
  ``60-block.rules`` ran) and sends ``change`` uevents with
  ``DISK_MEDIA_CHANGE=1`` or ``DISK_EJECT_REQUEST=1``;
* ``DISKSEQ`` counts media instances; one insertion gives several events,
  sometimes with two DISKSEQs, sometimes without ``ID_FS_TYPE``: de-duplicate
  by ``(devnode, DISKSEQ)`` and debounce (act after ~1.5 s with nothing newer);
* a data disc is ``ID_CDROM_MEDIA=1``, never judge by ``ID_FS_TYPE``;
* the eject-button event carries no media properties: classify it first;
* loop devices emit the same shapes (no ``ID_CDROM``): attached = size > 0.

Classification works on a plain ``dict`` of udev properties, so it is tested
without devices; :class:`UdevSource` is the only part touching pyudev.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Kinds of a classified event.
DATA, BLANK, AUDIO, NO_MEDIA, EJECT_BUTTON, REMOVED = (
    "data",
    "blank",
    "audio-cd",
    "no-media",
    "eject-button",
    "removed",
)
#: Kinds that describe a medium (one per DISKSEQ is enough).
MEDIUM_KINDS = frozenset({DATA, BLANK, AUDIO})

#: Synthetic property: device size in 512-byte sectors, read from sysfs.
SIZE_KEY = "PDIMPORT_SIZE"

POLL_PARAM = Path("/sys/module/block/parameters/events_dfl_poll_msecs")
POLL_MSECS = 2000


@dataclass(frozen=True)
class MediaEvent:
    """One classified udev event of a watched block device."""

    devnode: str
    kernel: str  # kernel name: sr0, sdb1, loop3
    kind: str  # data | blank | audio-cd | no-media | eject-button | removed
    bus: str  # optical | usb | loop
    diskseq: int | None = None
    fs_type: str = ""
    label: str = ""
    action: str = "change"


# ------------------------------------------------------------ pure logic
def classify_optical(props: Mapping[str, str]) -> str:
    """Kind of an ``ID_CDROM=1`` event (hardware notes §1.3 item 3).

    The eject request comes first: its event carries no ``ID_CDROM_MEDIA``
    and would otherwise look like "media gone".
    """
    if props.get("DISK_EJECT_REQUEST") == "1":
        return EJECT_BUTTON
    if props.get("ID_CDROM_MEDIA") != "1":
        return NO_MEDIA
    if props.get("ID_CDROM_MEDIA_STATE") == "blank":
        return BLANK
    if props.get("ID_CDROM_MEDIA_TRACK_COUNT_AUDIO") and not props.get(
        "ID_CDROM_MEDIA_TRACK_COUNT_DATA"
    ):
        return AUDIO
    return DATA


def _kernel_name(props: Mapping[str, str]) -> str:
    devname = props.get("DEVNAME", "")
    return os.path.basename(devname) if devname else ""


def matches(kernel: str, patterns: Iterable[str]) -> bool:
    """True when the kernel name matches one of the configured globs."""
    return any(fnmatch.fnmatchcase(kernel, p) for p in patterns)


def _diskseq(props: Mapping[str, str]) -> int | None:
    try:
        return int(props["DISKSEQ"])
    except (KeyError, ValueError):
        return None


def _size(props: Mapping[str, str]) -> int:
    try:
        return int(props.get(SIZE_KEY, "0"))
    except ValueError:
        return 0


def classify(props: Mapping[str, str], patterns: Iterable[str]) -> MediaEvent | None:
    """Classify one udev event; ``None`` when it is not ours.

    Parameters
    ----------
    props : mapping
        udev properties (``ACTION``, ``DEVNAME``, ``DEVTYPE``, ``DISKSEQ``,
        ``ID_*``) plus :data:`SIZE_KEY` for the device size.
    patterns : iterable of str
        Kernel-name globs to watch (``--devices``), e.g. ``["sr*", "sd*"]``.
    """
    if props.get("SUBSYSTEM", "block") != "block":
        return None
    kernel = _kernel_name(props)
    if not kernel or not matches(kernel, patterns):
        return None
    action = props.get("ACTION", "change")
    common: dict[str, Any] = {
        "devnode": props["DEVNAME"],
        "kernel": kernel,
        "diskseq": _diskseq(props),
        "fs_type": props.get("ID_FS_TYPE", ""),
        "label": props.get("ID_FS_LABEL", ""),
        "action": action,
    }
    if props.get("ID_CDROM") == "1":
        kind = REMOVED if action == "remove" else classify_optical(props)
        return MediaEvent(kind=kind, bus="optical", **common)
    if kernel.startswith("loop"):
        return _classify_loop(props, action, common)
    if props.get("ID_BUS") == "usb":
        return _classify_usb(props, action, common)
    # Anything else (the system disk, SATA/NVMe) is never ours, whatever the glob.
    return None


def _classify_loop(props: Mapping[str, str], action: str, common: dict) -> MediaEvent | None:
    if props.get("DEVTYPE", "disk") != "disk":
        return None
    if action == "remove":
        return MediaEvent(kind=REMOVED, bus="loop", **common)
    # Detach gives DISK_MEDIA_CHANGE=1 and size 0; an attached image has a size.
    kind = DATA if _size(props) > 0 else NO_MEDIA
    return MediaEvent(kind=kind, bus="loop", **common)


def _classify_usb(props: Mapping[str, str], action: str, common: dict) -> MediaEvent | None:
    devtype = props.get("DEVTYPE", "")
    if devtype not in ("disk", "partition"):
        return None
    if action == "remove":
        return MediaEvent(kind=REMOVED, bus="usb", **common)
    # A partitioned stick: the disk has ID_PART_TABLE_TYPE and no filesystem;
    # its partitions carry ID_FS_TYPE. A superfloppy carries it on the disk.
    if not props.get("ID_FS_TYPE") or props.get("ID_FS_USAGE", "filesystem") != "filesystem":
        return None
    return MediaEvent(kind=DATA, bus="usb", **common)


class Debouncer:
    """De-duplicate by ``(devnode, DISKSEQ)`` and wait for quiet per device.

    The newest event of a device wins and is released once ``quiet`` seconds
    pass without a newer one. A medium (data, blank, audio) is released once
    per ``(devnode, DISKSEQ)``; later repeats of a released pair (a second
    udev pass, ``udevadm trigger``, cold plug overlapping hot plug) are
    dropped. Eject-button and ``remove`` events are released at once.

    Pure: the caller supplies the clock and decides how to wait for
    :meth:`next_deadline`.
    """

    def __init__(self, quiet: float = 1.5) -> None:
        self.quiet = quiet
        self._pending: dict[str, tuple[float, MediaEvent]] = {}
        self._released: dict[str, int | None] = {}  # devnode -> DISKSEQ of its medium

    def offer(self, event: MediaEvent, now: float) -> list[MediaEvent]:
        """Take one event; return the events to act on right now."""
        if event.kind in (EJECT_BUTTON, REMOVED):
            if event.kind == REMOVED:
                self._pending.pop(event.devnode, None)
                self._released.pop(event.devnode, None)
            return [event]
        released = self._released.get(event.devnode)
        if (
            event.kind in MEDIUM_KINDS
            and event.diskseq is not None
            and released is not None
            and event.diskseq <= released
        ):
            # The same medium instance again, or a late event of an older one
            # (a newly created loop device announces two DISKSEQs): nothing to
            # do once the newer one was released.
            return []
        pending = self._pending.get(event.devnode)
        if pending and _older(event, pending[1]):
            return []  # a late event of an older medium instance
        self._pending[event.devnode] = (now + self.quiet, event)
        return []

    def due(self, now: float) -> list[MediaEvent]:
        """Release the events whose quiet time has passed."""
        out = []
        for devnode, (deadline, event) in list(self._pending.items()):
            if deadline <= now:
                del self._pending[devnode]
                if event.kind in MEDIUM_KINDS:
                    self._released[devnode] = event.diskseq
                else:
                    self._released.pop(devnode, None)
                out.append(event)
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`due` will next release something (``None``: idle)."""
        return min((d for d, _ in self._pending.values()), default=None)

    def forget(self, devnode: str) -> None:
        """Allow the same DISKSEQ again (after an operator reset)."""
        self._released.pop(devnode, None)


def is_stale(event: MediaEvent, sys_block: Path = Path("/sys/class/block")) -> bool:
    """Whether a medium event no longer describes what is in the drive: the
    kernel's DISKSEQ of the device (Linux 5.15+) has moved past the event's.
    An event queued behind a read (its disc since ejected, another one in)
    must not start a job on the next disc. Unknown on either side: not stale."""
    if event.diskseq is None:
        return False
    try:
        current = int((sys_block / event.kernel / "diskseq").read_text().strip())
    except (OSError, ValueError):
        return False
    return current != event.diskseq


def _older(event: MediaEvent, pending: MediaEvent) -> bool:
    return (
        event.diskseq is not None
        and pending.diskseq is not None
        and event.diskseq < pending.diskseq
    )


# ----------------------------------------------------------- sysfs knob
def ensure_media_polling(param: Path = POLL_PARAM, msecs: int = POLL_MSECS) -> str:
    """Make sure the kernel polls drives for media changes.

    Without polling an ``sr`` drive never reports an inserted disc. systemd's
    ``60-block.rules`` sets 2000 ms when the block module appears, but that
    event is not replayed on every system (hardware notes §1.1).

    Returns
    -------
    str
        ``"ok"`` (already on), ``"set"`` (was 0, now ``msecs``),
        ``"off"`` (0 and not writable: a warning was logged) or
        ``"unknown"`` (no such parameter).
    """
    try:
        current = int(param.read_text().strip())
    except (OSError, ValueError):
        return "unknown"
    if current > 0:
        return "ok"
    try:
        param.write_text(f"{msecs}\n")
    except OSError as exc:
        log.warning(
            "in-kernel media polling is off (%s = 0) and cannot be set (%s): "
            "inserted discs will not be noticed; set it to %d",
            param,
            exc,
            msecs,
        )
        return "off"
    log.info("in-kernel media polling was off; set %s = %d", param, msecs)
    return "set"


# ---------------------------------------------------------- pyudev edge
def device_properties(device: Any) -> dict[str, str]:
    """A plain dict of a pyudev device's properties plus its size."""
    props = {k: device.properties[k] for k in device.properties}
    props.setdefault("DEVNAME", device.device_node or "")
    props.setdefault("SUBSYSTEM", device.subsystem or "")
    if device.action:
        props["ACTION"] = device.action
    try:
        props[SIZE_KEY] = str(device.attributes.asint("size"))
    except (KeyError, ValueError, OSError):
        props[SIZE_KEY] = "0"
    return props


class UdevSource:
    """Cold plug enumeration plus a netlink monitor, feeding ``sink``.

    Parameters
    ----------
    patterns : list of str
        Kernel-name globs to watch.
    sink : callable
        Called with each classified :class:`MediaEvent` (from the monitor
        thread); it must only enqueue.
    """

    def __init__(self, patterns: list[str], sink: Callable[[MediaEvent], None]) -> None:
        import pyudev

        self.patterns = list(patterns)
        self._sink = sink
        self._context = pyudev.Context()
        # source="udev": the properties include cdrom_id and blkid results.
        self._monitor = pyudev.Monitor.from_netlink(self._context, source="udev")
        self._monitor.filter_by(subsystem="block")
        self._observer: Any = None

    def start(self) -> None:
        """Start listening first, then enumerate, so nothing falls between."""
        import pyudev

        self._observer = pyudev.MonitorObserver(
            self._monitor, callback=self._on_device, name="udev-monitor"
        )
        self._observer.daemon = True
        self._observer.start()
        for event in self.coldplug():
            self._sink(event)

    def coldplug(self) -> list[MediaEvent]:
        """Media already present when the daemon starts."""
        out = []
        for device in self._context.list_devices(subsystem="block"):
            props = device_properties(device)
            props["ACTION"] = "add"
            event = classify(props, self.patterns)
            if event is not None and event.kind in MEDIUM_KINDS:
                out.append(event)
        return out

    def _on_device(self, device: Any) -> None:
        try:
            event = classify(device_properties(device), self.patterns)
        except Exception:
            log.exception("cannot classify udev event of %s", device)
            return
        if event is not None:
            log.debug(
                "udev %s %s diskseq=%s -> %s",
                event.action,
                event.devnode,
                event.diskseq,
                event.kind,
            )
            self._sink(event)

    def is_alive(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.send_stop()
            if self._observer is not threading.current_thread():
                self._observer.join(timeout=5)


def monotonic() -> float:
    return time.monotonic()
