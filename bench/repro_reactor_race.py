"""Reproduce the pynetdicom 3.0.4 reactor race with stock pynetdicom.

No pdimport code is involved: a plain pynetdicom SCU (with TCP_NODELAY set on
its socket, so responses come back fast) sends small CT instances with
``send_c_store`` to dcmtk's storescp (``TCP_NODELAY=1``, ``--ignore``) on
127.0.0.1, until the race hits or N stores are done. When it hits, pynetdicom
logs "Received unexpected C-STORE service message", ``send_c_store`` waits
``dimse_timeout`` and returns an empty Dataset, and the association is
aborted.

Run: ``python bench/repro_reactor_race.py [N=20000]``; exit status 0 when
reproduced, 1 when N stores went through.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

_config.STORE_SEND_CHUNKED_DATASET = True


class _Unexpected(logging.Handler):
    count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "unexpected" in record.getMessage().lower():
            _Unexpected.count += 1


def _nodelay_ae() -> AE:
    from pynetdicom import transport

    original = transport.AssociationSocket._create_socket

    def create(self, address):  # type: ignore[no-untyped-def]
        sock = original(self, address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    transport.AssociationSocket._create_socket = create
    ae = AE(ae_title="REPRO")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    ae.dimse_timeout = 5
    return ae


def main(total: int) -> int:
    from test_send_load import write_ct

    logging.getLogger("pynetdicom").addHandler(_Unexpected())
    folder = Path(tempfile.mkdtemp(prefix="race-"))
    path = write_ct(folder / "ct.dcm").path
    port = 11000 + os.getpid() % 1000
    env = dict(os.environ, TCP_NODELAY="1")
    scp = subprocess.Popen(["/usr/bin/storescp", "--ignore", str(port)], env=env)
    time.sleep(0.5)
    try:
        assoc = _nodelay_ae().associate("127.0.0.1", port)
        for n in range(total):
            status = assoc.send_c_store(path, msg_id=n % 0xFFFF + 1)
            if "Status" not in status:
                print(f"reproduced after {n} stores: no status, association aborted="
                      f"{assoc.is_aborted}; 'unexpected' warnings: {_Unexpected.count}")
                return 0
        assoc.release()
        print(f"not reproduced in {total} stores")
        return 1
    finally:
        scp.terminate()
        scp.wait()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
