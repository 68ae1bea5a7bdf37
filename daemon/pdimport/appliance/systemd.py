"""systemd service manners from the standard library (after gunicorn/systemd.py).

``sd_notify(3)``: one datagram per message on the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). Without
the variable every call is a no-op, so the daemon runs the same under a shell,
in tests and under ``Type=notify``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def _address(value: str) -> str | bytes:
    # "@name" is the abstract namespace: a leading NUL byte on the wire.
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


class Notifier:
    """A sender of sd_notify messages.

    Parameters
    ----------
    environ : mapping, optional
        Where ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are
        read; :data:`os.environ` by default.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.socket_name = env.get("NOTIFY_SOCKET", "")
        self.watchdog_usec = _watchdog_usec(env)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.socket_name)

    def notify(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False when not sent."""
        if not self.socket_name:
            return False
        payload = "\n".join(lines).encode("utf-8")
        try:
            with self._lock:
                if self._sock is None:
                    # Non-blocking: a manager that stops reading (its queue is
                    # only ~10 datagrams deep) must never stall a worker thread.
                    self._sock = socket.socket(
                        socket.AF_UNIX,
                        socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                    )
                self._sock.sendto(payload, _address(self.socket_name))
            return True
        except OSError as exc:
            # The manager may be restarting; never let a status line kill a worker.
            log.debug("sd_notify %r: %s", payload[:60], exc)
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")

    def watchdog(self, alive: Callable[[], bool] | bool = True) -> bool:
        """Send ``WATCHDOG=1`` only when ``alive`` says every worker lives.

        A dead worker thread must make systemd restart us, so we stay silent.
        """
        ok = alive() if callable(alive) else alive
        if not ok:
            log.error("a worker thread died: not petting the watchdog")
            return False
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half the timeout, as sd_watchdog_enabled advises)."""
        if not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2e6

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _watchdog_usec(env: Mapping[str, str]) -> int:
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return 0
    pid = env.get("WATCHDOG_PID")
    # The watchdog belongs to the process systemd started, not to its children.
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return 0
    return max(usec, 0)


def sd_notify(*lines: str, environ: Mapping[str, str] | None = None) -> bool:
    """One-shot helper: send ``lines`` to ``$NOTIFY_SOCKET`` if set."""
    notifier = Notifier(environ)
    try:
        return notifier.notify(*lines)
    finally:
        notifier.close()
