"""Shared fixtures. Each area keeps its fixtures in its own module; they are
imported here so every test sees them.

The test folders mirror the packages of ``daemon/pdimport`` (docs/architecture.md).
A few tests share helpers with another area's tests (``from test_label import
sample_report``): every test folder is put on ``sys.path`` so that works whatever
order pytest collects them in.
"""

import sys
import threading
import time
from pathlib import Path

import pytest

for _area in sorted(Path(__file__).resolve().parent.iterdir()):
    if _area.is_dir() and not _area.name.startswith((".", "_")) and str(_area) not in sys.path:
        sys.path.append(str(_area))
from fixtures_dicom import *
from fixtures_identity import *
from fixtures_media import *
from fixtures_peers import *
from fixtures_pg import *
from fixtures_tls import *


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Guard on every test (after watchdog's tests/conftest.py): a test leaves
    no thread behind. Threads get a short grace period to finish what the test
    already told them to stop doing."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 2.0
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for t in leaked:
        t.join(max(0.0, deadline - time.monotonic()))
    leaked = [t for t in leaked if t.is_alive()]
    assert not leaked, f"leaked threads: {leaked}"
