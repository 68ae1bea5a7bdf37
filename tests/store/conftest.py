"""Every store test runs on both journal backends: the embedded SQLite file
and a fresh database on the session's real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a journal lives: an SQLite path, or a ``postgresql://`` URL."""
    if request.param == "sqlite":
        return tmp_path / "journal.sqlite"
    url: str = request.getfixturevalue("pg_url")
    return url
