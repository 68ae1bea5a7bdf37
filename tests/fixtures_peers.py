"""Real network peers on 127.0.0.1 for the delivery tests.

* ``storescp``: dcmtk's storescp (``/usr/bin/storescp``; the ``storescp`` on
  PATH may be pynetdicom's app of the same name). dcmtk 3.6.7 has no
  bind-address option, so it listens on all interfaces for the few seconds a
  test runs; everything we send goes to 127.0.0.1.
* ``orthanc``: Debian's Orthanc with a throw-away config and storage;
  ``orthanc_web``: the same with its DICOMweb plugin, HTTP Basic
  authentication and, on request, HTTPS with client certificates.
* ``scripted_scp``: a pynetdicom Storage SCP that answers a chosen status, or
  stores and never answers (after pynetdicom's ``tests/parrot.py`` idea of a
  peer the test controls).
* ``receiver``: pdimport's own embedded :class:`~pdimport.demo.receiver.Receiver`.

Every peer gets a port from :func:`free_port` and is stopped at teardown by
its own PID / server object.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DCMTK_STORESCP = "/usr/bin/storescp"
ORTHANC = "/usr/sbin/Orthanc"

__all__ = [
    "OrthancPeer",
    "Peer",
    "ScriptedSCP",
    "SilentSCP",
    "cfg",
    "free_port",
    "orthanc",
    "orthanc_web",
    "receiver",
    "scripted_scp",
    "silent_scp",
    "storescp",
    "wait_for_port",
]


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (pynetdicom's get_port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 10.0) -> None:
    """Block until 127.0.0.1:`port` accepts a TCP connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"peer exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Peer:
    """A running C-STORE SCP: where it listens and where it stores."""

    aet: str
    port: int
    out_dir: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"dicom://{self.aet}@127.0.0.1:{self.port}"

    def files(self) -> list[Path]:
        return sorted(p for p in self.out_dir.rglob("*") if p.is_file())


# ------------------------------------------------------------------ storescp
@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Callable[..., Peer]]:
    """Factory: ``storescp(accept_all=False, aet="STORESCP", bit_preserving=False)``.

    Default storescp accepts only the uncompressed syntaxes; ``accept_all``
    adds ``+xa`` (every syntax dcmtk knows). Nagle is left on (Debian
    default, no ``TCP_NODELAY`` in its environment), as in the field.
    """
    if not os.access(DCMTK_STORESCP, os.X_OK):
        pytest.skip("dcmtk storescp not installed")
    procs: list[subprocess.Popen] = []

    def start(
        accept_all: bool = False,
        aet: str = "STORESCP",
        bit_preserving: bool = False,
        nodelay: bool = False,
        ignore: bool = False,
        fork: bool = False,
        log: Path | None = None,
        unique: bool = False,
    ) -> Peer:
        port = free_port()
        # a port may come round again within one test (a test of many runs)
        out_dir = Path(tempfile.mkdtemp(prefix=f"storescp-{port}-", dir=tmp_path))
        args = [DCMTK_STORESCP, "-aet", aet, "-od", str(out_dir)]
        if accept_all:
            args.append("+xa")
        if bit_preserving:
            # Write the received bytes as they came; without it dcmtk writes
            # what it parsed, so a byte comparison would test dcmtk, not us.
            args.append("+B")
        if ignore:
            args.append("--ignore")  # receive, answer, store nothing: a fast peer
        if fork:
            args.append("--fork")  # one child per association: parallel associations
        if unique:
            args.append("+uf")  # a file per reception: an instance received twice is two files
        if log is not None:
            args.append("-v")  # association start / release / abort lines
        env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
        if nodelay:
            env["TCP_NODELAY"] = "1"  # libdcmnet reads it (performance.md §3a)
        proc = _popen_logged(args + [str(port)], env, log)
        procs.append(proc)
        wait_for_port(port, proc)
        return Peer(aet, port, out_dir, proc)

    yield start
    for proc in procs:
        _stop(proc)
        if proc.stderr:
            proc.stderr.close()


def _popen_logged(args: list[str], env: dict[str, str], log: Path | None) -> subprocess.Popen:
    """Start a peer with stderr to `log` (closed here; the child keeps its copy)."""
    if log is None:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(log, "wb") as stderr:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=stderr)


# ------------------------------------------------------------------- orthanc
@dataclass
class OrthancPeer(Peer):
    http_port: int = 0
    #: HTTP Basic credentials when authentication is on
    auth: tuple[str, str] | None = None
    scheme: str = "http"
    #: the CA of an HTTPS Orthanc's certificate, and the client certificate
    #: pair it wants (set by the test that made them)
    ca: Path | None = None
    client_cert: tuple[Path, Path] | None = None
    #: behind a bearer-token gate (``orthanc_web(bearer=...)``), the token
    bearer: str = ""
    #: Orthanc's own HTTP port when a front (nginx) has taken ``http_port``
    backend_port: int = 0

    @property
    def web_url(self) -> str:
        """The DICOMweb root as pdimport spells it."""
        return f"dicomweb+{self.scheme}://127.0.0.1:{self.http_port}/dicom-web"

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """One REST call, with the peer's credentials and TLS material."""
        url = f"{self.scheme}://127.0.0.1:{self.http_port}{path}"
        req = urllib.request.Request(url, data=body, method=method)
        if self.bearer:
            req.add_header("Authorization", f"Bearer {self.bearer}")
        elif self.auth:
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        ctx = None
        if self.scheme == "https":
            ctx = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
            if self.client_cert:
                ctx.load_cert_chain(*map(str, self.client_cert))
        with urllib.request.urlopen(req, timeout=10, context=ctx) as rsp:
            return rsp.read()

    def get(self, path: str) -> Any:
        """GET a REST resource as JSON (``/instances``, ``/system`` ...)."""
        return json.loads(self.request("GET", path))

    def upload(self, part10: bytes) -> dict[str, Any]:
        """Store one Part 10 file through the REST API (POST /instances)."""
        return json.loads(self.request("POST", "/instances", part10))

    def instances(self) -> list[dict[str, Any]]:
        """The simplified tags of every stored instance."""
        return [self.get(f"/instances/{iid}/simplified-tags") for iid in self.get("/instances")]


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancPeer]:
    """Orthanc on 127.0.0.1 (HTTP) with empty storage; DICOM on all interfaces."""
    with _orthanc(tmp_path / "orthanc") as peer:
        yield peer


#: Orthanc's DICOMweb plugin (Debian orthanc-dicomweb).
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
#: The account of :func:`orthanc_web` (HTTP Basic).
ORTHANC_USER = ("pdimport", "s3cret-Passw0rd")


@pytest.fixture
def orthanc_web(tmp_path: Path) -> Iterator[Callable[..., OrthancPeer]]:
    """A factory of Orthancs with the DICOMweb plugin at ``/dicom-web`` and
    HTTP Basic authentication (:data:`ORTHANC_USER`) enabled.

    ``tls``: a :class:`~fixtures_tls.TlsFiles`: HTTPS with its server
    certificate, served by Debian's nginx in front of Orthanc (Orthanc 1.10's
    own HTTPS crashes on this OpenSSL; a TLS-terminating proxy is also how
    such servers are usually published); with ``client_cert`` nginx wants a
    client certificate signed by the CA. ``bearer``: nginx admits only
    ``Authorization: Bearer <bearer>`` and speaks Basic to Orthanc (a
    resource server behind an OAuth 2.0 gateway). ``peer.web_url`` is the
    DICOMweb root as pdimport spells it (``dicomweb+http(s)://...``).
    ``extra``: more Orthanc configuration (``LuaScripts`` ...).
    """
    if not os.access(DICOMWEB_PLUGIN, os.R_OK):
        pytest.skip("orthanc-dicomweb not installed")
    with ExitStack() as stack:
        count = iter(range(1000))

        def start(
            tls: Any = None,
            client_cert: bool = False,
            bearer: str = "",
            extra: dict[str, Any] | None = None,
        ) -> OrthancPeer:
            root = tmp_path / f"orthanc-web-{next(count)}"
            config: dict[str, Any] = {
                "Plugins": [DICOMWEB_PLUGIN],
                "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
                "AuthenticationEnabled": True,
                "RegisteredUsers": {ORTHANC_USER[0]: ORTHANC_USER[1]},
                **(extra or {}),
            }
            peer = stack.enter_context(_orthanc(root, config))
            if tls is not None or bearer:
                stack.enter_context(_nginx_front(root / "nginx", peer, tls, client_cert, bearer))
            return peer

        yield start


NGINX = "/usr/sbin/nginx"


@contextmanager
def _nginx_front(
    root: Path, peer: OrthancPeer, tls: Any, client_cert: bool, bearer: str
) -> Iterator[None]:
    """nginx on a new port in front of ``peer``'s HTTP port; ``peer`` is
    changed to point at the front (its own port stays reachable at
    ``peer.backend_port``)."""
    if not os.access(NGINX, os.X_OK):
        pytest.skip("nginx not installed")
    root.mkdir(parents=True)
    port = free_port()
    basic = base64.b64encode(":".join(ORTHANC_USER).encode()).decode()
    listen = f"listen 127.0.0.1:{port}"
    tls_lines = ""
    if tls is not None:
        listen += " ssl"
        tls_lines = f"ssl_certificate {tls.server_cert}; ssl_certificate_key {tls.server_key};"
        if client_cert:
            tls_lines += f" ssl_client_certificate {tls.ca}; ssl_verify_client on;"
    gate = ""
    if bearer:
        gate = (
            f'if ($http_authorization != "Bearer {bearer}") {{ return 401; }}'
            f' proxy_set_header Authorization "Basic {basic}";'
        )
    temp = " ".join(
        f"{kind}_temp_path {root}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (root / "nginx.conf").write_text(
        f"daemon off; master_process off; worker_processes 1; pid {root}/nginx.pid;"
        f" error_log {root}/error.log; events {{ worker_connections 64; }}"
        f" http {{ access_log {root}/access.log; {temp}"
        f" server {{ {listen}; {tls_lines} client_max_body_size 0;"
        f" location / {{ {gate} proxy_pass http://127.0.0.1:{peer.http_port};"
        f" proxy_http_version 1.1; proxy_request_buffering off; proxy_buffering off; }} }} }}"
    )
    proc = subprocess.Popen(
        [NGINX, "-p", str(root), "-c", str(root / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, proc)
        peer.backend_port = peer.http_port
        peer.http_port = port
        if tls is not None:
            peer.scheme = "https"
            peer.ca = tls.ca
            if client_cert:
                peer.client_cert = (tls.client_cert, tls.client_key)
        if bearer:
            peer.bearer = bearer
        yield
    finally:
        _stop(proc)


@contextmanager
def _orthanc(root: Path, extra: dict[str, Any] | None = None) -> Iterator[OrthancPeer]:
    if not os.access(ORTHANC, os.X_OK):
        pytest.skip("Orthanc not installed")
    (root / "db").mkdir(parents=True)
    peer = OrthancPeer("ORTHANC", free_port(), root / "db", http_port=free_port())
    config = {
        "Name": "pdimport-test",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "StorageCompression": False,
        "DicomServerEnabled": True,
        "DicomAet": peer.aet,
        "DicomPort": peer.port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        # C-FIND from any AE title: the identity-source tests ask it as a
        # Patient Root registry (Orthanc 1.10 refuses unknown modalities).
        "DicomAlwaysAllowFind": True,
        "HttpServerEnabled": True,
        "HttpPort": peer.http_port,
        # HTTP on the loopback only, and therefore no credentials needed.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "SaveJobs": False,
    }
    config.update(extra or {})
    if config["AuthenticationEnabled"]:
        peer.auth = ORTHANC_USER
    (root / "config.json").write_text(json.dumps(config))
    with open(root / "orthanc.log", "wb") as log:
        proc = subprocess.Popen(
            [ORTHANC, str(root / "config.json")], cwd=root, stdout=log, stderr=subprocess.STDOUT
        )
        peer.proc = proc
        try:
            _wait_http(peer, proc)
            wait_for_port(peer.port, proc)
            yield peer
        finally:
            _stop(proc)


def _wait_http(peer: OrthancPeer, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with status {proc.returncode}")
        try:
            peer.get("/system")
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("Orthanc /system did not answer")


# -------------------------------------------------------------- scripted SCP
@dataclass
class ScriptedSCP:
    """A pynetdicom Storage SCP whose answer the test chooses.

    ``status``: the C-STORE status to return (0xA700, 0xC000, 0xB000 ...).
    ``hang``: store the object, then never answer (until :meth:`stop`), so
    the SCU runs into its ``dimse_timeout``.
    ``abort``: once the data set has arrived, send A-ABORT as a DUL
    service-provider with this reason (PS3.8 9.3.8: 6 = invalid PDU
    parameter value) instead of an answer.
    """

    out_dir: Path
    status: int = 0x0000
    hang: bool = False
    abort: int | None = None
    aet: str = "SCRIPTED"
    port: int = 0
    stored: list[str] = field(default_factory=list)
    _release: threading.Event = field(default_factory=threading.Event)
    _server: Any = None

    @property
    def url(self) -> str:
        return f"dicom://{self.aet}@127.0.0.1:{self.port}"

    def start(self) -> ScriptedSCP:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        ae = AE(ae_title=self.aet)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        self.port = self._server.server_address[1]
        return self

    def _on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        (self.out_dir / f"{len(self.stored)}.dcm").write_bytes(event.encoded_dataset())
        self.stored.append(uid)
        if self.abort is not None:
            from pynetdicom.pdu_primitives import A_P_ABORT

            primitive = A_P_ABORT()
            primitive.provider_reason = self.abort
            event.assoc.dul.send_pdu(primitive)
            event.assoc.is_aborted = True
            event.assoc.is_established = False
        if self._hangs(uid):
            self._release.wait(30)  # stored, never answered (until stop)
        return self.status

    def _hangs(self, uid: str) -> bool:
        return self.hang

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server = None


@pytest.fixture
def scripted_scp(tmp_path: Path) -> Iterator[Callable[..., ScriptedSCP]]:
    """Factory: ``scripted_scp(status=0xC000)``, ``scripted_scp(hang=True)``
    or ``scripted_scp(abort=6)``."""
    peers: list[ScriptedSCP] = []

    def start(status: int = 0x0000, hang: bool = False, abort: int | None = None) -> ScriptedSCP:
        peer = ScriptedSCP(
            tmp_path / f"scripted-{len(peers)}", status=status, hang=hang, abort=abort
        )
        peers.append(peer)
        return peer.start()

    yield start
    for peer in peers:
        peer.stop()


# ------------------------------------------------------------- silent once
@dataclass
class SilentSCP(ScriptedSCP):
    """A :class:`ScriptedSCP` that stores everything and answers 0x0000,
    except that the stores named in ``silent`` get no answer: the first
    time only (``once``), or every time. It models a dropped C-STORE-RSP
    (the pynetdicom reactor race, a lost segment) and a peer that hangs.
    """

    silent: set[str] = field(default_factory=set)
    once: bool = True
    aet: str = "SILENT"
    _silenced: set[str] = field(default_factory=set)

    def _hangs(self, uid: str) -> bool:
        if uid in self.silent and not (self.once and uid in self._silenced):
            self._silenced.add(uid)
            return True
        return False


@pytest.fixture
def silent_scp(tmp_path: Path) -> Iterator[Callable[..., SilentSCP]]:
    """Factory: ``silent_scp({uid, ...}, once=True)``."""
    peers: list[SilentSCP] = []

    def start(silent: set[str], once: bool = True) -> SilentSCP:
        peer = SilentSCP(tmp_path / f"silent-{len(peers)}", silent=set(silent), once=once)
        peers.append(peer)
        return peer.start()

    yield start
    for peer in peers:
        peer.stop()


# ------------------------------------------------------------- sender settings
@pytest.fixture
def cfg(tmp_path: Path) -> Any:
    """Default settings with a state folder under tmp_path and short network
    timeouts (a test that waits, waits seconds, not minutes).

    With ``PDIMPORT_TEST_JOURNAL=postgresql`` its ``journal.url`` (like every
    default's, see ``fixtures_pg.journal_backend``) is a fresh database on
    the session's PostgreSQL.
    """
    from pdimport import settings as settings_mod

    return settings_mod.defaults().replace(
        state_dir=str(tmp_path / "state"),
        network__connection_timeout=3.0,
        network__acse_timeout=5.0,
        network__dimse_timeout=10.0,
        network__network_timeout=10.0,
    )


# ------------------------------------------------------------------ receiver
@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory for pdimport's embedded Receiver; stopped at teardown."""
    from pdimport.demo.receiver import Receiver

    started: list[Receiver] = []

    def start(**kwargs: Any) -> Receiver:
        recv = Receiver(tmp_path / f"received-{len(started)}", **kwargs).start()
        started.append(recv)
        return recv

    yield start
    for recv in started:
        recv.stop()
