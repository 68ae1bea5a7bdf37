"""The group's database stopped and started: intake pauses with its own
word and opens again by itself once the database answers."""

from __future__ import annotations

from types import SimpleNamespace

from pdimport.appliance.intake import Intake, reachable
from pdimport.store.db import JournalUnavailable


def test_an_unreachable_journal_pauses_intake_until_it_is_back(postgres, pg_url, connect, tmp_path):
    said: list[str] = []
    journal = SimpleNamespace(db=connect(pg_url))
    intake = Intake(said.append, tmp_path, 0, lambda: None, lambda: reachable(journal))
    intake.recheck()
    assert not intake.paused
    postgres.stop()
    try:
        try:
            reachable(journal)
        except JournalUnavailable as exc:  # what a reader or a delivery meets
            intake.pause(exc.detail, exc.code)
        assert intake.paused and intake.code == "journal_unavailable"
        assert said[-1].startswith("paused: journal_unavailable: ")
        intake.recheck()  # still down: stays paused
        assert intake.paused
    finally:
        postgres.start()
    intake.recheck()
    assert not intake.paused and said[-1] == ""
