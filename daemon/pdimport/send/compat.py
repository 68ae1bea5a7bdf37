"""Every use of pynetdicom's private internals, in one module.

C-STORE delivery does not use pynetdicom any more (it runs its own
association, :mod:`pdimport.send.association`). What is left of pynetdicom's
undocumented parts: an overridden requestor socket (``AE._create_socket``,
``AssociationSocket._create_socket`` / ``_shutdown_socket``) for the C-FIND
of the identity sources, the DUL's raw socket of an association (the
embedded receiver sets TCP_NODELAY on it) and the process-wide
``_config.STORE_SEND_CHUNKED_DATASET`` (the reactor-race reproduction in
``bench/``). All of them are here, so upgrading pynetdicom is this one
file's work (STYLE.md).

Importing this module checks ``pynetdicom.__version__`` against the versions
the shims were verified on and raises ImportError otherwise: pyproject.toml
pins ``pynetdicom==3.0.4``, so a mismatch means an unvetted upgrade, where a
silently wrong shim could lose C-STORE responses. Nothing is patched at
import; :func:`stream_datasets_from_files` sets pynetdicom's one global, once,
when called.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import pynetdicom
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation, AssociationSocket

#: pynetdicom versions whose internals these shims were checked against.
VERIFIED_VERSIONS = ("3.0.4",)

if pynetdicom.__version__ not in VERIFIED_VERSIONS:
    raise ImportError(
        f"pdimport.send.compat was verified on pynetdicom {', '.join(VERIFIED_VERSIONS)}, "
        f"not {pynetdicom.__version__}: check its private-API shims "
        f"(daemon/pdimport/send/compat.py) and add the version to VERIFIED_VERSIONS"
    )


def stream_datasets_from_files() -> None:
    """Have ``send_c_store`` stream a file's encoded dataset (no dcmread and
    re-encode), so the bytes that leave are the bytes read from the medium.

    Process-wide by pynetdicom's design (``_config``); it only affects
    ``send_c_store()`` called with a path, which only
    ``bench/repro_reactor_race.py`` does now. Requires an exact (SOP class,
    TS) accepted context. Idempotent.
    """
    _config.STORE_SEND_CHUNKED_DATASET = True


def raw_socket(assoc: Association) -> socket.socket | None:
    """The connected TCP socket under ``assoc`` (None when there is none)."""
    transport = assoc.dul.socket
    return transport.socket if transport else None


# ======================================================================
# socket options
# ======================================================================
class TunedSocket(AssociationSocket):
    """An :class:`AssociationSocket` with TCP_NODELAY and, on Linux,
    TCP_QUICKACK re-armed after every read.

    Why: pynetdicom and Debian's dcmtk/Orthanc leave Nagle on. A C-STORE-RSP
    or the tail of a dataset then waits for the peer's delayed ACK (~40 ms per
    instance): ~10 MB/s instead of ~70-250 MB/s on loopback. TCP_NODELAY fixes
    our side; re-arming QUICKACK makes us ACK at once, which also unblocks a
    Nagle-enabled receiver (8x measured, performance.md §3d). The kernel
    drops QUICKACK mode by itself, hence re-arm after each recv().

    Both are on unless the destination URL says ``?nodelay=0`` /
    ``?quickack=0`` (a peer or middlebox that misbehaves with small segments).
    """

    def __init__(
        self,
        assoc: Association,
        address: AddressInformation,
        nodelay: bool = True,
        quickack: bool = True,
    ) -> None:
        # Set before the base class creates the socket in its __init__.
        self.nodelay = nodelay
        self.quickack = quickack
        super().__init__(assoc, address=address)

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        sock = super()._create_socket(address)
        if self.nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def recv(self, nr_bytes: int) -> bytearray:
        data = super().recv(nr_bytes)
        if self.quickack:
            _quickack(self.socket)
        return data

    def _shutdown_socket(self) -> None:
        # pynetdicom 3.0.4 calls shutdown() then close() in one try block; on
        # a socket that never connected (refused, timed out) shutdown() raises
        # ENOTCONN and close() is skipped: one leaked fd per failed attempt.
        sock = self.socket
        super()._shutdown_socket()
        if sock is not None:
            sock.close()


_HAS_QUICKACK = sys.platform.startswith("linux") and hasattr(socket, "TCP_QUICKACK")


def _quickack(sock: socket.socket | None) -> None:
    if sock is None or not _HAS_QUICKACK:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    except OSError:
        pass  # socket closed under us; the DUL notices on its own


class StoreAE(AE):
    """pynetdicom's AE whose requestor sockets are :class:`TunedSocket`.

    ``AE._create_socket`` is the one place pynetdicom 3.0.4 builds the
    requestor's socket (``ae.py``); overriding it avoids patching
    ``transport.AssociationSocket`` for the whole process.
    """

    nodelay = True
    quickack = True

    def _create_socket(
        self, assoc: Association, address: AddressInformation, tls_args: Any
    ) -> AssociationSocket:
        sock = TunedSocket(assoc, address, nodelay=self.nodelay, quickack=self.quickack)
        sock.tls_args = tls_args
        return sock


__all__ = [
    "VERIFIED_VERSIONS",
    "StoreAE",
    "TunedSocket",
    "raw_socket",
    "stream_datasets_from_files",
]
