"""One small database layer for the journal and the stores beside it: an
embedded SQLite file (the default) or a PostgreSQL database shared by every
station of a hospital group (issue 19).

SQL is written once, in the dialect both understand: ``?`` placeholders
(turned into psycopg's ``%s``), ``INSERT … ON CONFLICT (…) DO NOTHING / DO
UPDATE`` (SQLite ≥ 3.24), no ``INSERT OR REPLACE``. Table definitions are
written for SQLite and translated (:func:`ddl`) where PostgreSQL's types
differ. Each store declares its schema as an ordered list of migrations
(:func:`migrate`), applied at start in one transaction and recorded in a
``schema_version`` table; on PostgreSQL an advisory lock keeps two stations
that start together from applying them twice.

Failures that callers act on have their own types: a full disk (SQLite's
``SQLITE_FULL``, PostgreSQL's SQLSTATE 53100) is
:class:`~pdimport.store.fsutil.DiskFull`; a PostgreSQL server that cannot be
reached, or a connection lost on the way, is :class:`JournalUnavailable`
(the next use connects again).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdimport.problems import CodedError
from pdimport.store.fsutil import DiskFull, check_free, disk_full

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

#: Seconds to wait for a PostgreSQL connection before saying it is unavailable.
CONNECT_TIMEOUT = 10


class JournalUnavailable(CodedError):
    """The shared journal's database cannot be reached (refused, gone, or
    the connection broke mid-statement): nothing was recorded by the
    statement that raised it. Intake pauses; the next use connects again."""

    def __init__(self, detail: str) -> None:
        super().__init__("journal_unavailable", detail)


class Rows(list[tuple[Any, ...]]):
    """The rows a statement returned (empty for one that returns none), and
    how many rows it changed (``rowcount``)."""

    rowcount: int = -1

    # the two sqlite3.Cursor reads read-only callers use (console.journal_stats)
    def fetchone(self) -> tuple[Any, ...] | None:
        return self[0] if self else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self)


def is_url(target: str | Path) -> bool:
    """Whether ``target`` names a database server rather than a file."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class Database:
    """One connection, thread-safe behind one lock (as the journal always
    was): a SQLite file in WAL mode with ``synchronous=FULL``, or a psycopg 3
    connection in autocommit mode outside :meth:`transaction`.

    Parameters
    ----------
    target : str or Path
        A ``postgresql://`` URL, or the path of the SQLite file (created
        with its folder when missing).
    """

    def __init__(self, target: str | Path) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._pg: Any = None
        self._sqlite: sqlite3.Connection | None = None
        if is_url(target):
            self.dialect = POSTGRESQL
            self.url = str(target)
            self.path: Path | None = None
            self._connect_pg()
        else:
            self.dialect = SQLITE
            self.path = Path(target)
            self.url = str(self.path)
            self._sqlite = _open_sqlite(self.path)

    # ---------------------------------------------------------- connection
    def _connect_pg(self) -> Any:
        import psycopg

        try:
            self._pg = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.OperationalError as exc:
            self._pg = None
            raise JournalUnavailable(f"{redact(self.url)}: {_first_line(exc)}") from exc
        return self._pg

    def _conn(self) -> Any:
        if self._sqlite is not None:
            return self._sqlite
        if self._pg is None or self._pg.closed:
            if self._depth:  # never reconnect inside a transaction: it is gone
                raise JournalUnavailable(f"{redact(self.url)}: connection lost")
            return self._connect_pg()
        return self._pg

    def close(self) -> None:
        with self._lock:
            if self._sqlite is not None:
                self._sqlite.close()
            elif self._pg is not None:
                self._pg.close()

    def __del__(self) -> None:
        # As sqlite3 does: a database dropped without close() closes quietly
        # (psycopg would warn, and a journal is often dropped with its owner).
        pg = getattr(self, "_pg", None)
        if pg is not None and not pg.closed:
            pg.close()

    # ---------------------------------------------------------- statements
    def execute(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        """Run one statement; its rows (autocommitted outside a transaction)."""
        with self._lock, self._errors():
            cur = self._conn().execute(self._sql(sql), tuple(args))
            rows = Rows(cur.fetchall() if cur.description is not None else ())
            rows.rowcount = cur.rowcount
            return rows

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for each of ``rows``; wrap it in :meth:`transaction`
        for one commit."""
        if not rows:
            return
        with self._lock, self._errors():
            if self._sqlite is not None:
                self._sqlite.executemany(sql, rows)
            else:
                with self._conn().cursor() as cur:
                    cur.executemany(self._sql(sql), [tuple(r) for r in rows])

    def executescript(self, script: str) -> None:
        """Statements separated by ``;`` (no ``;`` inside literals), DDL
        translated for the dialect, in one transaction."""
        with self.transaction():
            for statement in ddl(script, self.dialect).split(";"):
                if statement.strip():
                    self.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """``BEGIN … COMMIT`` around the block (``ROLLBACK`` if it raises),
        holding the lock throughout; nested blocks join the outer one.

        On SQLite it is ``BEGIN IMMEDIATE`` (the write lock up front: two
        processes never deadlock upgrading a read lock); on PostgreSQL a
        plain transaction, in which ``SELECT … FOR UPDATE SKIP LOCKED``
        claims rows until the commit.
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            conn = self._conn()
            with self._errors():
                conn.execute("BEGIN IMMEDIATE" if self._sqlite is not None else "BEGIN")
            self._depth = 1
            try:
                yield self
            except BaseException:
                self._depth = 0
                self._rollback()
                raise
            self._depth = 0
            with self._errors():
                conn.execute("COMMIT")

    def _rollback(self) -> None:
        conn = self._sqlite if self._sqlite is not None else self._pg
        if conn is None or getattr(conn, "closed", False):
            return
        try:
            conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - the first error is the one to raise
            if self._pg is not None and not self._pg.closed:
                self._pg.close()  # state unknown: the next use connects afresh

    # ------------------------------------------------------------- dialect
    @property
    def rowid(self) -> str:
        """The column that orders rows by insertion (SQLite's rowid; an
        identity column named ``seq`` on PostgreSQL, see :func:`ddl`)."""
        return "rowid" if self.dialect == SQLITE else "seq"

    def _sql(self, sql: str) -> str:
        return sql if self._sqlite is not None else pg_sql(sql)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        if self._sqlite is not None:
            try:
                yield
            except sqlite3.OperationalError as exc:
                if disk_full(exc):
                    raise DiskFull(f"journal: {exc}") from exc
                raise
            return
        import psycopg

        try:
            yield
        except psycopg.errors.DiskFull as exc:
            raise DiskFull(f"journal: {_first_line(exc)}") from exc
        except psycopg.OperationalError as exc:
            # a server that went away, was shut down or restarted; the
            # transaction, if any, is lost with the connection
            if self._pg is not None and not self._pg.closed:
                self._pg.close()
            raise JournalUnavailable(f"{redact(self.url)}: {_first_line(exc)}") from exc
        except psycopg.InterfaceError as exc:  # used after the connection closed
            raise JournalUnavailable(f"{redact(self.url)}: {_first_line(exc)}") from exc


def _open_sqlite(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        # with no byte free SQLite cannot even create its WAL: "disk I/O error"
        check_free(path.parent, 1 << 20)
        if disk_full(exc):
            raise DiskFull(f"journal: {exc}") from exc
        raise exc from None
    # FULL: with NORMAL a commit can roll back after power loss (SQLite docs).
    db.execute("PRAGMA synchronous=FULL")
    return db


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


_LITERAL = re.compile(r"'(?:[^']|'')*'")
_PG_SQL: dict[str, str] = {}


def pg_sql(sql: str) -> str:
    """``sql`` with ``?`` placeholders as psycopg's ``%s`` (and ``%`` doubled).

    Raises
    ------
    ValueError
        When a string literal holds ``?`` or ``%``: they cannot be told from
        placeholders, so such values are passed as parameters.
    """
    out = _PG_SQL.get(sql)
    if out is None:
        if any(c in lit for lit in _LITERAL.findall(sql) for c in "?%"):
            raise ValueError(f"'?' or '%' inside a literal, pass it as a parameter: {sql}")
        out = _PG_SQL[sql] = sql.replace("%", "%%").replace("?", "%s")
    return out


_DDL_PG = (
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    # an ordering column for tables SQLite orders by rowid (Database.rowid)
    (re.compile(r"--\s*ROWID\b.*"), ", seq BIGINT GENERATED ALWAYS AS IDENTITY"),
    (re.compile(r"--.*"), ""),
)  # fmt: skip
_COMMENT = re.compile(r"--.*")


def ddl(script: str, dialect: str) -> str:
    """Table definitions written for SQLite, for ``dialect``.

    A table SQLite orders by ``rowid`` marks the end of its last column with
    ``-- ROWID``: PostgreSQL gets an identity column ``seq`` there.
    """
    if dialect == SQLITE:
        return _COMMENT.sub("", script)  # a ';' in a comment would split a statement
    for pattern, repl in _DDL_PG:
        script = pattern.sub(repl, script)
    return script


# ----------------------------------------------------------------- migrations
@dataclass(frozen=True)
class Migration:
    """One step of a store's schema: DDL (see :func:`ddl`) or a function of
    the open database, run inside the migration transaction."""

    version: int
    why: str
    apply: str | Callable[[Database], None]


def migrate(db: Database, component: str, migrations: Sequence[Migration]) -> int:
    """Bring ``component``'s tables in ``db`` to the last of ``migrations``.

    The versions applied are recorded per component in ``schema_version``
    (the journal, the console users and the expectations may share one
    database). All pending steps run in one transaction: a failure applies
    none. A database written by a newer pdimport is left alone.

    Returns
    -------
    int
        The component's schema version now.
    """
    versions = [m.version for m in migrations]
    if versions != sorted(set(versions)):
        raise ValueError(f"{component}: migrations out of order: {versions}")
    with db.transaction():
        if db.dialect == POSTGRESQL:
            # two stations starting together: the second waits, then finds it done
            db.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key(component),))
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "component TEXT PRIMARY KEY, version INTEGER NOT NULL, why TEXT NOT NULL)"
        )
        rows = db.execute("SELECT version FROM schema_version WHERE component=?", (component,))
        current = int(rows[0][0]) if rows else 0
        for step in migrations:
            if step.version <= current:
                continue
            if callable(step.apply):
                step.apply(db)
            else:
                db.executescript(step.apply)
            current = step.version
            db.execute(
                "INSERT INTO schema_version (component, version, why) VALUES (?,?,?) "
                "ON CONFLICT (component) DO UPDATE SET version=excluded.version, "
                "why=excluded.why",
                (component, current, step.why),
            )
    return current


def _lock_key(component: str) -> int:
    """A stable 63-bit advisory lock key for ``component``."""
    return zlib.crc32(f"pdimport:{component}".encode()) | (0x7D1 << 32)


def columns(db: Database, table: str) -> set[str]:
    """The column names of ``table`` (empty when there is no such table)."""
    if db.dialect == SQLITE:
        return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
    return {
        r[0]
        for r in db.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema=current_schema() AND table_name=?",
            (table,),
        )
    }
