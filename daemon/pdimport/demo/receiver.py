"""An embedded Storage SCP (PS3.4 Annex B) for the demo and the tests.

It accepts every storage SOP class pynetdicom knows (plus any extra classes
asked for) in every transfer syntax pynetdicom knows, and writes each dataset
exactly as received (no decode / re-encode) as a Part 10 file named by its SOP
Instance UID, or by a SHA-256 of the bytes when the UID is not a valid UID:
nothing a peer sends becomes a path component.

It binds 127.0.0.1 by default and sets TCP_NODELAY on every accepted socket.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Self

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt, register_uid
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification, uid_to_service_class  # type: ignore[attr-defined]  # generated at import
from pynetdicom.transport import ThreadedAssociationServer

from pdimport.send.files import safe_name
from pdimport.store.fsutil import write_bytes

LOGGER = logging.getLogger(__name__)


class Receiver:
    """A Storage SCP on a background thread.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Where received objects are written (created if missing).
    aet : str
        Our AE title.
    host : str
        Address to bind; 127.0.0.1 unless the demo needs otherwise.
    port : int
        0 picks a free port; read :attr:`port` after :meth:`start`.
    extra_sop_classes : iterable of str, optional
        SOP classes to accept besides the standard storage classes (private
        classes in tests).
    status : int
        The C-STORE status to answer (0x0000; tests may ask for others).
    """

    def __init__(
        self,
        out_dir: str | Path,
        aet: str = "PDIRECV",
        host: str = "127.0.0.1",
        port: int = 0,
        extra_sop_classes: Iterable[str] = (),
        status: int = 0x0000,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.aet = aet
        self.host = host
        self.port = port
        self.status = status
        self.extra_sop_classes = list(extra_sop_classes)
        self.received: list[Path] = []
        self.associations = 0
        self._lock = threading.Lock()
        self._server: ThreadedAssociationServer | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        """Bind and serve in the background; sets :attr:`port`."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.aet)
        ae.maximum_pdu_size = 0  # unlimited: fewer PDUs, fewer syscalls
        classes = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
        for uid in self.extra_sop_classes:
            _register_storage_class(uid)
        for uid in classes + self.extra_sop_classes:
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)  # C-ECHO, for echoscu and probes
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_conn_open),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_C_STORE, self._on_store),
        ]
        server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)  # type: ignore[arg-type]  # evt constants are typed as plain tuples
        assert server is not None  # block=False returns the server
        self._server = server
        self.port = server.server_address[1]
        LOGGER.info("receiver %s listening on %s:%d", self.aet, self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ handlers
    @staticmethod
    def _on_conn_open(event: evt.Event) -> None:
        # Nagle against the SCU's delayed ACK costs ~40 ms per response
        # on loopback (measured: bench/bench_send.py, README Performance).
        from pdimport.send.compat import raw_socket

        sock = raw_socket(event.assoc)
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_established(self, event: evt.Event) -> None:
        with self._lock:
            self.associations += 1

    def _on_store(self, event: evt.Event) -> int:
        """PS3.4 B.2.2: store the object, answer a status."""
        data = event.encoded_dataset()  # preamble + meta + the bytes as sent
        uid = str(event.request.AffectedSOPInstanceUID or "")  # type: ignore[union-attr]  # EVT_C_STORE: a C-STORE request
        name = safe_name(uid, hashlib.sha256(data).hexdigest())
        target = self.out_dir / f"{name}.dcm"
        try:
            _write_atomic(target, data)
        except OSError as exc:
            LOGGER.error("receiver: cannot write %s: %s", target.name, exc)
            return 0xA700  # out of resources
        with self._lock:
            self.received.append(target)
        return self.status


def _register_storage_class(uid: str) -> None:
    """Let pynetdicom route C-STORE requests of a private SOP class to the
    Storage service (its registry is process-wide; registering twice is
    harmless)."""
    if uid_to_service_class(uid) is not StorageServiceClass:
        register_uid(uid, "PdimportPrivate_" + uid.replace(".", "_"), StorageServiceClass)


def _write_atomic(target: Path, data: bytes) -> None:
    write_bytes(target, data)
