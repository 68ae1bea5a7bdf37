"""A STOW-RS server that refuses a transfer syntax (FailureReason 0xC122).

Orthanc stores every syntax, and no other DICOMweb server installs here, so
this one peer is a thin stand-in on a real HTTP server on 127.0.0.1: it reads
the multipart body with the standard library's MIME parser, refuses the
syntaxes it is told to (0xC122, PS3.18 Table 10.5.3-3) and references the
rest, as a PACS that takes only uncompressed images answers. Everything else
(the decode pool, the journal semantics) is the real code.
"""

from __future__ import annotations

import email.parser
import email.policy
import io

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from test_send import CT, J2K, RLE, make_item
from test_stow import JsonHandler, LocalServer, run

from pdimport.web import multipart


class RefusingStow(LocalServer):
    """Stores parts whose syntax is in ``takes``; fails the others with 0xC122."""

    def __init__(self, takes: tuple[str, ...]) -> None:
        outer = self
        self.received: list[tuple[str, str]] = []  # (SOP Instance UID, syntax)
        self.stored: dict[str, pydicom.Dataset] = {}

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + data
                )
                ok, failed = [], []
                for part in msg.iter_parts():
                    ds = pydicom.dcmread(io.BytesIO(part.get_payload(decode=True)))
                    uid, ts = str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID)
                    outer.received.append((uid, ts))
                    item = {multipart.REFERENCED_SOP_INSTANCE_UID: {"vr": "UI", "Value": [uid]}}
                    if ts in takes:
                        outer.stored[uid] = ds
                        ok.append(item)
                    else:
                        item[multipart.FAILURE_REASON] = {"vr": "US", "Value": [0xC122]}
                        failed.append(item)
                doc = {
                    multipart.REFERENCED_SOP_SEQUENCE: {"vr": "SQ", "Value": ok},
                    multipart.FAILED_SOP_SEQUENCE: {"vr": "SQ", "Value": failed},
                }
                self.answer(
                    202 if failed and ok else 409 if failed else 200, doc, "application/dicom+json"
                )

        super().__init__(Handler)
        self.url = f"dicomweb+http://127.0.0.1:{self.port}/rs"


@pytest.fixture
def refusing():
    servers: list[RefusingStow] = []

    def start(takes: tuple[str, ...]) -> RefusingStow:
        servers.append(RefusingStow(takes))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def test_refused_syntax_is_decoded_and_sent_again(refusing, cfg, tmp_path) -> None:
    server = refusing((ExplicitVRLittleEndian, ImplicitVRLittleEndian))
    items = [make_item(tmp_path, n) for n in (CT, J2K, RLE)]
    got = run(server.url, items, cfg, tmp_path)
    assert {o.state for o in got.values()} == {"sent"}, got
    for item in items:
        ds = server.stored[item.sop_instance_uid]
        assert (ds.pixel_array == pydicom.dcmread(item.path).pixel_array).all()
    ct, j2k, rle = items
    assert got[ct.key].converted_path is None
    for item in (j2k, rle):
        assert got[item.key].transfer_syntax == ExplicitVRLittleEndian
        assert got[item.key].converted_path is not None
    # each compressed one went twice: as it was (refused), then decoded
    assert sorted(server.received) == sorted(
        [(ct.sop_instance_uid, ct.transfer_syntax)]
        + [(i.sop_instance_uid, i.transfer_syntax) for i in (j2k, rle)]
        + [(i.sop_instance_uid, ExplicitVRLittleEndian) for i in (j2k, rle)]
    )


def test_a_server_that_refuses_every_syntax_fails_each_once(refusing, cfg, tmp_path) -> None:
    server = refusing(())
    items = [make_item(tmp_path, n) for n in (CT, J2K)]
    got = run(server.url, items, cfg, tmp_path)
    assert {(o.state, o.code, o.status) for o in got.values()} == {
        ("failed", "store_failed", 0xC122)
    }
    assert "0xC122 transfer syntax not supported" in got[items[0].key].detail
    assert len(server.received) == 3  # CT once; J2K as it was and decoded
