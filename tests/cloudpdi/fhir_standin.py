"""A thin stand-in for a Cloud PDI FHIR R4 repository, on a real HTTP server
(uvicorn), for the tests only.

Why not a real FHIR server (checked for this issue): Debian has no FHIR
server package (``apt-cache search fhir`` finds nothing); HAPI FHIR's JPA
server is a Java application from Maven, not a registry this project's
machines reach; npm's node-fhir-server-core is a framework whose resource
handlers one writes oneself (a stand-in again, in another language); on PyPI
``fhirsnake`` 1.1.0 (105 lines) has no search by identifier and no raw Binary
reads and pins uvicorn < 0.31 against our 0.55, and the others found are
clients, MCP bridges or servers tied to a whole EHR (GNU Health). This app
implements exactly the part of FHIR R4 the reference profile uses:

* ``POST /token``: OAuth 2.0 client credentials (RFC 6749 §4.4), client
  authenticated by HTTP Basic; a bearer token back.
* ``POST /fhir/Binary`` (raw body) -> 201 with ``Location: Binary/<id>``;
  ``GET /fhir/Binary/<id>`` -> the raw content.
* ``POST /fhir/DocumentReference`` (FHIR JSON) -> 201;
  ``GET /fhir/DocumentReference?identifier=system|value`` -> a searchset Bundle.

Every ``/fhir`` request needs the bearer token (401 otherwise). Run:
``python -m uvicorn fhir_standin:app`` with ``STANDIN_CLIENT_ID`` and
``STANDIN_CLIENT_SECRET`` in the environment.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FHIR_JSON = "application/fhir+json"
_binaries: dict[str, tuple[str, bytes]] = {}
_documents: list[dict[str, Any]] = []
_tokens: set[str] = set()


def _client_ok(request: Request) -> bool:
    auth = request.headers.get("authorization", "")
    if not auth.startswith("Basic "):
        return False
    try:
        pair = base64.b64decode(auth[6:]).decode()
    except ValueError:
        return False
    want = f"{os.environ['STANDIN_CLIENT_ID']}:{os.environ['STANDIN_CLIENT_SECRET']}"
    return secrets.compare_digest(pair, want)


async def token(request: Request) -> Response:
    form = await request.form()
    if form.get("grant_type") != "client_credentials":
        return JSONResponse({"error": "unsupported_grant_type"}, 400)
    if not _client_ok(request):
        return JSONResponse({"error": "invalid_client"}, 401)
    value = secrets.token_urlsafe(24)
    _tokens.add(value)
    return JSONResponse({"access_token": value, "token_type": "Bearer", "expires_in": 600})


def _authorized(request: Request) -> bool:
    auth = request.headers.get("authorization", "")
    return auth.startswith("Bearer ") and auth[7:] in _tokens


def _unauthorized() -> Response:
    return JSONResponse(
        {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]},
        401,
        media_type=FHIR_JSON,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def binary_create(request: Request) -> Response:
    if not _authorized(request):
        return _unauthorized()
    ident = uuid.uuid4().hex
    _binaries[ident] = (
        request.headers.get("content-type", "application/octet-stream"),
        await request.body(),
    )
    return Response(status_code=201, headers={"Location": f"Binary/{ident}"})


async def binary_read(request: Request) -> Response:
    if not _authorized(request):
        return _unauthorized()
    found = _binaries.get(request.path_params["ident"])
    if found is None:
        return JSONResponse({"resourceType": "OperationOutcome"}, 404, media_type=FHIR_JSON)
    return Response(found[1], media_type=found[0])


async def binary_replace(request: Request) -> Response:
    """Test hook: overwrite a Binary's bytes (a tampered chunk)."""
    if not _authorized(request):
        return _unauthorized()
    ident = request.path_params["ident"]
    if ident not in _binaries:
        return Response(status_code=404)
    _binaries[ident] = (_binaries[ident][0], await request.body())
    return Response(status_code=200)


async def document_create(request: Request) -> Response:
    if not _authorized(request):
        return _unauthorized()
    doc = await request.json()
    if doc.get("resourceType") != "DocumentReference":
        return JSONResponse({"resourceType": "OperationOutcome"}, 400, media_type=FHIR_JSON)
    doc["id"] = uuid.uuid4().hex
    _documents.append(doc)
    return JSONResponse(doc, 201, media_type=FHIR_JSON)


async def document_search(request: Request) -> Response:
    if not _authorized(request):
        return _unauthorized()
    system, _, value = request.query_params.get("identifier", "").rpartition("|")
    hits = [
        d
        for d in _documents
        if any(
            i.get("value") == value and (not system or i.get("system") == system)
            for i in d.get("identifier") or []
        )
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(hits),
        "entry": [{"resource": d, "search": {"mode": "match"}} for d in hits],
    }
    return JSONResponse(bundle, media_type=FHIR_JSON)


app = Starlette(
    routes=[
        Route("/token", token, methods=["POST"]),
        Route("/fhir/Binary", binary_create, methods=["POST"]),
        Route("/fhir/Binary/{ident}", binary_read, methods=["GET"]),
        Route("/fhir/Binary/{ident}", binary_replace, methods=["PUT"]),
        Route("/fhir/DocumentReference", document_create, methods=["POST"]),
        Route("/fhir/DocumentReference", document_search, methods=["GET"]),
    ]
)
