"""A medium whose reads stop at the next chunk once the daemon stops: the
journal and the spool keep what was read, the next start reads the rest."""

from __future__ import annotations

import threading
from typing import Any, BinaryIO, Self

from pdimport.job.lifecycle import Interrupted


class _CancellableStream:
    def __init__(self, fp: BinaryIO, stop: threading.Event) -> None:
        self._fp = fp
        self._stop = stop

    def read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            raise Interrupted()
        return self._fp.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fp.close()


class CancellableMedium:
    """A medium whose reads stop at the next chunk once ``stop`` is set."""

    def __init__(self, medium: Any, stop: threading.Event) -> None:
        self._medium = medium
        self._stop = stop

    def open(self, entry: Any) -> _CancellableStream:
        if self._stop.is_set():
            raise Interrupted()
        return _CancellableStream(self._medium.open(entry), self._stop)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._medium, name)
