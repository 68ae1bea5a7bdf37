"""The FHIR repository (``fhir_standin`` under uvicorn, a subprocess on a
free port of 127.0.0.1) and an appliance state directory with its Cloud PDI
keys and a config file (web.auth = oauth2 against the stand-in's /token)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures_peers import _stop, free_port, wait_for_port

__all__ = ["Appliance", "Repository", "appliance", "fhir_repo"]

HERE = Path(__file__).parent
CLIENT_ID = "pdimport-appliance"
CLIENT_SECRET = "s3cret-for-tests"


@dataclass
class Repository:
    base: str
    token_url: str


@dataclass
class Appliance:
    state: Path
    config: Path
    cert_pem: bytes


@pytest.fixture
def fhir_repo() -> Iterator[Repository]:
    port = free_port()
    env = dict(os.environ, STANDIN_CLIENT_ID=CLIENT_ID, STANDIN_CLIENT_SECRET=CLIENT_SECRET)
    args = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "fhir_standin:app"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(args, env=env)
    try:
        wait_for_port(port, proc, timeout=30)
        yield Repository(f"http://127.0.0.1:{port}/fhir", f"http://127.0.0.1:{port}/token")
    finally:
        _stop(proc)


@pytest.fixture
def appliance(tmp_path: Path, fhir_repo: Repository) -> Appliance:
    from pdimport.cli import main

    state = tmp_path / "state"
    secret = tmp_path / "client-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    config = tmp_path / "pdimport.toml"
    config.write_text(
        f'[cloudpdi]\nrepository = "{fhir_repo.base}"\n'
        f'[web]\nauth = "oauth2"\noauth_token_url = "{fhir_repo.token_url}"\n'
        f'oauth_client_id = "{CLIENT_ID}"\noauth_client_secret_file = "{secret}"\n'
        "timeout = 10.0\n"
    )
    assert main(["keys", "generate", "--state-dir", str(state)]) == 0
    cert = (state / "cloudpdi" / "cert.pem").read_bytes()
    return Appliance(state, config, cert)
