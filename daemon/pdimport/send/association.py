"""A Storage SCU association over one blocking socket (PS3.8 7, 9.2; PS3.7 9.1.1).

Why not pynetdicom here: its requestor runs every PDU through a DUL
thread, a state machine and a DIMSE provider thread, and decoding each
C-STORE-RSP there was what bound one association to ~300 images/s
(README, Performance). C-STORE on one association is a strict
request/response sequence, so this thread can do it all: write the
request (:mod:`pdimport.send.wire`), read the answer, decode it by hand.
The PDUs are built and decoded in :mod:`pdimport.send.acse` and
:mod:`pdimport.send.wire`; this module only moves them.

Timeouts (``network.*``): ``connection_timeout`` for the TCP connect,
``acse_timeout`` for the A-ASSOCIATE-AC/RJ and the A-RELEASE-RP,
``dimse_timeout`` for a C-STORE-RSP and for every write (a peer that stops
reading must not hang us). Sockets get TCP_NODELAY and, after every read,
TCP_QUICKACK unless the destination says otherwise (performance.md §3d).
"""

from __future__ import annotations

import logging
import select
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from pdimport.send import acse, wire
from pdimport.send.wire import StoreResponse

LOGGER = logging.getLogger(__name__)

#: Bytes read from the spool per sendmsg() round; bounds memory per link.
READ_BLOCK = 4 << 20
#: Seconds a failed write waits for the peer's A-ABORT (a reset may beat it).
ABORT_GRACE = 1.0
#: Bytes asked of each recv(): a C-STORE-RSP is ~200 bytes, one read takes it.
_RECV_CHUNK = 1 << 16

_HAS_QUICKACK = sys.platform.startswith("linux") and hasattr(socket, "TCP_QUICKACK")


def quickack(sock: socket.socket) -> None:
    """ACK at once (Linux drops quick-ACK mode by itself: re-armed per read)."""
    if _HAS_QUICKACK:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass  # closed under us; the next read says so


@dataclass(frozen=True)
class Timeouts:
    """``network.connection_timeout``, ``acse_timeout``, ``dimse_timeout`` (s)."""

    connect: float
    acse: float
    dimse: float


class ConnectFailed(Exception):
    """No TCP connection: ``error`` is the OSError of connect()."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class Rejected(Exception):
    """The peer answered A-ASSOCIATE-RJ."""

    def __init__(self, rejection: acse.Rejection) -> None:
        super().__init__(f"{rejection.source_str}: {rejection.reason_str}")
        self.rejection = rejection


class Lost(Exception):
    """The association ended: aborted, closed, timed out or a protocol error.

    ``cause`` says which, in words; ``by_peer`` when the peer aborted or
    closed the connection (as opposed to a timeout or a bad PDU).
    """

    def __init__(self, cause: str, by_peer: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.by_peer = by_peer


@dataclass
class StoreAssociation:
    """One established association; :func:`open_association` makes it.

    ``accepted``: (context ID, abstract syntax, transfer syntax) of every
    accepted presentation context; ``peer_max_pdu``: its Maximum Length.
    """

    sock: socket.socket
    timeouts: Timeouts
    accepted: list[tuple[int, str, str]]
    peer_max_pdu: int
    quickack: bool = True
    established: bool = True
    _buffer: bytearray = field(default_factory=bytearray, repr=False)
    #: Seconds the last C-STORE waited for its response after its last byte
    #: was written: the receiver's own time and the network's round trip.
    last_wait: float = 0.0

    # -------------------------------------------------------------- reading
    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        chunk = self.sock.recv(_RECV_CHUNK)
        if self.quickack:
            quickack(self.sock)
        if not chunk:
            self._close()
            raise Lost("the peer closed the connection without A-ABORT", by_peer=True)
        self._buffer += chunk

    def read_pdu(self, timeout: float) -> tuple[int, bytes]:
        """The next PDU: (type, body). Raises TimeoutError, OSError or :class:`Lost`."""
        deadline = time.monotonic() + timeout
        while len(self._buffer) < 6:
            self._fill(deadline)
        pdu_type, length = acse.pdu_length(bytes(self._buffer[:6]))
        while len(self._buffer) < 6 + length:
            self._fill(deadline)
        body = bytes(self._buffer[6 : 6 + length])
        del self._buffer[: 6 + length]
        return pdu_type, body

    def ended_by_peer(self) -> str:
        """Why the peer ended the association while it was idle ("" if it
        did not): an A-ABORT, an A-RELEASE-RQ (answered) or a closed
        connection. Checked before each store without waiting, so an idle
        association a PACS timed out is replaced before anything is sent on
        it (nothing is lost either way: the store would fail unanswered).
        """
        while self.established:
            if not self._buffer and not select.select([self.sock], [], [], 0)[0]:
                return ""
            try:
                pdu_type, body = self.read_pdu(ABORT_GRACE)
            except (OSError, Lost):
                self._close()
                return "the peer closed the connection"
            if pdu_type == acse.ABORT:
                self._close()
                return acse.abort_cause(body)
            if pdu_type == acse.RELEASE_RQ:
                try:
                    self.sock.sendall(acse.header(acse.RELEASE_RP, 4) + bytes(4))
                except OSError:
                    pass
                self._close()
                return "the peer released the association"
            LOGGER.warning("dropped a PDU of type 0x%02X between two stores", pdu_type)
        return "the association is closed"

    # -------------------------------------------------------------- C-STORE
    def store(
        self, cx_id: int, command: bytes, fp: IO[bytes], msg_id: int, sop_instance_uid: str
    ) -> StoreResponse | None:
        """One C-STORE: the request from `fp`, then its response.

        Returns None when no response came within ``dimse_timeout``: the
        association is then aborted (outcome unknown: the peer may have
        stored the object). Raises :class:`Lost` when the peer aborted or
        closed, or answered something that is not a C-STORE-RSP to this
        request (then we abort): the object may have been stored too.

        Raises
        ------
        ValueError, OSError
            `fp` holds no data set or cannot be read (nothing was sent
            beyond what the peer will see as an incomplete message: the
            association is aborted).
        """
        self.last_wait = 0.0
        fragment = wire.fragment_size(self.peer_max_pdu)
        block_size = fragment * max(1, READ_BLOCK // fragment)
        block = memoryview(fp.read(block_size))  # nothing sent yet if this fails
        if not block:
            raise ValueError("empty data set")
        try:
            self._write_request(cx_id, command, fp, block, fragment, block_size)
        except (ValueError, OSError):
            self.abort()  # the file failed mid-message: the stream is broken
            raise
        except Lost as lost:
            # The write broke: the peer's A-ABORT, if any, says why.
            raise self._why_broken(lost) from None
        written = time.monotonic()
        try:
            return self._response(msg_id, sop_instance_uid)
        finally:
            self.last_wait = time.monotonic() - written

    def _write_request(
        self,
        cx_id: int,
        command: bytes,
        fp: IO[bytes],
        block: memoryview,
        fragment: int,
        block_size: int,
    ) -> None:
        buffers: list[bytes | memoryview] = list(wire.command_buffers(cx_id, command, fragment))
        self.sock.settimeout(self.timeouts.dimse)
        while block:
            following = memoryview(fp.read(block_size))
            for batch in wire.dataset_buffers(cx_id, block, fragment, not following):
                self._sendmsg_all(buffers + batch)
                buffers = []
            block = following

    def _sendmsg_all(self, buffers: list[bytes | memoryview]) -> None:
        """sendmsg() until every buffer is written (a blocking send may be partial)."""
        views = [memoryview(b) for b in buffers]
        try:
            while views:
                sent = self.sock.sendmsg(views)
                while views and sent >= len(views[0]):
                    sent -= len(views[0])
                    views.pop(0)
                if views and sent:
                    views[0] = views[0][sent:]
        except (TimeoutError, OSError) as exc:
            LOGGER.warning("writing to %s failed: %s", _peer(self.sock), exc)
            raise Lost(f"write failed: {exc}") from None

    def _why_broken(self, lost: Lost) -> Lost:
        """After a failed write: the peer's A-ABORT if it still arrives, else
        a closed connection, else (a peer that stopped reading) `lost`."""
        try:
            while True:
                pdu_type, body = self.read_pdu(ABORT_GRACE)
                if pdu_type == acse.ABORT:
                    self._close()
                    return Lost(acse.abort_cause(body), by_peer=True)
        except TimeoutError:
            self.abort()
            return lost
        except (OSError, Lost):
            self._close()
            return Lost("the peer closed the connection without A-ABORT", by_peer=True)

    def _response(self, msg_id: int, sop_instance_uid: str) -> StoreResponse | None:
        """Read PDUs until the C-STORE-RSP to `msg_id` (PS3.7 9.3.1.2)."""
        deadline = time.monotonic() + self.timeouts.dimse
        command = bytearray()
        while True:
            try:
                pdu_type, body = self.read_pdu(deadline - time.monotonic())
            except TimeoutError:
                LOGGER.warning("no C-STORE-RSP within %.0f s: aborting", self.timeouts.dimse)
                self.abort()
                return None
            except OSError as exc:
                self._close()
                raise Lost(f"the connection broke: {exc}", by_peer=True) from None
            if pdu_type != acse.P_DATA_TF:
                raise self._unexpected(pdu_type, body)
            try:
                pdvs = _pdvs(body)
            except ValueError as exc:
                self.abort(acse.SOURCE_PROVIDER, acse.INVALID_PARAMETER)
                raise Lost(str(exc)) from None
            for is_command, is_last, value in pdvs:
                if not is_command:
                    continue  # a data set after a response: not for C-STORE
                command += value
                if not is_last:
                    continue
                rsp = self._decoded(bytes(command))
                command.clear()
                if rsp.msg_id != msg_id:
                    # A late answer to an earlier request: never this one's.
                    LOGGER.warning("dropped a C-STORE-RSP to message %d", rsp.msg_id)
                    continue
                if rsp.sop_instance_uid and rsp.sop_instance_uid != sop_instance_uid:
                    self.abort(acse.SOURCE_PROVIDER, acse.INVALID_PARAMETER)
                    raise Lost(
                        f"the C-STORE-RSP named {rsp.sop_instance_uid}, not the instance sent"
                    )
                return rsp

    def _decoded(self, command: bytes) -> StoreResponse:
        try:
            return wire.decode_store_rsp(command)
        except ValueError as exc:
            self.abort(acse.SOURCE_PROVIDER, acse.INVALID_PARAMETER)
            raise Lost(f"invalid C-STORE-RSP ({exc})") from None

    def _unexpected(self, pdu_type: int, body: bytes) -> Lost:
        if pdu_type == acse.ABORT:
            self._close()
            return Lost(acse.abort_cause(body), by_peer=True)
        known = pdu_type in (acse.RELEASE_RQ, acse.RELEASE_RP, acse.ASSOCIATE_AC)
        self.abort(acse.SOURCE_PROVIDER, acse.UNEXPECTED_PDU if known else acse.UNRECOGNISED_PDU)
        return Lost(f"the peer sent an unexpected PDU (type 0x{pdu_type:02X})")

    # ----------------------------------------------------------- ending
    def release(self) -> bool:
        """A-RELEASE-RQ, wait ``acse_timeout`` for the RP (PS3.8 7.2); True if
        released, else the association is aborted."""
        if not self.established:
            return False
        try:
            self.sock.settimeout(self.timeouts.acse)
            self.sock.sendall(acse.release_rq())
            deadline = time.monotonic() + self.timeouts.acse
            while True:
                pdu_type, _body = self.read_pdu(deadline - time.monotonic())
                if pdu_type == acse.RELEASE_RP:
                    LOGGER.debug("association with %s released", _peer(self.sock))
                    self._close()
                    return True
                if pdu_type == acse.ABORT:
                    break
                # P-DATA in flight before the RP (PS3.8 7.2): skip it.
        except (TimeoutError, OSError, Lost) as exc:
            LOGGER.warning("release of the association with %s failed: %s", _peer(self.sock), exc)
        self.abort()
        return False

    def abort(self, source: int = acse.SOURCE_USER, reason: int = 0) -> None:
        """Send A-ABORT (best effort) and close (PS3.8 7.3)."""
        if self.established:
            try:
                self.sock.settimeout(1.0)
                self.sock.sendall(acse.abort(source, reason))
            except OSError:
                pass
        self._close()

    def _close(self) -> None:
        self.established = False
        try:
            self.sock.close()
        except OSError:
            pass


def _pdvs(body: bytes) -> list[tuple[bool, bool, bytes]]:
    """(is command, is last fragment, value) of each PDV of a P-DATA-TF (PS3.8 9.3.5.1, E.2)."""
    out, pos = [], 0
    while pos + 6 <= len(body):
        length = int.from_bytes(body[pos : pos + 4], "big")
        if length < 2 or pos + 4 + length > len(body):
            raise ValueError(f"malformed P-DATA-TF (PDV length {length})")
        control = body[pos + 5]
        out.append((bool(control & 1), bool(control & 2), body[pos + 6 : pos + 4 + length]))
        pos += 4 + length
    return out


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "the peer"


def open_association(
    address: tuple[str, int],
    calling_aet: str,
    called_aet: str,
    contexts: Sequence[tuple[int, str, Sequence[str]]],
    max_pdu: int,
    timeouts: Timeouts,
    nodelay: bool = True,
    quick: bool = True,
) -> StoreAssociation:
    """Connect, send A-ASSOCIATE-RQ and read the answer (PS3.8 7.1).

    Raises
    ------
    ConnectFailed
        No TCP connection within ``connection_timeout``.
    Rejected
        A-ASSOCIATE-RJ.
    Lost
        Aborted, closed or silent (``acse_timeout``) instead of an answer.
    """
    request = acse.encode_associate_rq(calling_aet, called_aet, contexts, max_pdu)
    try:
        sock = socket.create_connection(address, timeout=timeouts.connect)
    except OSError as exc:
        raise ConnectFailed(exc) from None
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assoc = StoreAssociation(sock, timeouts, [], 0, quickack=quick)
    try:
        sock.settimeout(timeouts.acse)
        sock.sendall(request)
        pdu_type, body = assoc.read_pdu(timeouts.acse)
    except (TimeoutError, OSError, Lost) as exc:
        assoc.abort()
        raise Lost(f"no A-ASSOCIATE answer: {str(exc) or 'timed out'}") from None
    if pdu_type == acse.ASSOCIATE_RJ:
        assoc._close()
        raise Rejected(acse.parse_associate_rj(body))
    if pdu_type != acse.ASSOCIATE_AC:
        if pdu_type == acse.ABORT:
            assoc._close()
        else:
            assoc.abort(acse.SOURCE_PROVIDER, acse.UNEXPECTED_PDU)
        raise Lost(f"A-ASSOCIATE answered with PDU type 0x{pdu_type:02X}")
    try:
        answer = acse.parse_associate_ac(body)
    except acse.PDUError as exc:
        assoc.abort(acse.SOURCE_PROVIDER, acse.INVALID_PARAMETER)
        raise Lost(str(exc)) from None
    proposed = {cx_id: (abstract, syntaxes) for cx_id, abstract, syntaxes in contexts}
    assoc.accepted = [
        (cx_id, proposed[cx_id][0], ts)
        for cx_id, (result, ts) in sorted(answer.contexts.items())
        if result == acse.ACCEPTANCE and cx_id in proposed and ts in proposed[cx_id][1]
    ]
    assoc.peer_max_pdu = answer.max_pdu
    LOGGER.debug(
        "association %s -> %s at %s:%s accepted: %d of %d presentation contexts, peer max PDU %d",
        calling_aet, called_aet, address[0], address[1], len(assoc.accepted), len(contexts),
        answer.max_pdu,
    )  # fmt: skip
    return assoc


__all__ = [
    "ABORT_GRACE",
    "READ_BLOCK",
    "ConnectFailed",
    "Lost",
    "Rejected",
    "StoreAssociation",
    "Timeouts",
    "open_association",
    "quickack",
]
