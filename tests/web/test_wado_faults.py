"""A DICOMweb peer that misbehaves on purpose (pynetdicom's parrot idea): a
real HTTP server on 127.0.0.1 that answers QIDO-RS and WADO-RS from files,
and breaks a retrieve off mid-instance or answers a body that is not
multipart. Orthanc cannot be told to do either."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from fixtures_dicom import make_ct_series
from pydicom import dcmread

from pdimport.cli import main

BOUNDARY = "parrot-boundary"


class Parrot(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: list[Path]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.instances = {}
        for path in files:
            ds = dcmread(path, stop_before_pixels=True)
            self.instances[str(ds.SOPInstanceUID)] = (str(ds.SeriesInstanceUID), path.read_bytes())
        self.study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        #: SOP Instance UID -> retrieves still to break off after half the bytes
        self.breaks: dict[str, int] = {}
        #: SOP Instance UIDs answered with a body that is not multipart
        self.garbage: set[str] = set()
        self.retrieves: list[str] = []
        #: (offset, limit) of each QIDO-RS request
        self.searches: list[tuple[int, int]] = []
        #: a QIDO-RS answer to give instead of the listing
        self.qido_body = b""

    @property
    def url(self) -> str:
        return f"dicomweb+http://127.0.0.1:{self.server_address[1]}/dw/studies/{self.study}"


class _Handler(BaseHTTPRequestHandler):
    server: Parrot
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path.endswith("/instances"):
            listing = [
                {"00080018": {"vr": "UI", "Value": [sop]}, "0020000E": {"vr": "UI", "Value": [se]}}
                for sop, (se, _data) in self.server.instances.items()
            ]
            query = dict(parse_qsl(urlsplit(self.path).query))
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", 1000))
            self.server.searches.append((offset, limit))
            body = self.server.qido_body or json.dumps(listing[offset : offset + limit]).encode()
            self._send(200, "application/dicom+json", body)
            return
        sop = path.rsplit("/", 1)[-1]
        self.server.retrieves.append(sop)
        _series, data = self.server.instances[sop]
        if sop in self.server.garbage:
            self._send(200, "text/html", b"<html>maintenance</html>")
            return
        part = (
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + data
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
        ctype = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
        if self.server.breaks.get(sop, 0) > 0:
            self.server.breaks[sop] -= 1
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            self.close_connection = True  # the peer goes away mid-instance
            return
        self._send(200, ctype, part)

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def parrot(tmp_path: Path) -> Iterator[Parrot]:
    files = make_ct_series(tmp_path / "series", 4, patient_id="PARROT", rows=128, cols=128)
    server = Parrot(files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _import(
    parrot: Parrot, tmp_path: Path, capsys, retries: int = 3, extra: str = ""
) -> tuple[int, dict]:
    cfg = tmp_path / "pdimport.toml"
    cfg.write_text(f"[intake]\nwado_retries = {retries}\n{extra}")
    rc = main(
        [
            "import", parrot.url, "--dest", f"file://{tmp_path}/out", "--config", str(cfg),
            "--state-dir", str(tmp_path / "state"), "--json",
        ]
    )  # fmt: skip
    return rc, json.loads(capsys.readouterr().out)


def _received(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            out[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    return out


def test_a_retrieve_broken_off_is_taken_up_again(parrot, tmp_path, capsys):
    victim = sorted(parrot.instances)[1]
    parrot.breaks[victim] = 2
    rc, rep = _import(parrot, tmp_path, capsys, retries=3)
    assert rc == 0, rep["problems"]
    assert parrot.retrieves.count(victim) == 3
    got = _received(tmp_path)
    assert got.keys() == parrot.instances.keys()
    # the copy delivered holds the same dataset as the one served
    assert (
        dcmread(got[victim]).PixelData == dcmread(io.BytesIO(parrot.instances[victim][1])).PixelData
    )


def test_a_peer_gone_for_good_leaves_a_partial_job_that_a_second_import_completes(
    parrot, tmp_path, capsys
):
    victim = sorted(parrot.instances)[2]
    parrot.breaks[victim] = 2
    rc, rep = _import(parrot, tmp_path, capsys, retries=1)
    assert rc == 1 and rep["status"] == "partial"
    [problem] = [p for p in rep["problems"] if p["code"] == "remote_unreachable"]
    assert victim in problem["path"]
    assert _received(tmp_path).keys() == parrot.instances.keys() - {victim}
    rc, again = _import(parrot, tmp_path, capsys, retries=1)
    assert rc == 0, again["problems"]
    assert _received(tmp_path).keys() == parrot.instances.keys()
    assert again["counts"]["already_sent"] == 3


def test_an_answer_that_is_not_multipart_is_a_problem_the_rest_arrives(parrot, tmp_path, capsys):
    victim = min(parrot.instances)
    parrot.garbage.add(victim)
    rc, rep = _import(parrot, tmp_path, capsys, retries=3)
    assert rc == 1
    codes = {p["code"] for p in rep["problems"]}
    assert "multipart_malformed" in codes
    assert _received(tmp_path).keys() == parrot.instances.keys() - {victim}


def test_a_read_stopped_midway_resumes_without_retrieving_again(parrot, tmp_path):
    """The daemon stops after two instances (its reads raise Interrupted);
    the next start resumes the job and retrieves only the two left."""
    from pdimport.appliance.daemon import CancellableMedium
    from pdimport.job.importer import Importer
    from pdimport.job.lifecycle import Interrupted
    from pdimport.settings import load

    cfg = load(overrides={"state_dir": str(tmp_path / "state"), "dest": [f"file://{tmp_path}/o"]})
    stop = threading.Event()

    class StopAfterTwo(CancellableMedium):
        def open(self, entry):
            if len(parrot.retrieves) >= 2:
                stop.set()
            return super().open(entry)

    importer = Importer(cfg, stop=stop)
    try:
        with pytest.raises(Interrupted):
            importer.read_source(parrot.url, wrap=lambda m: StopAfterTwo(m, stop))
        assert len(parrot.retrieves) == 2
        stop.clear()
        job = importer.read_source(parrot.url)
        assert job.read_complete or importer.journal.job(job.id).read_complete
        assert sorted(parrot.retrieves) == sorted(parrot.instances)  # each retrieved once
        result = importer.process(job.id, [])
        assert result.report["counts"]["dicom"] == 4
    finally:
        importer.close()


def test_the_listing_is_paged(parrot, tmp_path, capsys):
    rc, rep = _import(parrot, tmp_path, capsys, extra="qido_page_size = 3\n")
    assert rc == 0, rep["problems"]
    assert parrot.searches == [(0, 3), (3, 3)]
    assert _received(tmp_path).keys() == parrot.instances.keys()


@pytest.mark.parametrize(
    "body",
    [b"<html>not json</html>", b'{"00080018": {}}', b"[1, 2]"],
)
def test_a_search_answer_that_is_not_dicom_json_fails_the_job(parrot, tmp_path, capsys, body):
    parrot.qido_body = body
    rc, rep = _import(parrot, tmp_path, capsys)
    assert rc == 2
    assert [p["code"] for p in rep["problems"]] == ["remote_answer_invalid"]
    assert parrot.retrieves == []


def test_listed_instances_with_hostile_uids_are_skipped(parrot, tmp_path, capsys):
    listing = [
        {"00080018": {"vr": "UI", "Value": [sop]}, "0020000E": {"vr": "UI", "Value": [se]}}
        for sop, (se, _data) in parrot.instances.items()
    ]
    listing.append({"00080018": {"vr": "UI", "Value": ["../../etc/passwd"]}})
    listing.append({"00080018": {"vr": "UI", "Value": ["1.2.3"]}, "0020000E": {"Value": [{}]}})
    parrot.qido_body = json.dumps(listing).encode()
    rc, rep = _import(parrot, tmp_path, capsys)
    assert rc == 1  # the rest is imported, and a person reads why something is missing
    assert [p["code"] for p in rep["problems"]] == ["remote_answer_invalid"] * 2
    assert _received(tmp_path).keys() == parrot.instances.keys()


def test_more_instances_than_max_files_are_too_large(parrot, tmp_path, capsys):
    rc, rep = _import(parrot, tmp_path, capsys, extra="[limits]\nmax_files = 3\n")
    assert rc == 1 and rep["status"] == "partial"
    assert [p["code"] for p in rep["problems"]] == ["too_large"]
    assert len(_received(tmp_path)) == 3


def test_scan_of_a_remote_study_sends_nothing(parrot, tmp_path, capsys):
    rc = main(["scan", parrot.url, "--state-dir", str(tmp_path / "state"), "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == 0, rep["problems"]
    assert rep["source"]["kind"] == "dicomweb" and rep["counts"]["dicom"] == 4
    assert not (tmp_path / "out").exists()
