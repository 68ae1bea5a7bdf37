"""The journal's interface, the same on both backends (``backend``: an
SQLite file and a fresh PostgreSQL database): jobs and their transitions,
files, problems, derived content, deliveries (acknowledged once, whichever
station or job asks), decisions, settlements, commitments, the audit head,
and the stores that share the database (console users, expectations)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdimport.console.users import UserError, UserStore
from pdimport.job.lifecycle import IllegalTransition, JobEvent, JobState
from pdimport.reconcile.expect import (
    ExpectSource,
    add_expectation,
    list_expectations,
    remove_expectation,
)
from pdimport.reconcile.model import Demographics
from pdimport.store.journal import Journal, open_journal
from pdimport.store.schema import JOURNAL_MIGRATIONS

DEST = "dicom://PACS@127.0.0.1:104"
SHA = "ab" * 32


@pytest.fixture
def journal(backend: Path | str):
    j = Journal(backend, station="desk")
    yield j
    j.close()


def _job(journal: Journal, key: str = "iso:/a.iso") -> str:
    return journal.create_job(key, "iso", "/a.iso", "CD1").id


def test_create_find_and_list_jobs(journal):
    job = journal.create_job("iso:/a.iso", "iso", "/a.iso", "CD1")
    assert (job.state, job.read_complete, job.station, job.label) == (
        JobState.QUEUED,
        False,
        "desk",
        "CD1",
    )
    assert journal.find_unfinished("iso:/a.iso", "import") == job
    assert journal.find_unfinished("iso:/a.iso", "scan") is None
    journal.set_label(job.id, "relabelled")
    assert journal.job(job.id).label == "relabelled"
    assert journal.job("nope") is None
    second = journal.create_job("iso:/b.iso", "iso", "/b.iso", "", mode="scan")
    assert [j.id for j in journal.jobs(limit=1)] == [second.id]
    assert {j.id for j in journal.jobs()} == {job.id, second.id}
    assert isinstance(journal.job(job.id).created, float)


def test_transitions_are_checked_recorded_and_observed(journal):
    job = _job(journal)
    heard = []
    journal.subscribe(heard.append)
    journal.subscribe(lambda t: 1 / 0)  # a broken observer is logged, not raised
    assert journal.transition(job, JobEvent.START_READ) == JobState.READING
    assert journal.transition(job, "read_done", reason="ok") == JobState.READ
    with pytest.raises(IllegalTransition):
        journal.transition(job, JobEvent.DELIVERED)
    with pytest.raises(KeyError):
        journal.transition("nope", JobEvent.START_READ)
    got = journal.job(job)
    assert got.state == JobState.READ and got.read_complete
    events = journal.job_events(job)
    assert [(e[1], e[2], e[3], e[4]) for e in events] == [
        ("start_read", "queued", "reading", ""),
        ("read_done", "reading", "read", "ok"),
    ]
    assert [(t.event, t.target) for t in heard] == [
        ("start_read", "reading"),
        ("read_done", "read"),
    ]


def test_job_events_keep_insertion_order_within_one_second(journal):
    job = _job(journal)
    for event in ("start_read", "interrupted", "start_read", "interrupted"):
        journal.transition(job, event)
    assert [e[1] for e in journal.job_events(job)] == [
        "start_read",
        "interrupted",
        "start_read",
        "interrupted",
    ]


def test_report_is_kept_as_json(journal):
    job = _job(journal)
    assert journal.report(job) is None
    journal.save_report(job, {"job": job, "name": "山田^太郎", "counts": {"sent": 3}})
    assert journal.report(job) == {"job": job, "name": "山田^太郎", "counts": {"sent": 3}}


def test_files_are_replaced_by_path_and_listed_in_order(journal):
    job = _job(journal)
    journal.record_files(
        job,
        [
            (2, "B/IM2", 20, "b" * 64, "read", "", ""),
            (1, "A/IM1", 10, None, "error", "unreadable_sector", "LBA 17 ? 100%"),
        ],
    )
    journal.record_file(job, 3, "A/IM1", 11, "a" * 64, "read")
    files = journal.files(job)
    assert [(f.seq, f.path, f.size, f.state) for f in files] == [
        (2, "B/IM2", 20, "read"),
        (3, "A/IM1", 11, "read"),
    ]
    assert journal.file_map(job)["A/IM1"].sha256 == "a" * 64
    assert journal.files("other") == []


def test_problems_are_replaced_as_a_whole_in_order(journal):
    job = _job(journal)
    journal.replace_job_problems(job, iter([("truncated", "X", "1"), ("not_dicom", "Y", "2")]))
    journal.replace_job_problems(job, iter([("missing_file", "Z", "3"), ("truncated", "A", "4")]))
    assert journal.job_problems(job) == [("missing_file", "Z", "3"), ("truncated", "A", "4")]


def test_derived_content_is_recorded_once_per_purpose(journal):
    assert journal.derived(SHA, "part10") is None
    journal.record_derived(SHA, "part10", "c" * 64)
    journal.record_derived(SHA, "part10", "d" * 64)
    journal.record_derived(SHA, "ts:1.2.840.10008.1.2.1", "e" * 64)
    assert journal.derived(SHA, "part10") == "d" * 64
    assert journal.derived(SHA, "ts:1.2.840.10008.1.2.1") == "e" * 64


def test_an_acknowledged_instance_stays_acknowledged(journal):
    job = _job(journal)
    journal.record_delivery(DEST, "1.2.3", SHA, "failed", 0xA700, "store_failed", "full", job)
    journal.record_delivery(DEST, "1.2.3", SHA, "sent", 0, "", "", job)
    journal.record_delivery(DEST, "1.2.3", SHA, "unknown", None, "outcome_unknown", "", job)
    row = journal.delivery(DEST, "1.2.3", SHA)
    assert (row.state, row.status, row.attempts, row.code) == ("sent", 0, 3, "outcome_unknown")
    assert journal.sent_set(DEST) == {("1.2.3", SHA)}
    assert journal.sent_set("dicom://OTHER@127.0.0.1:105") == set()
    other_content = "cd" * 32
    journal.record_delivery(DEST, "1.2.3", other_content, "failed", 0xC000, "", "", job)
    assert {d.sha256 for d in journal.deliveries_for_uid(DEST, "1.2.3")} == {SHA, other_content}
    assert journal.sent_set(DEST) == {("1.2.3", SHA)}


def test_acknowledged_is_known_to_every_station_and_job(backend):
    """Group-wide knowledge: the lookups never filter by station or job."""
    desk, night = Journal(backend, station="desk"), Journal(backend, station="night")
    try:
        job_a = _job(desk)
        job_b = night.create_job("iso:/copy.iso", "iso", "/copy.iso", "").id
        assert night.job(job_b).station == "night"
        desk.record_deliveries([(DEST, "1.2.3", SHA, "sent", 0, "", "", job_a, 1.0)])
        for j in (desk, night):
            assert j.sent_set(DEST) == {("1.2.3", SHA)}
            assert j.delivery(DEST, "1.2.3", SHA).job_id == job_a
        night.record_delivery(DEST, "1.2.3", SHA, "failed", 0xA700, "", "", job_b)
        assert desk.delivery(DEST, "1.2.3", SHA).state == "sent"
        assert {j.station for j in desk.jobs()} == {"desk", "night"}
    finally:
        desk.close()
        night.close()


def test_decisions_in_order(journal):
    job = _job(journal)
    first = journal.add_decision(job, "P1", "release", {"patient_id": "L1"}, "suzuki", "")
    journal.add_decision(job, "P2", "discard", None, "sato", "wrong patient")
    got = journal.decisions(job)
    assert got[0] == first
    assert [(d.patient, d.action, d.identity, d.reason) for d in got] == [
        ("P1", "release", {"patient_id": "L1"}, ""),
        ("P2", "discard", None, "wrong patient"),
    ]
    assert got[0].as_dict()["local_id"] == "L1"
    assert journal.decisions("other") == []


def test_the_first_settlement_of_a_patient_holds(journal):
    job = _job(journal)
    journal.record_settlement(job, "P1", {"patient_id": "L1"}, {"kind": "exact"})
    journal.record_settlement(job, "P1", {"patient_id": "L2"}, None)
    journal.record_settlement(job, "P2", None, None)
    assert journal.settlements(job) == {
        "P1": ({"patient_id": "L1"}, {"kind": "exact"}),
        "P2": (None, None),
    }


def test_the_latest_commitment_answer_counts(journal):
    journal.record_commitment(DEST, "1.2.3", SHA, "failed", "no", "2.25.1")
    journal.record_commitment(DEST, "1.2.3", SHA, "committed", "", "2.25.2")
    journal.record_commitment(DEST, "1.2.4", SHA, "failed", "no", "2.25.2")
    assert journal.commitments(DEST) == {("1.2.3", SHA): "committed", ("1.2.4", SHA): "failed"}


def test_audit_head(journal):
    assert journal.audit_head("audit") is None
    journal.set_audit_head("audit", 1, "h1")
    journal.set_audit_head("audit", 2, "h2")
    assert journal.audit_head("audit") == (2, "h2")


def test_purgeable_is_content_only_discarded_jobs_refer_to(journal):
    gone, kept = _job(journal, "a"), _job(journal, "b")
    journal.record_files(
        gone, [(1, "X", 1, "1" * 64, "read", "", ""), (2, "Y", 1, SHA, "read", "", "")]
    )
    journal.record_files(kept, [(1, "Y", 1, SHA, "read", "", "")])
    journal.record_derived("1" * 64, "part10", "2" * 64)
    for event in ("start_read", "read_done", "inventory", "hold", "discard"):
        journal.transition(gone, event)
    assert journal.purgeable(discarded_before=0.0) == set()
    assert journal.purgeable(discarded_before=4e9) == {"1" * 64, "2" * 64}


def test_schema_version_and_reopening(backend):
    first = Journal(backend)
    job = _job(first)
    first.close()
    again = Journal(backend)  # the migrations find nothing left to do
    try:
        assert again.job(job) is not None
        assert again.db.execute(
            "SELECT version FROM schema_version WHERE component=?", ("journal",)
        ) == [(JOURNAL_MIGRATIONS[-1].version,)]
    finally:
        again.close()


def test_open_journal_follows_the_settings(backend, tmp_path):
    from pdimport import settings

    url = backend if isinstance(backend, str) else ""
    cfg = settings.defaults().replace(
        state_dir=str(tmp_path / "state"), journal__url=url, station__name="radiotherapy"
    )
    journal = open_journal(cfg)
    try:
        assert journal.create_job("k", "dir", "/x", "").station == "radiotherapy"
        assert (journal.path is None) == bool(url)
        if not url:
            assert journal.path == tmp_path / "state" / "journal.sqlite"
    finally:
        journal.close()


# ------------------------------------------------- stores beside the journal
def test_users(backend):
    store = UserStore(backend)
    try:
        store.add("suzuki", "operator", "correct horse")
        store.add("sato", "viewer", "battery staple")
        store.add("suzuki", "admin", "new password!")
        assert [(u.name, u.role) for u in store.users()] == [
            ("sato", "viewer"),
            ("suzuki", "admin"),
        ]
        assert store.authenticate("suzuki", "new password!").role == "admin"
        assert store.authenticate("suzuki", "correct horse") is None
        assert store.authenticate("nobody", "whatever!") is None
        with pytest.raises(UserError):
            store.add("bad name", "viewer", "long enough")
        assert store.remove("sato") and not store.remove("sato")
    finally:
        store.close()


def test_users_share_the_journal_database(backend):
    journal, store = Journal(backend), UserStore(backend)
    try:
        store.add("ito", "viewer", "long enough")
        assert _job(journal)
        other = UserStore(backend)  # another station's console
        assert [u.name for u in other.users()] == ["ito"]
        other.close()
    finally:
        journal.close()
        store.close()


def _where(backend: Path | str) -> Path | str:
    """Expectations take the state folder (SQLite) or the URL."""
    return backend if isinstance(backend, str) else backend.parent


def test_expectations(backend):
    where = _where(backend)
    assert list_expectations(where) == []
    first = add_expectation(where, "E1", name="Yamada^Taro", birth_date="1970-01-01", sex="m")
    second = add_expectation(where, "E2")
    rows = list_expectations(where)
    assert [(r["id"], r["local_id"], r["birth_date"], r["sex"]) for r in rows] == [
        (first, "E1", "19700101", "M"),
        (second, "E2", "", ""),
    ]
    source = ExpectSource("expect:", where)
    who = Demographics(patient_id="F1", name="YAMADA^TARO", birth_date="19700101", sex="M")
    assert [c.local_id for c in source.candidates(who)] == ["E1"]
    assert [c.local_id for c in source.lookup("E2")] == ["E2"]
    assert remove_expectation(where, str(second)) == 1
    assert remove_expectation(where, "E1") == 1
    assert list_expectations(where) == []
