"""The worker-process supervisor (pdimport.workers), with real processes:
a worker that answers, one that hangs past its deadline, one that dies
mid-item, stopping them all, and workers that import nothing from the
folder they were started in."""

from __future__ import annotations

import importlib.util
import math
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from pdimport.workers import Supervisor, installation_path

#: Module names a hostile folder shadows: gdcm's ``import dl`` (the field
#: fault), and what a decode worker imports.
HOSTILE = ("dl", "gdcm", "numpy", "pydicom")


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


# ------------------------------------------------------- a clean import path
def hostile_folder(root: Path) -> Path:
    """A folder whose modules shadow :data:`HOSTILE`: each leaves a marker
    ``<name>.imported`` next to it and raises."""
    root.mkdir()
    for name in HOSTILE:
        (root / f"{name}.py").write_text(
            "import pathlib\n"
            "pathlib.Path(__file__).with_suffix('.imported').touch()\n"
            f"raise RuntimeError('hostile {name} imported')\n"
        )
    return root


def report_imports(conn: Connection) -> None:
    """Worker: on any message, where its imports come from, then gdcm
    (whose ``import dl`` failed in the field), numpy and pydicom imported."""
    conn.recv()
    found = {}
    for name in HOSTILE:
        spec = importlib.util.find_spec(name)
        found[name] = spec.origin if spec else None
    import gdcm  # noqa: F401
    import numpy  # noqa: F401
    import pydicom  # noqa: F401

    conn.send((list(sys.path), bool(sys.flags.safe_path), found))


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_workers_import_nothing_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    # The parent as ``python -m`` / ``-c`` leaves it when started there.
    hostile = hostile_folder(tmp_path / "hostile")
    monkeypatch.chdir(hostile)
    monkeypatch.setattr(sys, "path", ["", str(hostile), *sys.path])
    monkeypatch.delenv("PYTHONSAFEPATH", raising=False)
    sup = Supervisor(
        multiprocessing.get_context(method), report_imports, name="test-worker", timeout=60
    )
    try:
        worker = sup.start()
        worker.give("where", "where")
        assert sup.wait([worker]) == [worker]
        [(path, _safe, found)] = list(worker.messages())
    finally:
        sup.kill()
    assert "" not in path and str(hostile) not in path
    assert all(os.path.isabs(entry) for entry in path)
    assert found["dl"] is None
    for name in ("gdcm", "numpy", "pydicom"):
        assert found[name] and not found[name].startswith(str(hostile)), found
    assert not list(hostile.glob("*.imported"))
    # The parent's own path and environment are as they were.
    assert sys.path[:2] == ["", str(hostile)] and "PYTHONSAFEPATH" not in os.environ


def test_the_installation_path_drops_what_the_start_folder_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    site = str(Path(multiprocessing.__file__).parent.parent)
    path = ["", ".", "relative/dir", str(tmp_path), f"{tmp_path}/", site]
    assert installation_path(path) == [site]
