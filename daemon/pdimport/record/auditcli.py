"""``pdimport audit verify`` and ``pdimport audit export``."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from pdimport.record.audit import TRAIL
from pdimport.record.auditchain import export, verify
from pdimport.store.journal import open_existing_journal


def audit_verify_main(state_dir: Path | str, journal: Any = None, settings: Any = None) -> int:
    """``pdimport audit verify``: 0 when the chain is intact and as long as the
    journal knows, 1 naming the first bad (or missing) record.

    Without ``journal``, reads the chain head from the journal of
    ``settings`` (``state_dir/journal.sqlite`` by default) when that exists.
    """
    head = None
    own = open_existing_journal(settings, state_dir) if journal is None else None
    if own is not None:
        try:
            head = own.audit_head(TRAIL)
        finally:
            own.close()
    elif journal is not None:
        head = journal.audit_head(TRAIL)
    ok, first_bad, reason = verify(Path(state_dir) / "audit", head)
    if ok:
        print(f"audit log intact: {reason}")
        return 0
    print(f"audit log BROKEN at record {first_bad}: {reason}", file=sys.stderr)
    return 1


def parse_since(text: str) -> datetime:
    """``YYYY-MM-DD`` or any ISO 8601 date-time (local time when no offset)."""
    value = datetime.fromisoformat(text.strip())
    return value if value.tzinfo else value.astimezone()


def audit_export_main(state_dir: Path | str, since: str | None = None) -> int:
    """``pdimport audit export --since DATE``: the records as JSON lines on stdout."""
    try:
        when = parse_since(since) if since else None
    except ValueError:
        print(f"pdimport audit export: bad --since {since!r} (use YYYY-MM-DD)", file=sys.stderr)
        return 64
    for record in export(Path(state_dir) / "audit", when):
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return 0
