"""The console's server: uvicorn in a thread of its own, on a socket bound
before the thread starts (a taken port or a refused address is a start
error of the daemon, with the reason, never a thread that died quietly).

A listen address other than loopback needs TLS (``console.tls_cert`` and
``console.tls_key``): patient names must not cross a network in clear text.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from typing import Any

import uvicorn

from pdimport.console.app import Console, ConsoleDeps, create_app

log = logging.getLogger(__name__)


class ConsoleError(RuntimeError):
    """The console cannot start as configured (the message says why)."""


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` as ``(host, port)``."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConsoleError(f"console.listen {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_listen(cfg: Any) -> tuple[str, int]:
    """The address to listen on; :class:`ConsoleError` for one that is not
    loopback without both a TLS certificate and key."""
    host, port = parse_listen(str(cfg.get("console.listen")))
    cert, key = cfg.get("console.tls_cert"), cfg.get("console.tls_key")
    if bool(cert) != bool(key):
        raise ConsoleError("console.tls_cert and console.tls_key go together: set both or neither")
    if not is_loopback(host) and not cert:
        raise ConsoleError(
            f"console.listen {host}:{port} is not a loopback address: the console refuses "
            "to serve patient data there without TLS (set console.tls_cert and "
            "console.tls_key, or listen on 127.0.0.1)"
        )
    return host, port


class ConsoleServer:
    """The console under uvicorn in the ``console`` thread.

    Parameters
    ----------
    deps : ConsoleDeps
        What the pages need from the daemon.
    """

    def __init__(self, deps: ConsoleDeps) -> None:
        cfg = deps.settings
        self.host, port = check_listen(cfg)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((self.host, port))
            self.sock.listen(64)  # connections queue until uvicorn accepts them
        except OSError as exc:
            self.sock.close()
            raise ConsoleError(
                f"console.listen {self.host}:{port}: {exc.strerror or exc} "
                "(another console or daemon there? set console.listen or console.enabled)"
            ) from exc
        self.port = int(self.sock.getsockname()[1])
        self.console: Console = create_app(deps)
        config = uvicorn.Config(
            self.console.app,
            log_config=None,  # the daemon configured logging once (pdimport.logs)
            access_log=False,
            lifespan="off",
            ssl_certfile=cfg.get("console.tls_cert") or None,
            ssl_keyfile=cfg.get("console.tls_key") or None,
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="console", daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.console.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/"

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException:  # a dead console must be told, once
            log.exception("the console stopped unexpectedly")
            raise

    def start(self) -> ConsoleServer:
        self.thread.start()
        log.info("console at %s", self.url)
        return self

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float) -> None:
        self.console.deps.stop.set()
        self.console.live.wake_all()  # event streams see the stop now
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.sock.close()
        self.console.close()
