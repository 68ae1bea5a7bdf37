"""A shared watch folder: each package is claimed by exactly one station
(three processes racing for twenty packages on a real PostgreSQL), and a
station's claim stays its own across a restart."""

from __future__ import annotations

import multiprocessing

import pytest

from pdimport.appliance import group
from pdimport.appliance.group import Stations, WatchClaims


@pytest.fixture
def open_group(connect):
    """``open_group(url)``: the group's tables in a connection closed after the test."""

    def open_one(url: str):
        db = connect(url)
        group.migrate(db, "group", group.MIGRATIONS)
        return db

    return open_one


def _race(url: str, station: str, keys: list[str], start, out) -> None:
    db = group.open_group(url)
    claims = WatchClaims(db, station)
    start.wait()
    out.put((station, [k for k in keys if claims.claim(k)]))
    db.close()


def test_twenty_packages_three_stations_each_claimed_once(pg_url, open_group):
    open_group(pg_url)  # the tables, before the race
    keys = [f"pkg{i:02d}.zip\0{1000 + i}:{i}:0" for i in range(20)]
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(pg_url, s, keys, start, out)) for s in ("A", "B", "C")]
    for p in procs:
        p.start()
    won = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    taken = [k for station in won.values() for k in station]
    assert sorted(taken) == sorted(keys)  # every package once, none twice
    assert WatchClaims(open_group(pg_url), "A").claims() == {
        k.replace("\0", "/"): s for s, ks in won.items() for k in ks
    }


def test_a_restarted_station_keeps_its_claim_others_do_not_take_it(pg_url, open_group):
    a = WatchClaims(open_group(pg_url), "A")
    assert a.claim("scan.iso\x00123:4:0")
    # station A dies mid-import; B sees the package still lying there
    b = WatchClaims(open_group(pg_url), "B")
    assert not b.claim("scan.iso\x00123:4:0")
    assert WatchClaims(open_group(pg_url), "A").claim("scan.iso\x00123:4:0")
    a.done("scan.iso\x00123:4:0", "imported", "job1")
    assert b.claims() == {"scan.iso/123:4:0": "A"}


def test_every_station_sees_the_boards_of_the_group(pg_url, open_group):
    db = open_group(pg_url)
    Stations(db, "desk").publish({"drives": {"/dev/sr0": {"state": "reading"}}, "queue": {}})
    Stations(db, "night").publish({"drives": {}, "queue": {"watch": 3}})
    boards = Stations(open_group(pg_url), "rt").boards()
    assert [b["station"] for b in boards] == ["desk", "night"]
    assert boards[0]["drives"]["/dev/sr0"]["state"] == "reading" and boards[0]["alive"]
    assert boards[1]["queue"] == {"watch": 3}
    assert not Stations(db, "rt").boards(now=boards[0]["heartbeat"] + 60)[0]["alive"]
