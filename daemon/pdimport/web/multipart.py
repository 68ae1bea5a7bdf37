"""STOW-RS wire format, pure logic: the multipart/related request body
(PS3.18 8.6.1.2, RFC 2387) and the Store Instances Response Module read
from the answer (PS3.18 10.5.3, Table 10.5.3-1 and 10.5.3-2).

The body is an iterable that streams each Part 10 file from disc in
:data:`CHUNK` pieces: a request never holds more than one chunk and one part
header in memory, whatever the batch size. It can be iterated again (an
OAuth 2.0 flow resends the request after a 401).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdimport.model import SendItem, SendOutcome

#: Bytes read from a spool file at a time.
CHUNK = 1 << 16

#: PS3.18 Table 10.5.3-1/-2 (DICOM JSON keys of the response module).
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"

#: PS3.18 Table 10.5.3-3 / PS3.4 B.2.3: what a failure reason means.
REASONS = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
}
#: The server does not take the instance's transfer syntax: decode and resend.
SYNTAX_REFUSED = 0xC122


class BoundaryInData(Exception):
    """The random boundary occurs in a part's bytes (odds 2^-128 a part)."""


@dataclass(frozen=True)
class Part:
    """One instance in a request: the file to send (the spooled original or
    its converted copy) and the syntax it is in."""

    item: SendItem
    path: Path
    transfer_syntax: str
    converted: Path | None = None


class MultipartBody:
    """A ``multipart/related; type="application/dicom"`` body of `parts`.

    Each part is ``--boundary CRLF Content-Type CRLF CRLF <file> CRLF``, the
    last delimiter ``--boundary--`` (RFC 2046 5.1.1); CRLF everywhere. The
    boundary is 32 random hex digits, and every chunk is checked not to hold
    it (:class:`BoundaryInData`: the request must then be given up, not sent
    ambiguous). :attr:`peak` is the largest piece handed to the HTTP client.
    """

    def __init__(self, parts: list[Part], boundary: str | None = None) -> None:
        self.parts = parts
        self.boundary = boundary or secrets.token_hex(16)
        self._sizes = [p.path.stat().st_size for p in parts]
        self.peak = 0

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="application/dicom"; boundary={self.boundary}'

    def _head(self, part: Part) -> bytes:
        # No ``transfer-syntax=`` parameter (PS3.18 8.7.3.5.2 allows one):
        # Orthanc's DICOMweb plugin 1.7 silently skips a part whose type is
        # not exactly application/dicom (HTTP 200, nothing stored, nothing
        # failed), and the Part 10 meta header names the syntax anyway.
        return (f"--{self.boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode("ascii")

    def _close(self) -> bytes:
        return f"--{self.boundary}--\r\n".encode("ascii")

    def __len__(self) -> int:
        heads = sum(len(self._head(p)) + 2 for p in self.parts)
        return heads + sum(self._sizes) + len(self._close())

    def __iter__(self) -> Iterator[bytes]:
        marker = self.boundary.encode("ascii")
        for part, size in zip(self.parts, self._sizes, strict=True):
            yield self._note(self._head(part))
            sent = 0
            tail = b""
            with open(part.path, "rb") as fp:
                while chunk := fp.read(CHUNK):
                    if marker in tail + chunk[: len(marker)] or marker in chunk:
                        raise BoundaryInData(str(part.path))
                    tail = chunk[-len(marker) :]
                    sent += len(chunk)
                    yield self._note(chunk)
            if sent != size:  # the Content-Length would lie
                raise OSError(f"{part.path} changed size while being sent")
            yield b"\r\n"
        yield self._close()

    def _note(self, piece: bytes) -> bytes:
        self.peak = max(self.peak, len(piece))
        return piece


# ----------------------------------------------------------------- response
def _sequence(doc: dict[str, Any], tag: str) -> dict[str, dict[str, Any]]:
    """SOP Instance UID -> item of the response's sequence ``tag``."""
    element = doc.get(tag)
    items = element.get("Value", []) if isinstance(element, dict) else []
    found: dict[str, dict[str, Any]] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            uid = _first(item, REFERENCED_SOP_INSTANCE_UID)
            if isinstance(uid, str):
                found[uid.strip()] = item
    return found


def _first(item: dict[str, Any], tag: str) -> Any:
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return values[0] if isinstance(values, list) and values else None


def _reason(item: dict[str, Any], tag: str) -> int | None:
    """A US reason; Orthanc and others also write it as a hex string."""
    value = _first(item, tag)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16)
        except ValueError:
            return None
    return None


def reason_text(reason: int) -> str:
    return f"0x{reason:04X} {REASONS.get(reason, '')}".rstrip()


def parse_response(body: bytes) -> dict[str, Any]:
    """The DICOM JSON object of a STOW-RS answer, ``{}`` if there is none."""
    if not body:
        return {}
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    return doc if isinstance(doc, dict) else {}


def has_module(doc: dict[str, Any]) -> bool:
    """Whether `doc` is a Store Instances Response (either sequence present)."""
    return FAILED_SOP_SEQUENCE in doc or REFERENCED_SOP_SEQUENCE in doc


def brief(body: bytes, limit: int = 160) -> str:
    """What an error page says, in one line: tags dropped, blanks folded."""
    text = re.sub(r"<[^>]*>", " ", body[: 4 * limit].decode("utf-8", "replace"))
    text = " ".join(text.split())
    return text[:limit] or "(empty body)"


def outcomes(parts: list[Part], http_status: int, doc: dict[str, Any]) -> list[SendOutcome]:
    """One outcome per part from the Store Instances Response Module.

    Never from the HTTP status alone (PS3.18 10.5.3: 200, 202 and 409 all
    may carry stored and failed instances together): an instance in the
    Failed SOP Sequence failed with its Failure Reason; one in the Referenced
    SOP Sequence is stored (with its Warning Reason, if any); one in neither
    is ``unknown`` and is sent again.
    """
    failed = _sequence(doc, FAILED_SOP_SEQUENCE)
    referenced = _sequence(doc, REFERENCED_SOP_SEQUENCE)
    result = []
    for part in parts:
        uid = part.item.sop_instance_uid
        ts, conv = part.transfer_syntax, part.converted
        if uid in failed:
            reason = _reason(failed[uid], FAILURE_REASON)
            result.append(failure(part, reason, http_status))
        elif uid in referenced:
            warning = _reason(referenced[uid], WARNING_REASON)
            if warning:
                detail = f"WarningReason {reason_text(warning)}"
                result.append(
                    SendOutcome(part.item.key, "sent", warning, "store_warning", detail, ts, conv)
                )
            else:
                result.append(SendOutcome(part.item.key, "sent", 0, "", "", ts, conv))
        else:
            detail = f"HTTP {http_status}: the STOW-RS answer does not name this instance"
            result.append(
                SendOutcome(part.item.key, "unknown", None, "outcome_unknown", detail, ts, conv)
            )
    return result


def failure(part: Part, reason: int | None, http_status: int) -> SendOutcome:
    """The outcome of an instance in the Failed SOP Sequence: out of
    resources (0xA7xx) is transient, everything else permanent; a SOP class
    the server does not take is ``no_presentation_context`` (another copy of
    the instance may go), as for C-STORE."""
    key, ts, conv = part.item.key, part.transfer_syntax, part.converted
    if reason is None:
        detail = f"HTTP {http_status}: failed without a FailureReason"
        return SendOutcome(key, "failed", None, "store_failed", detail, ts, conv)
    detail = f"FailureReason {reason_text(reason)} (HTTP {http_status})"
    if reason & 0xFF00 == 0xA700:
        return SendOutcome(key, "retry", reason, "store_failed", detail, ts, conv)
    code = "no_presentation_context" if reason == 0x0122 else "store_failed"
    return SendOutcome(key, "failed", reason, code, detail, ts, conv)
