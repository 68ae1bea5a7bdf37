"""The one supervisor of worker processes (decode workers, send workers).

A worker is a process running ``target(conn, *args)`` with one end of a
:func:`multiprocessing.Pipe`; the parent keeps the other end. The parent
hands it items, each with a key, and the worker answers them in order. While
a worker holds an item, the oldest one has a deadline: a worker still holding
it past ``timeout`` seconds (a codec looping on a hostile file, a peer that
never answers) is killed, and its owner learns which items it held.

:class:`Supervisor` starts workers, blocks on all their pipes and process
sentinels at once (:func:`multiprocessing.connection.wait`, never a polling
loop), kills the ones past their deadline, and stops them all: asked to
finish first, killed after a grace period. What an answer, a death or a
timeout *means* (``decode_failed``, an instance ``unknown``, a retry) stays
with the owner: :mod:`pdimport.transcode.decode` and :mod:`pdimport.send.pool`.

Workers import only from the installation. A worker (and the forkserver it
forks from) is a fresh interpreter started with ``-c``, which puts ``''``,
the working directory, first on its :data:`sys.path`; the daemon started
with ``python -m`` has the working directory there too, and a spawned or
forked child takes over the parent's path. Started from a folder holding a
directory named ``dl``, pydicom's ``import gdcm`` in a worker then ran
gdcm's ``import dl`` from that folder and every decode failed. So every start
goes through :func:`isolated_start`: the child interpreter starts with
``PYTHONSAFEPATH`` (``python -P``: nothing prepended) and inherits
:func:`installation_path`, the parent's path without ``''``, relative entries
and the working directory.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing import process
from multiprocessing.connection import Connection, wait
from typing import Any

#: Seconds to wait for a killed worker to be reaped by the kernel.
REAP_TIMEOUT = 5.0

#: One start at a time: :func:`isolated_start` swaps process-wide state.
_START_LOCK = threading.Lock()


def installation_path(path: Sequence[str] | None = None) -> list[str]:
    """`path` (default :data:`sys.path`) without the entries that depend on
    where the process was started: ``''`` and every relative entry (they mean
    the working directory of whoever imports), and the working directory now
    and at start-up (``python -m`` and ``-c`` put it first). What remains was
    configured: the standard library, site-packages, ``.pth`` files,
    ``PYTHONPATH``."""
    # multiprocessing notes the start-up folder when it is first imported (the
    # daemon imports it early); it puts that in place of '' for a child.
    started = getattr(process, "ORIGINAL_DIR", None)
    here = {os.path.realpath(d) for d in (os.getcwd(), started) if d}
    return [
        entry
        for entry in (sys.path if path is None else path)
        if entry and os.path.isabs(entry) and os.path.realpath(entry) not in here
    ]


@contextmanager
def isolated_start() -> Iterator[None]:
    """Start processes inside this block with a clean import path.

    multiprocessing hands a spawned or forkserver child the parent's
    :data:`sys.path` (a forked one copies it) and starts a fresh interpreter
    (the child, the forkserver, its resource tracker) as ``python -c``, with
    :data:`os.environ`. So for the duration of the start the parent's path is
    :func:`installation_path` and ``PYTHONSAFEPATH`` is set (the
    interpreter's ``-P``, :data:`sys.flags.safe_path` in the child). Both are restored
    after: the parent's own imports are the entry point's business
    (``pdimport/__main__.py``). A thread that edits :data:`sys.path` during a
    start loses its edit; none of ours does.
    """
    with _START_LOCK:
        saved_path, saved_safe = sys.path, os.environ.get("PYTHONSAFEPATH")
        sys.path = installation_path(saved_path)
        os.environ["PYTHONSAFEPATH"] = "1"
        try:
            yield
        finally:
            sys.path = saved_path
            if saved_safe is None:
                del os.environ["PYTHONSAFEPATH"]
            else:
                os.environ["PYTHONSAFEPATH"] = saved_safe


class Worker:
    """One worker process, the parent's end of its pipe, the items it holds.

    ``held`` lists the keys of the items handed over and not yet answered,
    oldest first; ``deadline`` (monotonic) is when the oldest must be answered.
    """

    def __init__(self, proc: Any, conn: Connection, timeout: float) -> None:
        self.proc = proc
        self.conn = conn
        self.timeout = timeout
        self.held: deque[Any] = deque()
        self.deadline = math.inf
        #: Killed by the supervisor for holding an item past its deadline.
        self.timed_out = False
        #: Its pipe reached end-of-file or broke: nothing more will come.
        self.hung_up = False

    def give(self, key: Any, message: Any) -> None:
        """Send `message`, the item `key`; raises OSError if the worker is gone."""
        self.conn.send(message)
        if not self.held:
            self.deadline = time.monotonic() + self.timeout
        self.held.append(key)

    def done(self) -> Any:
        """The oldest held item was answered: its key; the next one's clock starts."""
        key = self.held.popleft()
        self.deadline = time.monotonic() + self.timeout if self.held else math.inf
        return key

    def take_back(self) -> list[Any]:
        """Forget every held item (the owner reports them): their keys, oldest first."""
        keys = list(self.held)
        self.held.clear()
        self.deadline = math.inf
        return keys

    def messages(self) -> Iterator[Any]:
        """What the worker has sent so far, without blocking."""
        try:
            while not self.hung_up and self.conn.poll():
                yield self.conn.recv()
        except (EOFError, OSError):
            self.hung_up = True

    @property
    def alive(self) -> bool:
        return bool(self.proc.is_alive())

    @property
    def exitcode(self) -> int | None:
        """The exit status (negative: the signal), once it is dead."""
        code: int | None = self.proc.exitcode
        return code

    def exit_reason(self) -> str:
        """``signal SIGSEGV`` or ``exit status 1``."""
        code = self.exitcode
        if code is not None and code < 0:
            return f"signal {signal.Signals(-code).name}"
        return f"exit status {code}"

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(REAP_TIMEOUT)

    def close(self) -> None:
        self.kill()
        self.conn.close()


class Supervisor:
    """Start, watch and stop the worker processes of one owner.

    Parameters
    ----------
    ctx : multiprocessing context
        Its start method and, for forkserver, its preload list are the
        owner's choice (what the workers need loaded).
    target : callable
        ``target(conn, *args)``, a module-level function (it is pickled).
    args : tuple
        Further arguments for `target`.
    name : str
        Process name (``ps``, :func:`multiprocessing.active_children`).
    timeout : float
        Seconds a worker may hold its oldest item before it is killed.
    """

    def __init__(
        self,
        ctx: Any,
        target: Callable[..., None],
        args: tuple[Any, ...] = (),
        *,
        name: str,
        timeout: float,
    ) -> None:
        self._ctx = ctx
        self._target = target
        self._args = args
        self.name = name
        self.timeout = timeout
        #: Live (or not yet reaped) workers, in start order.
        self.workers: list[Worker] = []

    def start(self) -> Worker:
        """A new worker, appended to :attr:`workers`."""
        worker = self._spawn()
        self.workers.append(worker)
        return worker

    def _spawn(self) -> Worker:
        parent_end, child_end = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=self._target, args=(child_end, *self._args), name=self.name, daemon=True
        )
        with isolated_start():
            proc.start()
        child_end.close()  # so that the parent sees EOF when the worker dies
        return Worker(proc, parent_end, self.timeout)

    def replace(self, worker: Worker) -> Worker:
        """Reap `worker` (killing it if need be) and start another in its place."""
        worker.close()
        fresh = self._spawn()
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    def wait(self, watched: Sequence[Worker]) -> list[Worker]:
        """Block until one of `watched` has sent something, died or overrun.

        Returns those workers, in `watched` order. The ones that held an item
        past its deadline have been killed (``timed_out``), the dead ones
        reaped; read what each sent with :meth:`Worker.messages` (what it
        wrote before dying included), then look at :attr:`Worker.alive`.
        """
        if not watched:
            raise ValueError("nothing to wait for")
        handles: list[Any] = [w.proc.sentinel for w in watched]
        handles += [w.conn for w in watched if not w.hung_up]
        first = min(w.deadline for w in watched)
        timeout = None if first == math.inf else max(0.0, first - time.monotonic())
        ready = set(wait(handles, timeout))
        now = time.monotonic()
        due = []
        for worker in watched:
            if worker.proc.sentinel in ready:
                # It is exiting: reap it, so that it is not alive any more and
                # its exit status is known (the kernel closes its pipe ends
                # one by one, the sentinel may come first).
                worker.proc.join(REAP_TIMEOUT)
            elif worker.held and worker.deadline <= now and worker.alive:
                worker.kill()
                worker.timed_out = True
            if worker.timed_out or worker.proc.sentinel in ready or worker.conn in ready:
                due.append(worker)
        return due

    def stop(self, grace: float, asked: Iterable[Worker] | None = None) -> None:
        """Stop every worker: those `asked` (default: all) get ``None`` and
        `grace` seconds, together, to finish; the rest are killed at once."""
        polite = list(self.workers if asked is None else asked)
        for worker in polite:
            try:
                worker.conn.send(None)
            except OSError:
                pass  # already gone
        until = time.monotonic() + grace
        for worker in polite:
            worker.proc.join(max(0.0, until - time.monotonic()))
        self.kill()

    def kill(self) -> None:
        """Kill and reap every worker now."""
        for worker in self.workers:
            worker.close()
        self.workers.clear()


__all__ = ["Supervisor", "Worker", "installation_path", "isolated_start"]
