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

Job lifecycle (queued → reading → read → delivering → done | held | waiting |
failed): see :data:`JOB_TRANSITIONS`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ drive
EMPTY, INSERTED, READING, READ = "empty", "inserted", "reading", "read"
DELIVERING, EJECTING, FAILED = "delivering", "ejecting", "failed"

DRIVE_STATES = (EMPTY, INSERTED, READING, READ, DELIVERING, EJECTING, FAILED)
DRIVE_EVENTS = ("insert", "start_read", "read_done", "read_failed", "deliver", "delivered",
                "eject", "ejected", "removed", "fail", "reset")

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
JOB_STATES = ("queued", "reading", "read", "delivering", "waiting", "done", "held", "failed")
JOB_EVENTS = ("start_read", "read_done", "read_failed", "deliver", "delivered", "held",
              "wait", "retry", "fail", "interrupted")

#: ``(state, event) -> next state`` of one job as the daemon drives it.
JOB_TRANSITIONS: Mapping[tuple[str, str], str] = {
    ("queued", "start_read"): "reading",
    ("queued", "deliver"): "delivering",  # resumed after a restart, fully read
    ("reading", "read_done"): "read",
    ("reading", "read_failed"): "failed",
    ("reading", "interrupted"): "queued",  # SIGTERM: the spool + journal keep what was read
    ("read", "deliver"): "delivering",
    ("read", "interrupted"): "queued",
    ("delivering", "delivered"): "done",
    ("delivering", "held"): "held",
    ("delivering", "wait"): "waiting",  # the PACS is down: back-off, then again
    ("delivering", "fail"): "failed",
    ("delivering", "interrupted"): "queued",
    ("waiting", "retry"): "delivering",
    ("waiting", "interrupted"): "waiting",
}


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

    def __init__(self, name: str, table: Mapping[tuple[str, str], str], initial: str,
                 observers: tuple[Observer, ...] | list[Observer] = ()) -> None:
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
            except Exception:  # noqa: BLE001 - a notification never breaks the worker
                log.exception("lifecycle observer %r failed on %s", observer, transition)


def drive_lifecycle(devnode: str, observers: tuple[Observer, ...] | list[Observer] = ()
                    ) -> Lifecycle:
    """A new drive lifecycle, starting ``empty``."""
    return Lifecycle(devnode, TRANSITIONS, EMPTY, observers)


def job_lifecycle(job_id: str, initial: str = "queued",
                  observers: tuple[Observer, ...] | list[Observer] = ()) -> Lifecycle:
    """A new job lifecycle."""
    return Lifecycle(job_id, JOB_TRANSITIONS, initial, observers)
