"""The group's decision queue on a real PostgreSQL (and on SQLite, where
the same table works for one station): a decision is run only by the
station that holds the job's spool, once, and a crash leaves it to that
station's next start."""

from __future__ import annotations

import threading

from pdimport.job.decisionqueue import (
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    DecisionQueue,
    Waker,
    run_worker,
)


def test_only_the_holder_claims_and_each_decision_once(target, connect):
    a = DecisionQueue(connect(target), "A")
    b = DecisionQueue(connect(target), "B")
    ids = [b.submit(f"job{i}", "A", "release", {"local_id": "L1"}, "tanaka") for i in range(3)]
    assert b.claim() is None  # B holds none of them
    first = a.claim()
    assert first is not None and first.id == ids[0] and first.origin == "B"
    assert first.args == {"local_id": "L1"} and first.operator == "tanaka"
    assert a.get(ids[0]).state == RUNNING
    a.finish(first.id, {"state": "imported", "exit_code": 0})
    assert a.get(ids[0]).state == DONE and a.get(ids[0]).result["state"] == "imported"
    assert [d.id for d in b.pending()] == ids[1:]
    assert [d.id for d in b.pending("B")] == []


def test_a_crash_leaves_the_running_decision_to_its_own_station(target, connect):
    a = DecisionQueue(connect(target), "A")
    b = DecisionQueue(connect(target), "B")
    decision_id = b.submit("job1", "A", "discard", {"reason": "wrong disc"}, "sato")
    assert a.claim() is not None  # ... and station A dies here
    assert b.resume() == 0 and a.get(decision_id).state == RUNNING  # not B's to take
    a_again = DecisionQueue(connect(target), "A")
    assert a_again.resume() == 1 and a_again.get(decision_id).state == QUEUED
    assert a_again.claim().id == decision_id


def test_concurrent_claims_skip_locked_rows(pg_url, connect):
    """Two threads of station A, each with its own connection, claim
    together: every decision goes to exactly one of them."""
    submit = DecisionQueue(connect(pg_url), "desk")
    ids = {submit.submit(f"job{i}", "A", "retry", {}, "night") for i in range(40)}
    taken: list[list[int]] = [[], []]
    start = threading.Barrier(2)

    def claimer(n: int) -> None:
        queue = DecisionQueue(connect(pg_url), "A")  # one connection per thread
        start.wait()
        while (d := queue.claim()) is not None:
            taken[n].append(d.id)
            queue.finish(d.id, {})

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(taken[0] + taken[1]) == sorted(ids)
    assert not set(taken[0]) & set(taken[1])


def test_the_worker_runs_what_is_notified_and_records_failures(pg_url, connect):
    stop = threading.Event()
    queue = DecisionQueue(connect(pg_url), "A")
    ran: list[str] = []

    def execute(decision):
        ran.append(decision.job)
        if decision.action == "discard":
            raise ValueError("job job2 is imported, not held")
        return {"state": "imported", "exit_code": 0}

    waker = Waker(pg_url, "A", stop)
    worker = threading.Thread(target=run_worker, args=(queue, execute, waker.wait, stop.is_set))
    worker.start()
    try:
        desk = DecisionQueue(connect(pg_url), "B")
        ok = desk.submit("job1", "A", "release", {"keep_foreign": True}, "tanaka")
        bad = desk.submit("job2", "A", "discard", {"reason": "x"}, "tanaka")
        done_ok = desk.wait(ok, 30)
        done_bad = desk.wait(bad, 30)
    finally:
        stop.set()
        worker.join(30)
        waker.close()
    assert done_ok is not None and done_ok.state == DONE and done_ok.result["exit_code"] == 0
    assert done_bad is not None and done_bad.state == FAILED
    assert "not held" in done_bad.result["error"]
    assert ran == ["job1", "job2"]
