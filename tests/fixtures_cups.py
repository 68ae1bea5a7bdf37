"""A private CUPS server and raw TCP printer sinks for the label tests.

Not star-imported by conftest.py: test modules that print do
``from fixtures_cups import *``.

``cups_server`` starts ``cupsd -f`` with every path (ServerRoot, RequestRoot,
CacheDir, StateDir, logs) in a temp dir, listening on 127.0.0.1:<free port>
and on a UNIX socket, ``FileDevice Yes``; it creates a queue ``Label`` with
CUPS' own Zebra ZPL driver (``drv:///sample.drv/zebra.ppd``, filter
``rastertolabel``) whose device is ``socket://127.0.0.1:<sink port>``, so
whatever CUPS prints arrives in a :class:`TcpSink` — a raw queue with a
``file:`` URI would write nothing (hardware.md §6). ``CUPS_SERVER`` points at
the socket for the duration of the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["CupsServer", "TcpSink", "cups_server", "free_port", "tcp_sink"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TcpSink:
    """A raw "JetDirect" printer on 127.0.0.1: accepts connections and keeps
    the bytes of each as one job."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.jobs: list[bytes] = []
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._serve, name="tcp-sink", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                chunks = []
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
            with self._done:
                self.jobs.append(b"".join(chunks))
                self._done.notify_all()

    def wait(self, n: int = 1, timeout: float = 60.0) -> list[bytes]:
        """Block until ``n`` jobs arrived (or the timeout), return them."""
        with self._done:
            self._done.wait_for(lambda: len(self.jobs) >= n, timeout)
            return list(self.jobs)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        self.sock.close()
        self._thread.join(5)
        assert not self._thread.is_alive(), "sink thread leaked"


@pytest.fixture
def tcp_sink() -> Iterator[TcpSink]:
    sink = TcpSink()
    yield sink
    sink.close()


@dataclass
class CupsServer:
    root: Path
    socket_path: Path
    port: int
    queue: str
    sink: TcpSink
    proc: subprocess.Popen = field(repr=False)

    def log(self) -> str:
        try:
            return (self.root / "log" / "error_log").read_text(errors="replace")
        except OSError:
            return ""


_FILES_CONF = """\
ServerRoot {root}/etc
RequestRoot {root}/spool
CacheDir {root}/cache
StateDir {root}/state
TempDir {root}/spool/tmp
DataDir /usr/share/cups
ServerBin /usr/lib/cups
ErrorLog {root}/log/error_log
AccessLog {root}/log/access_log
PageLog {root}/log/page_log
FileDevice Yes
Sandboxing Relaxed
SystemGroup root
"""

_CUPSD_CONF = """\
LogLevel debug
Listen 127.0.0.1:{port}
Listen {root}/cups.sock
Browsing No
DefaultAuthType None
WebInterface No
<Location />
  Order allow,deny
  Allow all
</Location>
<Location /admin>
  Order allow,deny
  Allow all
</Location>
<Policy default>
  <Limit All>
    Order deny,allow
  </Limit>
</Policy>
"""


def _wait_socket(path: Path, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cupsd exited with {proc.returncode}")
        if path.exists():
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(path))
                    return
                except OSError:
                    pass
        # cupsd has no readiness notification; poll briefly at start-up only.
        time.sleep(0.05)
    raise RuntimeError("cupsd did not open its socket")


@pytest.fixture
def cups_server(tcp_sink: TcpSink, monkeypatch: pytest.MonkeyPatch) -> Iterator[CupsServer]:
    if os.geteuid() != 0 or not shutil.which("cupsd"):
        pytest.skip("needs root and cupsd")
    # Not under pytest's 0700 tmp dirs: CUPS filters run as user lp.
    root = Path(tempfile.mkdtemp(prefix="pdimport-cups-"))
    os.chmod(root, 0o755)
    for sub in ("etc", "etc/ppd", "spool", "spool/tmp", "cache", "state", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "spool", 0o710)
    os.chmod(root / "spool" / "tmp", 0o1777)
    port = free_port()
    (root / "cups-files.conf").write_text(_FILES_CONF.format(root=root))
    (root / "cupsd.conf").write_text(_CUPSD_CONF.format(root=root, port=port))
    proc = subprocess.Popen(
        ["cupsd", "-f", "-c", str(root / "cupsd.conf"), "-s", str(root / "cups-files.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    sock = root / "cups.sock"
    server = CupsServer(root, sock, port, "Label", tcp_sink, proc)
    try:
        _wait_socket(sock, proc)
        monkeypatch.setenv("CUPS_SERVER", str(sock))
        subprocess.run(
            [
                "lpadmin",
                "-p",
                "Label",
                "-E",
                "-v",
                f"socket://127.0.0.1:{tcp_sink.port}",
                "-m",
                "drv:///sample.drv/zebra.ppd",
                "-o",
                "PageSize=w288h144",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(root, ignore_errors=True)
