"""The HTTP client of every DICOMweb and Cloud PDI peer: keep-alive
connections, TLS with a configurable CA bundle and client certificate (Net
PDI partners often require one), and one of HTTP Basic, a bearer token or
OAuth 2.0 client credentials (RFC 6749 §4.4), all from the ``web.*``
settings.

Secrets are read from files (``web.password_file``, ``web.token_file``,
``web.oauth_client_secret_file``), never from the config file itself, and
never logged.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from pdimport.settings import Settings

AUTH_KINDS = ("none", "basic", "bearer", "oauth2")


class WebConfigError(ValueError):
    """A ``web.*`` setting that cannot work (a missing secret file, say)."""


def _secret(path: str, what: str) -> str:
    if not path:
        raise WebConfigError(f"{what} is needed for this web.auth")
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise WebConfigError(f"{what}: {exc.strerror}: {path}") from None


class ClientCredentials(httpx.Auth):
    """OAuth 2.0 client credentials grant as an httpx auth flow: a token is
    fetched from ``token_url`` when there is none or it expires within 30 s,
    and once more when the resource server answers 401 (revoked early)."""

    # False: httpx would otherwise read every response whole before the flow
    # sees it, a download included (a Cloud PDI chunk, a WADO-RS study); only
    # the token endpoint's answer is read, in _accept().
    requires_response_body = False

    def __init__(self, token_url: str, client_id: str, secret: str, scope: str = "") -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = secret
        self.scope = scope
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()

    def _token_request(self) -> httpx.Request:
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        # client authentication by HTTP Basic (RFC 6749 §2.3.1), form-encoded
        pair = f"{quote(self.client_id, safe='')}:{quote(self._secret, safe='')}"
        basic = base64.b64encode(pair.encode()).decode()
        return httpx.Request(
            "POST", self.token_url, data=data, headers={"Authorization": f"Basic {basic}"}
        )

    def _accept(self, response: httpx.Response) -> None:
        response.read()
        if response.status_code != 200:
            raise httpx.HTTPStatusError(
                f"OAuth token endpoint answered {response.status_code}",
                request=response.request,
                response=response,
            )
        body = response.json()
        if str(body.get("token_type", "")).lower() != "bearer" or not body.get("access_token"):
            raise httpx.HTTPStatusError(
                "OAuth token endpoint gave no bearer token",
                request=response.request,
                response=response,
            )
        self._token = str(body["access_token"])
        self._expires = time.monotonic() + float(body.get("expires_in", 300))

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # The lock is held across the token request: requests running in
        # parallel (web.connections) wait for one token instead of each
        # fetching its own. httpx drives this generator in the requesting
        # thread and closes it on error, so the lock is always released.
        with self._lock:
            if not self._token or time.monotonic() > self._expires - 30:
                self._accept((yield self._token_request()))
            token = self._token
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            with self._lock:
                if self._token == token:  # not renewed by another request meanwhile
                    self._accept((yield self._token_request()))
                token = self._token
            request.headers["Authorization"] = f"Bearer {token}"
            yield request


class _Bearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


def auth(settings: Settings) -> httpx.Auth | None:
    """The authentication ``web.auth`` chooses (None for ``none``)."""
    kind = settings.get("web.auth")
    if kind == "basic":
        return httpx.BasicAuth(
            settings.get("web.username"),
            _secret(settings.get("web.password_file"), "web.password_file"),
        )
    if kind == "bearer":
        return _Bearer(_secret(settings.get("web.token_file"), "web.token_file"))
    if kind == "oauth2":
        if not settings.get("web.oauth_token_url"):
            raise WebConfigError("web.oauth_token_url is needed for web.auth = oauth2")
        return ClientCredentials(
            settings.get("web.oauth_token_url"),
            settings.get("web.oauth_client_id"),
            _secret(settings.get("web.oauth_client_secret_file"), "web.oauth_client_secret_file"),
            settings.get("web.oauth_scope"),
        )
    return None


def _verify(settings: Settings) -> Any:
    """The TLS context: the system's CAs, or ``web.ca_bundle``'s; plus our
    client certificate when ``web.client_cert`` is set."""
    import ssl

    ca = settings.get("web.ca_bundle")
    ctx = ssl.create_default_context(cafile=ca or None)
    cert = settings.get("web.client_cert")
    if cert:
        try:
            ctx.load_cert_chain(cert, settings.get("web.client_key") or None)
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(f"web.client_cert: {exc}") from None
    return ctx


def make_client(settings: Settings, base_url: str = "") -> httpx.Client:
    """One client per peer: at most ``web.connections`` keep-alive
    connections, ``web.timeout`` for connect and each read, the auth and
    TLS of the ``web.*`` settings. ``base_url`` is plain http(s)."""
    timeout = float(settings.get("web.timeout"))
    connections = int(settings.get("web.connections"))
    return httpx.Client(
        base_url=base_url,
        auth=auth(settings),
        verify=_verify(settings),
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        follow_redirects=False,
        headers={"User-Agent": "pdimport"},
    )
