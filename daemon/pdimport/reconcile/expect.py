"""Expected patients (``expect:``): a person at the referral desk says
"a CD for local patient 123456 is coming" before it is read.

Kept in ``STATE_DIR/expectations.sqlite``, or with ``journal.url`` in the
hospital group's shared database, where every station sees what the
referral desk registered (issue 19). An expectation need not say
everything: an empty birth date or sex is allowed (the person may know
only the ID). It still only becomes a candidate when its birth date equals
the medium's, and its sex too when both are known (:func:`tables.wanted`);
an empty name is for the matcher to weigh. :func:`ExpectSource.lookup`
finds an expectation by local ID whatever it lacks.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdimport.reconcile.model import Candidate, Demographics, SourceDown
from pdimport.reconcile.tables import normalise_birth_date, normalise_sex, wanted
from pdimport.store.db import Database, JournalUnavailable, Migration, is_url, migrate

FILENAME = "expectations.sqlite"
FIELDS = ("id", "local_id", "name", "birth_date", "sex", "note", "created")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS expectations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    local_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    birth_date TEXT NOT NULL DEFAULT '',
    sex TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL
)
"""
_MIGRATIONS = (Migration(1, "expected patients", _SCHEMA),)

#: Where the expectations are: the state folder (its ``expectations.sqlite``)
#: or a ``postgresql://`` URL (:func:`expectations_at`).
Where = Path | str


def expectations_at(settings: Any) -> Where:
    """``journal.url`` when the stations share a database, else the state folder."""
    url = str(settings.get("journal.url") or "")
    return url or settings.state_path


def expectations_path(state_dir: Where) -> Path:
    return Path(state_dir) / FILENAME


def _exists(where: Where) -> bool:
    return is_url(where) or expectations_path(where).exists()


@contextmanager
def _connect(where: Where) -> Iterator[Database]:
    db = Database(where if is_url(where) else expectations_path(where))
    try:
        migrate(db, "expectations", _MIGRATIONS)
        yield db
    finally:
        db.close()


def add_expectation(
    state_dir: Where,
    local_id: str,
    name: str = "",
    birth_date: str = "",
    sex: str = "",
    note: str = "",
) -> int:
    """Register an expected patient; returns the expectation's id.

    Raises
    ------
    ValueError
        An empty `local_id`, a `birth_date` that is not ``YYYYMMDD`` (or
        ``YYYY-MM-DD``), a `sex` other than M, F, O or empty.
    """
    key = local_id.strip()
    if not key:
        raise ValueError("an expectation needs a local_id")
    values = (
        key,
        name.strip(),
        normalise_birth_date(birth_date),
        normalise_sex(sex),
        note.strip(),
        datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    with _connect(state_dir) as db:
        rows = db.execute(
            "INSERT INTO expectations (local_id, name, birth_date, sex, note, created)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            values,
        )
        return int(rows[0][0])


def list_expectations(state_dir: Where) -> list[dict[str, Any]]:
    """Every expectation, oldest first, as dicts with keys :data:`FIELDS`."""
    if not _exists(state_dir):
        return []
    with _connect(state_dir) as db:
        rows = db.execute(f"SELECT {', '.join(FIELDS)} FROM expectations ORDER BY id")
        return [dict(zip(FIELDS, row, strict=True)) for row in rows]


def remove_expectation(state_dir: Where, id_or_local_id: int | str) -> int:
    """Remove expectations; returns how many went.

    An ``int`` is an expectation's id. A ``str`` is a local ID (every
    expectation for that patient goes); a string of digits that is nobody's
    local ID is taken as an id (a command line passes strings: the id a
    listing shows still works, and a patient's ID always wins).
    """
    if not _exists(state_dir):
        return 0
    with _connect(state_dir) as db, db.transaction():
        if isinstance(id_or_local_id, int):
            return db.execute("DELETE FROM expectations WHERE id = ?", (id_or_local_id,)).rowcount
        key = id_or_local_id.strip()
        removed = db.execute("DELETE FROM expectations WHERE local_id = ?", (key,)).rowcount
        if removed == 0 and key.isdigit():
            removed = db.execute("DELETE FROM expectations WHERE id = ?", (int(key),)).rowcount
        return removed


@dataclass
class ExpectSource:
    """``expect:``: the expectations as an identity source."""

    url: str
    state_dir: Where
    timeout: float = 5.0

    def _rows(self) -> list[dict[str, Any]]:
        try:
            return list_expectations(self.state_dir)
        except JournalUnavailable as exc:
            raise SourceDown(self.url, exc.detail) from None
        except sqlite3.Error as exc:
            raise SourceDown(self.url, f"{expectations_path(self.state_dir)}: {exc}") from None

    def _candidate(self, row: dict[str, Any]) -> Candidate:
        return Candidate(
            local_id=row["local_id"],
            name=row["name"],
            birth_date=row["birth_date"],
            sex=row["sex"],
            source=self.url,
            note=row["note"],
        )

    def candidates(self, who: Demographics) -> list[Candidate]:
        return [self._candidate(r) for r in self._rows() if wanted(who, r["birth_date"], r["sex"])]

    def lookup(self, local_id: str) -> list[Candidate]:
        key = local_id.strip()
        return [self._candidate(r) for r in self._rows() if key and r["local_id"] == key]
