"""Both kernel builds for the scanner tests: numba's just-in-time kernels
and the ones compiled ahead of time (pdimport.scan.aot). hardware/setup.sh
builds the latter; without a build for this code, one is made (≈ 12 s)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import ModuleType

from pdimport.scan import aot

_BUILT: dict[str, ModuleType] = {}


def aot_kernels() -> ModuleType:
    """The ahead-of-time build of this code, made once per test session."""
    if "module" not in _BUILT:
        path = aot.find()
        if path is None:
            root = Path(tempfile.mkdtemp(prefix="pdimport-aot-"))
            path = aot.build(root)
        _BUILT["module"] = aot.load_file(path)
    return _BUILT["module"]


def jit_kernels() -> ModuleType:
    from pdimport.scan import _nbbatch

    return _nbbatch
