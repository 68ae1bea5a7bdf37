"""The audit trail on disk: monthly JSON-lines files holding a hash chain.

Tamper evidence
---------------
Each line is one JSON object ending with two fields:

* ``prev``: SHA-256 of the previous record's exact line bytes (newline
  included); the first record has 64 zeros;
* ``hash``: SHA-256 of the line's own bytes up to (not including)
  ``,"hash":…`` plus the closing ``}``.

Changing any byte of record *k* breaks its own ``hash``, and rewriting it with
a fresh hash breaks ``prev`` of record *k + 1*: :func:`verify` names the
first record that fails. Removing records from the *end* cannot be detected
from the file alone, so the journal keeps the chain head — the record count
and the last record's ``hash`` — updated after each append
(:meth:`Journal.set_audit_head <pdimport.store.journal.Journal.set_audit_head>`).
:func:`verify` compares the trail with it: a trail shorter than the head, a
different last record, or a missing file is tampering or loss; a head exactly
one record behind, with that record chaining from the head, is a crash
between the append and the head update (reported, not failed: the next
append repairs it). The syslog copy (:mod:`pdimport.record.auditsyslog`) is a
second external witness.

The log is split by month (``audit-YYYY-MM.jsonl``); the chain runs across
the files in name order. :class:`~pdimport.record.audit.AuditLog` writes
through :func:`seal` and :func:`write_durably`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
FILE_RE = re.compile(r"^audit-(\d{4})-(\d{2})\.jsonl$")
_HASH_TAIL = re.compile(rb',"hash":"([0-9a-f]{64})"\}\n?$')


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- files
def log_files(directory: Path | str) -> list[Path]:
    """The monthly log files, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted((p for p in d.iterdir() if FILE_RE.match(p.name)), key=lambda p: p.name)


def last_line(path: Path) -> bytes | None:
    """The last line of a file (with its newline), reading backwards."""
    with open(path, "rb") as fp:
        fp.seek(0, os.SEEK_END)
        end = fp.tell()
        if end == 0:
            return None
        chunk, pos = b"", end
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            fp.seek(pos)
            chunk = fp.read(step) + chunk
            cut = chunk.rfind(b"\n", 0, len(chunk) - 1)
            if cut >= 0:
                return chunk[cut + 1 :]
        return chunk


def seal(record: dict[str, Any]) -> bytes:
    """The record's line: compact JSON, then its own hash as the last field."""
    body = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
    digest = sha256_hex(body.encode("utf-8"))
    return (body[:-1] + f',"hash":"{digest}"}}\n').encode("utf-8")


def write_durably(path: Path, line: bytes) -> None:
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        # The new file's directory entry must survive a power loss too.
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


# --------------------------------------------------------------------------- reading
def _lines(directory: Path | str) -> Iterator[tuple[Path, int, bytes]]:
    """(file, line number, line bytes) for every record, in chain order."""
    for path in log_files(directory):
        with open(path, "rb") as fp:
            for n, line in enumerate(fp, 1):
                yield path, n, line


def check_line(line: bytes, prev_line: bytes | None) -> str:
    """Why one line is not a valid link of the chain ("" when it is)."""
    if not line.endswith(b"\n"):
        return "incomplete record (no newline: a torn write or a cut file)"
    m = _HASH_TAIL.search(line)
    if m is None:
        return "no hash field at the end of the record"
    body = line[: m.start()] + b"}"
    if sha256_hex(body) != m.group(1).decode():
        return "record content changed: its bytes do not match its hash"
    try:
        record = json.loads(body)
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    expected = sha256_hex(prev_line) if prev_line is not None else GENESIS
    if record.get("prev") != expected:
        return "chain broken"
    return ""


def verify(
    directory: Path | str, head: tuple[int, str] | None = None
) -> tuple[bool, int | None, str]:
    """Check the whole chain (PS3.15 asks audit trails to be tamper-evident).

    Parameters
    ----------
    directory : Path
        The trail's directory.
    head : (count, hash), optional
        The chain head the journal recorded (:meth:`Journal.audit_head`).
        Without it, records removed from the end cannot be detected.

    Returns
    -------
    (ok, first_bad, reason)
        ``first_bad`` is the **1-based record number** in chain order (line
        number in a single-file log), or None when intact. When record *n*'s
        ``prev`` does not match record *n - 1*, record *n - 1* is named (it
        was rewritten with a fresh hash, or records were removed after it).
        A trail shorter than ``head`` names the first missing record.
    """
    prev_line: bytes | None = None
    number = 0
    at_head = ""  # hash field of record number head[0]
    for path, lineno, line in _lines(directory):
        number += 1
        why = check_line(line, prev_line)
        if why == "chain broken":
            reason = (
                f"record {number - 1} (the one before {path.name} line {lineno}): its "
                f"bytes differ from what record {number} chained to — it was rewritten, "
                f"or records were removed or inserted between them"
            )
            return False, number - 1, reason
        if why:
            return False, number, f"record {number} ({path.name} line {lineno}): {why}"
        if head is not None and number == head[0]:
            at_head = _HASH_TAIL.search(line).group(1).decode()  # type: ignore[union-attr]
        prev_line = line
    if head is None:
        return True, None, f"{number} records intact"
    return _against_head(number, at_head, head, has_files=bool(log_files(directory)))


def _against_head(
    number: int, at_head: str, head: tuple[int, str], has_files: bool
) -> tuple[bool, int | None, str]:
    """Compare an intact chain of ``number`` records with the journal's head."""
    count, digest = head
    if count > 0 and not has_files:
        return False, 1, f"trail file missing: the journal knows {count} records"
    if number < count:
        return (
            False,
            number + 1,
            (
                f"trail is shorter than the journal knows: {number} "
                f"records on file, {count} in the journal (records "
                f"removed from the end, or the trail truncated)"
            ),
        )
    if count > 0 and at_head != digest:
        return (
            False,
            count,
            (
                f"record {count} is not the one the journal knows as the "
                f"chain head: the end of the trail was replaced"
            ),
        )
    if number == count:
        return True, None, f"{number} records intact (length confirmed by the journal)"
    if number == count + 1:
        return (
            True,
            None,
            (
                f"{number} records intact; head behind by 1 (crash during "
                f"append: record {number} was written, the journal's head "
                f"not updated)"
            ),
        )
    return (
        False,
        count + 1,
        (
            f"trail is longer than the journal knows: {number} records "
            f"on file, {count} in the journal ({number - count} records "
            f"appended without the journal)"
        ),
    )


def records(directory: Path | str) -> Iterator[dict[str, Any]]:
    """Every parsable record, in chain order."""
    for _path, _n, line in _lines(directory):
        try:
            yield json.loads(line)
        except ValueError:
            continue


def export(directory: Path | str, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """The records at or after ``since`` (naive datetimes are local time)."""
    if since is not None and since.tzinfo is None:
        since = since.astimezone()
    for record in records(directory):
        if since is None:
            yield record
            continue
        try:
            when = datetime.fromisoformat(str(record.get("time")))
        except ValueError:
            continue
        if when >= since:
            yield record
