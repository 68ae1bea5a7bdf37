"""The about page: version, settings in force, and each destination with its
last contact: the last instance it acknowledged (from the journal) and the
last C-ECHO (PS3.7 9.3.5) an operator asked for from this page.

A C-ECHO runs only when asked (a page view never waits for a PACS that is
down), in the thread pool, with the configured connection timeout.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pdimport import __version__
from pdimport.console import journal_stats

if TYPE_CHECKING:
    from pdimport.console.app import Console

#: The Verification SOP Class (PS3.4 A.4).
VERIFICATION = "1.2.840.10008.1.1"


def c_echo(dest: Any, calling_aet: str, timeout: float) -> tuple[bool, str]:
    """One C-ECHO to a ``dicom://`` destination: ``(ok, what happened)``."""
    from pynetdicom import AE

    from pdimport.send.peer import Unresolvable, connect_failure, resolve

    # The TCP connection first: pynetdicom only logs why it failed (and
    # leaves the refused socket to the garbage collector).
    try:
        resolve(dest.connect_host, dest.port)
        with socket.create_connection((dest.connect_host, dest.port), timeout=timeout):
            pass
    except Unresolvable as exc:
        return False, exc.detail
    except OSError:
        return False, connect_failure(dest.connect_host, dest.port, timeout)
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(VERIFICATION)
    for attr in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
        setattr(ae, attr, timeout)
    started = time.monotonic()
    assoc = ae.associate(dest.connect_host, dest.port, ae_title=dest.aet)
    try:
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
            return False, f"association {why}"
        status = assoc.send_c_echo()
        took = (time.monotonic() - started) * 1000
        if status and int(status.get("Status", -1)) == 0:
            return True, f"C-ECHO success in {took:.0f} ms"
        return False, "C-ECHO: no or a failed response"
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


class AboutPages:
    def __init__(self, console: Console) -> None:
        self.c = console
        #: dest key -> (time, ok, detail) of the last C-ECHO from this page
        self.echoes: dict[str, tuple[float, bool, str]] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/about", self.page),
            Route("/about/echo", self.echo, methods=["POST"]),
        ]

    def _destinations(self) -> list[dict[str, Any]]:
        from pdimport.send import parse_dest

        last: dict[str, float] = {}
        with journal_stats.reader(self.c.journal) as db:
            if db is not None:
                last = journal_stats.last_delivered(db)
        rows = []
        for url in self.c.deps.settings.get("dest") or []:
            try:
                key = parse_dest(url).key
            except ValueError:
                key = url
            echo = self.echoes.get(key)
            rows.append(
                {
                    "url": url,
                    "dicom": key.startswith("dicom://"),
                    "last_sent": _when(last.get(key)),
                    "echo": {"time": _when(echo[0]), "ok": echo[1], "detail": echo[2]}
                    if echo
                    else None,
                }
            )
        return rows

    def page(self, request: Request) -> Response:
        from pdimport.settings import as_records

        session = self.c.session(request)
        cfg = self.c.deps.settings
        notes, session.flash = session.flash, []
        return self.c.page(
            request,
            "about.html",
            session,
            version=__version__,
            settings=as_records(cfg) if hasattr(cfg, "_values") else [],
            destinations=self._destinations(),
            routes=list(cfg.get("route") or []),
            notes=notes,
        )

    async def echo(self, request: Request) -> Response:
        """C-ECHO every ``dicom://`` destination now (an operator's check)."""
        from pdimport.send import parse_dest

        session, _form = await self.c.form(request, "operator")
        cfg = self.c.deps.settings
        for url in cfg.get("dest") or []:
            dest = parse_dest(url)
            if dest.kind != "dicom":
                continue
            ok, detail = await run_in_threadpool(
                c_echo,
                dest,
                str(cfg.get("calling_aet")),
                float(cfg.get("network.connection_timeout")),
            )
            self.echoes[dest.key] = (time.time(), ok, detail)
            session.flash.append(f"{dest.key}: {detail}")
        return RedirectResponse("/about", 303)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""
