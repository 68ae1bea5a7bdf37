"""Shared set-up for the benchmarks: the test peers and a generated corpus.

The peers (dcmtk storescp, Orthanc) are the fixtures of ``tests/``; the
corpus is generated once per session into a temporary folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures_iso import ct_iso  # noqa: F401 - bench/fixtures_iso.py (ISO bench)
from fixtures_peers import *
from fixtures_scan import scan_ct_files, scan_mr_files  # noqa: F401 - bench/fixtures_scan.py


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench: a benchmark (bench/, never in the test run)")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from report import ROWS, table

    if ROWS:
        terminalreporter.write_sep("=", "C-STORE side by side (ratio = images/s ÷ first row)")
        terminalreporter.write_line(table())
    for name, title in (
        ("bench_iso", "ISO import through the drive model"),
        ("bench_decode", "decode throughput side by side"),
        ("bench_scan", "header scan side by side (ratio = peer time / numba time)"),
        ("bench_e2e", "whole processes side by side (ratio = peer's time ÷ this row's)"),
        ("bench_dicomweb", "DICOMweb intake side by side (ratio = reference time ÷ this row's)"),
    ):
        module = sys.modules.get(name)
        if module is not None and module.RESULTS:
            terminalreporter.write_sep("=", title)
            terminalreporter.write_line(module.table())
