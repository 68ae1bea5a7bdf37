"""The console's actions: decisions on held jobs (through
:mod:`pdimport.job.holdqueue`, the one contract the CLI uses too), label
reprints and retries. Each decision is asked for, then confirmed, then done
with the logged-in user as the operator, and its result shown."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pdimport.job.decisionqueue import for_journal
from pdimport.job.holdqueue import HoldError, Queued, decide, held_jobs, holder
from pdimport.label.content import reasons

if TYPE_CHECKING:
    from pdimport.console.app import Console

log = logging.getLogger(__name__)

ACTIONS = ("release", "keep_foreign", "discard")


class DecisionPages:
    def __init__(self, console: Console) -> None:
        self.c = console

    def routes(self) -> list[Route]:
        return [
            Route("/decisions", self.list_page),
            Route("/decisions/confirm", self.confirm, methods=["POST"]),
            Route("/decisions/apply", self.apply, methods=["POST"]),
            Route("/jobs/{job_id}/label.png", self.label_png),
            Route("/jobs/{job_id}/reprint", self.reprint, methods=["POST"]),
            Route("/jobs/{job_id}/retry", self.retry, methods=["POST"]),
        ]

    # ---------------------------------------------------------- decisions
    def list_page(self, request: Request) -> Response:
        session = self.c.session(request)
        jobs = held_jobs(self.c.journal)
        t = self.c.words(request)
        for job in jobs:
            report = self.c.journal.report(job["job"]) or {}
            job["reason_words"] = [ja if t.lang == "ja" else en for ja, en in reasons(report)]
        return self.c.page(request, "decisions.html", session, jobs=jobs)

    @staticmethod
    def _decision(form: dict[str, str]) -> dict[str, str]:
        """The decision a form asks for, checked for shape (holdqueue checks the rest)."""
        action = form.get("action", "")
        if action not in ACTIONS:
            raise HTTPException(400, f"unknown action {action!r}")
        local_id = (form.get("typed_id") or form.get("local_id") or "").strip()
        if action == "release" and not local_id:
            raise HTTPException(400, "choose a local patient or type a local patient ID")
        reason = form.get("reason", "").strip()
        if action == "discard" and not reason:
            raise HTTPException(400, "say why the medium is discarded")
        return {
            "job": form.get("job", ""),
            "patient": form.get("patient", ""),
            "action": action,
            "local_id": local_id if action == "release" else "",
            "reason": reason if action == "discard" else "",
        }

    async def confirm(self, request: Request) -> Response:
        session, form = await self.c.form(request, "operator")
        decision = self._decision(form)
        held = {j["job"]: j for j in await run_in_threadpool(held_jobs, self.c.journal)}
        job = held.get(decision["job"])
        patient = next(
            (p for p in (job or {}).get("patients", []) if p["id"] == decision["patient"]), None
        )
        if job is None or patient is None:
            raise HTTPException(409, self.c.words(request)("not_found"))
        return self.c.page(
            request, "confirm.html", session, decision=decision, job=job, patient=patient
        )

    async def apply(self, request: Request) -> Response:
        session, form = await self.c.form(request, "operator")
        decision = self._decision(form)
        try:
            result = await run_in_threadpool(self._apply, decision, session.user.name)
        except HoldError as exc:
            return self.c.page(
                request, "result.html", session, 409, decision=decision, error=str(exc)
            )
        if isinstance(result, Queued):  # the station holding the spool runs it
            shown: dict[str, Any] = {"queued_at": result.station, "outcome": "queued", "live": ""}
        else:
            self.c.deps.after_decision(result.job_id)
            shown = {
                "outcome": str(result.state),
                "report": result.report,
                "live": self.c.live.job_html(request, result.job_id),
            }
        return self.c.page(request, "result.html", session, decision=decision, error="", **shown)

    def _apply(self, d: dict[str, str], operator: str) -> Any:
        imp = self.c.deps.importer()
        dests = list(self.c.deps.settings.get("dest") or [])
        args: dict[str, Any]
        if d["action"] == "discard":
            action, args = "discard", {"reason": d["reason"], "patient": d["patient"]}
        else:
            action = "release"
            args = {
                "local_id": d["local_id"] or None,
                "patient": d["patient"],
                "keep_foreign": d["action"] == "keep_foreign",
            }
        return decide(imp, for_journal(imp.journal), action, d["job"], operator, args, dests)

    def _elsewhere(self, job_id: str) -> str:
        """The station holding ``job_id``'s spool when it is not this one."""
        imp = self.c.deps.importer()
        queue = for_journal(imp.journal)
        held_by = holder(imp, job_id) if queue is not None else ""
        return held_by if held_by and held_by != imp.journal.station else ""

    def _queue_retry(self, job_id: str, operator: str) -> None:
        imp = self.c.deps.importer()
        decide(imp, for_journal(imp.journal), "retry", job_id, operator, {})

    # ------------------------------------------------------------- labels
    def _report(self, job_id: str) -> dict[str, Any]:
        report = self.c.journal.report(job_id)
        if report is None:
            raise HTTPException(404, "no report for this job yet")
        return report

    def label_png(self, request: Request) -> Response:
        from pdimport.label.render import render_label

        self.c.session(request)
        report = self._report(request.path_params["job_id"])
        size = str(self.c.deps.settings.get("printer.size"))
        with tempfile.TemporaryDirectory(prefix="pdimport-label-") as tmp:
            out = render_label(report, size, Path(tmp) / "label.png", "png", dpi=150)
            data = out.read_bytes()
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    async def reprint(self, request: Request) -> Response:
        session, _form = await self.c.form(request, "operator")
        job_id = request.path_params["job_id"]
        result = await run_in_threadpool(self._reprint, job_id, session.user.name)
        t = self.c.words(request)
        session.flash.append(t("printed" if result.ok else "not_printed", detail=result.detail))
        return RedirectResponse(f"/jobs/{job_id}", 303)

    def _reprint(self, job_id: str, operator: str) -> Any:
        from pdimport.label.printer import print_label

        report = self._report(job_id)
        result = print_label(report, self.c.deps.settings)
        self.c.deps.importer().audit_event(
            "label_printed",
            job=job_id,
            actor=operator,
            reprint=True,
            ok=result.ok,
            detail=result.detail,
            printer=result.backend,
        )
        return result

    async def retry(self, request: Request) -> Response:
        session, _form = await self.c.form(request, "operator")
        job_id = request.path_params["job_id"]
        t = self.c.words(request)
        held_by = await run_in_threadpool(self._elsewhere, job_id)
        if held_by:  # its spool is at another station: that station retries it
            await run_in_threadpool(self._queue_retry, job_id, session.user.name)
            session.flash.append(t("queued_at", station=held_by))
            return RedirectResponse(f"/jobs/{job_id}", 303)
        if self.c.deps.retry is not None:  # the daemon's retry worker, now
            self.c.deps.retry(job_id)
            session.flash.append(t("retry_queued"))
        else:
            from pdimport.send import parse_dest

            dests = [parse_dest(d) for d in self.c.deps.settings.get("dest") or []]
            try:
                result = await run_in_threadpool(
                    lambda: self.c.deps.importer().process(job_id, dests)
                )
            except Exception as exc:  # a failed retry is a note on the page, never a 500
                log.exception("retry of job %s from the console failed", job_id)
                session.flash.append(t("hold_error", e=f"{type(exc).__name__}: {exc}"))
            else:
                session.flash.append(t("retried", outcome=t.outcome(str(result.state))))
        await run_in_threadpool(
            lambda: self.c.deps.importer().audit_event(
                "retry_requested", job=job_id, actor=session.user.name
            )
        )
        return RedirectResponse(f"/jobs/{job_id}", 303)
