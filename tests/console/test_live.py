"""Live updates: the console under uvicorn on a real socket, a real status
board, an event stream read with httpx. The stream sends when the board
changes and stays silent (no rendering at all) while it does not."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from pdimport.appliance.status import StatusBoard
from pdimport.appliance.systemd import Notifier
from pdimport.console.app import ConsoleDeps
from pdimport.console.auth import SESSION_COOKIE
from pdimport.console.server import ConsoleServer
from pdimport.console.users import User
from pdimport.job.importer import Importer


class CountingBoard:
    """A real StatusBoard whose snapshots are counted (each one a render)."""

    def __init__(self, path: Path) -> None:
        self.board = StatusBoard(path, Notifier({}))
        self.calls = 0
        self.first, self.second = threading.Event(), threading.Event()
        self._lock = threading.Lock()

    def snapshot(self) -> dict:
        with self._lock:
            self.calls += 1
            self.first.set()
            if self.calls >= 2:
                self.second.set()
        return self.board.snapshot()


@pytest.fixture
def live(cfg) -> Iterator[tuple[ConsoleServer, CountingBoard, dict[str, str]]]:
    cfg = cfg.replace(console__listen="127.0.0.1:0")
    cfg.state_path.mkdir(parents=True, exist_ok=True)
    board = CountingBoard(cfg.state_path / "status.json")
    importers: list[Importer] = []

    def importer() -> Importer:
        if not importers:
            importers.append(Importer(cfg))
        return importers[0]

    server = ConsoleServer(
        ConsoleDeps(
            cfg,
            board.snapshot,
            importer,
            watch=board.board.watch,
            heartbeat=60.0,
        )
    ).start()
    session = server.console.sessions.create(User("suzuki", "viewer"))
    yield server, board, {SESSION_COOKIE: session.token}
    server.stop(5)
    for imp in importers:
        imp.close()


@contextmanager
def stream_of(
    server: ConsoleServer, cookies: dict[str, str], path: str
) -> Iterator[httpx.Response]:
    with (
        httpx.Client(base_url=server.url, cookies=cookies, timeout=30) as client,
        client.stream("GET", path) as response,
    ):
        yield response


def events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """``(event, data)`` of each server-sent event, as the browser parses them."""
    name, data = "", []
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and name:
            yield name, "\n".join(data)
            name, data = "", []


def test_the_stream_pushes_each_board_change_and_is_silent_between(live):
    server, board, cookies = live
    progress = {
        "phase": "reading",
        "files_done": 3,
        "files_total": 40,
        "bytes_done": 2_000_000,
        "bytes_total": 8_000_000,
        "percent": 25.0,
        "mb_per_s": 3.1,
        "eta_s": 2.0,
    }
    with stream_of(server, cookies, "/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = events(response.iter_lines())
        name, html = next(stream)
        assert name == "drives" and "Watch folder: 0 waiting" in html
        # Nothing changed: no second render (a timer would render again).
        assert not board.second.wait(2.5), "rendered again without a change"
        assert board.calls == 1
        board.board.drive("/dev/sr0", state="reading", job="J1")
        board.board.job("J1", state="reading", label="CD_ONE", progress=progress)
        seen = []
        for name, html in stream:
            seen.append(html)
            if 'value="25.0"' in html:
                break
        assert "CD_ONE" in seen[-1] and "sr0" in seen[-1] and "3.1" in seen[-1]
        board.board.job("J1", progress={**progress, "percent": 50.0, "files_done": 20})
        name, html = next(stream)
        assert name == "drives" and 'value="50.0"' in html


def test_a_job_page_stream_follows_that_job(live):
    server, board, cookies = live
    board.board.job("J2", state="delivering", progress={"phase": "delivering", "percent": 10.0})
    with stream_of(server, cookies, "/events?job=J2") as response:
        stream = events(response.iter_lines())
        name, html = next(stream)
        assert name == "job" and 'value="10.0"' in html and "delivering" in html
        board.board.job("J2", state="imported")
        name, html = next(stream)
        assert name == "job" and "imported" in html and "<progress" not in html


def test_stopping_the_console_ends_open_streams(live):
    server, board, cookies = live
    ended = threading.Event()

    def read() -> None:
        with stream_of(server, cookies, "/events") as response:
            for _line in response.iter_lines():
                pass
        ended.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert board.first.wait(10), "the stream never started"
    server.console.deps.stop.set()
    server.console.live.wake_all()
    assert ended.wait(10), "the stream did not end when the console stopped"
    reader.join(5)


def test_without_a_session_the_stream_is_refused(live):
    server, _board, _cookies = live
    assert httpx.get(server.url + "events", timeout=10).status_code == 401


def test_a_closed_stream_stops_watching_the_board(live):
    server, board, cookies = live
    with stream_of(server, cookies, "/events") as response:
        stream = events(response.iter_lines())  # kept: dropping it closes the response
        next(stream)
        assert server.console.live.streams == 1
        stream.close()
    gone = threading.Event()

    def poll() -> None:  # the server notices the hang-up at its next send or receive
        while server.console.live.streams:
            board.board.queue("watch", board.calls)  # a change: the stream tries to send
            if gone.wait(0.1):
                return
        gone.set()

    threading.Thread(target=poll, daemon=True).start()
    assert gone.wait(10), "the stream still watches the board after its client left"
