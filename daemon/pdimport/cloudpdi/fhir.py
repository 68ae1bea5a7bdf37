"""The reference repository client: a FHIR R4 server (HL7 FHIR R4 §3.1.0
RESTful API) holding each package as a ``DocumentReference`` whose
attachment is a manifest ``Binary`` naming the chunk ``Binary`` resources.

* search: ``GET [base]/DocumentReference?identifier=[community]|[document]``
  (token search on ``DocumentReference.identifier``: the community ID as the
  system, the document ID as the value), a ``searchset`` Bundle back;
* the manifest: the attachment whose ``contentType`` is
  :data:`MANIFEST_TYPE`, read as ``GET [base]/Binary/[id]``;
* the chunks: ``GET [base]/Binary/[id]`` with ``Accept:
  application/octet-stream``, which a FHIR server answers with the raw
  content (FHIR R4 Binary, "Serving Binary Resources"), streamed.

Every reference must resolve under the repository's base URL: a manifest
cannot send our OAuth token to another host. The HTTP client is
:func:`pdimport.web.http.make_client` (TLS, web.auth = oauth2).
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

import httpx

from pdimport.cloudpdi.profile import Token
from pdimport.problems import CodedError
from pdimport.settings import Settings
from pdimport.web.http import WebConfigError, make_client

MANIFEST_TYPE = "application/vnd.pdimport.cloudpdi-manifest+json"
FHIR_JSON = "application/fhir+json"
#: A manifest lists chunks; a few MB of JSON is already absurd.
MAX_MANIFEST_BYTES = 4 << 20


class FhirRepository:
    """DocumentReference search and Binary reads against ``cloudpdi.repository``."""

    def __init__(self, settings: Settings) -> None:
        base = settings.get("cloudpdi.repository")
        if not base:
            raise ValueError("no Cloud PDI repository: set cloudpdi.repository (or --repository)")
        self.base = base.rstrip("/") + "/"
        try:
            self.client = make_client(settings, self.base)
        except WebConfigError as exc:
            raise ValueError(str(exc)) from None

    # ------------------------------------------------------------- helpers
    def _url(self, ref: str) -> str:
        """``Binary/x`` or an absolute URL -> a URL under the base, or refused."""
        url = urljoin(self.base, ref)
        base, target = urlsplit(self.base), urlsplit(url)
        inside = (target.scheme, target.netloc) == (base.scheme, base.netloc) and (
            target.path.startswith(base.path)
        )
        if not inside or ".." in target.path.split("/"):
            raise CodedError("manifest_invalid", f"reference {ref!r} is outside the repository")
        return url

    def _get(self, url: str, accept: str, **params: str) -> httpx.Response:
        try:
            response = self.client.get(url, params=params or None, headers={"Accept": accept})
        except httpx.HTTPError as exc:
            raise CodedError("repository_unreachable", f"{url}: {exc}") from None
        self._check(response)
        return response

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.status_code in (404, 410):
            raise CodedError(
                "document_not_found", f"{response.request.url}: {response.status_code}"
            )
        if response.status_code != 200:
            raise CodedError(
                "repository_unreachable", f"{response.request.url}: HTTP {response.status_code}"
            )

    # ------------------------------------------------------------- protocol
    def document(self, token: Token) -> dict[str, Any]:
        """The one current DocumentReference of the token's document."""
        ident = f"{token.community_id}|{token.document_id}"
        response = self._get(self._url("DocumentReference"), FHIR_JSON, identifier=ident)
        try:
            bundle = response.json()
        except ValueError:
            raise CodedError("repository_unreachable", "search answer is not JSON") from None
        docs = [
            e.get("resource") or {}
            for e in bundle.get("entry") or []
            if (e.get("resource") or {}).get("resourceType") == "DocumentReference"
        ]
        current = [d for d in docs if d.get("status", "current") == "current"]
        if not current:
            raise CodedError(
                "document_not_found",
                f"no current DocumentReference with identifier {token.document_id}"
                f" (community {token.community_id})",
            )
        if len(current) > 1:
            raise CodedError(
                "manifest_invalid", f"{len(current)} current documents for {token.document_id}"
            )
        return current[0]

    def manifest(self, token: Token) -> dict[str, Any]:
        doc = self.document(token)
        refs = [
            (c.get("attachment") or {}).get("url", "")
            for c in doc.get("content") or []
            if (c.get("attachment") or {}).get("contentType") == MANIFEST_TYPE
        ]
        if len(refs) != 1 or not refs[0]:
            raise CodedError("manifest_invalid", f"the document has {len(refs)} manifests, not 1")
        response = self._get(self._url(refs[0]), f"{MANIFEST_TYPE}, application/json")
        if len(response.content) > MAX_MANIFEST_BYTES:
            raise CodedError("manifest_invalid", f"manifest of {len(response.content)} bytes")
        try:
            manifest = json.loads(response.content)
        except ValueError:
            raise CodedError("manifest_invalid", "the manifest is not JSON") from None
        if not isinstance(manifest, dict):
            raise CodedError("manifest_invalid", "the manifest is not a JSON object")
        return manifest

    def fetch(self, ref: str, sink: BinaryIO, limit: int) -> int:
        url = self._url(ref)
        size = 0
        try:
            with self.client.stream(
                "GET", url, headers={"Accept": "application/octet-stream"}
            ) as response:
                self._check(response)
                for piece in response.iter_bytes(1 << 16):
                    size += len(piece)
                    if size > limit:
                        raise CodedError(
                            "chunk_tampered", f"{ref}: more than {limit} bytes (manifest or cap)"
                        )
                    sink.write(piece)
        except httpx.HTTPError as exc:
            raise CodedError("repository_unreachable", f"{url}: {exc}") from None
        return size

    def close(self) -> None:
        self.client.close()
