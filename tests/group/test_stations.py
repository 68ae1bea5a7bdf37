"""Two or three daemons, each in its own process with its own state folder
and spool, sharing one real PostgreSQL journal (issue 19); dcmtk storescp
with ``+uf`` (a file per reception) is the group's PACS, so a file count
says how often each instance arrived."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from fixtures_daemon import DaemonProc, status, wait_until
from fixtures_dicom import make_ct_series

from pdimport.store.spool import LAYOUT_MARK


@pytest.fixture
def group(tmp_path, pg_url, storescp):
    """``group.start(name, watch=None) -> (DaemonProc, state)``, the PACS
    (``group.pacs``) and the shared database's URL (``group.url``)."""
    pacs = storescp(aet="PACS", unique=True)
    made: list[DaemonProc] = []

    class Group:
        url = pg_url
        dest = f"dicom://PACS@127.0.0.1:{pacs.port}"

        def __init__(self) -> None:
            self.pacs = pacs

        def start(self, name: str, watch: Path | None = None) -> tuple[DaemonProc, Path]:
            home = tmp_path / name
            home.mkdir(exist_ok=True)
            state = home / "state"
            extra: dict = {"devices": [], "watch_settle": 0.3}
            if watch is not None:
                extra["watch"] = str(watch)
            d = DaemonProc(
                home,
                {
                    "state_dir": str(state),
                    "dest": [self.dest],
                    "journal.url": pg_url,
                    "station.name": name,
                },
                extra,
            )
            made.append(d)
            return d, state

        def received(self) -> int:
            return sum(1 for p in self.pacs.out_dir.rglob("*") if p.is_file())

        def config(self, name: str) -> Path:
            """A station's settings file for the CLI."""
            path = tmp_path / f"{name}.toml"
            path.write_text(
                f'dest = ["{self.dest}"]\n[journal]\nurl = "{pg_url}"\n[station]\nname = "{name}"\n'
            )
            return path

    yield Group()
    for d in made:
        d.close()


def _spooled(state: Path) -> list[Path]:
    """The files a station spooled (its layout mark is not one)."""
    return [p for p in (state / "spool").rglob("*") if p.is_file() and p.name != LAYOUT_MARK]


def _drop(stage: Path, watch: Path, name: str, n: int, patient: str) -> None:
    make_ct_series(stage / name, n, patient_id=patient)
    os.rename(stage / name, watch / name)  # a rename: complete at once


def _rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_a_shared_watch_folder_is_consumed_once_by_three_stations(group, tmp_path):
    watch, stage = tmp_path / "shared", tmp_path / "stage"
    watch.mkdir()
    stage.mkdir()
    for name in ("A", "B", "C"):
        group.start(name, watch)
    for i in range(20):
        _drop(stage, watch, f"pkg{i:02d}", 2, f"P{i:02d}")
    wait_until(
        lambda: len(list((watch / "imported").glob("*.json"))) == 20, 240, "20 packages imported"
    )
    assert group.received() == 40  # 20 packages x 2 instances, none twice
    claims = _rows(group.url, "SELECT station, count(*) FROM watch_claims GROUP BY station")
    assert sum(n for _s, n in claims) == 20
    jobs = _rows(group.url, "SELECT station, state FROM jobs")
    assert len(jobs) == 20 and {s for _st, s in jobs} == {"imported"}
    # the station that claimed a package holds its job
    assert dict(claims) == {s: sum(1 for st, _ in jobs if st == s) for s, _n in claims}


def test_the_same_disc_at_two_stations_is_delivered_once(group, tmp_path):
    """Two copies dropped at two stations at once: both are read, the
    second delivery waits for the first and then finds every instance
    acknowledged; and a third copy later sends nothing either."""
    stage = tmp_path / "stage"
    make_ct_series(stage / "disc", 60, patient_id="SAME")
    watches = {}
    for name in ("A", "B"):
        watches[name] = tmp_path / f"watch-{name}"
        watches[name].mkdir()
        group.start(name, watches[name])
        subprocess.run(["cp", "-a", str(stage / "disc"), str(stage / name)], check=True)
    for name, watch in watches.items():
        os.rename(stage / name, watch / "disc")  # both at once
    reports = []
    for name, watch in watches.items():
        done = watch / "imported" / "disc.json"
        wait_until(done.exists, 120, f"{name} done")
        reports.append(json.loads(done.read_text()))
    assert group.received() == 60  # each instance once, though both stations read it
    assert sorted(r["counts"]["already_sent"] for r in reports) == [0, 60]
    os.rename(stage / "disc", watches["B"] / "again")
    wait_until((watches["B"] / "imported" / "again.json").exists, 120, "the third copy")
    assert group.received() == 60


def test_a_disc_held_at_a_is_released_from_b_and_delivered_by_a(group, tmp_path):
    watch, stage = tmp_path / "watch-A", tmp_path / "stage"
    watch.mkdir()
    a, state_a = group.start("A", watch)
    _b, state_b = group.start("B")
    make_ct_series(stage / "two" / "F123", 2, patient_id="F123")
    make_ct_series(stage / "two" / "F456", 2, patient_id="F456")
    os.rename(stage / "two", watch / "two")
    wait_until(lambda: (watch / "held" / "two.json").exists(), 120, "held at A")
    job = json.loads((watch / "held" / "two.json").read_text())["job"]
    assert group.received() == 0
    done = subprocess.run(
        [sys.executable, "-m", "pdimport", "release", job, "--keep-foreign", "--patient",
         "F123", "--operator", "tanaka", "--state-dir", str(state_b), "--config",
         str(group.config("B"))],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "held at station A" in done.stdout, done.stdout + done.stderr
    wait_until(lambda: group.received() == 2, 60, "F123 delivered by A")
    [(state, result, origin)] = _rows(group.url, "SELECT state, result, origin FROM decision_queue")
    assert state == "done" and origin == "B" and json.loads(result)["job"] == job
    assert not _spooled(state_b)  # nothing read at B
    assert a.proc.poll() is None and status(state_a)["jobs"]


def test_b_s_console_shows_the_group_and_its_release_is_done_by_a(group, tmp_path):
    from fixtures_console import PASSWORD, csrf_of, login
    from starlette.testclient import TestClient

    from pdimport import settings
    from pdimport.console.app import ConsoleDeps, create_app
    from pdimport.console.users import UserStore, users_target
    from pdimport.job.importer import Importer

    watch, stage = tmp_path / "watch-A", tmp_path / "stage"
    watch.mkdir()
    group.start("A", watch)
    make_ct_series(stage / "two" / "F123", 2, patient_id="F123")
    make_ct_series(stage / "two" / "F456", 3, patient_id="F456")
    os.rename(stage / "two", watch / "two")
    wait_until(lambda: (watch / "held" / "two.json").exists(), 120, "held at A")
    job = json.loads((watch / "held" / "two.json").read_text())["job"]
    state_b = tmp_path / "B-console"
    cfg = settings.load(
        overrides={
            "state_dir": str(state_b),
            "dest": [group.dest],
            "journal.url": group.url,
            "station.name": "B",
        }
    )
    users = UserStore(users_target(cfg))  # the group's accounts
    users.add("tanaka", "operator", PASSWORD)
    users.close()
    importers: list[Importer] = []

    def importer() -> Importer:
        if not importers:
            importers.append(Importer(cfg))
        return importers[0]

    app = create_app(ConsoleDeps(cfg, lambda: {"drives": {}, "jobs": {}, "queue": {}}, importer))
    client = TestClient(app.app, base_url="http://127.0.0.1")
    try:
        login(client, "tanaka")
        drives = client.get("/drives").text
        assert 'id="station-A"' in drives  # A's board, from its heartbeat
        held = client.get("/decisions").text
        assert job in held
        form = {"csrf": csrf_of(held), "job": job, "patient": "F123", "action": "keep_foreign"}
        done = client.post("/decisions/apply", data=form)
        assert done.status_code == 200 and "station A" in done.text, done.text
        wait_until(lambda: group.received() == 2, 60, "F123 delivered by A")
        today = client.get("/today?date=&station=A").text
        assert job in today and '<td class="station">A</td>' in today
        assert job not in client.get("/today?date=&station=B").text
    finally:
        client.close()
        app.close()
        for imp in importers:
            imp.close()
    assert not _spooled(state_b)  # nothing read at B
