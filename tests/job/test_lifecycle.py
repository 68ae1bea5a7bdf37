"""The drive and job lifecycles: every legal transition, every illegal pair."""

from __future__ import annotations

import itertools
import logging

import pytest

from pdimport.job import lifecycle as lc
from pdimport.job.lifecycle import IllegalTransition, JobState, Lifecycle, Transition


@pytest.mark.parametrize("pair", sorted(lc.TRANSITIONS), ids=lambda p: f"{p[0]}-{p[1]}")
def test_every_legal_drive_transition(pair):
    state, event = pair
    seen: list[Transition] = []
    machine = Lifecycle("/dev/sr0", lc.TRANSITIONS, state, [seen.append])
    assert machine.can(event)
    assert machine.fire(event, job="j1") == lc.TRANSITIONS[pair]
    assert machine.state == lc.TRANSITIONS[pair]
    assert [(t.machine, t.event, t.source, t.target, dict(t.info)) for t in seen] == [
        ("/dev/sr0", event, state, lc.TRANSITIONS[pair], {"job": "j1"})
    ]


ILLEGAL = sorted(set(itertools.product(lc.DRIVE_STATES, lc.DRIVE_EVENTS)) - set(lc.TRANSITIONS))


@pytest.mark.parametrize("pair", ILLEGAL, ids=lambda p: f"{p[0]}-{p[1]}")
def test_every_illegal_drive_pair_raises(pair):
    state, event = pair
    seen: list[Transition] = []
    machine = Lifecycle("/dev/sr0", lc.TRANSITIONS, state, [seen.append])
    assert not machine.can(event)
    with pytest.raises(IllegalTransition) as info:
        machine.fire(event)
    assert (info.value.state, info.value.event) == (state, event)
    assert machine.state == state  # unchanged
    assert seen == []  # nothing announced


def test_table_is_closed_over_its_states_and_events():
    for (state, event), target in lc.TRANSITIONS.items():
        assert state in lc.DRIVE_STATES and target in lc.DRIVE_STATES
        assert event in lc.DRIVE_EVENTS
    for (state, event), target in lc.JOB_TRANSITIONS.items():
        assert state in lc.JOB_STATES and target in lc.JOB_STATES
        assert event in lc.JOB_EVENTS
    assert len(ILLEGAL) > 30  # the table really forbids things


def test_happy_paths_return_to_empty():
    delivered = ["insert", "start_read", "read_done", "deliver", "delivered", "ejected"]
    early = ["insert", "start_read", "read_done", "eject", "ejected"]
    for path in (delivered, early):
        machine = lc.drive_lifecycle("/dev/sr1")
        states = [machine.fire(e) for e in path]
        assert states[-1] == lc.EMPTY
        assert states[:3] == [lc.INSERTED, lc.READING, lc.READ]


def test_every_drive_state_is_reachable_from_empty_and_leads_back():
    graph: dict[str, set[str]] = {}
    for (state, _), target in lc.TRANSITIONS.items():
        graph.setdefault(state, set()).add(target)

    def reach(start: str) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert reach(lc.EMPTY) == set(lc.DRIVE_STATES)
    for state in lc.DRIVE_STATES:
        assert lc.EMPTY in reach(state), state


def test_observer_exception_is_logged_not_raised(caplog):
    after: list[str] = []

    def broken(_t: Transition) -> None:
        raise RuntimeError("label printer on fire")

    machine = lc.drive_lifecycle("/dev/sr0", [broken, lambda t: after.append(t.target)])
    with caplog.at_level(logging.ERROR, logger="pdimport.job.lifecycle"):
        assert machine.fire("insert") == lc.INSERTED
    assert after == [lc.INSERTED]  # later observers still hear about it
    assert "label printer on fire" in caplog.text


@pytest.mark.parametrize("pair", sorted(lc.JOB_TRANSITIONS), ids=lambda p: f"{p[0]}-{p[1]}")
def test_every_legal_job_transition(pair):
    machine = lc.job_lifecycle("job-1", initial=pair[0])
    assert machine.fire(pair[1]) == lc.JOB_TRANSITIONS[pair]


JOB_ILLEGAL = sorted(set(itertools.product(lc.JOB_STATES, lc.JOB_EVENTS)) - set(lc.JOB_TRANSITIONS))


@pytest.mark.parametrize("pair", JOB_ILLEGAL, ids=lambda p: f"{p[0]}-{p[1]}")
def test_every_illegal_job_pair_raises(pair):
    machine = lc.job_lifecycle("job-1", initial=pair[0])
    with pytest.raises(IllegalTransition):
        machine.fire(pair[1])
    assert machine.state == pair[0]


def test_waiting_job_retries_until_done():
    machine = lc.job_lifecycle("job-2")
    for event in (
        "start_read",
        "read_done",
        "inventory",
        "deliver",
        "wait",
        "retry",
        "wait",
        "retry",
        "delivered",
    ):
        machine.fire(event)
    assert machine.state == "imported"


# ---------------------------------------------- job outcome: waiting for the PACS
from pdimport.job.deliver import _out_of_resources, backoff
from pdimport.job.importer import JobResult


def test_outcome_is_the_typed_status():
    assert JobResult("j", {"status": "waiting_for_destination"}).state == "waiting_for_destination"
    assert JobResult("j", {"status": "imported"}).state is JobState.IMPORTED
    with pytest.raises(ValueError):
        JobResult("j", {"status": "done"}).state  # noqa: B018 - only current words


def test_out_of_resources_is_transient_other_refusals_are_not():
    assert _out_of_resources(0xA700) and _out_of_resources(0xA7FF)
    assert not _out_of_resources(0xC000) and not _out_of_resources(None)


def test_journal_records_each_transition(tmp_path):
    from pdimport.store.journal import Journal

    j = Journal(tmp_path / "j.sqlite")
    job = j.create_job("k", "dir", "/x", "")
    path = ["start_read", "read_done", "inventory", "deliver", "wait", "retry", "delivered"]
    seen: list[Transition] = []
    j.subscribe(seen.append)
    for event in path:
        j.transition(job.id, event, reason=f"r-{event}")
    rows = j.job_events(job.id)
    assert [r[1] for r in rows] == path
    assert rows[0][2:] == ("queued", "reading", "r-start_read")
    assert rows[-1][3] == "imported" and j.job(job.id).state == lc.JobState.IMPORTED
    assert j.job(job.id).read_complete
    assert [t.target for t in seen] == [r[3] for r in rows]
    with pytest.raises(IllegalTransition):
        j.transition(job.id, "hold")
    assert len(j.job_events(job.id)) == len(path)  # nothing written


def test_backoff_doubles_up_to_the_cap():
    assert [backoff(n, 2.0, 30.0) for n in range(6)] == [2, 4, 8, 16, 30, 30]
