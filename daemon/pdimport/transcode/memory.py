"""How much memory a decode worker, and each file it decodes, may take.

The pool shares one budget (setting ``decode.memory_budget_mb``) between its
workers: each worker's address space is capped at its share for life
(``RLIMIT_AS``, soft and hard). Each file is capped lower, from what it
should need: :func:`file_need`, from Rows, Columns, Samples per Pixel, Bits
Allocated and Number of Frames, with a margin for the codec and the copies
pydicom makes. A codestream that makes a codec ask for more than its image
can need (the 6 KB JPEG 2000 whose SIZ says 30000x30000) then fails with
``MemoryError`` at a few hundred MB instead of taking the worker's share.
The codestream header check (:mod:`pdimport.transcode.codestream`) refuses
such a file before any allocation; the cap is what holds when a codec
misbehaves anyway.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager

#: Fixed allowance per file above what its pixels need: the interpreter's
#: growth, a codec's tables, a thread arena (glibc reserves 64 MiB each).
SLACK = 256 << 20
#: Smallest share worth a worker: an idle worker with pydicom, numpy and the
#: codecs loaded maps about 200 MB here.
MIN_WORKER = 512 << 20


def workers_within(budget: int, workers: int) -> int:
    """How many of `workers` fit in `budget` bytes at :data:`MIN_WORKER` each (at least 1)."""
    return max(1, min(workers, budget // MIN_WORKER))


def file_need(src: str | os.PathLike[str]) -> int:
    """Bytes a decode of `src` may use beyond the worker's current size.

    Three times the decoded pixels (the array, the bytes written back to
    Pixel Data, a colour conversion), 8 bytes per sample of one frame for
    the codec (OpenJPEG keeps each sample as a 32-bit integer, plus a tile
    buffer), twice the file (read, then held by the dataset) and
    :data:`SLACK`. A file whose attributes cannot be read gets the file and
    slack only: its decode fails anyway.
    """
    import pydicom

    from pdimport.transcode.codestream import Expected

    size = os.path.getsize(src)
    try:
        expected = Expected.of(pydicom.dcmread(src, stop_before_pixels=True))
    except Exception:  # noqa: BLE001 - a hostile header: the decode reports it
        return 2 * size + SLACK
    codec = expected.rows * expected.columns * expected.samples * 8
    return 3 * expected.decoded_bytes + codec + 2 * size + SLACK


def _status(field: str) -> int:
    """A ``kB`` field of /proc/self/status, in bytes (0 where there is none)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fp:
            for line in fp:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def address_space() -> int:
    """This process's mapped address space now (VmSize), what ``RLIMIT_AS`` counts."""
    return _status("VmSize")


def peak_rss() -> int:
    """This process's peak resident memory (VmHWM; ``ru_maxrss`` where /proc is missing)."""
    return _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cap_worker(share: int) -> None:
    """Cap this process's address space at `share` bytes for good (0: no cap)."""
    if share > 0:
        resource.setrlimit(resource.RLIMIT_AS, (share, share))


@contextmanager
def capped(limit: int) -> Iterator[int]:
    """Lower the soft address-space limit to `limit` bytes for the block, then restore it.

    Never above the hard limit (the worker's share); 0 leaves it as it is.
    Yields the limit in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if limit <= 0:
        yield soft
        return
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


__all__ = [
    "MIN_WORKER",
    "SLACK",
    "address_space",
    "cap_worker",
    "capped",
    "file_need",
    "peak_rss",
    "workers_within",
]
