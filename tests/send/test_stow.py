"""STOW-RS delivery (``dicomweb+http(s)://``) against a real Orthanc with its
DICOMweb plugin and authentication on (fixtures_peers.orthanc_web), plus the
wire format's pure parts (multipart body, response module) on their own.

Orthanc counts what it receives through a Lua ``ReceivedInstanceFilter``
that appends each SOP Instance UID to a file: every instance that reaches
it, stored before or not, whatever pdimport says about it.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pydicom
import pytest
from fixtures_dicom import make_ct
from fixtures_peers import ORTHANC_USER, free_port
from fixtures_tls import make_tls_files
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from test_send import CT, J2K, JPEG_LOSSY, RLE, make_item

from pdimport.model import SendItem, SendOutcome
from pdimport.send import WebDest, deliver, parse_dest
from pdimport.web import multipart
from pdimport.web.multipart import CHUNK, MultipartBody, Part

COUNT_LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
  local f = io.open('{log}', 'a')
  f:write(dicom.SOPInstanceUID, '\\n')
  f:close()
  return true
end
"""


# ----------------------------------------------------------------- helpers
def counted(orthanc_web, tmp_path: Path, **kwargs):
    """An Orthanc+DICOMweb that logs each instance it receives; (peer, log)."""
    log = tmp_path / f"received-{len(list(tmp_path.glob('count-*.lua')))}.txt"
    log.touch()
    script = tmp_path / f"count-{len(list(tmp_path.glob('count-*.lua')))}.lua"
    script.write_text(COUNT_LUA.format(log=log))
    return orthanc_web(extra={"LuaScripts": [str(script)]}, **kwargs), log


def received(log: Path) -> list[str]:
    return log.read_text().split()


def secret(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


def basic(cfg, tmp_path: Path, password: str = ORTHANC_USER[1]):
    return cfg.replace(
        web__auth="basic",
        web__username=ORTHANC_USER[0],
        web__password_file=secret(tmp_path, "password", password),
    )


def run(url: str, items: list[SendItem], settings, tmp_path: Path) -> dict[str, SendOutcome]:
    got: dict[str, SendOutcome] = {}

    def on_outcome(out: SendOutcome) -> None:
        assert out.key not in got, f"two outcomes for {out.key}"
        got[out.key] = out

    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    deliver(parse_dest(url), items, settings, on_outcome, work)
    assert set(got) == {i.key for i in items}
    return got


def stored(peer, uid: str) -> pydicom.Dataset:
    """The instance as Orthanc returns it (its stored file)."""
    found = json.loads(peer.request("POST", "/tools/lookup", uid.encode()))
    (hit,) = [f for f in found if f["Type"] == "Instance"]
    from io import BytesIO

    return pydicom.dcmread(BytesIO(peer.request("GET", f"/instances/{hit['ID']}/file")))


def ct_items(tmp_path: Path, n: int, rows: int = 64, **attrs) -> list[SendItem]:
    study, series = generate_uid(), generate_uid()
    items = []
    for k in range(n):
        path = make_ct(
            tmp_path / "spool" / f"ct{k}-{generate_uid()}.dcm",
            study_uid=study,
            series_uid=series,
            number=k + 1,
            rows=rows,
            cols=rows,
            **attrs,
        )
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        items.append(
            SendItem(
                f"key-{ds.SOPInstanceUID}",
                path,
                str(ds.SOPClassUID),
                str(ds.SOPInstanceUID),
                str(ds.file_meta.TransferSyntaxUID),
                path.stat().st_size,
            )
        )
    return items


def posts(peer_root: Path) -> int:
    """STOW-RS requests nginx passed on (its access log)."""
    lines = (peer_root / "nginx" / "access.log").read_text().splitlines()
    return sum(1 for line in lines if '"POST /dicom-web/studies ' in line)


# ------------------------------------------------------------ destinations
@pytest.mark.parametrize(
    "url, key, base",
    [
        (
            "dicomweb+http://127.0.0.1:8042/dicom-web",
            "dicomweb+http://127.0.0.1:8042/dicom-web",
            "http://127.0.0.1:8042/dicom-web",
        ),
        (
            "DICOMweb+HTTPS://PACS.Example.org/dicom-web//?batch=5",
            "dicomweb+https://pacs.example.org:443/dicom-web",
            "https://pacs.example.org:443/dicom-web",
        ),
        ("dicomweb+http://[::1]/", "dicomweb+http://[::1]:80", "http://[::1]:80"),
    ],
)
def test_parse_web_dest_normalises_key(url: str, key: str, base: str) -> None:
    dest = parse_dest(url)
    assert isinstance(dest, WebDest)
    assert (dest.key, dest.base_url) == (key, base)


def test_parse_web_dest_options() -> None:
    dest = parse_dest("dicomweb+http://h/x?batch=7&connections=2&syntaxes=uncompressed")
    assert dest == WebDest("http", "h", 80, "/x", batch=7, connections=2, syntaxes="uncompressed")
    assert dest.key == "dicomweb+http://h:80/x"  # options change how, not where


@pytest.mark.parametrize(
    "url",
    [
        "dicomweb+http://h/../x",
        "dicomweb+http://h/a%2F..",
        "dicomweb+http://h:99999/",
        "dicomweb+http:///x",
        "dicomweb+http://h/x?foo=1",
        "dicomweb+http://h/x?batch=0",
        "dicomweb+http://h/x?syntaxes=jpeg",
        "dicomweb+http://h/x#frag",
        "dicomweb+ftp://h/x",
    ],
)
def test_parse_web_dest_refuses(url: str) -> None:
    with pytest.raises(ValueError, match="destination"):
        parse_dest(url)


def test_credentials_in_the_url_are_refused_and_not_echoed() -> None:
    with pytest.raises(ValueError) as e:
        parse_dest("dicomweb+https://alice:hunter2@pacs/dicom-web")
    assert "hunter2" not in str(e.value) and "web.auth" in str(e.value)


# ------------------------------------------------------------- wire format
def test_body_is_crlf_multipart_of_the_original_bytes(tmp_path) -> None:
    items = ct_items(tmp_path, 3, rows=400)  # ~320 kB each: several chunks
    parts = [Part(i, i.path, i.transfer_syntax) for i in items]
    body = MultipartBody(parts)
    data = b"".join(body)
    assert len(data) == len(body)  # the Content-Length we announce
    assert data.endswith(f"\r\n--{body.boundary}--\r\n".encode())
    assert data.count(b"\r\n--" + body.boundary.encode()) == 3  # delimiters after part 1
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {body.content_type}\r\n\r\n".encode() + data
    )
    got = [p.get_payload(decode=True) for p in msg.iter_parts()]
    assert got == [i.path.read_bytes() for i in items]
    assert all(p.get_content_type() == "application/dicom" for p in msg.iter_parts())
    # bounded memory: never more than one chunk (or one part header) at a time
    assert sum(i.size for i in items) > 10 * CHUNK
    assert body.peak <= CHUNK
    assert b"".join(body) == data  # iterable again (an OAuth 2.0 resend after 401)


@pytest.mark.parametrize("offset", [100, CHUNK - 5])  # inside a chunk, across two
def test_boundary_in_the_data_is_never_sent(tmp_path, offset) -> None:
    boundary = "0123456789abcdef0123456789abcdef"
    path = tmp_path / "x.dcm"
    data = bytearray(b"\0" * (2 * CHUNK))
    data[offset : offset + len(boundary)] = boundary.encode()
    path.write_bytes(bytes(data))
    item = SendItem("k", path, "1.2", "1.2.3", ExplicitVRLittleEndian, len(data))
    with pytest.raises(multipart.BoundaryInData):
        b"".join(MultipartBody([Part(item, path, item.transfer_syntax)], boundary))


def _sop(uid: str, **extra) -> dict:
    item = {multipart.REFERENCED_SOP_INSTANCE_UID: {"vr": "UI", "Value": [uid]}}
    for tag, value in extra.items():
        item[tag] = {"vr": "US", "Value": [value]}
    return item


def test_outcomes_come_from_the_response_module_not_the_status(tmp_path) -> None:
    names = ["ok", "warned", "busy", "bad", "silent", "hexbad"]
    parts = [
        Part(
            SendItem(f"key-{n}", tmp_path, "1.2", f"1.2.{k}", ExplicitVRLittleEndian), tmp_path, ""
        )
        for k, n in enumerate(names)
    ]
    doc = {
        multipart.REFERENCED_SOP_SEQUENCE: {
            "vr": "SQ",
            "Value": [_sop("1.2.0"), _sop("1.2.1", **{multipart.WARNING_REASON: 0xB000})],
        },
        multipart.FAILED_SOP_SEQUENCE: {
            "vr": "SQ",
            "Value": [
                _sop("1.2.2", **{multipart.FAILURE_REASON: 0xA700}),
                _sop("1.2.3", **{multipart.FAILURE_REASON: 0xC000}),
                _sop("1.2.5", **{multipart.FAILURE_REASON: "0110"}),  # Orthanc 1.x spells hex
            ],
        },
    }
    got = {o.key: o for o in multipart.outcomes(parts, 200, doc)}  # 200, and still failures
    assert (got["key-ok"].state, got["key-ok"].code) == ("sent", "")
    assert (got["key-warned"].state, got["key-warned"].code) == ("sent", "store_warning")
    assert got["key-warned"].status == 0xB000
    assert (got["key-busy"].state, got["key-busy"].status) == ("retry", 0xA700)
    assert (got["key-bad"].state, got["key-bad"].code) == ("failed", "store_failed")
    assert "0xC000 cannot understand" in got["key-bad"].detail
    assert (got["key-hexbad"].state, got["key-hexbad"].status) == ("failed", 0x0110)
    assert (got["key-silent"].state, got["key-silent"].code) == ("unknown", "outcome_unknown")
    # no body at all, whatever the status: nothing is known
    assert {o.state for o in multipart.outcomes(parts, 200, multipart.parse_response(b""))} == {
        "unknown"
    }
    assert multipart.parse_response(b"<html>busy</html>") == {}


# ------------------------------------------------------------ real Orthanc
def test_uncompressed_and_compressed_disc_to_orthanc(orthanc_web, cfg, tmp_path) -> None:
    peer, log = counted(orthanc_web, tmp_path)
    items = ct_items(tmp_path, 5) + [make_item(tmp_path, n) for n in (CT, RLE, J2K, JPEG_LOSSY)]
    got = run(peer.web_url + "?batch=3", items, basic(cfg, tmp_path), tmp_path)
    assert {o.state for o in got.values()} == {"sent"}, got
    assert sorted(received(log)) == sorted(i.sop_instance_uid for i in items)
    for item in items:
        ds = stored(peer, item.sop_instance_uid)
        source = pydicom.dcmread(item.path)
        assert ds.file_meta.TransferSyntaxUID == item.transfer_syntax  # as it was
        assert (ds.pixel_array == source.pixel_array).all()
        assert got[item.key].transfer_syntax == item.transfer_syntax
        assert got[item.key].converted_path is None


def test_uncompressed_only_destination_gets_decoded_copies(orthanc_web, cfg, tmp_path) -> None:
    peer, log = counted(orthanc_web, tmp_path)
    items = [make_item(tmp_path, n) for n in (CT, RLE, J2K, JPEG_LOSSY)]
    url = peer.web_url + "?syntaxes=uncompressed"
    got = run(url, items, basic(cfg, tmp_path), tmp_path)
    assert {o.state for o in got.values()} == {"sent"}, got
    for item in items:
        ds = stored(peer, item.sop_instance_uid)
        source = pydicom.dcmread(item.path)
        assert ds.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, item.transfer_syntax)
        if item.transfer_syntax != ExplicitVRLittleEndian:
            assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert got[item.key].converted_path is not None
        assert ds.PhotometricInterpretation in ("RGB", "MONOCHROME2")
        assert (ds.pixel_array == source.pixel_array).all()
    assert len(received(log)) == len(items)


def test_rejected_instance_is_failed_with_its_reason(orthanc_web, cfg, tmp_path) -> None:
    """Orthanc refuses an instance without Series Instance UID (it cannot
    index it) and answers HTTP 400 for the request, although it stored the
    other two: only the response module tells which is which."""
    peer, _ = counted(orthanc_web, tmp_path)
    good = ct_items(tmp_path, 2)
    (bad,) = ct_items(tmp_path, 1)
    ds = pydicom.dcmread(bad.path)
    del ds.SeriesInstanceUID
    ds.save_as(bad.path)
    bad = SendItem(bad.key, bad.path, bad.sop_class_uid, bad.sop_instance_uid,
                   bad.transfer_syntax, bad.path.stat().st_size)  # fmt: skip
    got = run(peer.web_url, [good[0], bad, good[1]], basic(cfg, tmp_path), tmp_path)
    assert got[bad.key].state == "failed" and got[bad.key].code == "store_failed"
    assert got[bad.key].status == 0xC000
    assert "FailureReason 0xC000 cannot understand (HTTP 400)" in got[bad.key].detail
    assert [got[g.key].state for g in good] == ["sent", "sent"]
    assert peer.get("/statistics")["CountInstances"] == 2


def test_batches_by_count_and_by_size(orthanc_web, cfg, tmp_path) -> None:
    peer = orthanc_web(bearer="tok-batches")
    root = tmp_path / "orthanc-web-0"
    settings = cfg.replace(web__auth="bearer", web__token_file=secret(tmp_path, "t", "tok-batches"))
    got = run(peer.web_url + "?batch=3", ct_items(tmp_path, 7), settings, tmp_path)
    assert {o.state for o in got.values()} == {"sent"}
    assert posts(root) == 3  # 3 + 3 + 1
    big = ct_items(tmp_path, 4, rows=600)  # ~720 kB each: one a request under 1 MB
    got = run(peer.web_url, big, settings.replace(web__stow_batch_mb=1), tmp_path)
    assert {o.state for o in got.values()} == {"sent"}
    assert posts(root) == 3 + 4
    assert peer.get("/statistics")["CountInstances"] == 11


def test_wrong_password_is_auth_refused(orthanc_web, cfg, tmp_path) -> None:
    peer, log = counted(orthanc_web, tmp_path)
    items = ct_items(tmp_path, 4)
    got = run(peer.web_url + "?batch=1", items, basic(cfg, tmp_path, "wrong"), tmp_path)
    assert {(o.state, o.code) for o in got.values()} == {("failed", "auth_refused")}
    assert "HTTP 401" in got[items[0].key].detail
    assert received(log) == []


def test_missing_secret_file_fails_with_a_clear_detail(cfg, tmp_path) -> None:
    settings = cfg.replace(web__auth="bearer", web__token_file=str(tmp_path / "absent"))
    got = run(
        f"dicomweb+http://127.0.0.1:{free_port()}/x", ct_items(tmp_path, 1), settings, tmp_path
    )
    (out,) = got.values()
    assert out.state == "failed" and "web.token_file" in out.detail


def test_unreachable_server_is_retry(cfg, tmp_path) -> None:
    got = run(f"dicomweb+http://127.0.0.1:{free_port()}/x", ct_items(tmp_path, 3), cfg, tmp_path)
    assert {(o.state, o.code) for o in got.values()} == {("retry", "association_failed")}


def test_bearer_token(orthanc_web, cfg, tmp_path) -> None:
    peer = orthanc_web(bearer="tok-XYZ")
    items = ct_items(tmp_path, 2)
    settings = cfg.replace(web__auth="bearer", web__token_file=secret(tmp_path, "t", "tok-XYZ"))
    assert {o.state for o in run(peer.web_url, items, settings, tmp_path).values()} == {"sent"}
    wrong = cfg.replace(web__auth="bearer", web__token_file=secret(tmp_path, "t2", "tok-bad"))
    got = run(peer.web_url, ct_items(tmp_path, 1), wrong, tmp_path)
    assert {o.code for o in got.values()} == {"auth_refused"}


class JsonHandler(BaseHTTPRequestHandler):
    """The part of a stand-in's request handler that answers JSON, quietly."""

    def answer(self, status: int, doc: object, content_type: str = "application/json") -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


class LocalServer:
    """A real HTTP server on 127.0.0.1 in a thread, for a thin stand-in."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = HTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class TokenEndpoint(LocalServer):
    """A thin stand-in for an OAuth 2.0 authorization server's token
    endpoint (RFC 6749 4.4), on a real HTTP server on 127.0.0.1: it checks
    the client's id and secret (HTTP Basic, 2.3.1) and the grant type, and
    issues the one token the nginx gate in front of Orthanc admits. No
    OAuth server installs from the registries here."""

    def __init__(self, client_id: str, client_secret: str, token: str) -> None:
        outer = self
        self.requests: list[dict[str, list[str]]] = []

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                form = urllib.parse.parse_qs(
                    self.rfile.read(int(self.headers["Content-Length"])).decode()
                )
                outer.requests.append(form)
                pair = f"{client_id}:{client_secret}".encode()
                ok = (
                    self.path == "/token"
                    and self.headers.get("Authorization")
                    == "Basic " + base64.b64encode(pair).decode()
                    and form.get("grant_type") == ["client_credentials"]
                )
                body = (
                    {"access_token": token, "token_type": "Bearer", "expires_in": 300}
                    if ok
                    else {"error": "invalid_client"}
                )
                self.answer(200 if ok else 401, body)

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}/token"


def test_oauth2_client_credentials(orthanc_web, cfg, tmp_path) -> None:
    peer = orthanc_web(bearer="issued-token-42")
    endpoint = TokenEndpoint("station-7", "cl1ent-secret", "issued-token-42")
    try:
        settings = cfg.replace(
            web__auth="oauth2",
            web__oauth_token_url=endpoint.url,
            web__oauth_client_id="station-7",
            web__oauth_client_secret_file=secret(tmp_path, "cs", "cl1ent-secret"),
        )
        got = run(peer.web_url + "?batch=2", ct_items(tmp_path, 5), settings, tmp_path)
        assert {o.state for o in got.values()} == {"sent"}
        # one token for the three requests (kept until it expires)
        assert len(endpoint.requests) == 1
        wrong = settings.replace(web__oauth_client_secret_file=secret(tmp_path, "cs2", "nope"))
        got = run(peer.web_url, ct_items(tmp_path, 2), wrong, tmp_path)
        assert {(o.state, o.code) for o in got.values()} == {("failed", "auth_refused")}
        assert "token endpoint answered 401" in next(iter(got.values())).detail
    finally:
        endpoint.stop()
    assert peer.get("/statistics")["CountInstances"] == 5


def test_https_with_client_certificate(orthanc_web, cfg, tmp_path, tls_files) -> None:
    peer = orthanc_web(tls=tls_files, client_cert=True)
    settings = basic(cfg, tmp_path).replace(
        web__ca_bundle=str(tls_files.ca),
        web__client_cert=str(tls_files.client_cert),
        web__client_key=str(tls_files.client_key),
    )
    assert peer.web_url.startswith("dicomweb+https://")
    got = run(peer.web_url, ct_items(tmp_path, 3), settings, tmp_path)
    assert {o.state for o in got.values()} == {"sent"}
    assert peer.get("/statistics")["CountInstances"] == 3


def test_https_with_a_wrong_ca_is_tls_failed(orthanc_web, cfg, tmp_path, tls_files) -> None:
    peer = orthanc_web(tls=tls_files, client_cert=True)
    other = make_tls_files(tmp_path / "other-ca")
    settings = basic(cfg, tmp_path).replace(
        web__ca_bundle=str(other.ca),
        web__client_cert=str(tls_files.client_cert),
        web__client_key=str(tls_files.client_key),
    )
    got = run(peer.web_url + "?batch=1", ct_items(tmp_path, 3), settings, tmp_path)
    assert {(o.state, o.code) for o in got.values()} == {("failed", "tls_failed")}
    detail = next(iter(got.values())).detail
    assert "certificate not verified" in detail and "web.ca_bundle" in detail, detail
    assert peer.get("/statistics")["CountInstances"] == 0


RSS_PROBE = """
import json, resource, sys
from pathlib import Path
from pdimport import settings
from pdimport.model import SendItem
from pdimport.send import deliver, parse_dest
import pdimport.web.stow, httpx, pydicom  # imported before the baseline

args = json.loads(Path(sys.argv[1]).read_text())
items = [SendItem(**{**i, "path": Path(i["path"])}) for i in args["items"]]
cfg = settings.defaults().replace(state_dir=args["state"], web__auth="basic",
    web__username=args["user"], web__password_file=args["password"],
    web__stow_batch_mb=1024, web__stow_batch_files=1000)
out = []
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
deliver(parse_dest(args["url"]), items, cfg, out.append, Path(args["state"]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "after_kb": after, "states": [o.state for o in out]}))
"""


def test_one_large_request_is_streamed_in_bounded_memory(orthanc_web, tmp_path) -> None:
    """30 instances of 4 MB in one request: the sender's peak RSS grows by
    far less than the 126 MB it posts (the body is read from the spool as
    it goes out, never held whole)."""
    import subprocess
    import sys

    peer = orthanc_web()
    items = ct_items(tmp_path, 30, rows=1448)
    payload = sum(i.size for i in items)
    args = tmp_path / "args.json"
    args.write_text(
        json.dumps(
            {
                "items": [{**i.__dict__, "path": str(i.path)} for i in items],
                "state": str(tmp_path / "state"),
                "url": peer.web_url,
                "user": ORTHANC_USER[0],
                "password": secret(tmp_path, "password", ORTHANC_USER[1]),
            }
        )
    )
    (tmp_path / "state").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    probe = json.loads(done.stdout)
    assert probe["states"] == ["sent"] * len(items)
    grew = (probe["after_kb"] - probe["before_kb"]) * 1024
    print(f"posted {payload / 1e6:.0f} MB in one request; peak RSS grew {grew / 1e6:.1f} MB")
    assert payload > 120e6
    assert grew < payload / 5


def test_https_without_our_client_certificate_is_failed_with_the_reason(
    orthanc_web, cfg, tmp_path, tls_files
) -> None:
    """nginx answers 400 with an HTML page and no Store Instances Response:
    failed at once (not resent within the delivery), its words in the detail."""
    peer = orthanc_web(tls=tls_files, client_cert=True)
    settings = basic(cfg, tmp_path).replace(web__ca_bundle=str(tls_files.ca))
    got = run(peer.web_url, ct_items(tmp_path, 2), settings, tmp_path)
    assert {(o.state, o.code) for o in got.values()} == {("failed", "store_failed")}
    detail = next(iter(got.values())).detail
    assert "HTTP 400 without a Store Instances Response" in detail
    assert "No required SSL certificate was sent" in detail, detail
