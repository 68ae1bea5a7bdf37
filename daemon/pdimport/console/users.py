"""Console accounts: ``STATE_DIR/users.sqlite`` (or, with ``journal.url``,
the hospital group's shared database: one account works at every station),
argon2id password hashes.

Roles are ordered: a viewer sees, an operator also decides (release, discard,
reprint, retry), an admin also manages users. ``pdimport user add NAME --role
ROLE`` and ``pdimport user list`` are the command line of this module.
"""

from __future__ import annotations

import getpass
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from pdimport.store.db import Database, Migration, migrate

ROLES = ("viewer", "operator", "admin")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name     TEXT PRIMARY KEY,
    role     TEXT NOT NULL,
    hash     TEXT NOT NULL,
    created  REAL NOT NULL
);
"""
_MIGRATIONS = (Migration(1, "console accounts", _SCHEMA),)


def may(role: str, needed: str) -> bool:
    """True when ``role`` is at least ``needed`` (viewer < operator < admin)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class User:
    name: str
    role: str


class UserError(ValueError):
    """A bad name, role or password (a usage error: nothing is changed)."""


class UserStore:
    """The accounts table; thread-safe (one connection, one lock).

    ``target`` is the SQLite file or a ``postgresql://`` URL
    (:func:`users_target`).
    """

    def __init__(self, target: Path | str) -> None:
        self._db = Database(target)
        self.path = self._db.path
        try:
            migrate(self._db, "users", _MIGRATIONS)
        except BaseException:
            self._db.close()
            raise
        self._hasher = PasswordHasher()
        # Verifying a name that does not exist still costs one hash, so the
        # time a login takes does not tell which names exist.
        self._dummy = self._hasher.hash("not a password")

    def close(self) -> None:
        self._db.close()

    def add(self, name: str, role: str, password: str) -> User:
        """Create or replace the account ``name`` (a new password, a new role)."""
        name = name.strip()
        if not name or len(name) > 64 or any(c.isspace() for c in name):
            raise UserError(f"user name {name!r}: 1 to 64 characters, no spaces")
        if role not in ROLES:
            raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise UserError("the password needs at least 8 characters")
        digest = self._hasher.hash(password)
        self._db.execute(
            "INSERT INTO users (name, role, hash, created) VALUES (?,?,?,?) "
            "ON CONFLICT(name) DO UPDATE SET role=excluded.role, hash=excluded.hash",
            (name, role, digest, time.time()),
        )
        return User(name, role)

    def remove(self, name: str) -> bool:
        return self._db.execute("DELETE FROM users WHERE name=?", (name,)).rowcount > 0

    def users(self) -> list[User]:
        rows = self._db.execute("SELECT name, role FROM users ORDER BY name")
        return [User(n, r) for n, r in rows]

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when ``password`` is theirs, else None."""
        rows = self._db.execute("SELECT role, hash FROM users WHERE name=?", (name.strip(),))
        row = rows[0] if rows else None
        digest = row[1] if row else self._dummy
        try:
            self._hasher.verify(digest, password)
        except (VerificationError, InvalidHashError):
            return None
        return User(name.strip(), row[0]) if row else None


def users_path(state_dir: Path) -> Path:
    return state_dir / "users.sqlite"


def users_target(settings: Any) -> Path | str:
    """``journal.url`` when the stations share a database, else ``users.sqlite``."""
    return str(settings.get("journal.url") or "") or users_path(settings.state_path)


def _read_password() -> str:
    """Twice at a terminal; one line from a pipe (scripts, provisioning)."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the two passwords differ")
    return first


def user_main(cfg: Any, args: Any) -> int:
    """``pdimport user add NAME --role ROLE`` / ``pdimport user list``."""
    store = UserStore(users_target(cfg))
    try:
        if args.user_command == "add":
            user = store.add(args.name, args.role, _read_password())
            print(f"user {user.name}: {user.role}")
            return 0
        if args.user_command == "remove":
            if not store.remove(args.name):
                raise UserError(f"no user {args.name!r} (see pdimport user list)")
            print(f"removed {args.name}")
            return 0
        for user in store.users():
            print(f"{user.name}  {user.role}")
        return 0
    finally:
        store.close()
