"""Group commit of delivery outcomes into the journal.

Why: one ``synchronous=FULL`` commit (an fsync) per acknowledged instance
held a whole delivery to the disc's sync rate (issue 13: most of a 1,000
image import was the parent waiting for it, with the send workers idle).
"""

from __future__ import annotations

import time
from typing import Any

from pdimport.store.journal import Journal

#: A commit group of delivery outcomes (:class:`DeliveryRecorder`): at most
#: this many rows, or this many seconds since its first row. A crash loses
#: at most one group of acknowledgements, which are then sent again.
DELIVERY_GROUP_ROWS = 32
DELIVERY_GROUP_SECONDS = 0.1


class DeliveryRecorder:
    """Group commit of delivery outcomes.

    An acknowledged instance is recorded once it and the others of its
    group are committed together: when the group holds
    :data:`DELIVERY_GROUP_ROWS` rows, when an outcome arrives
    :data:`DELIVERY_GROUP_SECONDS` or more after the group's first one, and
    at :meth:`flush` (the caller flushes before it waits or returns). One
    ``synchronous=FULL`` commit per instance (an fsync each) held a whole
    delivery to the disc's sync rate; this way a crash costs at most one
    group of acknowledgements, which the next run sends again (PS3.4 B.2.2
    lets an SCP take a repeated SOP Instance UID).
    """

    def __init__(
        self,
        journal: Journal,
        max_rows: int = DELIVERY_GROUP_ROWS,
        max_seconds: float = DELIVERY_GROUP_SECONDS,
    ) -> None:
        self._journal = journal
        self._max_rows = max(1, max_rows)
        self._max_seconds = max_seconds
        self._rows: list[tuple[Any, ...]] = []
        self._first = 0.0

    def add(self, *fields: Any) -> None:
        """Buffer one outcome, the arguments of :meth:`Journal.record_delivery`
        (dest, uid, sha256, state, status, code, detail, job_id); commit the
        group if it is full or old enough."""
        now = time.monotonic()
        if not self._rows:
            self._first = now
        self._rows.append((*fields, time.time()))
        if len(self._rows) >= self._max_rows or now - self._first >= self._max_seconds:
            self.flush()

    def flush(self) -> None:
        """Commit what is buffered (nothing to do when empty)."""
        rows, self._rows = self._rows, []
        self._journal.record_deliveries(rows)
