"""How far a job's read or delivery is: files and bytes done of the total,
the rate, and the time left.

The total of a medium is known before its read starts (the ISO/UDF
directory, the folder walk, the zip central directory all give sizes), so a
percentage and an ETA are honest from the first chunk. A
:class:`ProgressMeter` counts and tells its sink at most every ``interval``
seconds, so a fast medium does not flood the status board.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: ``sink(job_id, fields)``; fields as :meth:`ProgressMeter.fields` returns them.
ProgressSink = Callable[[str, dict[str, Any]], None]


#: Patient names a job's progress carries (a disc of many patients is held anyway).
MAX_NAMES = 4


class ProgressMeter:
    """Files and bytes of one phase (``reading`` or ``delivering``) of one job."""

    def __init__(
        self,
        job_id: str,
        phase: str,
        files_total: int,
        bytes_total: int,
        sink: ProgressSink | None,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job_id = job_id
        self.phase = phase
        self.files_total = files_total
        self.bytes_total = bytes_total
        self.files_done = 0
        self.bytes_done = 0
        self.patients: list[str] = []  # names seen so far, at most MAX_NAMES
        self._sink = sink
        self._interval = interval
        self._clock = clock
        self._started = clock()
        self._told = float("-inf")

    def add(self, files: int = 0, nbytes: int = 0) -> None:
        self.files_done += files
        self.bytes_done += nbytes
        if self._sink is not None and self._clock() - self._told >= self._interval:
            self._tell()

    def note_patient(self, name: str) -> None:
        """A patient's name seen in a header scanned during the read (any
        thread); the next report of progress carries it."""
        if name and name not in self.patients and len(self.patients) < MAX_NAMES:
            self.patients = [*self.patients, name]

    def finish(self) -> None:
        """The last word of the phase, whatever the interval."""
        if self._sink is not None:
            self._tell()

    def _tell(self) -> None:
        assert self._sink is not None
        self._told = self._clock()
        self._sink(self.job_id, self.fields())

    def fields(self) -> dict[str, Any]:
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = self.bytes_done / elapsed
        left = max(self.bytes_total - self.bytes_done, 0)
        if self.bytes_total:
            percent = 100.0 * min(self.bytes_done, self.bytes_total) / self.bytes_total
        elif self.files_total:
            percent = 100.0 * min(self.files_done, self.files_total) / self.files_total
        else:
            percent = 100.0
        return {
            "phase": self.phase,
            "files_done": self.files_done,
            "files_total": self.files_total,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "percent": round(percent, 1),
            "mb_per_s": round(rate / 1e6, 2),
            "eta_s": round(left / rate, 1) if rate > 0 and left else (0.0 if not left else None),
            "patients": list(self.patients),
        }


def describe(progress: dict[str, Any]) -> str:
    """One line for people: ``45% 120/300 files 140.2/312.0 MB 7.3 MB/s ETA 0:24``."""
    eta = progress.get("eta_s")
    eta_text = "ETA ?" if eta is None else f"ETA {int(eta) // 60}:{int(eta) % 60:02d}"
    return (
        f"{progress.get('percent', 0):.0f}% "
        f"{progress.get('files_done', 0)}/{progress.get('files_total', 0)} files "
        f"{progress.get('bytes_done', 0) / 1e6:.1f}/{progress.get('bytes_total', 0) / 1e6:.1f} MB "
        f"{progress.get('mb_per_s', 0):.1f} MB/s {eta_text}"
    )
