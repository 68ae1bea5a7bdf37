"""The console as a Starlette application, built from explicit dependencies
(:class:`ConsoleDeps`): the daemon passes its status board and job runner,
the tests a snapshot function and an :class:`~pdimport.job.importer.Importer`.

Pages read the journal through a connection of their own (SQLite WAL: a
reader never blocks the daemon's writes); decisions go through
:mod:`pdimport.job.holdqueue` with the logged-in user as the operator.
Handlers that touch the journal are plain functions, which Starlette runs in
its thread pool; only the event stream is a coroutine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pdimport.console import metrics
from pdimport.console.about import AboutPages
from pdimport.console.admin import UserPages
from pdimport.console.auth import LOGIN_COOKIE, SESSION_COOKIE, Session, Sessions, Throttle, csrf_ok
from pdimport.console.decide import DecisionPages
from pdimport.console.i18n import LANGS, Words, pick_lang
from pdimport.console.live import LivePages
from pdimport.console.preview import PLACEHOLDER, Previews, series_previews
from pdimport.console.users import UserStore, may, users_target
from pdimport.console.views import (
    OUTCOMES,
    batch_summary,
    group_boards,
    history,
    job_detail,
    local_day,
    outcome_counts,
    patient_names,
)
from pdimport.store.journal import open_journal, station_name
from pdimport.store.spool import Spool

#: Every page forbids framing and foreign scripts: all it loads ships in the package.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class ConsoleDeps:
    """What the console needs from its host.

    Attributes
    ----------
    settings : Settings
        The frozen settings (state directory, ``console.*``, destinations).
    snapshot : callable
        The status board's snapshot (what ``pdimport status`` shows).
    importer : callable
        An Importer for decisions and reprints (the daemon's runner gives one
        per thread, sharing its journal and audit trail).
    after_decision : callable
        Told the job id after a release or discard (the daemon's board,
        watch folder and retry queue follow).
    retry : callable, optional
        Schedules a delivery now (the daemon's retry worker); without it the
        delivery runs in the request.
    watch : callable, optional
        ``watch(poke) -> unwatch``: the status board calls ``poke()`` after
        each change (:meth:`~pdimport.appliance.status.StatusBoard.watch`);
        the event streams push on it. Without it they only send heartbeats.
    stop : threading.Event
        Set when the host stops: event streams end.
    heartbeat : float
        Seconds between the comments an idle event stream sends (proxies
        close silent connections).
    """

    settings: Any
    snapshot: Callable[[], dict[str, Any]]
    importer: Callable[[], Any]
    after_decision: Callable[[str], None] = lambda _job: None
    retry: Callable[[str], None] | None = None
    watch: Callable[[Callable[[], None]], Callable[[], None]] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.monotonic
    heartbeat: float = 15.0


class LoginRequired(Exception):
    """No live session: to the login page."""


class Console:
    """The pages, their state (sessions, throttle) and the Starlette app."""

    def __init__(self, deps: ConsoleDeps) -> None:
        self.deps = deps
        cfg = deps.settings
        self.state = Path(cfg.state_path)
        self.tls = bool(cfg.get("console.tls_cert"))
        self.journal_path = self.state / "journal.sqlite"
        self.journal = open_journal(cfg)
        self.users = UserStore(users_target(cfg))
        self.sessions = Sessions(float(cfg.get("console.idle_timeout")), deps.clock)
        self.throttle = Throttle(int(cfg.get("console.login_attempts")), clock=deps.clock)
        self.env = Environment(
            loader=PackageLoader("pdimport.console", "templates"),
            autoescape=select_autoescape(["html"]),
        )
        self.metrics = metrics.registry(
            metrics.JournalCollector(
                self.journal_path, self.journal, deps.snapshot, station_name(deps.settings)
            )
        )
        self._names: dict[str, list[str]] = {}
        self.headers = _HEADERS
        self.previews = Previews(
            self.state / "console" / "previews", Spool(self.state / "spool").path
        )
        self.decisions = DecisionPages(self)
        self.live = LivePages(self)
        self.user_pages = UserPages(self)
        self.about_pages = AboutPages(self)
        self.app = Starlette(
            routes=[
                Route("/", lambda r: RedirectResponse("/drives", 303)),
                Route("/login", self.login_page, methods=["GET"]),
                Route("/login", self.login, methods=["POST"]),
                Route("/logout", self.logout, methods=["POST"]),
                Route("/lang/{lang}", self.switch_lang),
                Route("/drives", self.drives),
                *self.live.routes(),
                *self.user_pages.routes(),
                Route("/today", self.today),
                Route("/jobs/{job_id}", self.job),
                Route("/jobs/{job_id}/series/{series_uid}/preview.png", self.preview),
                *self.decisions.routes(),
                Route("/audit", self.audit),
                Route("/audit/export", self.audit_export),
                *self.about_pages.routes(),
                Route("/metrics", self.metrics_page),
                Mount(
                    "/static", StaticFiles(packages=[("pdimport.console", "static")]), name="static"
                ),
            ],
            exception_handlers={LoginRequired: self._to_login, HTTPException: self._http_error},
        )

    def close(self) -> None:
        self.previews.close()
        self.journal.close()
        self.users.close()

    # ------------------------------------------------------------ helpers
    def words(self, request: Request) -> Words:
        return Words(pick_lang(request.cookies.get("lang"), request.headers.get("accept-language")))

    def session(self, request: Request, role: str = "viewer") -> Session:
        """The live session of the request, with at least ``role``.

        Raises
        ------
        LoginRequired
            No live session (never logged in, logged out, idle too long).
        HTTPException
            403 when the user's role is below ``role``.
        """
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise LoginRequired()
        if not may(session.user.role, role):
            raise HTTPException(403, self.words(request)("forbidden", role=session.user.role))
        return session

    async def form(self, request: Request, role: str) -> tuple[Session, dict[str, str]]:
        """The form of a POST from a session with ``role`` and the right CSRF token."""
        session = self.session(request, role)
        form = await request.form()
        if not csrf_ok(session.csrf, form.get("csrf")):
            raise HTTPException(403, "CSRF token missing or wrong: reload the page")
        return session, {k: v for k, v in form.items() if isinstance(v, str)}

    def page(
        self,
        request: Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **ctx: Any,
    ) -> HTMLResponse:
        t = self.words(request)
        html = self.env.get_template(template).render(
            t=t,
            lang=t.lang,
            langs=LANGS,
            user=session.user if session else None,
            csrf=session.csrf if session else "",
            path=request.url.path,
            query=request.url.query,
            **ctx,
        )
        return HTMLResponse(html, status, headers=_HEADERS)

    def _to_login(self, request: Request, exc: Exception) -> Response:
        if request.url.path in ("/events", "/drives/fragment", "/metrics"):
            return Response(status_code=401)
        return RedirectResponse(f"/login?next={request.url.path}", 303)

    def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        return self.page(request, "error.html", session, exc.status_code, message=exc.detail)

    def names(self, job_id: str) -> list[str]:
        """Patient names of a job, once its report has them (cached: the
        drives table is rendered again at every change of the board)."""
        if job_id not in self._names:
            names = patient_names(self.journal.report(job_id))
            if not names:
                return []
            if len(self._names) > 1000:
                self._names.clear()
            self._names[job_id] = names
        return self._names[job_id]

    # -------------------------------------------------------------- login
    def login_page(self, request: Request, error: str = "", status: int = 200) -> Response:
        token = request.cookies.get(LOGIN_COOKIE) or Sessions.new_token()
        response = self.page(
            request,
            "login.html",
            None,
            status,
            error=error,
            login_csrf=token,
            next=_local(request.query_params.get("next", "/drives")),
        )
        self._cookie(response, LOGIN_COOKIE, token)
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        t = self.words(request)
        expected = request.cookies.get(LOGIN_COOKIE) or ""
        if not expected or not csrf_ok(expected, form.get("csrf")):
            raise HTTPException(403, "CSRF token missing or wrong: reload the page")
        name = str(form.get("name", "")).strip()
        keys = (f"name:{name}", f"addr:{request.client.host if request.client else '?'}")
        wait = self.throttle.blocked(*keys)
        if wait > 0:
            return self.login_page(request, t("throttled", s=int(wait) + 1), 429)
        user = await run_in_threadpool(self.users.authenticate, name, str(form.get("password", "")))
        if user is None:
            self.throttle.failed(*keys)
            return self.login_page(request, t("bad_login"), 401)
        self.throttle.succeeded(*keys)
        session = self.sessions.create(user)
        response = RedirectResponse(_local(str(form.get("next", "/drives"))), 303)
        self._cookie(response, SESSION_COOKIE, session.token)
        response.delete_cookie(LOGIN_COOKIE)
        return response

    async def logout(self, request: Request) -> Response:
        session, _form = await self.form(request, "viewer")
        self.sessions.end(session.token)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    def _cookie(self, response: Response, key: str, value: str) -> None:
        response.set_cookie(key, value, httponly=True, samesite="strict", secure=self.tls, path="/")

    def switch_lang(self, request: Request) -> Response:
        lang = request.path_params["lang"]
        response = RedirectResponse(_local(request.query_params.get("next", "/drives")), 303)
        if lang in LANGS:
            response.set_cookie("lang", lang, samesite="strict", max_age=365 * 86400, path="/")
        return response

    # ------------------------------------------------------------- drives
    async def drives(self, request: Request) -> Response:
        session = self.session(request)
        station = request.query_params.get("station", "")
        boards = await run_in_threadpool(group_boards, self.journal)
        here = self.journal.station
        return self.page(
            request,
            "drives.html",
            session,
            fragment=self.live.drives_html(request) if station in ("", here) else "",
            group=[b for b in boards if station in ("", b["station"])],
            station=station,
            stations=[here, *(b["station"] for b in boards)] if boards else [],
        )

    # ----------------------------------------------------- today, a job
    def today(self, request: Request) -> Response:
        session = self.session(request)
        t = self.words(request)
        day = request.query_params.get("date", local_day(time.time()))
        outcome = request.query_params.get("outcome") or None
        station = request.query_params.get("station", "")
        every = history(self.journal, day or None, None)
        stations = sorted({r["station"] for r in every if r["station"]})
        every = [r for r in every if station in ("", r["station"])]
        rows = [r for r in every if outcome is None or r["outcome"] == outcome]
        return self.page(
            request,
            "today.html",
            session,
            rows=rows,
            day=day,
            outcome=outcome or "",
            outcomes=OUTCOMES,
            station=station,
            stations=stations if len(stations) > 1 or station else [],
            counts=outcome_counts(every),
            summary=batch_summary(every, t.outcome) if every else "",
        )

    def job(self, request: Request) -> Response:
        session = self.session(request)
        detail = job_detail(self.journal, request.path_params["job_id"])
        if detail is None:
            raise HTTPException(404, self.words(request)("not_found"))
        live = self.live.job_html(request, detail["row"]["job"])
        notes, session.flash = session.flash, []
        return self.page(request, "job.html", session, d=detail, live=live, notes=notes)

    async def preview(self, request: Request) -> Response:
        """The preview of a series, or a placeholder: never an error page."""
        self.session(request)
        report = await run_in_threadpool(self.journal.report, request.path_params["job_id"])
        sha = series_previews(report or {}).get(request.path_params["series_uid"])
        png = await run_in_threadpool(self.previews.png, sha) if sha else None
        headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
        if png is None:
            return Response(PLACEHOLDER, media_type="image/svg+xml", headers=headers)
        return Response(png, media_type="image/png", headers=headers)

    # -------------------------------------------------------------- audit
    def audit(self, request: Request) -> Response:
        from pdimport.record.audit import TRAIL
        from pdimport.record.auditchain import verify

        session = self.session(request)
        result = None
        if request.query_params.get("verify"):
            ok, first_bad, reason = verify(self.state / "audit", self.journal.audit_head(TRAIL))
            result = {"ok": ok, "first_bad": first_bad, "reason": reason}
        today = local_day(time.time())
        return self.page(request, "audit.html", session, result=result, today=today)

    def audit_export(self, request: Request) -> Response:
        import json
        from datetime import timedelta

        from pdimport.record.auditchain import export
        from pdimport.record.auditcli import parse_since

        self.session(request)
        try:
            since = parse_since(request.query_params.get("since") or "1970-01-01")
            until_text = request.query_params.get("until")
            until = parse_since(until_text) + timedelta(days=1) if until_text else None
        except ValueError as exc:
            raise HTTPException(400, f"bad date: {exc}") from None
        lines = []
        for record in export(self.state / "audit", since):
            if until is not None and str(record.get("time", "")) >= until.isoformat():
                continue
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        return Response(
            "".join(lines),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="pdimport-audit.jsonl"'},
        )

    def metrics_page(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(self.metrics), media_type=CONTENT_TYPE_LATEST)


def _local(target: str) -> str:
    """Only paths of this site may be redirected to (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") else "/drives"


def create_app(deps: ConsoleDeps) -> Console:
    """The console for ``deps``; ``.app`` is the ASGI application, ``.close()`` ends it."""
    return Console(deps)
