"""Fixtures of the hospital-group tests."""

from __future__ import annotations

import pytest

from pdimport.store.db import Database


@pytest.fixture
def connect():
    """``connect(where) -> Database``, closed after the test."""
    made: list[Database] = []

    def open_one(where) -> Database:
        db = Database(where)
        made.append(db)
        return db

    yield open_one
    for db in made:
        db.close()


@pytest.fixture(params=["postgresql", "sqlite"])
def target(request, tmp_path):
    """The group's database on PostgreSQL, and the same tables in SQLite
    (one station on its own)."""
    return tmp_path / "g.sqlite" if request.param == "sqlite" else request.getfixturevalue("pg_url")
