"""The sending hospital's side of Cloud PDI, for the tests: encrypt a package
into AES-256-GCM chunks, upload them and their manifest to the FHIR
repository, and make the HI-TOKEN (CMS enveloped data to the receiver's
certificate) and its QR code image. Written from the format descriptions in
pdimport.cloudpdi.token and pdimport.cloudpdi.package, not from their code."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

MANIFEST_TYPE = "application/vnd.pdimport.cloudpdi-manifest+json"
COMMUNITY = "urn:oid:1.2.392.200119.6.999"  # a made-up community (OID arc for tests)
#: small scrypt parameters keep the tests quick; the receiver reads them from the manifest
KDF = {"n": 1 << 14, "r": 8, "p": 1}


@dataclass
class Upload:
    document_id: str
    password: str
    manifest: dict[str, Any]
    chunk_ids: list[str] = field(default_factory=list)


def encrypt_chunks(
    package: bytes, document_id: str, password: str, chunk_size: int, kind: str = "zip"
) -> tuple[dict[str, Any], list[bytes]]:
    salt = os.urandom(16)
    key = Scrypt(salt=salt, length=32, **KDF).derive(password.encode())
    aead = AESGCM(key)
    pieces = [package[i : i + chunk_size] for i in range(0, len(package), chunk_size)] or [b""]
    chunks, entries = [], []
    for index, piece in enumerate(pieces):
        nonce = os.urandom(12)
        aad = f"{document_id}:{index}:{len(pieces)}".encode()
        ct = aead.encrypt(nonce, piece, aad)
        chunks.append(ct)
        entries.append(
            {
                "binary": "",
                "size": len(ct),
                "sha256": hashlib.sha256(ct).hexdigest(),
                "nonce": base64.b64encode(nonce).decode(),
            }
        )
    manifest = {
        "format": "pdimport-cloudpdi-manifest",
        "version": 1,
        "document_id": document_id,
        "cipher": "AES-256-GCM",
        "kdf": {"name": "scrypt", "salt": base64.b64encode(salt).decode(), **KDF},
        "package": {
            "type": kind,
            "size": len(package),
            "sha256": hashlib.sha256(package).hexdigest(),
        },
        "chunks": entries,
    }
    return manifest, chunks


class Sender:
    """Uploads through the repository's own API with a bearer token."""

    def __init__(self, base: str, token_url: str, client_id: str, secret: str) -> None:
        answer = httpx.post(
            token_url, data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        answer.raise_for_status()
        self.client = httpx.Client(
            base_url=base.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {answer.json()['access_token']}"},
        )

    def close(self) -> None:
        self.client.close()

    def _binary(self, data: bytes, ctype: str) -> str:
        r = self.client.post("Binary", content=data, headers={"Content-Type": ctype})
        r.raise_for_status()
        return r.headers["Location"]

    def upload(
        self, package: bytes, document_id: str, password: str, chunk_size: int = 64 << 10
    ) -> Upload:
        manifest, chunks = encrypt_chunks(package, document_id, password, chunk_size)
        ids = [self._binary(ct, "application/octet-stream") for ct in chunks]
        for entry, ref in zip(manifest["chunks"], ids, strict=True):
            entry["binary"] = ref
        ref = self._binary(json.dumps(manifest).encode(), MANIFEST_TYPE)
        doc = {
            "resourceType": "DocumentReference",
            "status": "current",
            "identifier": [{"system": COMMUNITY, "value": document_id}],
            "content": [{"attachment": {"contentType": MANIFEST_TYPE, "url": ref}}],
        }
        self.client.post("DocumentReference", json=doc).raise_for_status()
        return Upload(document_id, password, manifest, ids)

    def tamper(self, ref: str, data: bytes) -> None:
        self.client.put(ref, content=data).raise_for_status()


def token_fields(document_id: str, password: str, **over: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    fields = {
        "format": "pdimport-hi-token",
        "version": 1,
        "community_id": COMMUNITY,
        "document_id": document_id,
        "password": password,
        "sending_facility": "Minato General Hospital 港総合病院",
        "sender": "Dr. Sato",
        "receiver": "Radiology, Kita University Hospital",
        "issued": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expires": (now + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "consent": "granted 2026-12-01",
    }
    fields.update(over)
    return fields


def make_token(cert_pem: bytes, fields: dict[str, Any], encoding: Encoding = Encoding.DER) -> bytes:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(json.dumps(fields, ensure_ascii=False).encode())
        .add_recipient(cert)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(encoding, [pkcs7.PKCS7Options.Binary])
    )


def qr_png(text: str, path: Path) -> Path:
    import qrcode

    img = qrcode.make(text, error_correction=qrcode.constants.ERROR_CORRECT_M)
    img.save(str(path))
    return path
