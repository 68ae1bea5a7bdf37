"""The worker-process supervisor (pdimport.workers), with real processes:
a worker that answers, one that hangs past its deadline, one that dies
mid-item, and stopping them all."""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from pdimport.workers import Supervisor


def obey(conn: Connection) -> None:
    """Worker: ("echo", x) -> x; ("hang", _) never answers; ("die", n) exits
    with status n; ("deaf", _) stops listening, "stop" included."""
    while (msg := conn.recv()) is not None:
        kind, value = msg
        if kind == "echo":
            conn.send(value)
        elif kind == "die":
            os._exit(value)
        else:
            threading.Event().wait()  # a codec looping, a peer that never answers


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    sup = Supervisor(multiprocessing.get_context("spawn"), obey, name="test-worker", timeout=30)
    yield sup
    sup.kill()


def test_a_worker_that_answers(supervisor: Supervisor) -> None:
    worker = supervisor.start()
    worker.give("a", ("echo", 1))
    worker.give("b", ("echo", 2))
    assert list(worker.held) == ["a", "b"] and worker.deadline < math.inf
    answers = []
    while len(answers) < 2:
        assert supervisor.wait([worker]) == [worker]
        for value in worker.messages():
            answers.append((worker.done(), value))
    assert answers == [("a", 1), ("b", 2)]
    assert not worker.held and worker.deadline == math.inf
    assert worker.alive and not worker.timed_out and not worker.hung_up


def test_a_worker_past_its_deadline_is_killed_and_names_its_item(supervisor: Supervisor) -> None:
    supervisor.timeout = 0.5
    stuck, fine = supervisor.start(), supervisor.start()
    start = time.monotonic()
    stuck.give("looping.dcm", ("hang", None))
    due = supervisor.wait([stuck, fine])
    assert time.monotonic() - start >= 0.5
    assert due == [stuck] and stuck.timed_out and not stuck.alive
    assert list(stuck.held) == ["looping.dcm"]  # the owner reports what it held
    assert stuck.exit_reason() == "signal SIGKILL"
    assert fine.alive and not fine.timed_out


def test_a_worker_that_dies_mid_item(supervisor: Supervisor) -> None:
    worker = supervisor.start()
    worker.give("hostile.dcm", ("die", 3))
    assert supervisor.wait([worker]) == [worker]
    assert list(worker.messages()) == []
    assert not worker.alive and not worker.timed_out  # reaped already
    assert list(worker.held) == ["hostile.dcm"] and worker.exit_reason() == "exit status 3"
    fresh = supervisor.replace(worker)
    assert supervisor.workers == [fresh] and fresh.alive and not fresh.held
    with pytest.raises(OSError):
        worker.give("next.dcm", ("echo", 1))  # its pipe is closed
    fresh.give("next.dcm", ("echo", 1))
    assert supervisor.wait([fresh]) == [fresh] and list(fresh.messages()) == [1]


def test_an_answer_comes_before_a_slower_worker(supervisor: Supervisor) -> None:
    slow, quick = supervisor.start(), supervisor.start()
    slow.give("slow", ("hang", None))
    quick.give("quick", ("echo", "done"))
    assert supervisor.wait([slow, quick]) == [quick]
    assert not slow.timed_out and slow.alive


def test_stop_asks_then_kills(supervisor: Supervisor) -> None:
    polite, deaf, unasked = supervisor.start(), supervisor.start(), supervisor.start()
    deaf.give("x", ("deaf", None))
    procs = [w.proc for w in (polite, deaf, unasked)]
    start = time.monotonic()
    supervisor.stop(1.0, asked=[polite, deaf])
    assert time.monotonic() - start < 4.0  # bounded by the grace, then killed
    assert supervisor.workers == []
    assert [p.is_alive() for p in procs] == [False, False, False]
    assert procs[0].exitcode == 0  # finished when asked
    assert procs[1].exitcode == procs[2].exitcode == -9  # killed


def test_waiting_on_nothing_is_refused(supervisor: Supervisor) -> None:
    with pytest.raises(ValueError, match="nothing to wait for"):
        supervisor.wait([])
