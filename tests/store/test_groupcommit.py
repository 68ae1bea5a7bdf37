"""Group commit of delivery outcomes: what is durable when."""

from __future__ import annotations

from pathlib import Path

from pdimport.store.groupcommit import DeliveryRecorder
from pdimport.store.journal import Journal

DEST = "dicom://PACS@127.0.0.1:104"
SHA = "ab" * 32


def _job(journal: Journal) -> str:
    return journal.create_job("dir:/x", "dir", "/x", "").id


def _on_disk(path: Path | str) -> set[str]:
    """UIDs recorded as sent, seen by another connection (what a crash keeps)."""
    other = Journal(path)
    try:
        return {uid for uid, _ in other.sent_set(DEST)}
    finally:
        other.close()


def test_a_group_is_committed_when_full_and_at_flush(backend: Path | str) -> None:
    path = backend
    journal = Journal(path)
    job = _job(journal)
    recorder = DeliveryRecorder(journal, max_rows=3, max_seconds=3600)
    for n in range(5):
        recorder.add(DEST, f"1.2.{n}", SHA, "sent", 0, "", "", job)
    assert _on_disk(path) == {"1.2.0", "1.2.1", "1.2.2"}  # one full group, two pending
    recorder.flush()
    assert _on_disk(path) == {f"1.2.{n}" for n in range(5)}
    journal.close()


def test_an_old_group_is_committed_with_the_next_outcome(backend: Path | str) -> None:
    path = backend
    journal = Journal(path)
    job = _job(journal)
    recorder = DeliveryRecorder(journal, max_rows=100, max_seconds=0.0)
    recorder.add(DEST, "1.2.0", SHA, "sent", 0, "", "", job)
    assert _on_disk(path) == {"1.2.0"}
    journal.close()


def test_a_sent_row_is_not_downgraded_within_a_group(backend: Path | str) -> None:
    journal = Journal(backend)
    job = _job(journal)
    recorder = DeliveryRecorder(journal, max_rows=10)
    recorder.add(DEST, "1.2.0", SHA, "sent", 0, "", "", job)
    recorder.add(DEST, "1.2.0", SHA, "unknown", None, "outcome_unknown", "resend", job)
    recorder.flush()
    row = journal.delivery(DEST, "1.2.0", SHA)
    assert row is not None and row.state == "sent" and row.attempts == 2
    journal.close()
