"""sd_notify messages, read from a real AF_UNIX datagram socket standing in
for systemd's $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import threading
import uuid

import pytest

from pdimport.appliance.systemd import Notifier, sd_notify

pytestmark = pytest.mark.usefixtures("no_leaked_threads")


@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()


def recv(sock) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_messages_arrive_as_datagrams(notify_socket):
    path, sock = notify_socket
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.ready("drives: none; jobs: 0 active; queue: 0")
    assert recv(sock) == ["READY=1", "STATUS=drives: none; jobs: 0 active; queue: 0"]
    assert n.status("reading\n/dev/sr0")  # STATUS is one line
    assert recv(sock) == ["STATUS=reading /dev/sr0"]
    assert n.reloading()
    assert recv(sock) == ["RELOADING=1"]
    assert n.stopping()
    assert recv(sock) == ["STOPPING=1"]
    n.close()


def test_watchdog_only_while_all_workers_live(notify_socket):
    path, sock = notify_socket
    n = Notifier(
        {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert n.watchdog_interval() == pytest.approx(2.0)
    assert n.watchdog(lambda: True)
    assert recv(sock) == ["WATCHDOG=1"]
    assert not n.watchdog(lambda: False)
    sock.settimeout(0.2)
    with pytest.raises(socket.timeout):
        sock.recv(4096)
    n.close()


def test_watchdog_of_another_pid_is_not_ours():
    n = Notifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval() is None


def test_abstract_namespace():
    name = f"pdimport-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        assert sd_notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert recv(sock) == ["READY=1"]
    finally:
        sock.close()


def test_noop_without_notify_socket():
    n = Notifier({})
    assert not n.enabled
    assert not n.ready()
    assert not n.watchdog()
    assert n.watchdog_interval() is None


def test_a_vanished_manager_is_not_fatal(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.status("x") is False
    n.close()


def test_daemon_sends_ready_status_and_stopping(notify_socket, tmp_path):
    """The daemon (no drives, no udev) talks to systemd over the socket."""
    pytest.importorskip("pdimport.send")
    from pdimport.appliance.daemon import Daemon
    from pdimport.settings import load

    path, sock = notify_socket
    cfg = load(overrides={"state_dir": str(tmp_path / "state")})
    daemon = Daemon(cfg, notifier=Notifier({"NOTIFY_SOCKET": path}))
    daemon.patterns = []  # no udev in this unit test
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(daemon.run(install_signals=False)))
    runner.start()
    try:
        messages = []
        while not any(m.startswith("READY=1") for m in messages):
            messages += recv(sock)
        assert any(m.startswith("STATUS=drives:") for m in messages)
        daemon.request_stop()
        while "STOPPING=1" not in messages:
            messages += recv(sock)
    finally:
        daemon.request_stop()
        runner.join(20)
        daemon.runner.close()
    assert result == [0]
    assert (tmp_path / "state" / "status.json").exists()


def test_status_line_carries_the_progress_of_a_moving_job():
    """STATUS= says what `pdimport status` says of a disc being read."""
    from pdimport.appliance.status import status_line

    progress = {
        "phase": "reading",
        "files_done": 12,
        "files_total": 40,
        "bytes_done": 30_000_000,
        "bytes_total": 100_000_000,
        "percent": 30.0,
        "mb_per_s": 7.5,
        "eta_s": 93.0,
    }
    snap = {
        "drives": {"/dev/sr0": {"state": "reading", "job": "J1"}},
        "jobs": {"J1": {"state": "reading", "progress": progress}},
    }
    assert status_line(snap).startswith(
        "drives: sr0 reading 30% 12/40 files 30.0/100.0 MB 7.5 MB/s ETA 1:33;"
    )
    snap["jobs"]["J1"]["state"] = "imported"  # at rest: no progress shown
    assert status_line(snap).startswith("drives: sr0 reading;")
