"""Where the scanner keeps what it makes once and loads in later processes:
the kernels compiled ahead of time (:mod:`~pdimport.scan.aot`) and the
lookup tables made from pydicom's dictionary (:mod:`~pdimport.scan._nbcodes`).

``NUMBA_CACHE_DIR/pdimport-aot`` when that is set (the systemd unit sets
it), else the package's ``__pycache__/pdimport-aot`` beside numba's own
cache. What is loaded from there must belong to this user or root and be
writable by nobody else.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent


def roots() -> list[Path]:
    """Where builds are looked for, first match wins."""
    out = []
    if os.environ.get("NUMBA_CACHE_DIR"):
        out.append(Path(os.environ["NUMBA_CACHE_DIR"]) / "pdimport-aot")
    out.append(_HERE / "__pycache__" / "pdimport-aot")
    return out


def trusted(path: Path) -> bool:
    """Owned by us or root, writable by nobody else (code runs from it)."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_uid not in (0, os.geteuid()):
        return False
    return not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def cached_arrays(
    name: str, inputs: list[Path], make: Callable[[], tuple[np.ndarray, ...]]
) -> tuple[np.ndarray, ...]:
    """``make()``, kept in the first root as ``NAME-KEY.npz`` where KEY names
    the contents of ``inputs``: later processes load it instead (plain
    arrays, ``allow_pickle=False``). A folder that cannot be written only
    means the arrays are made each time."""
    import numpy as np

    h = hashlib.sha256(f"numpy {np.__version__}\0".encode())
    for path in inputs:
        h.update(str(path).encode() + b"\0" + path.read_bytes())
    filename = f"{name}-{h.hexdigest()[:20]}.npz"
    for root in roots():
        path = root / filename
        if path.is_file() and trusted(path):
            try:
                with np.load(path, allow_pickle=False) as z:
                    return tuple(z[f"arr_{i}"] for i in range(len(z.files)))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring %s: %s", path, exc)
    arrays = make()
    root = roots()[0]
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{filename}-", dir=root)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, *arrays)
            os.chmod(tmp, 0o644)
            os.replace(tmp, root / filename)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        log.debug("arrays %s not kept: %s", filename, exc)
    return arrays
