"""The daemon in a child process, for end-to-end tests: a socket stands in
for systemd, its log goes to a file, and it is stopped after the test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

# Runs the daemon with the appliance settings whether or not the settings
# table declares them yet (the lead adds them to settings.py).
LAUNCHER = r"""
import json, logging, sys
from pdimport import settings
from pdimport.appliance.daemon import daemon_main
logging.basicConfig(level=logging.INFO, format="%(threadName)s %(name)s: %(message)s")
base, extra = json.loads(sys.argv[1]), json.loads(sys.argv[2])
known = {s.name for s in settings.SETTINGS}
cfg = settings.load(overrides={**base, **{k: v for k, v in extra.items() if k in known}})
extra = {k: v for k, v in extra.items() if k not in known}

class Cfg:
    def __init__(self, inner): self._inner = inner
    def get(self, name): return extra[name] if name in extra else self._inner.get(name)
    def __getattr__(self, name): return getattr(self._inner, name)

sys.exit(daemon_main(Cfg(cfg)))
"""


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class DaemonProc:
    """The daemon in a child process, with a socket standing in for systemd
    (drained by a thread, as systemd would: its queue is only ~10 deep)."""

    def __init__(self, tmp: Path, base: dict, extra: dict) -> None:
        self.notify_path = str(tmp / f"notify-{time.monotonic_ns()}")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify_path)
        self.sock.settimeout(0.5)
        self.log = open(tmp / "daemon.log", "ab")  # noqa: SIM115  open for the daemon's whole life
        self.messages: list[str] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._drain, name="notify-reader")
        self.reader.start()
        # Each daemon's console on a port of its own (tests may run side by side).
        base = {"console.listen": "127.0.0.1:0", **base}
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, json.dumps(base), json.dumps(extra)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.wait_message("READY=1")

    def _drain(self) -> None:
        while self.sock.fileno() >= 0:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.cond:
                self.messages += data.decode().split("\n")
                self.cond.notify_all()

    def wait_message(self, wanted: str, timeout: float = 60) -> None:
        with self.cond:
            ok = self.cond.wait_for(
                lambda: wanted in self.messages or self.proc.poll() is not None, timeout
            )
        assert ok and wanted in self.messages, f"no {wanted}: {self.messages[-5:]}"

    def terminate(self, timeout: float = 20.0) -> tuple[int, float]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - t0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        sock, self.sock = self.sock, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.close()  # a closed stand-in makes the reader's loop end
        sock.close()
        self.reader.join(5)
        self.log.close()


def status(state: Path) -> dict:
    return json.loads((state / "status.json").read_text())


def status_text(state: Path) -> str:
    """What ``pdimport status`` prints for the daemon on ``state``."""
    return subprocess.run(
        [sys.executable, "-m", "pdimport", "status", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
