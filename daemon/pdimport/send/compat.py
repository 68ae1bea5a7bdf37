"""Every use of pynetdicom's private internals, in one module.

pdimport relies on a few undocumented parts of pynetdicom for speed and
correctness: an overridden requestor socket (``AE._create_socket``,
``AssociationSocket._create_socket`` / ``_shutdown_socket``), the
association's reactor flags (``_reactor_checkpoint``, ``_is_paused``), its
``_serve_request`` (wrapped to repair a race), ``_handle_no_response`` /
``_check_received_status``, the DUL's raw socket (PDUs written past the DUL), the DIMSE message queue
(woken when the peer aborts, :class:`AbortWatch`),
and the process-wide ``_config.STORE_SEND_CHUNKED_DATASET``. All of them are
here, behind the small documented API below, so upgrading pynetdicom is this
one file's work (STYLE.md).

Importing this module checks ``pynetdicom.__version__`` against the versions
the shims were verified on and raises ImportError otherwise: pyproject.toml
pins ``pynetdicom==3.0.4``, so a mismatch means an unvetted upgrade, where a
silently wrong shim could lose C-STORE responses. Nothing is patched at
import; :func:`stream_datasets_from_files` sets pynetdicom's one global, once,
when called.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynetdicom
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AddressInformation, AssociationSocket

LOGGER = logging.getLogger(__name__)

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
    ``send_c_store()`` called with a path, which is how pdimport always calls
    it. Requires an exact (SOP class, TS) accepted context; conversion is done
    by us (transcode/), never implicitly. Idempotent.
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


# ======================================================================
# the reactor race
# ======================================================================
@dataclass
class ResponseKeeper:
    """Puts back a C-STORE-RSP that pynetdicom's reactor took by mistake.

    The race (pynetdicom 3.0.4, association.py ``_run_reactor`` and
    ``send_c_store``): the reactor loop does ``_is_paused = True;
    _reactor_checkpoint.wait(); _is_paused = False; dimse.get_msg()``.
    ``send_c_store`` pauses it with ``_reactor_checkpoint.clear()`` and then
    waits only for ``_is_paused`` to be True. Right after a previous
    ``send_c_store`` set the checkpoint again, the reactor has been released
    but has not yet cleared ``_is_paused``: the next ``send_c_store`` reads the
    stale True, sends, and the reactor goes on to ``get_msg()`` and takes the
    C-STORE-RSP. ``_serve_request`` sees a message that is not a request, logs
    "Received unexpected C-STORE service message" and drops it; the sender
    waits ``dimse_timeout`` and aborts. Measured ~1 in 6,700 stores with
    TCP_NODELAY on loopback, ~1 in 300 under CPU contention.

    The fix is the smallest one that keeps pynetdicom's flow: wrap the
    association's ``_serve_request`` and, if the message is the C-STORE-RSP
    to the request we are waiting for (same Message ID), put it back on the
    DIMSE queue where ``send_c_store``'s blocking ``get_msg()`` picks it up.
    Any other message goes to pynetdicom unchanged, so a stray or late
    response is still dropped rather than mistaken for the next answer.
    """

    assoc: Association
    awaiting: int | None = None
    recovered: int = 0
    _original: Callable[[Any, int], None] | None = field(default=None, repr=False)

    def install(self) -> ResponseKeeper:
        if not callable(getattr(self.assoc, "_serve_request", None)):
            # A pynetdicom without this private method: nothing to wrap; an
            # occurrence of the race then shows as outcome_unknown.
            LOGGER.warning("pynetdicom has no Association._serve_request; race workaround off")
            return self
        self._original = self.assoc._serve_request
        self.assoc._serve_request = self._serve_request  # type: ignore[method-assign]
        return self

    def _serve_request(self, msg: Any, context_id: int) -> None:
        if (
            isinstance(msg, C_STORE)
            and not msg.is_valid_request
            and self.awaiting is not None
            and getattr(msg, "MessageIDBeingRespondedTo", None) == self.awaiting
        ):
            self.recovered += 1
            LOGGER.debug("reactor took the C-STORE-RSP to message %d: put back", self.awaiting)
            self.assoc.dimse.msg_queue.put((context_id, msg))
            return
        assert self._original is not None
        self._original(msg, context_id)


def keep_store_responses(assoc: Association) -> ResponseKeeper:
    """Install the race workaround on an established association."""
    return ResponseKeeper(assoc).install()


# ======================================================================
# why the peer ended the association
# ======================================================================
@dataclass
class AbortWatch:
    """Names an A-ABORT (or a closed connection) from the peer during a C-STORE.

    pynetdicom notices an abort in the association's reactor, which is
    paused while we wait for a C-STORE-RSP (:func:`pause_reactor`): the
    waiting ``dimse.get_msg()`` would sit out the whole ``dimse_timeout``
    and the report would say "no response". The DUL thread decodes the
    A-ABORT PDU (PS3.8 9.3.8: source, reason/diagnostic) and triggers
    ``EVT_PDU_RECV``, and ``EVT_CONN_CLOSE`` when the connection goes: this
    keeps the cause and, while a store is waiting, wakes it with the
    ``(None, None)`` that ``get_msg()`` returns for "no message".
    """

    assoc: Association
    waiting: bool = False
    cause: str = ""
    _seen: threading.Event = field(default_factory=threading.Event, repr=False)

    def install(self) -> AbortWatch:
        self.assoc.bind(evt.EVT_PDU_RECV, self._on_pdu)
        self.assoc.bind(evt.EVT_CONN_CLOSE, self._on_close)
        return self

    def _on_pdu(self, event: Any) -> None:
        pdu = event.pdu
        if isinstance(pdu, A_ABORT_RQ):
            reason = pdu.reason_str if pdu.source == 2 else "no reason given"
            self._note(f"A-ABORT from the {pdu.source_str} (source {pdu.source}): {reason}")

    def _on_close(self, _event: Any) -> None:
        if self.waiting:
            self._note("the peer closed the connection without A-ABORT")

    def _note(self, cause: str) -> None:
        if not self.cause:
            self.cause = cause
        self._seen.set()
        if self.waiting:
            self.assoc.dimse.msg_queue.put((None, None))

    def wait(self, timeout: float) -> str:
        """The cause, waiting up to `timeout` s for the DUL to read it
        (a write that failed on a reset may come first); "" if none."""
        self._seen.wait(timeout)
        return self.cause


def watch_aborts(assoc: Association) -> AbortWatch:
    """Start naming the peer's aborts on an established association."""
    return AbortWatch(assoc).install()


# ======================================================================
# driving a C-STORE past send_c_store
# ======================================================================
def pause_reactor(assoc: Association) -> None:
    """Stop the association's reactor from reading DIMSE messages, as
    ``send_c_store`` does; the stale-flag race this leaves is what
    :class:`ResponseKeeper` repairs. A dead reactor never pauses: no spin."""
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused and assoc.is_alive():
        time.sleep(0.0001)


def resume_reactor(assoc: Association) -> None:
    """Let the reactor read again (after :func:`pause_reactor`)."""
    assoc._reactor_checkpoint.set()


def no_response(assoc: Association) -> None:
    """What pynetdicom does when a DIMSE response does not come: abort."""
    assoc._handle_no_response()


def response_status(assoc: Association, rsp: Any) -> Any:
    """The status Dataset of a received DIMSE response (empty if invalid)."""
    return assoc._check_received_status(rsp)


def bound_writes(assoc: Association) -> None:
    """Give the connected socket a send timeout (``dimse_timeout``).

    pynetdicom leaves it blocking without one; a peer that stops reading
    would hang our sendmsg() forever. The DUL select()s before it reads, so
    a timeout does not disturb it.
    """
    sock = raw_socket(assoc)
    if sock is not None and sock.gettimeout() is None:
        sock.settimeout(float(assoc.dimse_timeout or 60.0))


__all__ = [
    "VERIFIED_VERSIONS",
    "AbortWatch",
    "ResponseKeeper",
    "StoreAE",
    "TunedSocket",
    "bound_writes",
    "keep_store_responses",
    "no_response",
    "pause_reactor",
    "raw_socket",
    "response_status",
    "resume_reactor",
    "stream_datasets_from_files",
    "watch_aborts",
]
