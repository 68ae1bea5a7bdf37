"""The reference profile's parts one by one, and a profile that replaces one."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cloudpdi_sender import make_token, token_fields
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from pdimport import settings as settings_mod
from pdimport.cloudpdi import keys
from pdimport.cloudpdi.fhir import FhirRepository
from pdimport.cloudpdi.package import derive_key
from pdimport.cloudpdi.profile import ProfileError, Token, load_profile
from pdimport.cloudpdi.token import ReferenceTokenDecoder, parse_token, to_der
from pdimport.problems import CodedError


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    keys.generate(tmp_path / "state")
    return settings_mod.defaults().replace(
        state_dir=str(tmp_path / "state"), cloudpdi__repository="https://fhir.example/r4"
    )


def code_of(call: Any, *args: Any) -> str:
    with pytest.raises(CodedError) as info:
        call(*args)
    return info.value.code


def test_default_content_cipher_and_every_encoding_decode(settings):
    cert_pem = keys.KeyPaths.of(settings.state_path).cert.read_bytes()
    decoder = ReferenceTokenDecoder(settings)
    fields = json.dumps(token_fields("DOC-1", "pw")).encode()
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    for encoding in (Encoding.DER, Encoding.PEM, Encoding.SMIME):
        # cryptography's default content cipher (AES-128-CBC), not the sender helper's
        data = (
            pkcs7.PKCS7EnvelopeBuilder()
            .set_data(fields)
            .add_recipient(cert)
            .encrypt(encoding, [pkcs7.PKCS7Options.Binary])
        )
        token = decoder.decode(data)
        assert (token.document_id, token.password) == ("DOC-1", "pw")
    der = make_token(cert_pem, token_fields("DOC-2", "pw"))
    cms_pem = b"-----BEGIN CMS-----\n" + base64.encodebytes(der) + b"-----END CMS-----\n"
    assert decoder.decode(cms_pem).document_id == "DOC-2"
    assert "password" not in repr(decoder.decode(der))


@pytest.mark.parametrize(
    "data",
    [b"", b"   \n", b"hello world", b"Content-Type: text/plain\n\nhi", b"aGVsbG8=", b"\x00" * 10],
)
def test_what_is_not_a_token(data):
    assert code_of(to_der, data) == "token_malformed"


def test_token_fields_are_checked():
    good = token_fields("DOC", "pw")
    assert parse_token(json.dumps(good).encode()).sending_facility.startswith("Minato")
    for change in (
        {"password": ""},
        {"format": "something-else"},
        {"version": 2},
        {"document_id": 12},
        {"expires": "next week"},
        {"expires": "2030-01-01T00:00:00"},  # no time zone
        {"issued": "2999-01-01T00:00:00Z"},  # issued in the future
    ):
        assert code_of(parse_token, json.dumps({**good, **change}).encode()) == "token_malformed"
    late = {**good, "expires": "2026-01-01T00:00:00+09:00"}
    assert code_of(parse_token, json.dumps(late).encode()) == "token_expired"
    # within the forgiven clock skew: still good
    now = 1_800_000_000.0
    edge = {**good, "issued": "", "expires": "2027-01-15T07:58:20Z"}  # now - 100 s
    assert parse_token(json.dumps(edge).encode(), now=now, skew=300).document_id == "DOC"
    assert code_of(parse_token, json.dumps(edge).encode(), now, 0) == "token_expired"


def test_repository_references_stay_inside_its_base(settings):
    repo = FhirRepository(settings)
    try:
        assert repo._url("Binary/abc") == "https://fhir.example/r4/Binary/abc"
        assert repo._url("https://fhir.example/r4/Binary/x") == "https://fhir.example/r4/Binary/x"
        for ref in (
            "https://evil.example/r4/Binary/x",
            "http://fhir.example/r4/Binary/x",
            "//evil.example/x",
            "/other/Binary/x",
            "../admin",
        ):
            assert code_of(repo._url, ref) == "manifest_invalid", ref
    finally:
        repo.close()


def test_scrypt_parameters_are_bounded():
    salt = "AAAAAAAAAAAAAAAAAAAAAA=="
    assert len(derive_key("pw", {"name": "scrypt", "salt": salt, "n": 1024, "r": 8, "p": 1})) == 32
    for kdf in (
        {"name": "pbkdf2", "salt": salt, "n": 1024, "r": 8, "p": 1},
        {"name": "scrypt", "salt": salt, "n": 1 << 20, "r": 8, "p": 1},  # 1 GB
        {"name": "scrypt", "salt": salt, "n": 1000, "r": 8, "p": 1},  # not a power of 2
        {"name": "scrypt", "salt": "c2hvcnQ=", "n": 1024, "r": 8, "p": 1},  # 5-byte salt
        {"name": "scrypt", "n": 1024, "r": 8, "p": 1},
    ):
        assert code_of(derive_key, "pw", kdf) == "manifest_invalid"


class PlainTokens:
    """A token decoder a site might plug in: the JSON as it is, no envelope."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def decode(self, data: bytes) -> Token:
        return parse_token(data)


def test_a_profile_replaces_one_plug_point(tmp_path, settings):
    assert load_profile(settings).name == "reference"
    profile = tmp_path / "site.toml"
    profile.write_text(
        '[profile]\nname = "site"\n'
        'token_decoder = "test_reference_profile:PlainTokens"\n'
        'repository_client = "pdimport.cloudpdi.fhir:FhirRepository"\n'
        'package_decryptor = "pdimport.cloudpdi.package:ChunkDecryptor"\n'
    )
    site = load_profile(settings.replace(cloudpdi__profile=str(profile)))
    assert site.name == "site"
    token = site.token_decoder(settings).decode(json.dumps(token_fields("D9", "pw")).encode())
    assert token.document_id == "D9"
    tail = 'repository_client = "a:b"\npackage_decryptor = "a:b"\n'
    for text in (
        "[profile]\n",
        '[profile]\ntoken_decoder = "nowhere.module:X"\n' + tail,
        '[profile]\ntoken_decoder = "no-colon"\n' + tail,
        "not toml [",
    ):
        profile.write_text(text)
        with pytest.raises(ProfileError):
            load_profile(settings.replace(cloudpdi__profile=str(profile)))
