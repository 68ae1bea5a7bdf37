"""Lifecycles of a drive and of a job, written as transition tables.

After ``pynetdicom/fsm.py``: the whole protocol is one table
``TRANSITIONS[(state, event)] -> next_state``; a pair that is not in the table
is an :class:`IllegalTransition`, never a silent no-op; every transition is
announced to observers (notifications: label, status file, metrics, audit),
whose exceptions are logged and never reach the worker that fired the event.

Drive lifecycle (one per drive, owned by that drive's worker thread)::

    empty ─insert→ inserted ─start_read→ reading ─read_done→ read
    read ─deliver→ delivering ─delivered→ ejecting ─ejected→ empty
    read ─eject→ ejecting                     (eject_after = "read")
    any busy state ─fail→ failed ─eject→ ejecting
    inserted/reading/read/delivering/ejecting/failed ─removed→ empty/failed

Job lifecycle: see :data:`JOB_TRANSITIONS`::

    queued ─start_read→ reading ─read_done→ read ─inventory→ inventoried
    inventoried ─hold→ held | ─deliver→ delivering | ─scanned→ scanned
    delivering ─delivered|partial|wait|fail|discard|hold→
        imported | partial | waiting_for_destination | failed | discarded | held
    held ─release→ delivering; held ─discard→ discarded
    waiting_for_destination | failed | partial ─retry→ delivering
    reading ─interrupted→ queued; inventoried/delivering ─interrupted→ read

The journal (:meth:`pdimport.store.journal.Journal.transition`) is the only
writer of a job's state; it checks this table and records every transition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ drive
EMPTY, INSERTED, READING, READ = "empty", "inserted", "reading", "read"
DELIVERING, EJECTING, FAILED = "delivering", "ejecting", "failed"

DRIVE_STATES = (EMPTY, INSERTED, READING, READ, DELIVERING, EJECTING, FAILED)
DRIVE_EVENTS = (
    "insert",
    "start_read",
    "read_done",
    "read_failed",
    "deliver",
    "delivered",
    "eject",
    "ejected",
    "removed",
    "fail",
    "reset",
)

#: ``(state, event) -> next state`` of one drive.
TRANSITIONS: Mapping[tuple[str, str], str] = {
    (EMPTY, "insert"): INSERTED,
    # udev repeats "no media" events; an empty drive stays empty.
    (EMPTY, "removed"): EMPTY,
    # The operator pressed the button on an empty, locked tray.
    (EMPTY, "eject"): EJECTING,
    (INSERTED, "start_read"): READING,
    # Blank discs and audio CDs are recognised, reported and ejected unread.
    (INSERTED, "eject"): EJECTING,
    (INSERTED, "removed"): EMPTY,
    (INSERTED, "fail"): FAILED,
    (READING, "read_done"): READ,
    (READING, "read_failed"): FAILED,
    # Pulled out mid-read (USB stick, loop detached): what was read is recorded.
    (READING, "removed"): FAILED,
    (READING, "fail"): FAILED,
    (READ, "deliver"): DELIVERING,
    (READ, "eject"): EJECTING,  # eject_after = "read", or the eject button
    (READ, "removed"): EMPTY,  # the bytes are in the spool already
    (READ, "fail"): FAILED,
    # The disc comes out however delivery went: a waiting job lives on in the
    # journal, the medium is not needed again.
    (DELIVERING, "delivered"): EJECTING,
    (DELIVERING, "eject"): EJECTING,
    (DELIVERING, "removed"): EMPTY,
    (DELIVERING, "fail"): FAILED,
    (EJECTING, "ejected"): EMPTY,
    (EJECTING, "removed"): EMPTY,
    (EJECTING, "fail"): FAILED,  # the tray would not open: recorded, a person looks
    (FAILED, "eject"): EJECTING,
    (FAILED, "removed"): EMPTY,
    (FAILED, "reset"): EMPTY,
    (FAILED, "fail"): FAILED,
}


# -------------------------------------------------------------------- job
class JobState(StrEnum):
    """Where a job is. The value is what the journal, the report's
    ``status``, ``pdimport status``/``jobs``, the watch folder and the label show."""

    QUEUED = "queued"
    READING = "reading"
    READ = "read"
    INVENTORIED = "inventoried"
    HELD = "held"
    DELIVERING = "delivering"
    IMPORTED = "imported"
    PARTIAL = "partial"
    WAITING_FOR_DESTINATION = "waiting_for_destination"
    FAILED = "failed"
    DISCARDED = "discarded"
    SCANNED = "scanned"  # the end of ``pdimport scan``


class JobEvent(StrEnum):
    """What happens to a job."""

    START_READ = "start_read"
    READ_DONE = "read_done"
    READ_FAILED = "read_failed"
    INVENTORY = "inventory"
    HOLD = "hold"
    DELIVER = "deliver"
    DELIVERED = "delivered"
    PARTIAL = "partial"
    WAIT = "wait"
    FAIL = "fail"
    SCANNED = "scanned"
    RELEASE = "release"
    DISCARD = "discard"
    RETRY = "retry"
    INTERRUPTED = "interrupted"


#: A job in one of these states is finished for now: only a person
#: (release, discard) or the retry worker moves it on.
FINAL_JOB_STATES = frozenset(
    {
        JobState.IMPORTED,
        JobState.HELD,
        JobState.PARTIAL,
        JobState.FAILED,
        JobState.DISCARDED,
        JobState.SCANNED,
    }
)

#: States written by older versions, as they read now.
LEGACY_JOB_STATES: Mapping[str, JobState] = {
    "done": JobState.IMPORTED,
    "waiting": JobState.WAITING_FOR_DESTINATION,
}

_S, _E = JobState, JobEvent
#: ``(state, event) -> next state`` of one job: the only place its state changes.
JOB_TRANSITIONS: Mapping[tuple[JobState, JobEvent], JobState] = {
    (_S.QUEUED, _E.START_READ): _S.READING,
    (_S.READING, _E.READ_DONE): _S.READ,
    (_S.READING, _E.READ_FAILED): _S.FAILED,
    # SIGTERM or a crash mid-read: the spool + journal keep what was read.
    (_S.READING, _E.INTERRUPTED): _S.QUEUED,
    (_S.READ, _E.INVENTORY): _S.INVENTORIED,
    (_S.READ, _E.FAIL): _S.FAILED,
    (_S.INVENTORIED, _E.HOLD): _S.HELD,
    (_S.INVENTORIED, _E.DELIVER): _S.DELIVERING,
    (_S.INVENTORIED, _E.SCANNED): _S.SCANNED,
    (_S.INVENTORIED, _E.FAIL): _S.FAILED,  # nothing usable on the medium
    (_S.INVENTORIED, _E.INTERRUPTED): _S.READ,
    (_S.DELIVERING, _E.DELIVERED): _S.IMPORTED,
    (_S.DELIVERING, _E.PARTIAL): _S.PARTIAL,
    (_S.DELIVERING, _E.WAIT): _S.WAITING_FOR_DESTINATION,  # the PACS is down: back-off
    (_S.DELIVERING, _E.FAIL): _S.FAILED,
    (_S.DELIVERING, _E.DISCARD): _S.DISCARDED,  # nothing left to send (all skipped)
    (_S.DELIVERING, _E.INTERRUPTED): _S.READ,  # acknowledged instances are journaled
    # Some patients of the medium were released and delivered, others still
    # wait for a person's decision.
    (_S.DELIVERING, _E.HOLD): _S.HELD,
    (_S.HELD, _E.RELEASE): _S.DELIVERING,
    (_S.HELD, _E.DISCARD): _S.DISCARDED,
    (_S.WAITING_FOR_DESTINATION, _E.RETRY): _S.DELIVERING,
    (_S.WAITING_FOR_DESTINATION, _E.DISCARD): _S.DISCARDED,
    (_S.WAITING_FOR_DESTINATION, _E.INTERRUPTED): _S.WAITING_FOR_DESTINATION,
    (_S.FAILED, _E.RETRY): _S.DELIVERING,  # redelivered (pdimport retry, a resend)
    (_S.PARTIAL, _E.RETRY): _S.DELIVERING,
    (_S.FAILED, _E.DISCARD): _S.DISCARDED,
    (_S.PARTIAL, _E.DISCARD): _S.DISCARDED,
}
del _S, _E

JOB_STATES = tuple(JobState)
JOB_EVENTS = tuple(JobEvent)


def job_state(value: str) -> JobState:
    """A stored state string as a :class:`JobState` (old names mapped)."""
    return LEGACY_JOB_STATES.get(value) or JobState(value)


class Interrupted(BaseException):
    """Raised inside a read or a delivery when the process stops.

    A ``BaseException`` so no ``except Exception`` on the way records it as a
    file problem: the step must stop, not complete with holes. The job takes
    the ``interrupted`` event when it resumes.
    """


class IllegalTransition(RuntimeError):
    """An event that the lifecycle table does not allow in the current state."""

    def __init__(self, machine: str, state: str, event: str) -> None:
        super().__init__(f"{machine}: event {event!r} is not allowed in state {state!r}")
        self.machine = machine
        self.state = state
        self.event = event


@dataclass(frozen=True)
class Transition:
    """What observers receive for each transition."""

    machine: str  # e.g. "/dev/sr0" or a job id
    event: str
    source: str
    target: str
    info: Mapping[str, Any] = field(default_factory=dict)
    time: float = 0.0


Observer = Callable[[Transition], None]


class Lifecycle:
    """One state machine instance driven by a transition table.

    Parameters
    ----------
    name : str
        Identifies the machine in events and errors (a devnode, a job id).
    table : mapping
        ``(state, event) -> next_state``.
    initial : str
        The starting state.
    observers : iterable of callables, optional
        Each is called with a :class:`Transition` after every transition.
    """

    def __init__(
        self,
        name: str,
        table: Mapping[tuple[Any, Any], str],
        initial: str,
        observers: tuple[Observer, ...] | list[Observer] = (),
    ) -> None:
        self.name = name
        self._table = table
        self._state = initial
        self._observers = list(observers)
        # Firing is normally done by one owner thread; the lock keeps a reader
        # (status) from seeing a half-done change when it is not.
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        return self._state

    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def can(self, event: str) -> bool:
        """True when ``event`` is legal in the current state."""
        return (self._state, event) in self._table

    def fire(self, event: str, **info: Any) -> str:
        """Apply ``event``; return the new state.

        Raises
        ------
        IllegalTransition
            When ``(state, event)`` is not in the table; the state is unchanged.
        """
        with self._lock:
            source = self._state
            try:
                target = self._table[(source, event)]
            except KeyError:
                raise IllegalTransition(self.name, source, event) from None
            self._state = target
        self._notify(Transition(self.name, event, source, target, dict(info), time.time()))
        return target

    def _notify(self, transition: Transition) -> None:
        for observer in list(self._observers):
            try:
                observer(transition)
            except Exception:
                log.exception("lifecycle observer %r failed on %s", observer, transition)


def drive_lifecycle(
    devnode: str, observers: tuple[Observer, ...] | list[Observer] = ()
) -> Lifecycle:
    """A new drive lifecycle, starting ``empty``."""
    return Lifecycle(devnode, TRANSITIONS, EMPTY, observers)


def job_lifecycle(
    job_id: str,
    initial: str = JobState.QUEUED,
    observers: tuple[Observer, ...] | list[Observer] = (),
) -> Lifecycle:
    """A new job lifecycle."""
    return Lifecycle(job_id, JOB_TRANSITIONS, initial, observers)
