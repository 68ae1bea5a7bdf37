"""The appliance's Cloud PDI key pair: an RSA-3072 private key, readable by
its owner only (root on the appliance), and a self-signed certificate that
senders encrypt tokens to. Both live in ``STATE_DIR/cloudpdi/``."""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

KEY_BITS = 3072
VALID_DAYS = 3650


@dataclass(frozen=True)
class KeyPaths:
    key: Path
    cert: Path

    @classmethod
    def of(cls, state_dir: Path) -> KeyPaths:
        return cls(state_dir / "cloudpdi" / "key.pem", state_dir / "cloudpdi" / "cert.pem")


class KeysExist(FileExistsError):
    """``keys generate`` without ``--force`` where a key pair already is."""


def generate(state_dir: Path, subject: str = "", force: bool = False) -> KeyPaths:
    """Make the key pair and its self-signed certificate.

    The private key file is created with mode 0600 (never wider for a
    moment: ``os.open`` with the mode, not a chmod afterwards) and its
    folder 0700. Refuses to replace an existing pair unless ``force``.
    """
    paths = KeyPaths.of(state_dir)
    if not force and (paths.key.exists() or paths.cert.exists()):
        raise KeysExist(
            f"a key pair already exists in {paths.key.parent} (use --force to replace it; "
            "tokens encrypted to the old certificate can no longer be read)"
        )
    paths.key.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.key.parent, 0o700)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, subject or f"pdimport {socket.gethostname()}")]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(paths.key, pem, 0o600)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_certificate(state_dir: Path) -> x509.Certificate:
    path = KeyPaths.of(state_dir).cert
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no Cloud PDI certificate at {path} (run pdimport keys generate)"
        ) from None


def load_private_key(state_dir: Path) -> rsa.RSAPrivateKey:
    path = KeyPaths.of(state_dir).key
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no Cloud PDI private key at {path} (run pdimport keys generate)"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        return key
    raise ValueError(f"{path}: not an RSA private key")


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, as colon-separated hex (what a
    sender compares over the phone)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def show(state_dir: Path) -> str:
    """The certificate PEM and its SHA-256 fingerprint."""
    cert = load_certificate(state_dir)
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return f"{pem}SHA-256 fingerprint: {fingerprint(cert)}\n"
