"""A discarded medium leaves the spool after the retention period; content
another job still holds stays."""

from __future__ import annotations

import time
from pathlib import Path

from pdimport.job.holdqueue import purge_discarded
from pdimport.job.lifecycle import JobEvent
from pdimport.store.journal import Journal
from pdimport.store.spool import Spool


def _job(journal: Journal, spool: Spool, name: str, contents: list[bytes]) -> tuple[str, list[str]]:
    job = journal.create_job(f"dir:/{name}", "dir", f"/{name}", "", "import")
    shas = [spool.put_bytes(data)[0] for data in contents]
    journal.record_files(
        job.id,
        [
            (i, f"F{i}", len(d), sha, "read", "", "")
            for i, (d, sha) in enumerate(zip(contents, shas))
        ],
    )
    for event in ("start_read", "read_done", "inventory", "hold"):
        journal.transition(job.id, JobEvent(event))
    return job.id, shas


def test_discarded_media_are_purged_after_retention_shared_content_stays(tmp_path: Path) -> None:
    journal, spool = Journal(tmp_path / "journal.sqlite"), Spool(tmp_path / "spool")
    gone_job, (only_here, shared) = _job(journal, spool, "a", [b"only on a" * 10, b"on both" * 10])
    _job(journal, spool, "b", [b"on both" * 10])  # still held: keeps its files
    derived, _ = spool.put_bytes(b"a coerced copy of only-on-a")
    journal.record_derived(only_here, "coerce:x", derived)
    journal.transition(gone_job, JobEvent.DISCARD, "wrong disc")
    now = time.time()
    assert purge_discarded(journal, spool, 30, now) == 0  # discarded just now: kept
    assert purge_discarded(journal, spool, 30, now + 31 * 86400) == 2
    assert not spool.has(only_here) and not spool.has(derived)
    assert spool.has(shared)  # job b (held, not discarded) still needs it
    assert purge_discarded(journal, spool, 30, now + 31 * 86400) == 0
    journal.close()
