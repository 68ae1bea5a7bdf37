"""The reference token decoder: a HI-TOKEN as CMS enveloped data (RFC 5652
§6, RSA key transport) encrypted to the appliance's certificate, around a
JSON object (an assumption: HS043's own encoding is not public).

What may arrive, all turned into the DER of one ContentInfo:

* DER (a ``.p7m`` file as a mail client saves it);
* PEM (``-----BEGIN PKCS7-----`` or ``-----BEGIN CMS-----``);
* an S/MIME message (``Content-Type: application/pkcs7-mime``, base64 body);
* the base64 text of the DER alone, as a QR code carries it and a QR scanner
  types it (whitespace and line breaks ignored, URL-safe letters accepted).

Inside, UTF-8 JSON (``TOKEN_FORMAT``)::

    {"format": "pdimport-hi-token", "version": 1,
     "community_id": "...", "document_id": "...", "password": "...",
     "sending_facility": "...", "sender": "...", "receiver": "...",
     "issued": "2026-12-03T09:00:00Z", "expires": "2026-12-10T09:00:00Z",
     "consent": "..."}
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import json
import re
import time
from datetime import datetime

from pdimport.cloudpdi.profile import Token
from pdimport.problems import CodedError
from pdimport.settings import Settings

TOKEN_FORMAT = "pdimport-hi-token"
TOKEN_VERSION = 1
#: A token is a few hundred bytes; anything this large is not one.
MAX_TOKEN_BYTES = 1 << 20
_REQUIRED = ("community_id", "document_id", "password")
_TEXT = (*_REQUIRED, "sending_facility", "sender", "receiver", "issued", "expires", "consent")
_PEM = re.compile(rb"-----BEGIN (PKCS7|CMS)-----(.*?)-----END \1-----", re.DOTALL)


def to_der(data: bytes) -> bytes:
    """The DER of the CMS structure in any of the accepted encodings."""
    if len(data) > MAX_TOKEN_BYTES:
        raise CodedError("token_malformed", f"{len(data)} bytes is too large for a token")
    head = data.lstrip()
    if head[:1] == b"\x30":  # an ASN.1 SEQUENCE: DER already
        return data
    pem = _PEM.search(head)
    if pem:
        return _b64(pem.group(2), "PEM body")
    if re.match(rb"(?i)(mime-version|content-[a-z-]+):", head):
        msg = email.message_from_bytes(head, policy=email.policy.default)
        ctype = msg.get_content_type()
        if ctype not in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
            raise CodedError("token_malformed", f"S/MIME part of type {ctype}, not pkcs7-mime")
        payload = msg.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload:
            raise CodedError("token_malformed", "empty S/MIME body")
        return payload
    return _b64(head, "token text")


def _b64(text: bytes, what: str) -> bytes:
    compact = re.sub(rb"\s+", b"", text)
    if not compact:
        raise CodedError("token_malformed", f"empty {what}")
    if b"-" in compact or b"_" in compact:
        compact = compact.replace(b"-", b"+").replace(b"_", b"/")
    compact += b"=" * (-len(compact) % 4)
    try:
        der = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise CodedError(
            "token_malformed", f"{what} is neither DER, PEM, S/MIME nor base64"
        ) from None
    if der[:1] != b"\x30":
        raise CodedError("token_malformed", f"{what} does not hold a CMS structure")
    return der


def parse_time(value: str, field: str) -> float:
    """ISO 8601 with a zone (``Z`` or an offset) -> POSIX seconds."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CodedError("token_malformed", f"{field} {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise CodedError("token_malformed", f"{field} {value!r} has no time zone")
    return moment.timestamp()


def parse_token(plain: bytes, now: float | None = None, skew: float = 300.0) -> Token:
    """The JSON inside the envelope -> a checked :class:`Token`."""
    try:
        body = json.loads(plain.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CodedError("token_malformed", "the decrypted token is not UTF-8 JSON") from None
    if not isinstance(body, dict) or body.get("format") != TOKEN_FORMAT:
        raise CodedError("token_malformed", f"not a {TOKEN_FORMAT} object")
    if body.get("version") != TOKEN_VERSION:
        raise CodedError("token_malformed", f"token version {body.get('version')!r} unknown")
    for key in _TEXT:
        if not isinstance(body.get(key, ""), str):
            raise CodedError("token_malformed", f"{key} is not a string")
    missing = [k for k in _REQUIRED if not body.get(k)]
    if missing:
        raise CodedError("token_malformed", f"missing {', '.join(missing)}")
    now = time.time() if now is None else now
    if body.get("expires"):
        expires = parse_time(body["expires"], "expires")
        if expires + skew < now:
            raise CodedError("token_expired", f"expired at {body['expires']}")
    if body.get("issued") and parse_time(body["issued"], "issued") - skew > now:
        raise CodedError("token_malformed", f"issued in the future ({body['issued']})")
    extra = {k: v for k, v in body.items() if k not in (*_TEXT, "format", "version")}
    return Token(**{k: body.get(k, "") for k in _TEXT}, extra=extra)


class ReferenceTokenDecoder:
    """CMS enveloped data decrypted with ``STATE_DIR/cloudpdi/key.pem``."""

    def __init__(self, settings: Settings) -> None:
        from pdimport.cloudpdi.keys import load_certificate, load_private_key

        self.cert = load_certificate(settings.state_path)
        self.key = load_private_key(settings.state_path)
        self.skew = float(settings.get("cloudpdi.clock_skew"))

    def decode(self, data: bytes, now: float | None = None) -> Token:
        from cryptography.hazmat.primitives.serialization import pkcs7

        der = to_der(data)
        try:
            plain = pkcs7.pkcs7_decrypt_der(der, self.cert, self.key, [])
        except ValueError as exc:
            text = str(exc)
            if "parsing asn1" in text or "not an enveloped" in text.lower():
                raise CodedError("token_malformed", f"not CMS enveloped data: {text}") from None
            raise CodedError("token_undecryptable", _why(text)) from None
        return parse_token(plain, now, self.skew)


def _why(text: str) -> str:
    if "No recipient" in text:
        return "encrypted to another certificate than this appliance's (see pdimport keys show)"
    return f"decryption failed: {text}"
