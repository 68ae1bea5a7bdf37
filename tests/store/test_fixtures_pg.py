"""The PostgreSQL fixture itself: a fresh database per test, and a server
that can be stopped and started again in the middle of a test."""

from __future__ import annotations

import psycopg
import pytest


def test_each_test_gets_an_empty_database(pg_url):
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema='public'"
        ).fetchone()
        assert tables == (0,)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_stopped_or_killed_server_keeps_what_was_committed(postgres, pg_url, how):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")
    getattr(postgres, how)()
    assert not postgres.running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_url, connect_timeout=2)
    postgres.start()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
