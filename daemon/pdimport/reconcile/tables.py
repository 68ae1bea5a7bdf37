"""Identity sources a site keeps as a table: ``csv:///path`` and
``sqlite:///path``.

Columns ``local_id, issuer, name, birth_date, sex``: ``name`` a PN as text
(``Yamada^Taro=山田^太郎=やまだ^たろう``), ``birth_date`` ``YYYYMMDD`` (or
``YYYY-MM-DD``, as a spreadsheet writes it) or empty, ``sex`` ``M``, ``F``,
``O`` or empty. Sites edit the table while the daemon runs: the CSV is
re-read whenever the file changed, the database is asked afresh each time.

The whole table is checked on every read: one bad row makes the source
down (SourceDown naming the file and the line or row), since a table read
in part could lack the very patient that makes a match ambiguous.
"""

from __future__ import annotations

import csv
import datetime
import io
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from pdimport.reconcile.model import Candidate, Demographics, SourceDown

COLUMNS = ("local_id", "issuer", "name", "birth_date", "sex")
SEXES = ("M", "F", "O", "")


def normalise_birth_date(value: str) -> str:
    """``YYYYMMDD`` from ``YYYYMMDD`` or ``YYYY-MM-DD``; ``""`` stays.

    Raises
    ------
    ValueError
        Not a calendar date in one of those forms.
    """
    text = value.strip()
    if not text:
        return ""
    digits = text.replace("-", "") if len(text) == 10 and text[4] == text[7] == "-" else text
    if len(digits) != 8 or not digits.isdigit():
        raise ValueError(f"birth_date {value!r} is not YYYYMMDD")
    try:
        datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        raise ValueError(f"birth_date {value!r} is not a calendar date") from None
    return digits


def normalise_sex(value: str) -> str:
    """``M``/``F``/``O`` (any case) or ``""``; anything else is a ValueError."""
    sex = value.strip().upper()
    if sex not in SEXES:
        raise ValueError(f"sex {value!r} is not M, F, O or empty")
    return sex


def wanted(who: Demographics, birth_date: str, sex: str) -> bool:
    """Whether a row is a candidate for `who`: same birth date (a row or a
    medium without one is no one's candidate), and the same sex when both
    sides know it. Names are the matcher's business."""
    if not who.birth_date or birth_date != who.birth_date:
        return False
    return not who.sex or not sex or sex == who.sex


@dataclass
class Row:
    local_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str

    @classmethod
    def checked(cls, values: dict[str, object]) -> Row:
        """A row from raw cell values; ValueError names the bad cell."""
        cells = {k: "" if values.get(k) is None else str(values[k]).strip() for k in COLUMNS}
        if not cells["local_id"]:
            raise ValueError("local_id is empty")
        return cls(
            local_id=cells["local_id"],
            issuer=cells["issuer"],
            name=cells["name"],
            birth_date=normalise_birth_date(cells["birth_date"]),
            sex=normalise_sex(cells["sex"]),
        )

    def candidate(self, source: str) -> Candidate:
        return Candidate(
            local_id=self.local_id,
            name=self.name,
            birth_date=self.birth_date,
            sex=self.sex,
            source=source,
            issuer=self.issuer,
        )


@dataclass
class TableSource:
    """What the two table kinds share: rows in, candidates out."""

    url: str
    path: Path

    def rows(self) -> list[Row]:
        raise NotImplementedError

    def candidates(self, who: Demographics) -> list[Candidate]:
        return [r.candidate(self.url) for r in self.rows() if wanted(who, r.birth_date, r.sex)]

    def lookup(self, local_id: str) -> list[Candidate]:
        key = local_id.strip()
        return [r.candidate(self.url) for r in self.rows() if key and r.local_id == key]


@dataclass
class CsvSource(TableSource):
    """``csv:///path``: UTF-8 (a BOM is allowed), a header row naming the
    columns (any order; other columns are ignored), comma-separated."""

    _cache: tuple[tuple[int, int, int, int], list[Row]] | None = field(default=None, repr=False)

    def rows(self) -> list[Row]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise SourceDown(self.url, f"cannot read {self.path}: {exc.strerror}") from None
        # mtime alone can miss an edit within one clock tick; size, inode
        # (an editor's rename) and ctime make that unlikely.
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)
        if self._cache is None or self._cache[0] != stamp:
            self._cache = (stamp, self._read())
        return self._cache[1]

    def _read(self) -> list[Row]:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise SourceDown(self.url, f"cannot read {self.path}: {exc.strerror}") from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise SourceDown(self.url, f"{self.path} line {line}: not UTF-8") from None
        return self._parse(text)

    def _parse(self, text: str) -> list[Row]:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        try:
            header = [h.strip().lower() for h in next(reader, [])]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise SourceDown(
                    self.url,
                    f"{self.path} line 1: header has no column {', '.join(missing)} "
                    f"(needs {', '.join(COLUMNS)})",
                )
            rows = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue  # a blank line, as spreadsheets leave at the end
                if len(cells) != len(header):
                    raise SourceDown(
                        self.url,
                        f"{self.path} line {reader.line_num}: {len(cells)} fields, "
                        f"the header has {len(header)}",
                    )
                try:
                    rows.append(Row.checked(dict(zip(header, cells, strict=True))))
                except ValueError as exc:
                    raise SourceDown(
                        self.url, f"{self.path} line {reader.line_num}: {exc}"
                    ) from None
        except csv.Error as exc:
            raise SourceDown(self.url, f"{self.path} line {reader.line_num}: {exc}") from None
        return rows


@dataclass
class SqliteSource(TableSource):
    """``sqlite:///path``: a table ``patients`` with the columns (others
    are ignored), opened read-only for each question."""

    timeout: float = 5.0

    def rows(self) -> list[Row]:
        if not self.path.is_file():
            raise SourceDown(self.url, f"cannot read {self.path}: no such file")
        uri = f"file:{quote(str(self.path))}?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, timeout=self.timeout)
        except sqlite3.Error as exc:
            raise SourceDown(self.url, f"cannot open {self.path}: {exc}") from None
        try:
            return self._read(db)
        except sqlite3.Error as exc:
            raise SourceDown(self.url, f"{self.path}: {exc}") from None
        finally:
            db.close()

    def _read(self, db: sqlite3.Connection) -> list[Row]:
        present = {r[1].lower() for r in db.execute("PRAGMA table_info(patients)")}
        if not present:
            raise SourceDown(self.url, f"{self.path}: no table 'patients'")
        missing = [c for c in COLUMNS if c not in present]
        if missing:
            raise SourceDown(
                self.url, f"{self.path}: table 'patients' has no column {', '.join(missing)}"
            )
        rows = []
        # No rowid: the table may be a view, or WITHOUT ROWID.
        cursor = db.execute(f"SELECT {', '.join(COLUMNS)} FROM patients")
        for number, values in enumerate(cursor, 1):
            try:
                rows.append(Row.checked(dict(zip(COLUMNS, values, strict=True))))
            except ValueError as exc:
                raise SourceDown(
                    self.url, f"{self.path} table patients row {number}: {exc}"
                ) from None
        return rows
