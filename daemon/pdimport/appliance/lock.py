"""One daemon per state directory.

Two daemons on one journal and spool would read the same drives, deliver the
same jobs and interleave the audit trail. The first takes an exclusive
``flock`` on ``STATE_DIR/daemon.lock`` and keeps it until it exits (the kernel
drops it if the process dies, so a crash never leaves a stale lock); a second
finds it taken and exits with :data:`EXIT_LOCKED` and a line naming the pid.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Self

#: EX_TEMPFAIL (sysexits.h): try again once the other daemon has stopped.
EXIT_LOCKED = 75


class AlreadyRunning(RuntimeError):
    """Another process holds the state directory's daemon lock."""

    def __init__(self, state_dir: Path, pid: str) -> None:
        who = f" (pid {pid})" if pid else ""
        super().__init__(f"another daemon is running on {state_dir}{who}")
        self.state_dir = state_dir
        self.pid = pid


class DaemonLock:
    """The exclusive lock of a state directory, held while the object lives.

    Parameters
    ----------
    state_dir : Path
        The daemon's state directory (created if missing: the daemon owns it).
    """

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "daemon.lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip()
            os.close(self._fd)
            raise AlreadyRunning(state_dir, pid) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Drop the lock (also dropped by the kernel when the process exits)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
