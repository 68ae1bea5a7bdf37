"""The users page: admins list, add, remove accounts and set passwords.

Only an admin reaches it (a viewer or operator gets 403, as for any action
above their role); every form carries the session's CSRF token; every change
is an audit record naming the admin (``user_added``, ``user_removed``,
``user_password_set``). The last admin cannot be removed or demoted, and no
one removes their own account, so the appliance is never left without a
person who can manage it. Passwords are never shown or logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pdimport.console.auth import Session
from pdimport.console.users import ROLES, User, UserError

if TYPE_CHECKING:
    from pdimport.console.app import Console


class UserPages:
    def __init__(self, console: Console) -> None:
        self.c = console

    def routes(self) -> list[Route]:
        return [
            Route("/users", self.list_page),
            Route("/users/add", self.add, methods=["POST"]),
            Route("/users/remove", self.remove, methods=["POST"]),
            Route("/users/password", self.password, methods=["POST"]),
        ]

    def list_page(self, request: Request) -> Response:
        session = self.c.session(request, "admin")
        notes, session.flash = session.flash, []
        return self.c.page(
            request,
            "users.html",
            session,
            users=self.c.users.users(),
            roles=ROLES,
            notes=notes,
        )

    def _done(self, session: Session, note: str) -> Response:
        session.flash.append(note)
        return RedirectResponse("/users", 303)

    def _audit(self, event: str, admin: User, **fields: str) -> None:
        self.c.deps.importer().audit_event(event, actor=admin.name, **fields)

    def _admins(self) -> list[str]:
        return [u.name for u in self.c.users.users() if u.role == "admin"]

    async def add(self, request: Request) -> Response:
        session, form = await self.c.form(request, "admin")
        t = self.c.words(request)
        name, role = form.get("name", "").strip(), form.get("role", "")
        existing = {u.name: u for u in self.c.users.users()}
        if name in existing:
            return self._done(session, t("user_exists", name=name))
        try:
            user = await run_in_threadpool(self.c.users.add, name, role, form.get("password", ""))
        except UserError as exc:
            return self._done(session, str(exc))
        await run_in_threadpool(self._audit, "user_added", session.user, user=user.name, role=role)
        return self._done(session, t("user_added", name=user.name, role=user.role))

    async def remove(self, request: Request) -> Response:
        session, form = await self.c.form(request, "admin")
        t = self.c.words(request)
        name = form.get("name", "")
        if name == session.user.name:
            return self._done(session, t("not_yourself"))
        if self._admins() == [name]:
            return self._done(session, t("last_admin"))
        if not self.c.users.remove(name):
            return self._done(session, t("not_found"))
        self.c.sessions.end_user(name)  # a removed account is logged out at once
        await run_in_threadpool(self._audit, "user_removed", session.user, user=name)
        return self._done(session, t("user_removed", name=name))

    async def password(self, request: Request) -> Response:
        session, form = await self.c.form(request, "admin")
        t = self.c.words(request)
        name = form.get("name", "")
        user = next((u for u in self.c.users.users() if u.name == name), None)
        if user is None:
            return self._done(session, t("not_found"))
        try:
            await run_in_threadpool(self.c.users.add, name, user.role, form.get("password", ""))
        except UserError as exc:
            return self._done(session, str(exc))
        self.c.sessions.end_user(name, keep=session.token)  # the old password's sessions end
        await run_in_threadpool(self._audit, "user_password_set", session.user, user=name)
        return self._done(session, t("password_reset", name=name))
