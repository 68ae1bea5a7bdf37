"""A delivery waiting to retry an absent destination ends at once when the
process stops: the job stays ``delivering`` in the journal, nothing is lost,
and the next start resumes it (the transition table's ``interrupted``)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fixtures_dicom import make_ct_series
from fixtures_peers import free_port

from pdimport.job.importer import Importer
from pdimport.job.lifecycle import Interrupted, JobState
from pdimport.send import parse_dest
from pdimport.settings import defaults
from pdimport.store.journal import Job


def test_stop_ends_the_back_off_wait_and_the_job_resumes(tmp_path: Path) -> None:
    make_ct_series(tmp_path / "disc" / "CT", 3, patient_id="PATSTOP")
    dest = f"dicom://NOBODY@127.0.0.1:{free_port()}"  # nothing listens: connection refused
    cfg = defaults().replace(
        state_dir=str(tmp_path / "state"),
        network__retries=5,
        network__retry_delay=3600.0,  # the first pause alone would outlast the test
        retry_max_delay=3600.0,
    )
    stop = threading.Event()
    imp = Importer(cfg, stop=stop)
    job = imp.read_source(str(tmp_path / "disc"))
    assert isinstance(job, Job)  # read into the spool
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    try:
        with pytest.raises(Interrupted):
            imp.process(job.id, [parse_dest(dest)])
    finally:
        timer.cancel()
    assert imp.journal.job(job.id).state == JobState.DELIVERING
    assert not imp.journal.sent_set(parse_dest(dest).key)
    # The next start: the same job resumes (interrupted -> read -> ...) and,
    # the destination still absent after one attempt, waits for it.
    again = Importer(cfg.replace(network__retries=1))
    result = again.process(job.id, [parse_dest(dest)])
    assert result.state == JobState.WAITING_FOR_DESTINATION
    events = [e[1] for e in again.journal.job_events(job.id)]
    assert "interrupted" in events and events[-1] == "wait"
    imp.close()
    again.close()
