"""C-STORE delivery with pynetdicom (PS3.4 Annex B, PS3.7 9.1.1, PS3.8).

One call of :func:`send_dicom` makes one delivery attempt for a list of
instances. Every instance gets exactly one :class:`~pdimport.model.SendOutcome`,
reported through ``on_outcome`` the moment it is known, so that the caller can
journal it before the next C-STORE goes out. Retrying (``retry`` and
``unknown`` states) is the caller's job.

Three adaptations of pynetdicom 3.0.4 live here and nowhere else:

* :data:`pynetdicom._config.STORE_SEND_CHUNKED_DATASET` is set at import, so
  ``send_c_store(path)`` streams the spooled bytes instead of decoding and
  re-encoding them (reliability.md §0.8);
* :class:`_TunedSocket` sets TCP_NODELAY and re-arms TCP_QUICKACK
  (performance.md §3a, §3d);
* :func:`_keep_store_responses` works around the reactor race that drops a
  C-STORE-RSP (performance.md §3b).
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.transport import AddressInformation, AssociationSocket

from pdimport.model import SendItem, SendOutcome

LOGGER = logging.getLogger(__name__)

# Stream the encoded dataset from the file (no dcmread + re-encode): the bytes
# that leave are the bytes that were read from the medium. Process-wide by
# pynetdicom's design; it only affects send_c_store() called with a path,
# which is how pdimport always calls it. Requires an exact (SOP class, TS)
# accepted context; conversion is done by us (transcode.py), never implicitly.
_config.STORE_SEND_CHUNKED_DATASET = True

#: PS3.8 9.3.2.2: presentation context IDs are odd integers 1..255.
MAX_CONTEXTS = 128
#: Fallback transfer syntaxes offered for every SOP class, in preference order.
FALLBACK_TS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

OutcomeCallback = Callable[[SendOutcome], None]


# ======================================================================
# socket options
# ======================================================================
class _TunedSocket(AssociationSocket):
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

    def __init__(self, assoc: Association, address: AddressInformation,
                 nodelay: bool = True, quickack: bool = True) -> None:
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


class _StoreAE(AE):
    """pynetdicom's AE whose requestor sockets are :class:`_TunedSocket`.

    ``AE._create_socket`` is the one place pynetdicom 3.0.4 builds the
    requestor's socket (``ae.py``); overriding it avoids patching
    ``transport.AssociationSocket`` for the whole process.
    """

    nodelay = True
    quickack = True

    def _create_socket(self, assoc: Association, address: AddressInformation,
                       tls_args: Any) -> AssociationSocket:
        sock = _TunedSocket(assoc, address, nodelay=self.nodelay, quickack=self.quickack)
        sock.tls_args = tls_args
        return sock


def make_ae(settings: Any, nodelay: bool = True, quickack: bool = True) -> AE:
    """An AE for C-STORE requests, every timeout set from `settings`.

    pynetdicom's ``connection_timeout`` defaults to None (wait for the OS TCP
    connect, minutes); the others default to 30-60 s. All are set explicitly
    (reliability.md §3.2). ``network.max_pdu`` is the largest PDU we accept
    (0 = unlimited); what we send is bounded by the peer's announced maximum.

    Parameters
    ----------
    settings : pdimport.settings.Settings
        ``calling_aet`` and ``network.*``.
    nodelay, quickack : bool
        Socket options of the destination (``?nodelay=0`` / ``?quickack=0``).
    """
    ae = _StoreAE(ae_title=settings.calling_aet.strip())
    ae.nodelay = nodelay
    ae.quickack = quickack
    ae.connection_timeout = float(settings.get("network.connection_timeout"))
    ae.acse_timeout = float(settings.get("network.acse_timeout"))
    ae.dimse_timeout = float(settings.get("network.dimse_timeout"))
    ae.network_timeout = float(settings.get("network.network_timeout"))
    ae.maximum_pdu_size = int(settings.get("network.max_pdu"))
    return ae


# ======================================================================
# the reactor race
# ======================================================================
@dataclass
class _ResponseKeeper:
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

    def install(self) -> _ResponseKeeper:
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


def _keep_store_responses(assoc: Association) -> _ResponseKeeper:
    """Install the race workaround on an established association."""
    return _ResponseKeeper(assoc).install()


# ======================================================================
# planning: presentation contexts and associations
# ======================================================================
@dataclass
class Batch:
    """The items sent on one association and the contexts it proposes."""

    contexts: list[PresentationContext]
    items: list[SendItem]


def _syntaxes(items: Iterable[SendItem]) -> dict[str, list[str]]:
    """SOP class -> transfer syntaxes to propose, in first-seen order.

    The syntaxes actually present come first (exact matches, so the original
    bytes can be streamed), then the uncompressed fallbacks that a refused
    syntax can be converted to.
    """
    by_class: dict[str, list[str]] = {}
    for item in items:
        wanted = by_class.setdefault(item.sop_class_uid, [])
        if item.transfer_syntax not in wanted:
            wanted.append(item.transfer_syntax)
    for wanted in by_class.values():
        wanted.extend(ts for ts in FALLBACK_TS if ts not in wanted)
    return by_class


def plan_batches(items: list[SendItem]) -> list[Batch]:
    """Split `items` into associations of at most :data:`MAX_CONTEXTS` contexts.

    One context per (SOP class, transfer syntax) pair: a context holding
    several syntaxes gets only one of them accepted (PS3.8 9.3.3.2), which
    would hide whether the object's own syntax is acceptable. SOP classes are
    never split across associations; items keep their order within a batch.
    """
    by_class = _syntaxes(items)
    groups: list[list[str]] = []
    count = 0
    for sop_class, syntaxes in by_class.items():
        if not groups or count + len(syntaxes) > MAX_CONTEXTS:
            groups.append([])
            count = 0
        groups[-1].append(sop_class)
        count += len(syntaxes)
    batches = []
    for classes in groups:
        members = set(classes)
        contexts = [build_context(c, ts) for c in classes for ts in by_class[c]]
        batches.append(Batch(contexts, [i for i in items if i.sop_class_uid in members]))
    return batches


# ======================================================================
# status -> outcome (PS3.4 B.2.3, PS3.7 C)
# ======================================================================
def classify_status(status: int) -> tuple[str, str]:
    """Map a C-STORE response status to (state, problem code).

    PS3.4 Table B.2-1 and PS3.7 Annex C; actions from reliability.md §3.1.
    """
    if status == 0x0000:
        return "sent", ""
    # 0001 and Bxxx are C-STORE warnings; 0107/0116 are PS3.7 C.4 general
    # warnings ("attribute list error", "value out of range"): stored anyway.
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return "sent", "store_warning"
    # Out of resources, duplicate invocation, resource limitation: transient.
    if 0xA700 <= status <= 0xA7FF or status in (0x0210, 0x0213):
        return "retry", "store_failed"
    return "failed", "store_failed"


def outcome_from_status(item: SendItem, status_ds: Dataset, ts: str,
                        converted: Path | None) -> SendOutcome:
    """The outcome of one C-STORE from the status Dataset pynetdicom returned.

    An empty Dataset (no response within ``dimse_timeout``, abort, invalid
    response) is ``unknown``: the SCP may well have stored the object
    (reliability.md §0.6), so it is neither sent nor failed.
    """
    if "Status" not in status_ds:
        return SendOutcome(item.key, "unknown", None, "outcome_unknown",
                           "no C-STORE response (DIMSE timeout or association lost)", ts,
                           converted)
    status = int(status_ds.Status)
    state, code = classify_status(status)
    detail = "" if status == 0 else f"0x{status:04X}"
    comment = status_ds.get("ErrorComment")
    if detail and comment:
        detail += f" {comment}"
    return SendOutcome(item.key, state, status, code, detail, ts, converted)


