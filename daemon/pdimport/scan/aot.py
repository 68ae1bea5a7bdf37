"""The numba kernels compiled ahead of time, so a process can scan without
importing numba.

Importing numba costs ≈ 0.3 s and loading its cached kernels another
≈ 0.15-0.3 s (numba rebuilds its typing and target contexts first): more
than the whole scan of a 10,000-file folder. ``numba.pycc`` compiles the
same Python functions (:mod:`~pdimport.scan._nbbatch` and the modules it
calls) into an ordinary extension module that needs only numpy at run time.

* :func:`build` compiles it (≈ 12 s; ``python -m pdimport.scan.aot``, which
  ``hardware/setup.sh`` runs once). It needs numba and a C compiler.
* :func:`load` finds a build made from exactly these kernel sources for
  this Python and numpy, and imports it; otherwise it returns None and the
  scanner compiles or loads the kernels with numba just in time, as before.
  A stale build is never used: its folder is named by a digest of the
  kernel sources (every ``_nb*.py``), the numpy version and the
  interpreter's ABI tag.

The build lives in :mod:`~pdimport.scan.cachedir` (under ``NUMBA_CACHE_DIR``
when that is set, else the package's ``__pycache__``). Native code is
loaded from there only if the folder and the file belong to this user or
root and nobody else may write them.

``PDIMPORT_SCAN_KERNELS`` chooses: ``auto`` (default: the build if there is
one), ``aot`` (the build or nothing) or ``jit`` (numba, never the build).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from pdimport.scan import cachedir

log = logging.getLogger(__name__)

#: The extension module's name (its ``PyInit_`` symbol); one per process.
MODULE = "_pdimport_nbaot"
#: Where the kernel sources are: every ``_nb*.py`` of this package.
_HERE = Path(__file__).resolve().parent
ENV = "PDIMPORT_SCAN_KERNELS"


class AotUnavailable(RuntimeError):
    """``PDIMPORT_SCAN_KERNELS=aot`` and no usable build."""


def choice() -> str:
    """``auto``, ``aot`` or ``jit`` from :data:`ENV`."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "aot", "jit"):
        raise ValueError(f"{ENV}={value!r}: expected auto, aot or jit")
    return value


def sources() -> list[Path]:
    """The files the kernels are compiled from, in a fixed order."""
    return sorted(_HERE.glob("_nb*.py"))


def key() -> str:
    """Names one build: the kernel sources, numpy, the interpreter's ABI."""
    import numpy

    h = hashlib.sha256()
    for path in sources():
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(f"numpy {numpy.__version__}\0{sys.implementation.cache_tag}\0".encode())
    h.update(str(sysconfig.get_config_var("EXT_SUFFIX")).encode())
    return h.hexdigest()[:20]


def _filename() -> str:
    return MODULE + str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def find(build_key: str | None = None) -> Path | None:
    """The build for ``build_key`` (default: this code's), if one exists."""
    build_key = build_key or key()
    for root in cachedir.roots():
        folder = root / build_key
        path = folder / _filename()
        if path.is_file():
            if cachedir.trusted(folder) and cachedir.trusted(path):
                return path
            log.warning("ignoring %s: writable by others or not ours", path)
    return None


_LOADED: dict[Path, ModuleType] = {}


def load_file(path: Path) -> ModuleType:
    """Import the extension module at ``path`` (once per process)."""
    if path not in _LOADED:
        loader = importlib.machinery.ExtensionFileLoader(MODULE, str(path))
        spec = importlib.util.spec_from_file_location(MODULE, path, loader=loader)
        if spec is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        _LOADED[path] = module
    return _LOADED[path]


def load() -> ModuleType | None:
    """The compiled kernels, or None when numba should compile them."""
    mode = choice()
    if mode == "jit":
        return None
    path = find()
    if path is None:
        if mode == "aot":
            raise AotUnavailable(
                f"no kernels built ahead of time for {key()} in {cachedir.roots()}"
            )
        return None
    try:
        return load_file(path)
    except ImportError as exc:
        if mode == "aot":
            raise AotUnavailable(f"{path}: {exc}") from exc
        log.warning("kernels built ahead of time at %s do not load: %s", path, exc)
        return None


# ------------------------------------------------------------------ build
def _signatures() -> dict[str, object]:
    """The exported entry points with the argument types the scanner
    passes (:mod:`~pdimport.scan.numba_batch`, :mod:`~pdimport.scan.numba_buffers`)."""
    from numba import types as t

    u8 = t.Array(t.uint8, 1, "C")
    u8x2 = t.Array(t.uint8, 2, "C")
    i8, i8x2, i8x3 = (t.Array(t.int64, n, "C") for n in (1, 2, 3))
    walk: list[Any] = [u8x2, i8, i8, i8, i8, t.int64, i8, i8, i8, i8, i8x2, i8x2, i8x2, i8x2, i8x3]
    walk += [u8x2, u8, i8, u8, i8, i8, u8]
    # the file names come from np.frombuffer(bytes): a read-only array
    names = t.Array(t.uint8, 1, "C", readonly=True)
    return {
        "walk_batch": t.void(*walk),
        "read_walk_batch": t.void(names, i8, t.int64, *walk),
    }


def build(root: Path | None = None) -> Path:
    """Compile the kernels into ``root/KEY/`` (default: the first of
    :func:`roots`) and return the module's path. Atomic: a folder appears
    whole or not at all, so concurrent builds cannot leave half a file."""
    from numba.pycc import CC

    from pdimport.scan import _nbbatch

    build_key = key()
    root = root or cachedir.roots()[0]
    root.mkdir(parents=True, exist_ok=True)
    final = root / build_key
    tmp = Path(tempfile.mkdtemp(prefix=f".{build_key}-", dir=root))
    try:
        cc = CC(MODULE)
        cc.output_dir = str(tmp)
        cc.verbose = False
        for name, signature in _signatures().items():
            cc.export(name, signature)(getattr(_nbbatch, name).py_func)
        cc.compile()
        for leftover in tmp.iterdir():  # the compiler's object files, if any
            if leftover.name != _filename():
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        (tmp / _filename()).chmod(0o755)
        tmp.chmod(0o755)
        try:
            tmp.rename(final)
        except OSError:
            if not (final / _filename()).is_file():
                raise
            shutil.rmtree(tmp)  # another build won; it is the same code
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final / _filename()


def main(argv: list[str] | None = None) -> int:
    """``python -m pdimport.scan.aot [--check] [--out DIR]``."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m pdimport.scan.aot", description=__doc__.split("\n")[0]
    )
    p.add_argument("--out", type=Path, help="root folder of the build (default: %(default)s)")
    p.add_argument(
        "--check", action="store_true", help="only say whether a build exists (exit 1 if not)"
    )
    args = p.parse_args(argv)
    found = find()
    if args.check:
        print(found or f"no build for {key()}")
        return 0 if found else 1
    if found and args.out is None:
        print(f"up to date: {found}")
        return 0
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
