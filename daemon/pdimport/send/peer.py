"""Why a destination could not be reached, in words (PS3.8 7.1.1.9, 9.3.4).

The words of the report for a name that does not resolve, a refused
connection and an A-ASSOCIATE-RJ. Used by :mod:`pdimport.send.link` and by
the console's C-ECHO (through pynetdicom, which logs these causes but does
not return them: :func:`connect_failure` finds them again).
"""

from __future__ import annotations

import socket

from pdimport.send.dest import DicomDest


class Unresolvable(Exception):
    """``host`` does not resolve; ``transient`` when the resolver may answer later."""

    def __init__(self, detail: str, transient: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.transient = transient


def rejection_detail(dest: DicomDest, rejections: list) -> str:
    if not rejections:
        return f"{dest.key}: association rejected"
    rj = rejections[-1]
    kind = "permanent" if rj.result == 0x01 else "transient"
    return (
        f"{dest.key}: association rejected ({kind}, not retried) by {rj.source_str}: "
        f"{rj.reason_str}"
        if kind == "permanent"
        else f"{dest.key}: association rejected ({kind}) by {rj.source_str}: {rj.reason_str}"
    )


def resolve(host: str, port: int) -> None:
    """Raise :class:`Unresolvable` when ``host`` does not resolve.

    pynetdicom only logs the resolver's error. A name that does not exist
    (EAI_NONAME) is a configuration error: retrying every job would only
    repeat it, so its items end ``failed`` and the report says to check the
    destination URL. A resolver that is merely unavailable (EAI_AGAIN) may
    answer later: ``retry``.
    """
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise Unresolvable(
                f"{host}:{port}: name lookup failed for now ({exc.strerror}); will retry", True
            ) from None
        raise Unresolvable(
            f"{host}:{port}: name does not resolve (check the destination URL)", False
        ) from None


def connect_failure(host: str, port: int, timeout: float) -> str:
    """Why the TCP connection to ``host:port`` failed, in words.

    For callers that only learnt that it failed (pynetdicom logs the socket
    error but does not return it): one more connect attempt, bounded by the
    connection timeout, names the cause.
    """
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 5.0)):
            return f"{host}:{port}: connection failed, then accepted on a second try"
    except OSError as exc:
        return describe_connect_error(host, port, exc, min(timeout, 5.0))


def describe_connect_error(host: str, port: int, exc: OSError, timeout: float) -> str:
    """The words for the OSError of a connect() to ``host:port``."""
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {host}:{port} (is the PACS running?)"
    if isinstance(exc, TimeoutError):
        return f"no answer from {host}:{port} within {timeout:.0f} s (firewall?)"
    return f"cannot connect to {host}:{port}: {exc.strerror or exc}"


__all__ = [
    "Unresolvable",
    "connect_failure",
    "describe_connect_error",
    "rejection_detail",
    "resolve",
]
