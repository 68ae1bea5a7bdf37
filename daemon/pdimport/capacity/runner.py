"""One measured run: the real daemon, N emulated drives, a receiver.

The daemon runs as it does on an appliance (``python -m pdimport daemon``, in
its own process, on its own state directory), watching the loop devices of
the emulated drives through udev. A feeder thread per drive puts the next disc
in the tray as soon as the daemon has ejected the last one, like a clerk who
never lets a drive idle; the run ends after ``minutes`` or ``discs``, and the
discs in the drives then are finished and counted.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdimport.capacity.drive import Drive
from pdimport.capacity.drivemodel import DriveProfile, time_to_read_sequentially
from pdimport.capacity.generator import DiscInfo
from pdimport.capacity.sampler import Sampler, Totals

log = logging.getLogger(__name__)

#: Loop devices the bench uses: far above what ``losetup -f`` hands out, so
#: no other user of loop devices lands in an emulated tray between two discs.
LOOP_BASE = 120
UDEVD = "/lib/systemd/systemd-udevd"


class BenchError(RuntimeError):
    """The bench cannot run here, or the appliance under test failed."""


@dataclass
class DiscRun:
    """One disc through one drive, in wall-clock seconds (time.time())."""

    disc: DiscInfo
    drive: int
    devnode: str
    inserted: float
    ejected: float = 0.0
    timed_out: bool = False


@dataclass
class RunResult:
    drives: int
    profile: DriveProfile
    scale: float
    started: float
    ended: float
    discs: list[DiscRun]
    totals: Totals
    state_dir: Path
    devnodes: list[str]
    dest: str
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------- environment
def free_loops(n: int) -> list[str]:
    """``n`` loop device nodes from :data:`LOOP_BASE` up that nothing uses."""
    out = []
    for number in range(LOOP_BASE, LOOP_BASE + 200):
        if not Path(f"/sys/block/loop{number}/loop/backing_file").exists():
            out.append(f"/dev/loop{number}")
        if len(out) == n:
            return out
    raise BenchError(f"no {n} free loop devices from loop{LOOP_BASE} up")


def _ping() -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["udevadm", "control", "--ping"], capture_output=True, check=False)


def prepare_loops(devnodes: list[str]) -> None:
    """Make the loop device nodes exist before the daemon watches them.

    ``losetup`` on a node that does not exist yet creates it: udev then
    announces one insertion as an ``add`` and a ``change`` with two DISKSEQs,
    and the daemon reads the disc twice (the second time after its eject, when
    the bench may already have put the next disc in). A real drive's node is
    there before any disc: attach and detach a blank image once, and let udev
    settle, so the run starts as an appliance does.
    """
    import tempfile

    new = [d for d in devnodes if not Path(f"/sys/block/{os.path.basename(d)}").exists()]
    if not new:
        return
    with tempfile.NamedTemporaryFile(prefix="pdimport-blank-") as blank:
        blank.truncate(1 << 20)
        blank.flush()
        for dev in new:
            subprocess.run(["losetup", "-r", dev, blank.name], capture_output=True, check=False)
            subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
    subprocess.run(["udevadm", "settle", "-t", "10"], capture_output=True, check=False)


class Udevd:
    """A running systemd-udevd: the one there is, else our own child."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Udevd:
        if _ping().returncode == 0:
            return self
        if not os.access(UDEVD, os.X_OK):
            raise BenchError(f"no udev: {UDEVD} missing (Debian systemd / udev)")
        self.proc = subprocess.Popen([UDEVD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while _ping().returncode:
            if time.monotonic() > deadline:
                raise BenchError("systemd-udevd did not answer within 10 s")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _end(self.proc)
            self.proc = None


def _end(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    here = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=here + (os.pathsep + path if path else ""))


class Receiver:
    """The stand-in PACS: dcmtk storescp when installed (one process per
    association, as a PACS serves several), else pdimport's embedded
    receiver, each in a process of its own on 127.0.0.1."""

    def __init__(self, folder: Path, prefer: str = "auto") -> None:
        self.folder = folder
        self.prefer = prefer
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.kind = ""

    def start(self) -> Receiver:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        storescp = shutil.which("storescp")
        if storescp and self.prefer in ("auto", "storescp"):
            self.kind = "dcmtk storescp"
            cmd = [storescp, "--fork", "-aet", "BENCHPACS", "-od", str(self.folder), str(self.port)]
        else:
            self.kind = "pdimport embedded receiver"
            code = (
                "import sys, threading\n"
                "from pdimport.demo.receiver import Receiver\n"
                "r = Receiver(sys.argv[1], aet='BENCHPACS', port=int(sys.argv[2])).start()\n"
                "threading.Event().wait()\n"
            )
            cmd = [sys.executable, "-P", "-c", code, str(self.folder), str(self.port)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env()
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"the receiver ({self.kind}) did not start") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"dicom://BENCHPACS@127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def stop(self) -> None:
        if self.proc is not None:
            _end(self.proc)
            self.proc = None


# ------------------------------------------------------------- the daemon
class Appliance:
    """``pdimport daemon`` in its own process, with a socket standing in for
    systemd so the bench knows when it is READY."""

    def __init__(self, state: Path, devnodes: list[str], dest: str, labels: Path) -> None:
        self.state = state
        self.devnodes = devnodes
        self.dest = dest
        self.labels = labels
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None

    def start(self, timeout: float = 60.0) -> Appliance:
        self.state.mkdir(parents=True, exist_ok=True)
        self.labels.mkdir(parents=True, exist_ok=True)
        config = self.state.parent / "pdimport.toml"
        config.write_text(
            "# what pdimport bench gave the daemon under test\n"
            f'[printer]\nbackend = "file"\ntarget = "{self.labels}"\n'
            '[console]\nlisten = "127.0.0.1:0"\n',
            encoding="utf-8",
        )
        notify = self.state.parent / "notify.sock"
        notify.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(notify))
        self._sock.settimeout(0.5)
        kernels = [os.path.basename(d) for d in self.devnodes]
        cmd = [sys.executable, "-P", "-m", "pdimport", "daemon", "--config", str(config)]
        cmd += ["--state-dir", str(self.state), "--dest", self.dest, "--devices", *kernels]
        log_file = open(self.state.parent / "daemon.log", "ab")  # noqa: SIM115  the daemon's whole life
        env = dict(child_env(), NOTIFY_SOCKET=str(notify))
        self.proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the daemon exited at start: {self.log_tail()}")
            try:
                if b"READY=1" in self._sock.recv(65536):
                    threading.Thread(target=self._drain, name="bench-notify", daemon=True).start()
                    return self
            except TimeoutError:
                continue
        raise BenchError(f"the daemon was not ready within {timeout:.0f} s: {self.log_tail()}")

    def _drain(self) -> None:
        """Empty the notify socket as systemd would (its queue is short, and
        a full one would stall the daemon's status updates)."""
        while self._sock is not None:
            try:
                self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.state / "status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.state.parent / "daemon.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# --------------------------------------------------------------- the run
Progress = Callable[[str, dict[str, Any]], None]


def disc_timeout(disc: DiscInfo, profile: DriveProfile, scale: float) -> float:
    """Longest a disc may stay in a drive before the run calls it stuck."""
    model = time_to_read_sequentially(disc.bytes, profile) + profile.error_time * 20
    return 300.0 + 4.0 * model / scale


def run(
    discs: list[DiscInfo],
    drives: int,
    profile: DriveProfile,
    out: Path,
    dest: str,
    minutes: float | None,
    scale: float = 1.0,
    receiver_pid: int = 0,
    progress: Progress | None = None,
) -> RunResult:
    """Feed ``discs`` (in order, each once) to ``drives`` drives for
    ``minutes`` (or until the discs run out) and measure."""
    if not discs:
        raise BenchError("no discs to feed")
    library = Path(discs[0].path).parent
    devnodes = free_loops(drives)
    state = out / "state"
    tell = progress or (lambda _event, _fields: None)
    emulated: list[Drive] = []
    appliance = Appliance(state, devnodes, dest, out / "labels")
    sampler: Sampler | None = None
    try:
        prepare_loops(devnodes)
        for i, dev in enumerate(devnodes):
            emulated.append(Drive(library, profile, scale, loop=dev).start())
            tell("drive", {"drive": i, "devnode": dev})
        appliance.start()
        pdimport_pids = [appliance.pid]
        sampler = Sampler(
            state / "journal.sqlite",
            state,
            pdimport_pids,
            [d.pid for d in emulated],
            [receiver_pid] if receiver_pid else [],
        )
        sampler.start()
        todo: queue.SimpleQueue[DiscInfo] = queue.SimpleQueue()
        for disc in discs:
            todo.put(disc)
        started = time.time()
        deadline = started + minutes * 60 if minutes else None
        done: list[DiscRun] = []
        lock = threading.Lock()
        failure: list[str] = []

        def feed(index: int, drive: Drive) -> None:
            while not failure and (deadline is None or time.time() < deadline):
                try:
                    disc = todo.get_nowait()
                except queue.Empty:
                    return
                one = DiscRun(disc, index, drive.devnode or devnodes[index], time.time())
                drive.insert(disc.name)
                tell("insert", {"drive": index, "disc": disc.name})
                limit = time.monotonic() + disc_timeout(disc, profile, scale)
                while drive.loaded():
                    if not appliance.alive():
                        failure.append(f"the daemon died: {appliance.log_tail()}")
                        return
                    if time.monotonic() > limit:
                        one.timed_out = True
                        drive.eject()
                        break
                    time.sleep(0.1)
                one.ejected = time.time()
                with lock:
                    done.append(one)
                tell("ejected", {"drive": index, "disc": disc.name, "run": one})

        feeders = [
            threading.Thread(target=feed, args=(i, d), name=f"bench-feed-{i}")
            for i, d in enumerate(emulated)
        ]
        for t in feeders:
            t.start()
        while any(t.is_alive() for t in feeders):
            for t in feeders:
                t.join(0.5)
            tell("tick", {"status": appliance.status()})
        if failure:
            raise BenchError(failure[0])
        # The last disc is ejected once delivered: let the daemon finish its
        # bookkeeping (label, audit) before the journal is read.
        time.sleep(0.5)
        totals = sampler.stop()
        sampler = None
        ended = max((d.ejected for d in done), default=time.time())
        notes = []
        if not todo.empty() and deadline is None:
            notes.append("stopped before every disc was fed")
        if todo.empty() and deadline is not None and ended < deadline:
            notes.append("the discs ran out before the time did: make more with --discs")
        return RunResult(
            drives,
            profile,
            scale,
            started,
            ended,
            sorted(done, key=lambda d: d.inserted),
            totals,
            state,
            devnodes,
            dest,
            notes,
        )
    finally:
        if sampler is not None:
            sampler.stop()
        appliance.stop()
        for d in emulated:
            d.close()
