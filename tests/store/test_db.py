"""The database layer both journal backends share (pdimport.store.db), on
SQLite and on a real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from pdimport.store.db import (
    POSTGRESQL,
    Database,
    JournalUnavailable,
    Migration,
    columns,
    migrate,
    pg_sql,
)
from pdimport.store.fsutil import DiskFull
from pdimport.store.journal import Journal
from pdimport.store.schema import SCHEMA


@pytest.fixture
def target(backend):
    return backend


def test_placeholders_and_rows(target):
    db = Database(target)
    try:
        db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
        db.executemany("INSERT INTO t (k, v) VALUES (?, ?)", [("a", 1), ("b%", 2)])
        done = db.execute(
            "INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v=excluded.v",
            ("a", 5),
        )
        assert done == [] and done.rowcount == 1
        assert db.execute("SELECT k, v FROM t WHERE k LIKE ? ORDER BY k", ("%",)) == [
            ("a", 5),
            ("b%", 2),
        ]
        assert db.execute("UPDATE t SET v=v+1").rowcount == 2
    finally:
        db.close()


def test_a_transaction_that_raises_writes_nothing(target):
    db = Database(target)
    try:
        db.execute("CREATE TABLE t (x INTEGER)")
        with pytest.raises(RuntimeError), db.transaction():
            db.execute("INSERT INTO t (x) VALUES (?)", (1,))
            with db.transaction():  # nested: joins the outer one
                db.execute("INSERT INTO t (x) VALUES (?)", (2,))
            raise RuntimeError("stop")
        with db.transaction():
            db.execute("INSERT INTO t (x) VALUES (?)", (3,))
        assert db.execute("SELECT x FROM t") == [(3,)]
    finally:
        db.close()


def test_question_mark_inside_a_literal_is_refused():
    assert pg_sql("SELECT ? WHERE a='x' AND b=? AND c='%'".replace("'%'", "'y'")) == (
        "SELECT %s WHERE a='x' AND b=%s AND c='y'"
    )
    with pytest.raises(ValueError, match="literal"):
        pg_sql("SELECT 1 WHERE a='why?'")
    with pytest.raises(ValueError, match="literal"):
        pg_sql("SELECT 1 WHERE a LIKE 'x%'")


STEPS = (
    Migration(1, "a table", "CREATE TABLE IF NOT EXISTS m (x INTEGER) ;"),
    Migration(2, "a column", "ALTER TABLE m ADD COLUMN y REAL"),
)


def test_migrations_apply_once_even_when_stations_start_together(target):
    dbs = [Database(target) for _ in range(4)]
    errors: list[BaseException] = []

    def start(db: Database) -> None:
        try:
            assert migrate(db, "test", STEPS) == 2
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(db,)) for db in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert columns(dbs[0], "m") == {"x", "y"}
        assert dbs[0].execute("SELECT component, version FROM schema_version") == [("test", 2)]
        assert migrate(dbs[0], "test", STEPS) == 2  # again: nothing to do
    finally:
        for db in dbs:
            db.close()


def test_a_failing_migration_applies_no_step(target):
    db = Database(target)
    bad = (*STEPS, Migration(3, "broken", "ALTER TABLE nowhere ADD COLUMN z TEXT"))
    try:
        with pytest.raises(Exception, match="nowhere"):
            migrate(db, "test", bad)
        assert columns(db, "m") == set()
        assert migrate(db, "test", STEPS) == 2
    finally:
        db.close()


def test_journal_of_an_older_pdimport_upgrades_in_place(tmp_path):
    path = tmp_path / "journal.sqlite"
    old = sqlite3.connect(path)  # the tables as pdimport wrote them before issue 19
    old.executescript(SCHEMA)
    old.execute(
        "INSERT INTO jobs VALUES ('j1','k','iso','/x.iso','LBL','import','imported',1,1.0,2.0,NULL)"
    )
    old.execute("INSERT INTO deliveries VALUES ('d','1.2.3','ab','sent',0,'','','j1',1,3.0)")
    old.commit()
    old.close()
    journal = Journal(path, station="desk")
    try:
        job = journal.job("j1")
        assert job is not None and job.station == "" and job.label == "LBL"
        assert journal.sent_set("d") == {("1.2.3", "ab")}
        assert journal.create_job("k2", "iso", "/y.iso", "").station == "desk"
        assert journal.db.execute("SELECT version FROM schema_version") == [(2,)]
    finally:
        journal.close()


def test_lost_server_is_unavailable_then_reconnects(postgres, pg_url):
    db = Database(pg_url)
    try:
        db.execute("CREATE TABLE t (x INTEGER)")
        postgres.stop()
        with pytest.raises(JournalUnavailable) as caught:
            db.execute("INSERT INTO t (x) VALUES (1)")
        assert caught.value.code == "journal_unavailable"
        with pytest.raises(JournalUnavailable):  # still down: refused, clearly
            db.execute("SELECT 1")
        postgres.start()
        db.execute("INSERT INTO t (x) VALUES (2)")
        assert db.execute("SELECT x FROM t") == [(2,)]
        assert db.dialect == POSTGRESQL
    finally:
        db.close()


def test_unreachable_server_at_start_is_unavailable(postgres):
    url = postgres.url("postgres").replace(str(postgres.port), "1")
    with pytest.raises(JournalUnavailable, match="127.0.0.1"):
        Database(url)


def test_full_disk_on_sqlite_is_disk_full(tmp_path):
    db = Database(tmp_path / "db.sqlite")
    try:
        db.execute("CREATE TABLE t (x BLOB)")
        page_count = db.execute("PRAGMA page_count")[0][0]
        db.execute(f"PRAGMA max_page_count={page_count + 2}")
        with pytest.raises(DiskFull):
            db.execute("INSERT INTO t (x) VALUES (?)", (b"x" * 100_000,))
    finally:
        db.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (root)")
def test_full_disk_on_postgresql_is_disk_full(postgres, pg_url):
    """SQLSTATE 53100 ("could not extend file": no space left on device),
    from a tablespace on a 2 MB tmpfs."""
    mnt = Path(tempfile.mkdtemp(prefix="pdimport-pgfull-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        shutil.chown(mnt, "postgres", "postgres")
        db = Database(pg_url)
        try:
            space = "full_" + pg_url.rsplit("/", 1)[1]
            db.execute(f"CREATE TABLESPACE {space} LOCATION '{mnt}'")
            db.execute(f"CREATE TABLE t (x TEXT) TABLESPACE {space}")
            with pytest.raises(DiskFull, match="journal"):
                for _ in range(64):  # 64 x 100 kB of incompressible text > 2 MB
                    db.execute("INSERT INTO t (x) VALUES (?)", (os.urandom(50_000).hex(),))
            db.execute("SELECT 1")  # the connection is still usable
            db.execute("DROP TABLE t")
            db.execute(f"DROP TABLESPACE {space}")
        finally:
            db.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(mnt, ignore_errors=True)
