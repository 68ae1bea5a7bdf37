"""Fixtures of the appliance tests."""

from __future__ import annotations

import pytest
from fixtures_daemon import DaemonProc


@pytest.fixture
def daemon_factory(tmp_path):
    made: list[DaemonProc] = []

    def start(base: dict, extra: dict) -> DaemonProc:
        d = DaemonProc(tmp_path, base, extra)
        made.append(d)
        return d

    yield start
    for d in made:
        d.close()
