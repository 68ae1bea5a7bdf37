"""Shared fixtures. Each area keeps its fixtures in its own module; they are
imported here so every test sees them."""

import threading

import pytest
from fixtures_dicom import *
from fixtures_media import *
from fixtures_peers import *


@pytest.fixture
def no_leaked_threads():
    """Guard (after watchdog's tests/conftest.py): a test leaves no thread behind."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"leaked threads: {leaked}"
