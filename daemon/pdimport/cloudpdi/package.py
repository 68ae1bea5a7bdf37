"""The reference package decryptor: chunks of AES-256-GCM (NIST SP 800-38D)
under a key derived from the token's password by scrypt (RFC 7914), each
checked against the manifest's SHA-256 and its GCM tag, written one after
the other into the package file.

The manifest (JSON, an assumption: HS043's is not public)::

    {"format": "pdimport-cloudpdi-manifest", "version": 1,
     "document_id": "...",
     "cipher": "AES-256-GCM",
     "kdf": {"name": "scrypt", "salt": "<base64>", "n": 32768, "r": 8, "p": 1},
     "package": {"type": "zip", "size": 123456, "sha256": "<hex>"},
     "chunks": [{"binary": "Binary/1", "size": 1048592,
                 "sha256": "<hex of the ciphertext and tag>", "nonce": "<base64, 12 bytes>"}]}

Each chunk's associated data is ``"<document_id>:<index>:<count>"``, so a
chunk moved to another place, another document or a shortened list fails
its tag. Memory: one chunk (at most ``cloudpdi.max_chunk_mb``) at a time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

from pdimport.cloudpdi.profile import RepositoryClient, Token
from pdimport.problems import CodedError
from pdimport.settings import Settings

MANIFEST_FORMAT = "pdimport-cloudpdi-manifest"
CIPHER = "AES-256-GCM"
NONCE_BYTES = 12
TAG_BYTES = 16
#: scrypt takes 128·n·r bytes: more than this is refused, not attempted.
MAX_SCRYPT_MEMORY = 256 << 20
PACKAGE_TYPES = {"zip": ".zip", "iso": ".iso"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def chunk_aad(document_id: str, index: int, count: int) -> bytes:
    return f"{document_id}:{index}:{count}".encode()


def derive_key(password: str, kdf: dict[str, Any]) -> bytes:
    """The 256-bit key of the manifest's scrypt parameters."""
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    if kdf.get("name") != "scrypt":
        raise CodedError("manifest_invalid", f"key derivation {kdf.get('name')!r} unknown")
    try:
        salt = base64.b64decode(str(kdf["salt"]), validate=True)
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise CodedError("manifest_invalid", "scrypt salt, n, r or p missing or bad") from None
    if n < 2 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16 or len(salt) < 16:
        raise CodedError("manifest_invalid", f"scrypt n={n} r={r} p={p} salt={len(salt)} bytes")
    if 128 * n * r > MAX_SCRYPT_MEMORY:
        raise CodedError("manifest_invalid", f"scrypt n={n} r={r} needs more than 256 MB")
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(password.encode("utf-8"))


def _chunks(manifest: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    chunks = manifest.get("chunks")
    if not isinstance(chunks, list) or not chunks:
        raise CodedError("manifest_invalid", "no chunks")
    for i, c in enumerate(chunks):
        ok = (
            isinstance(c, dict)
            and isinstance(c.get("binary"), str)
            and isinstance(c.get("size"), int)
            and TAG_BYTES <= c["size"] <= limit
            and isinstance(c.get("sha256"), str)
            and _HEX64.match(c["sha256"])
            and isinstance(c.get("nonce"), str)
        )
        if not ok:
            raise CodedError("manifest_invalid", f"chunk {i}: binary, size, sha256 or nonce bad")
    return chunks


class ChunkDecryptor:
    """AES-256-GCM chunks, scrypt key, SHA-256 per chunk and of the package."""

    def __init__(self, settings: Settings) -> None:
        self.max_chunk = int(settings.get("cloudpdi.max_chunk_mb")) << 20
        self.max_package = int(settings.get("cloudpdi.max_package_mb")) << 20

    def decrypt(
        self, token: Token, manifest: dict[str, Any], repository: RepositoryClient, workdir: Path
    ) -> Path:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("cipher") != CIPHER:
            raise CodedError(
                "manifest_invalid",
                f"format {manifest.get('format')!r} / {manifest.get('cipher')!r}",
            )
        if manifest.get("document_id") != token.document_id:
            raise CodedError("manifest_invalid", "the manifest is of another document")
        package = manifest.get("package") or {}
        suffix = PACKAGE_TYPES.get(str(package.get("type", "")))
        size, digest = package.get("size"), str(package.get("sha256", ""))
        if suffix is None or not isinstance(size, int) or not _HEX64.match(digest):
            raise CodedError("manifest_invalid", "package type, size or sha256 bad")
        if size > self.max_package:
            raise CodedError("manifest_invalid", f"package of {size} bytes exceeds the cap")
        chunks = _chunks(manifest, self.max_chunk)
        aead = AESGCM(derive_key(token.password, manifest.get("kdf") or {}))
        workdir.mkdir(parents=True, exist_ok=True)
        out = workdir / f"package{suffix}"
        whole = hashlib.sha256()
        written = 0
        with open(out, "wb") as fp:
            for index, chunk in enumerate(chunks):
                ciphertext = self._fetch(repository, chunk, index)
                try:
                    nonce = base64.b64decode(chunk["nonce"], validate=True)
                    plain = aead.decrypt(
                        nonce, ciphertext, chunk_aad(token.document_id, index, len(chunks))
                    )
                except (InvalidTag, ValueError, binascii.Error):
                    raise CodedError(
                        "chunk_tampered", f"chunk {index}: AES-GCM tag does not verify"
                    ) from None
                written += len(plain)
                if written > size:
                    raise CodedError("chunk_tampered", f"chunk {index}: more than {size} bytes")
                whole.update(plain)
                fp.write(plain)
            fp.flush()
            os.fsync(fp.fileno())
        if written != size or whole.hexdigest() != digest:
            raise CodedError("chunk_tampered", "the reassembled package's size or SHA-256 is off")
        return out

    @staticmethod
    def _fetch(repository: RepositoryClient, chunk: dict[str, Any], index: int) -> bytes:
        buf = io.BytesIO()
        got = repository.fetch(chunk["binary"], buf, chunk["size"])
        data = buf.getvalue()
        if got != chunk["size"] or hashlib.sha256(data).hexdigest() != chunk["sha256"]:
            raise CodedError(
                "chunk_tampered",
                f"chunk {index} ({chunk['binary']}): {got} bytes, SHA-256 not the manifest's",
            )
        return data
