"""A real PostgreSQL for the shared journal (issue 19).

* ``postgres`` (session): one server from Debian's ``postgresql`` binaries,
  ``initdb`` into a fresh temporary folder, listening on 127.0.0.1 on a free
  port (and a private socket folder), ``fsync`` on: the journal's durability
  is what the tests are about. :meth:`PgServer.stop` / :meth:`PgServer.start`
  take it away and bring it back in the middle of a test (same folder, same
  port); :meth:`PgServer.kill` is the power cut.
* ``pg_url`` (function): a fresh empty database on that server, as a
  ``postgresql://user@127.0.0.1:port/dbname`` URL.
* ``journal_backend`` (autouse): with ``PDIMPORT_TEST_JOURNAL=postgresql``,
  the default of ``journal.url`` is the test's ``pg_url``, so every journal
  the test opens through the settings (the ``cfg`` fixture, ``defaults()``,
  the CLI in-process) is on PostgreSQL: the second CI pass.

PostgreSQL refuses to run as root, and CI runs as root: the server then runs
as the ``postgres`` system user (``runuser``) in a folder it owns. Tests skip
only when PostgreSQL is not installed.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fixtures_peers import free_port

__all__ = [
    "PgServer",
    "journal_backend",
    "journal_config",
    "pg_bin",
    "pg_url",
    "postgres",
    "start_postgres",
]

#: The superuser initdb creates; tests connect as it (trust, loopback only).
PG_USER = "pdimport"


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None."""
    found = []
    for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        version = initdb.parent.parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version):
            found.append((tuple(int(p) for p in version.split(".")), initdb.parent))
    return max(found)[1] if found else None


def _as_owner(args: list[str]) -> list[str]:
    """``args`` run as the server's owner: ``postgres`` when we are root."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class PgServer:
    """One PostgreSQL cluster in ``root`` (data, sockets and log)."""

    bin: Path
    root: Path
    port: int = field(default_factory=free_port)
    user: str = PG_USER

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            _as_owner([str(self.bin / args[0]), *args[1:]]),
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def init(self) -> PgServer:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "sock").mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.root / "sock", "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-instructions",
        )  # fmt: skip
        return self

    def start(self) -> None:
        """Start (or start again) and wait until it accepts connections."""
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root / 'sock'} "
            "-c fsync=on -c synchronous_commit=on -c max_connections=200"
        )
        done = self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
            "start", check=False,
        )  # fmt: skip
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {done.stdout}{done.stderr}\n{tail}")

    def stop(self) -> None:
        """A clean shutdown (``fast``: open sessions are ended)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash; :meth:`start` then recovers)."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # the backends follow their postmaster; wait for the last one to go
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = name or "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_postgres(root: Path | None = None) -> PgServer:
    """Init and start a PostgreSQL of its own (the caller stops it and
    removes ``root``); skips the test when PostgreSQL is not installed."""
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    # not under pytest's tmp_path: its folders are 0700 root, out of reach of `postgres`
    root = root or Path(tempfile.mkdtemp(prefix="pdimport-pg-"))
    os.chmod(root, 0o755)
    server = PgServer(bin_dir, root).init()
    server.start()
    return server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """The session's PostgreSQL (see the module docstring)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres: PgServer) -> Iterator[str]:
    """A fresh empty database for one test; dropped after it."""
    if not postgres.running():  # a test that stopped it and failed before starting it
        postgres.start()
    url = postgres.create_database()
    yield url
    if not postgres.running():
        postgres.start()
    postgres.drop_database(url)


@pytest.fixture(autouse=True)
def journal_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``sqlite``, or with ``PDIMPORT_TEST_JOURNAL=postgresql`` a test
    whose ``journal.url`` defaults to a fresh database (``pg_url``)."""
    backend = os.environ.get("PDIMPORT_TEST_JOURNAL", "sqlite")
    if backend == "sqlite":
        return backend
    if backend != "postgresql":
        raise pytest.UsageError(f"PDIMPORT_TEST_JOURNAL={backend!r}: sqlite or postgresql")
    from pdimport import settings

    url = request.getfixturevalue("pg_url")
    table = tuple(
        dataclasses.replace(s, default=url) if s.name == "journal.url" else s
        for s in settings.SETTINGS
    )
    monkeypatch.setattr(settings, "SETTINGS", table)
    return backend


def journal_config(folder: Path) -> list[str]:
    """``--config FILE`` for a ``pdimport`` started as a subprocess (which
    the monkeypatched default of :func:`journal_backend` does not reach):
    a file setting this test's ``journal.url``, or nothing on SQLite."""
    from pdimport.settings import defaults

    url = defaults().get("journal.url")
    if not url:
        return []
    path = folder / "journal.toml"
    path.write_text(f'[journal]\nurl = "{url}"\n', encoding="utf-8")
    return ["--config", str(path)]
