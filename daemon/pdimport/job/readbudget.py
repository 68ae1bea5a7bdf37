"""How much of a damaged medium is worth reading.

Each unreadable sector costs a real drive its own retries, and the kernel's
(sr: 3 attempts of up to 30 s): a badly scratched disc can hold a drive for
an hour and still yield nothing (hardware notes §3.4). The reader therefore
keeps a per-medium budget of unreadable sectors and of time spent on files
that failed; once either is used up, the files not yet read are recorded as
``read_abandoned`` (nothing is dropped silently), the read ends, and the job
goes on with what was read: the disc is ejected and labelled partial.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pdimport.model import MediumReadError
from pdimport.settings import Settings


@dataclass
class ReadBudget:
    """A medium's read-error budget.

    Parameters
    ----------
    max_bad_sectors : int
        Unreadable sectors allowed; one more uses the budget up.
    max_error_seconds : float
        Time allowed on files whose read failed.
    """

    max_bad_sectors: int
    max_error_seconds: float
    clock: Callable[[], float] = time.monotonic
    bad_sectors: int = 0
    error_seconds: float = 0.0
    _started: float | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> ReadBudget:
        return cls(
            int(settings.get("limits.max_bad_sectors")),
            60.0 * float(settings.get("limits.max_read_error_minutes")),
        )

    def start(self) -> None:
        """An entry's read begins."""
        self._started = self.clock()

    def failed(self, exc: MediumReadError | OSError) -> None:
        """The entry begun last failed with `exc`: charge its sectors and time."""
        if self._started is not None:
            self.error_seconds += self.clock() - self._started
        self.bad_sectors += len(getattr(exc, "lbas", ())) or 1

    @property
    def exhausted(self) -> bool:
        return (
            self.bad_sectors > self.max_bad_sectors or self.error_seconds > self.max_error_seconds
        )

    def why(self) -> str:
        """The detail of ``read_abandoned``."""
        return (
            f"{self.bad_sectors} unreadable sectors (budget {self.max_bad_sectors}), "
            f"{self.error_seconds:.0f} s on failing files (budget {self.max_error_seconds:.0f} s)"
        )
