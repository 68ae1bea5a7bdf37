"""Header scanner plugins (like pydicom's pixel decoders, STYLE.md "Fast
paths as plugins"): each backend has a name, ``is_available()`` and one batch
function, and every backend must match :mod:`pdimport.scan.reference`.

Only the pydicom backend exists today; a numba backend will register here
under the same :class:`~pdimport.model.Scanner` protocol. ``"auto"`` picks
the fastest available one.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from pdimport.model import Scanner

log = logging.getLogger(__name__)

#: name -> "module:Class", fastest first (the order "auto" tries).
_BACKENDS: dict[str, str] = {
    "numba": "pdimport.scan.numba_scanner:NumbaScanner",
    "pydicom": "pdimport.scan.pydicom_scanner:PydicomScanner",
}


class ScannerUnavailable(LookupError):
    """The requested scanner is unknown or its dependencies are missing."""


def _load(name: str, limits: Any) -> Scanner | None:
    module_name, _, cls_name = _BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None  # a backend not (yet) installed
    scanner: Scanner = getattr(module, cls_name)(limits=limits)
    return scanner if scanner.is_available() else None


def available_scanners() -> list[str]:
    """Names of the backends usable here, fastest first."""
    return [name for name in _BACKENDS if _load(name, None) is not None]


def get_scanner(name: str = "auto", limits: Any = None) -> Scanner:
    """A scanner by name (``auto``, ``pydicom``, ``numba``).

    Parameters
    ----------
    name : str
        ``"auto"`` returns the fastest available backend.
    limits : Settings, optional
        Passed to the backend (walker limits); defaults apply when None.

    Raises
    ------
    ScannerUnavailable
        For an unknown name or a backend that cannot run here.
    """
    if name == "auto":
        for candidate in _BACKENDS:
            scanner = _load(candidate, limits)
            if scanner is not None:
                log.debug("scanner auto -> %s", candidate)
                return scanner
        raise ScannerUnavailable("no header scanner is available")
    if name not in _BACKENDS:
        raise ScannerUnavailable(f"unknown scanner {name!r}; known: {', '.join(_BACKENDS)}")
    scanner = _load(name, limits)
    if scanner is None:
        raise ScannerUnavailable(f"scanner {name!r} is not available here")
    return scanner


__all__ = ["ScannerUnavailable", "available_scanners", "get_scanner"]
