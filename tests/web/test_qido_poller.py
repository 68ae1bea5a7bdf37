"""The daemon's DICOMweb intake channel: the appliance (in this process, no
drives) searches a real Orthanc+DICOMweb by QIDO-RS and imports what it finds
into storescp, each study once; a study that grows sends only what is new."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from fixtures_dicom import make_ct_series
from pydicom import dcmread
from pydicom.uid import generate_uid
from test_dicomweb_intake import upload, web_config

from pdimport.appliance.daemon import Daemon
from pdimport.settings import load
from pdimport.web.poller import QidoLedger, due


def wait_until(predicate, timeout: float, what: str) -> None:
    """Polls a condition of real peers (files in storescp's folder); the
    timeout is a hang guard, not a timed assertion."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_due():
    assert due(None, -1) and due(None, 3)
    assert due(3, 4)
    assert not due(3, 3) and not due(4, 3) and not due(3, -1)


def test_ledger(tmp_path):
    ledger = QidoLedger(tmp_path / "qido.sqlite")
    assert ledger.instances("q", "1.2") is None
    ledger.record("q", "1.2", 5, "job-1")
    ledger.record("q", "1.2", 7, "job-2")
    assert ledger.instances("q", "1.2") == 7
    assert QidoLedger(tmp_path / "qido.sqlite").instances("q", "1.2") == 7  # durable
    assert ledger.instances("other", "1.2") is None


@pytest.fixture
def appliance(tmp_path):
    """``start(settings) -> Daemon`` running in a thread; stopped at teardown."""
    running: list[tuple[Daemon, threading.Thread]] = []

    def start(**overrides) -> Daemon:
        daemon = Daemon(load(overrides.pop("config"), overrides=overrides))
        thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
        thread.start()
        running.append((daemon, thread))
        return daemon

    yield start
    for daemon, thread in running:
        daemon.request_stop()
        thread.join(30)
        daemon.runner.close()


def received(scp) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in scp.files()}


def test_the_poller_imports_each_new_study_once(tmp_path, orthanc_web, storescp, appliance):
    peer = orthanc_web()
    scp = storescp()
    study_a = generate_uid()
    first = make_ct_series(tmp_path / "a", 3, patient_id="POLL1", study_uid=study_a)
    upload(peer, first)
    # a study of another modality the search does not match
    upload(peer, make_ct_series(tmp_path / "mr", 2, patient_id="POLL9", Modality="MR"))
    state = tmp_path / "state"
    appliance(
        config=web_config(tmp_path),
        state_dir=str(state),
        dest=[scp.url],
        devices=[],
        **{
            "console.enabled": False,
            "intake.qido_url": f"{peer.web_url}/studies?ModalitiesInStudy=CT",
            "intake.qido_interval": 1.0,
        },
    )
    sops = lambda paths: {str(dcmread(p).SOPInstanceUID) for p in paths}
    wait_until(lambda: received(scp) == sops(first), 60, "study A delivered")
    second = make_ct_series(tmp_path / "b", 2, patient_id="POLL2")
    upload(peer, second)
    wait_until(lambda: received(scp) == sops(first + second), 60, "study B delivered")
    # study A grows: only its new instance is sent
    more = make_ct_series(tmp_path / "a2", 1, patient_id="POLL1", study_uid=study_a)
    upload(peer, more)
    wait_until(lambda: received(scp) == sops(first + second + more), 60, "study A's new one")

    def jobs() -> list[tuple[str, str]]:
        with sqlite3.connect(state / "journal.sqlite") as db:
            return db.execute("SELECT source_key, state FROM jobs ORDER BY created").fetchall()

    wait_until(lambda: all(s == "imported" for _, s in jobs()), 30, "the jobs at rest")
    study_b = str(dcmread(second[0]).StudyInstanceUID)
    # one job per study found, and one more for the study that grew; the MR one never
    assert [key.rsplit("/", 1)[-1] for key, _ in jobs()] == [study_a, study_b, study_a]
    with sqlite3.connect(state / "journal.sqlite") as db:
        sent = db.execute("SELECT count(*) FROM deliveries WHERE state='sent'").fetchone()[0]
    assert sent == 6  # each instance acknowledged once, none resent
    assert len(scp.files()) == 6
