"""Live pages: the drives table and a job's progress, pushed to the browser
by server-sent events when the status board changes.

The stream sleeps on an :class:`asyncio.Event` that the board sets (through
``loop.call_soon_threadsafe``) after each change: nothing renders or is sent
while nothing changes, except a comment every ``heartbeat`` seconds so that a
proxy does not close an idle connection (and so a stream of a session that
timed out ends). The board itself changes at most twice a second per job
(:mod:`pdimport.job.progress`), so a person never gets a flood.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from pdimport.console.views import drives_view, job_live

if TYPE_CHECKING:
    from pdimport.console.app import Console


def sse(event: str, html: str) -> str:
    """One server-sent event (``text/event-stream``): each line a ``data:`` field."""
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in html.splitlines()) + "\n"


class LivePages:
    """``/events`` (the stream) and ``/drives/fragment`` (the same table, once)."""

    def __init__(self, console: Console) -> None:
        self.c = console
        self._pokes: set[Callable[[], None]] = set()

    def routes(self) -> list[Route]:
        return [
            Route("/drives/fragment", self.drives_fragment),
            Route("/events", self.events),
        ]

    # ------------------------------------------------------------ fragments
    def drives_html(self, request: Request) -> str:
        view = drives_view(self.c.deps.snapshot(), self.c.names)
        return self.c.env.get_template("_drives.html").render(t=self.c.words(request), **view)

    def job_html(self, request: Request, job_id: str) -> str:
        view = job_live(self.c.deps.snapshot(), self.c.journal, job_id)
        return self.c.env.get_template("_job_live.html").render(t=self.c.words(request), j=view)

    def fragments(self, request: Request, job_id: str | None) -> dict[str, str]:
        if job_id:
            return {"job": self.job_html(request, job_id)}
        return {"drives": self.drives_html(request)}

    def drives_fragment(self, request: Request) -> Response:
        self.c.session(request)
        return HTMLResponse(self.drives_html(request), headers=self.c.headers)

    # -------------------------------------------------------------- watching
    def watch(self, poke: Callable[[], None]) -> Callable[[], None]:
        """Tell ``poke`` of every board change (and of the console stopping)."""
        self._pokes.add(poke)
        unwatch_board = self.c.deps.watch(poke) if self.c.deps.watch else None

        def unwatch() -> None:
            self._pokes.discard(poke)
            if unwatch_board is not None:
                unwatch_board()

        return unwatch

    @property
    def streams(self) -> int:
        """Event streams open now."""
        return len(self._pokes)

    def wake_all(self) -> None:
        """The console stops: every stream looks at ``stop`` now, not at its next heartbeat."""
        for poke in list(self._pokes):
            poke()

    # ---------------------------------------------------------------- stream
    async def events(self, request: Request) -> Response:
        """Server-sent events: the page's fragment again whenever it changed."""
        session = self.c.session(request)
        token = session.token
        job_id = request.query_params.get("job") or None
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def poke() -> None:
            try:
                loop.call_soon_threadsafe(changed.set)
            except RuntimeError:  # the loop has closed: the stream is gone
                pass

        async def stream() -> AsyncIterator[str]:
            unwatch = self.watch(poke)
            last: dict[str, Any] = {}
            try:
                while not self.c.deps.stop.is_set() and self.c.sessions.peek(token) is not None:
                    changed.clear()  # before rendering: a change while we render is not lost
                    fragments = await run_in_threadpool(self.fragments, request, job_id)
                    for name, html in fragments.items():
                        if last.get(name) != html:
                            last[name] = html
                            yield sse(name, html)
                    try:
                        await asyncio.wait_for(changed.wait(), self.c.deps.heartbeat)
                    except TimeoutError:
                        yield ": heartbeat\n\n"
            finally:
                unwatch()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
