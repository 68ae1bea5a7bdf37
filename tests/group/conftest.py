"""Fixtures of the hospital-group tests."""

from __future__ import annotations

import pytest
from test_db import target  # noqa: F401 - both backends, as the journal's own tests

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
