"""The daemon's end of :mod:`pdimport.store.notify`: a thread that blocks on
``STATE_DIR/control.sock`` and hands each job ID it hears of to a callback."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from pdimport.store.notify import socket_path

log = logging.getLogger(__name__)

_STOP = b"\0stop"


class ControlListener(threading.Thread):
    """Calls ``on_job(job_id)`` for each "job changed" datagram."""

    def __init__(self, state_dir: Path, on_job: Callable[[str], None]) -> None:
        super().__init__(name="control", daemon=True)
        self.path = socket_path(state_dir)
        self._on_job = on_job
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a daemon that did not stop cleanly
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        os.chmod(self.path, 0o660)  # the pdimport group may decide; others may not

    def run(self) -> None:
        try:
            while True:
                data = self._sock.recv(4096)
                if data == _STOP:
                    return
                try:
                    job_id = str(json.loads(data)["job"])
                except (ValueError, KeyError, TypeError):
                    log.warning("control socket: ignoring a malformed message")
                    continue
                try:
                    self._on_job(job_id)
                except Exception:
                    log.exception("control socket: job %s", job_id)
        finally:
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def stop(self, timeout: float = 5.0) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
            sock.sendto(_STOP, str(self.path))
        self.join(timeout)
