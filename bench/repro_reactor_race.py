"""Reproduce the pynetdicom 3.0.4 reactor race with stock pynetdicom.

No pdimport delivery code is involved: a plain pynetdicom SCU (its socket
with TCP_NODELAY, so responses come back fast; that socket shim and the
chunked-dataset switch come from :mod:`pdimport.send.compat`, where every
pynetdicom internal lives; pdimport's own C-STORE association does not use
pynetdicom, so nothing of it is involved) sends small CT instances with
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "daemon"))

from pdimport.send import compat


class _Unexpected(logging.Handler):
    count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "unexpected" in record.getMessage().lower():
            _Unexpected.count += 1


def _nodelay_ae() -> AE:
    compat.stream_datasets_from_files()
    ae = compat.StoreAE(ae_title="REPRO")
    ae.nodelay, ae.quickack = True, False
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
                print(
                    f"reproduced after {n} stores: no status, association aborted="
                    f"{assoc.is_aborted}; 'unexpected' warnings: {_Unexpected.count}"
                )
                return 0
        assoc.release()
        print(f"not reproduced in {total} stores")
        return 1
    finally:
        scp.terminate()
        scp.wait()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
