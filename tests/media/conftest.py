"""Fixtures of the media tests that run whole imports."""

from pathlib import Path

import pytest


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A fresh state directory (journal + spool) per test."""
    return tmp_path / "state"
