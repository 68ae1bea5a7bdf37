"""Cloud PDI end to end: a sender encrypts and uploads a package, makes the
token and its QR code; pdimport decrypts the token, downloads, verifies and
imports into a real storescp. Refused tokens deliver nothing."""

from __future__ import annotations

import base64
import io
import json
import stat
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cloudpdi_sender import Sender, make_token, qr_png, token_fields
from cryptography.hazmat.primitives.serialization import Encoding
from fixtures_cloudpdi import CLIENT_ID, CLIENT_SECRET
from fixtures_dicom import make_ct_series
from fixtures_media import make_zip

from pdimport.cli import main


def run(capsys: Any, *args: str) -> tuple[int, dict[str, Any]]:
    rc = main([*args, "--json"])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def pdi_zip(tmp_path: Path, n: int = 4) -> bytes:
    files = make_ct_series(tmp_path / "src" / "DICOM", n, patient_id="CLOUD01", name="IM{:04d}")
    members = {f"DICOM/{p.name}": p.read_bytes() for p in files}
    members["README.TXT"] = b"Cloud PDI test package\n"
    return make_zip(tmp_path / "package.zip", members, zipfile.ZIP_STORED).read_bytes()


@pytest.fixture
def sender(fhir_repo: Any) -> Any:
    s = Sender(fhir_repo.base, fhir_repo.token_url, CLIENT_ID, CLIENT_SECRET)
    yield s
    s.close()


def add(capsys: Any, appliance: Any, dest: str, *source: str) -> tuple[int, dict[str, Any]]:
    return run(
        capsys,
        "token",
        "add",
        *source,
        "--state-dir",
        str(appliance.state),
        "--config",
        str(appliance.config),
        "--dest",
        dest,
    )


def audit_records(state: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for f in sorted((state / "audit").glob("audit-*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def upload(tmp_path: Path, sender: Any, chunk: int = 16 << 10) -> Any:
    return sender.upload(pdi_zip(tmp_path), f"DOC-{uuid.uuid4().hex[:8]}", "pw-" + "x" * 20, chunk)


# ---------------------------------------------------------------- the whole chain
def test_token_file_imports_the_package_once(tmp_path, appliance, sender, storescp, capsys):
    up = upload(tmp_path, sender)
    assert len(up.chunk_ids) > 1  # really chunked
    token = tmp_path / "token.p7m"
    token.write_bytes(make_token(appliance.cert_pem, token_fields(up.document_id, up.password)))
    scp = storescp()
    rc, rep = add(capsys, appliance, scp.url, str(token))
    assert rc == 0, rep["problems"]
    assert rep["status"] == "imported"
    assert rep["counts"]["sent"] == 4
    assert len(scp.files()) == 4
    meta = rep["source"]["cloudpdi"]
    assert meta["document_id"] == up.document_id
    assert meta["sending_facility"] == "Minato General Hospital 港総合病院"
    assert meta["consent"] == "granted 2026-12-01"
    assert "password" not in json.dumps(rep)
    assert rep["source"]["kind"] == "netpdi"
    # the audit trail: the token's facts and the consent on the job's records
    records = [r for r in audit_records(appliance.state) if r.get("job") == rep["job"]]
    inserted = next(r for r in records if r["event"] == "medium_inserted")
    assert inserted["cloudpdi"]["sender"] == "Dr. Sato"
    assert inserted["cloudpdi"]["receiver"] == "Radiology, Kita University Hospital"
    finished = next(r for r in records if r["event"] == "job_finished")
    assert finished["consent"] == "granted 2026-12-01"
    assert up.password not in json.dumps(records)
    # the label
    from pdimport.label.content import label_content

    lines = [line.text for line in label_content(rep)]
    cloud = next(t for t in lines if t.startswith("クラウドPDI"))
    assert up.document_id in cloud and "Dr. Sato" in cloud and "granted 2026-12-01" in cloud
    assert any("Minato General Hospital" in t for t in lines)
    # the same token again: the same job, nothing downloaded or sent again
    rc, again = add(capsys, appliance, scp.url, str(token))
    assert rc == 0 and again["job"] == rep["job"]
    assert len(scp.files()) == 4


def test_pacs_down_then_the_same_token_again_resumes_the_job(
    tmp_path, appliance, sender, storescp, capsys
):
    from fixtures_peers import free_port

    up = upload(tmp_path, sender)
    token = tmp_path / "token.p7m"
    token.write_bytes(make_token(appliance.cert_pem, token_fields(up.document_id, up.password)))
    rc, first = add(capsys, appliance, f"dicom://NOBODY@127.0.0.1:{free_port()}", str(token))
    assert rc == 1 and first["status"] == "waiting_for_destination", first["problems"]
    scp = storescp()
    rc, second = add(capsys, appliance, scp.url, str(token))
    assert rc == 0 and second["job"] == first["job"]
    assert len(scp.files()) == 4


def test_token_text_on_stdin(tmp_path, appliance, sender, storescp, capsys, monkeypatch):
    up = upload(tmp_path, sender)
    der = make_token(appliance.cert_pem, token_fields(up.document_id, up.password))
    text = base64.b64encode(der).decode()
    wrapped = "\n".join(text[i : i + 76] for i in range(0, len(text), 76)) + "\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(wrapped.encode())))
    scp = storescp()
    rc, rep = add(capsys, appliance, scp.url, "-")
    assert rc == 0, rep["problems"]
    assert len(scp.files()) == 4


def test_token_from_qr_image(tmp_path, appliance, sender, storescp, capsys):
    up = upload(tmp_path, sender)
    der = make_token(appliance.cert_pem, token_fields(up.document_id, up.password))
    png = qr_png(base64.b64encode(der).decode(), tmp_path / "token.png")
    scp = storescp()
    rc, rep = add(capsys, appliance, scp.url, "--image", str(png))
    assert rc == 0, rep["problems"]
    assert len(scp.files()) == 4
    assert rep["source"]["cloudpdi"]["document_id"] == up.document_id


@pytest.mark.parametrize("encoding", [Encoding.PEM, Encoding.SMIME])
def test_pem_and_smime_tokens(tmp_path, appliance, sender, storescp, capsys, encoding):
    up = upload(tmp_path, sender, chunk=1 << 20)
    token = tmp_path / "token.txt"
    token.write_bytes(
        make_token(appliance.cert_pem, token_fields(up.document_id, up.password), encoding)
    )
    scp = storescp()
    rc, rep = add(capsys, appliance, scp.url, str(token))
    assert rc == 0, rep["problems"]
    assert len(scp.files()) == 4


# ---------------------------------------------------------------- refusals
def refused(rep: dict[str, Any], code: str) -> None:
    assert rep["status"] == "failed"
    assert [p["code"] for p in rep["problems"]] == [code]
    assert rep["counts"]["sent"] == 0


def add_refused(
    capsys: Any, tmp_path: Path, appliance: Any, scp: Any, token: bytes, code: str
) -> dict[str, Any]:
    """Add a token that must be refused with ``code``: exit 2, nothing delivered."""
    path = tmp_path / "token.p7m"
    path.write_bytes(token)
    rc, rep = add(capsys, appliance, scp.url, str(path))
    assert rc == 2
    refused(rep, code)
    assert scp.files() == []
    return rep


def test_tampered_chunk_is_refused(tmp_path, appliance, sender, storescp, capsys):
    up = upload(tmp_path, sender)
    sender.tamper(up.chunk_ids[1], b"\0" * up.manifest["chunks"][1]["size"])
    token = make_token(appliance.cert_pem, token_fields(up.document_id, up.password))
    rep = add_refused(capsys, tmp_path, appliance, storescp(), token, "chunk_tampered")
    assert "chunk 1" in rep["problems"][0]["detail"]
    assert "SHA-256" in rep["problems"][0]["detail"]  # caught by the manifest, before the tag
    assert rep["source"]["cloudpdi"]["document_id"] == up.document_id
    assert list((appliance.state / "cloudpdi" / "tmp").iterdir()) == []  # nothing half-made kept


def test_token_for_another_appliance_is_refused(tmp_path, appliance, sender, storescp, capsys):
    up = upload(tmp_path, sender)
    other = tmp_path / "other"
    assert main(["keys", "generate", "--state-dir", str(other)]) == 0
    capsys.readouterr()
    other_cert = (other / "cloudpdi" / "cert.pem").read_bytes()
    token = make_token(other_cert, token_fields(up.document_id, up.password))
    add_refused(capsys, tmp_path, appliance, storescp(), token, "token_undecryptable")


def test_expired_token_is_refused(tmp_path, appliance, sender, storescp, capsys):
    up = upload(tmp_path, sender)
    fields = token_fields(up.document_id, up.password, expires="2026-01-01T00:00:00Z")
    token = make_token(appliance.cert_pem, fields)
    add_refused(capsys, tmp_path, appliance, storescp(), token, "token_expired")


def test_unknown_document_and_wrong_password(tmp_path, appliance, sender, storescp, capsys):
    up = upload(tmp_path, sender)
    scp = storescp()
    token = make_token(appliance.cert_pem, token_fields("DOC-NOT-THERE", "pw"))
    add_refused(capsys, tmp_path, appliance, scp, token, "document_not_found")
    # a wrong password fails the first chunk's GCM tag
    token = make_token(appliance.cert_pem, token_fields(up.document_id, "wrong"))
    rep = add_refused(capsys, tmp_path, appliance, scp, token, "chunk_tampered")
    assert "chunk 0" in rep["problems"][0]["detail"] and "tag" in rep["problems"][0]["detail"]


def test_garbage_and_unreadable_qr_are_malformed(tmp_path, appliance, storescp, capsys):
    scp = storescp()
    junk = tmp_path / "junk.txt"
    junk.write_text("this is not a token!\n")
    rc, rep = add(capsys, appliance, scp.url, str(junk))
    assert rc == 2
    refused(rep, "token_malformed")
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("L", (64, 64), 255).save(blank)
    rc, rep = add(capsys, appliance, scp.url, "--image", str(blank))
    assert rc == 2
    refused(rep, "token_malformed")


def test_repository_refuses_without_oauth(tmp_path, appliance, sender, storescp, capsys):
    up = upload(tmp_path, sender)
    token = tmp_path / "token.p7m"
    token.write_bytes(make_token(appliance.cert_pem, token_fields(up.document_id, up.password)))
    config = tmp_path / "no-auth.toml"
    config.write_text(appliance.config.read_text().replace('auth = "oauth2"', 'auth = "none"'))
    scp = storescp()
    rc, rep = run(
        capsys, "token", "add", str(token), "--state-dir", str(appliance.state),
        "--config", str(config), "--dest", scp.url,
    )  # fmt: skip
    assert rc == 2
    refused(rep, "repository_unreachable")
    assert "401" in rep["problems"][0]["detail"]


# ---------------------------------------------------------------- keys
def test_keys_generate_and_show(tmp_path, capsys):
    state = tmp_path / "state"
    assert main(["keys", "generate", "--state-dir", str(state), "--subject", "pdimport test"]) == 0
    key = state / "cloudpdi" / "key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    first = key.read_bytes()
    capsys.readouterr()
    assert main(["keys", "generate", "--state-dir", str(state)]) == 2
    assert "--force" in capsys.readouterr().err
    assert key.read_bytes() == first
    assert main(["keys", "show", "--state-dir", str(state), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(shown["certificate"].encode())
    assert shown["sha256"] == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    assert cert.public_key().key_size == 3072
    assert main(["keys", "generate", "--state-dir", str(state), "--force"]) == 0
    assert key.read_bytes() != first


# ---------------------------------------------------------------- memory
def test_download_memory_is_bounded_by_the_chunk_not_the_package(tmp_path, appliance, sender):
    """24 chunks of 1 MB through the OAuth-authenticated client: Python's peak
    during the download stays within a few chunks (the auth flow once read
    every response whole and kept them until the garbage collector ran)."""
    import tracemalloc

    from pdimport.cloudpdi.channel import Channel
    from pdimport.settings import load

    package = bytes(range(256)) * (24 << 12)  # 24 MB
    up = sender.upload(package, "DOC-BIG", "pw", chunk_size=1 << 20)
    cfg = load(str(appliance.config), {"state_dir": str(appliance.state)})
    channel = Channel(cfg)
    token = channel.profile.token_decoder(cfg).decode(
        make_token(appliance.cert_pem, token_fields(up.document_id, up.password))
    )
    tracemalloc.start()
    try:
        path = channel._download(token, tmp_path / "work")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert path.read_bytes() == package
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MB"


def test_without_keys_or_repository_the_command_says_what_is_missing(tmp_path, capsys):
    token = tmp_path / "t.p7m"
    token.write_bytes(b"\x30\x03abc")
    state = tmp_path / "state"
    args = ["token", "add", str(token), "--state-dir", str(state), "--dest", "file:///dev/null/x"]
    assert main(args) == 2
    assert "pdimport keys generate" in capsys.readouterr().err
    assert main(["token", "add", str(token), "--state-dir", str(state)]) == 64  # no --dest
    assert "no destination" in capsys.readouterr().err
