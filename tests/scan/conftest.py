"""Fixtures of the scanner tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kernels import aot_kernels, jit_kernels

from pdimport.scan import numba_buffers


@pytest.fixture(scope="module", params=["jit", "aot"])
def kernels(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a module's tests once with each kernel build."""
    before = numba_buffers._KERNELS
    numba_buffers._KERNELS = jit_kernels() if request.param == "jit" else aot_kernels()
    try:
        yield request.param
    finally:
        numba_buffers._KERNELS = before
