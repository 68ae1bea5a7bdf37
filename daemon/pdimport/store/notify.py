"""Telling a running daemon that a job changed in the journal.

A decision taken in another process (``pdimport release`` or ``discard`` from
a shell) changes a job the daemon also shows: its status board, the watch
folder's result file, the retry queue. The deciding process sends one
datagram naming the job to ``STATE_DIR/control.sock``; the daemon
(:mod:`pdimport.appliance.control`) reads the job back from the journal. No
daemon, no socket: nothing happens, and nothing needs to.
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


def job_changed(state_dir: Path, job_id: str) -> bool:
    """Tell the daemon of ``state_dir`` (if one runs) that ``job_id`` changed."""
    path = socket_path(state_dir)
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(json.dumps({"job": job_id}).encode(), str(path))
        except OSError as exc:  # a stale socket: no daemon listens
            log.debug("no daemon at %s: %s", path, exc)
            return False
    return True
