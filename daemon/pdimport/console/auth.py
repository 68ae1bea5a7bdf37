"""Console sessions: who is logged in, their CSRF token, idle timeout, and
login throttling.

Sessions live in memory (a restart of the daemon logs everyone out) and are
named by a random token in an HttpOnly, SameSite=Strict cookie. Every form
carries the session's CSRF token; a POST without it is refused. Failed logins
are counted per name and per client address over a sliding window.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pdimport.console.users import User

SESSION_COOKIE = "pdimport_session"
#: before login: the token the login form must echo (login CSRF)
LOGIN_COOKIE = "pdimport_login"
THROTTLE_WINDOW = 300.0


@dataclass
class Session:
    token: str
    user: User
    csrf: str
    last_seen: float
    flash: list[str] = field(default_factory=list)


class Sessions:
    """Live sessions, ended after ``idle_timeout`` seconds without a request."""

    def __init__(self, idle_timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, Session] = {}

    def create(self, user: User) -> Session:
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), self._clock())
        with self._lock:
            self._expire()
            self._live[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        """The session of ``token`` if it is live; touching it restarts its idle clock."""
        if not token:
            return None
        with self._lock:
            self._expire()
            session = self._live.get(token)
            if session is not None:
                session.last_seen = self._clock()
            return session

    def peek(self, token: str | None) -> Session | None:
        """The live session of ``token`` without touching it: an open event
        stream does not keep an idle person logged in."""
        with self._lock:
            self._expire()
            return self._live.get(token or "")

    @staticmethod
    def new_token() -> str:
        return secrets.token_urlsafe(32)

    def end(self, token: str | None) -> None:
        with self._lock:
            self._live.pop(token or "", None)

    def end_user(self, name: str, keep: str | None = None) -> None:
        """End every session of ``name`` but ``keep`` (removed account, new password)."""
        with self._lock:
            for token in [t for t, s in self._live.items() if s.user.name == name and t != keep]:
                del self._live[token]

    def _expire(self) -> None:
        now = self._clock()
        for token in [t for t, s in self._live.items() if now - s.last_seen > self.idle_timeout]:
            del self._live[token]


def csrf_ok(expected: str, given: object) -> bool:
    """Constant-time comparison of a form's token with the session's."""
    return isinstance(given, str) and bool(given) and hmac.compare_digest(expected, given)


class Throttle:
    """At most ``attempts`` failed logins per key (a name, an address) per window."""

    def __init__(
        self,
        attempts: int,
        window: float = THROTTLE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.attempts = attempts
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        cutoff = self._clock() - self.window
        while times and times[0] < cutoff:
            times.popleft()
        return times

    def blocked(self, *keys: str) -> float:
        """Seconds until another attempt is allowed for any of ``keys`` (0: allowed)."""
        with self._lock:
            waits = [
                self.window - (self._clock() - times[0])
                for times in (self._recent(k) for k in keys)
                if len(times) >= self.attempts
            ]
        return max(waits, default=0.0)

    def failed(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._recent(key).append(self._clock())

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
