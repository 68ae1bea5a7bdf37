"""End to end over STOW-RS: ``pdimport import DISC --dest dicomweb+http://…
--config FILE`` with the ``web.*`` settings in the file, killed (SIGKILL)
in the middle of its delivery and run again. Orthanc logs every instance it
receives (a Lua ``ReceivedInstanceFilter``, test_stow.COUNT_LUA), so an
instance sent twice shows there whatever pdimport believes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures_dicom import make_ct_series
from fixtures_peers import ORTHANC_USER
from pydicom import dcmread
from test_stow import counted, received, secret

from pdimport.send import parse_dest
from pdimport.store.groupcommit import DELIVERY_GROUP_ROWS
from pdimport.store.journal import Journal

FILES = 300
BATCH = 10
CONNECTIONS = 2


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def settled(measure, quiet: float = 1.0, timeout: float = 30.0) -> None:
    """Wait until ``measure()`` has not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = measure(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError("still changing")
        time.sleep(0.1)
        now = measure()
        if now != last:
            last, since = now, time.monotonic()


@pytest.mark.timeout(600)
def test_killed_mid_delivery_resends_nothing_acknowledged(orthanc_web, tmp_path: Path) -> None:
    peer, log = counted(orthanc_web, tmp_path)
    disc = tmp_path / "disc"
    paths = make_ct_series(disc, FILES, patient_id="STOWKILL", rows=256, cols=256)
    want = sorted(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths)
    config = tmp_path / "pdimport.toml"
    config.write_text(
        "[web]\n"
        'auth = "basic"\n'
        f'username = "{ORTHANC_USER[0]}"\n'
        f'password_file = "{secret(tmp_path, "password", ORTHANC_USER[1])}"\n'
        f"stow_batch_files = {BATCH}\n"
        f"connections = {CONNECTIONS}\n"
    )
    state = tmp_path / "state"
    command = [sys.executable, "-m", "pdimport", "import", str(disc), "--dest", peer.web_url,
               "--config", str(config), "--state-dir", str(state)]  # fmt: skip
    env = dict(os.environ)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        wait_for(lambda: len(received(log)) >= FILES // 3, 300, "a third of the disc at Orthanc")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert first.stderr is not None
        first.stderr.close()
    # Orthanc may still be storing the request in flight at the kill
    settled(lambda: len(received(log)))
    before = received(log)
    assert 0 < len(before) < FILES, "killed before or after the delivery: nothing tested"
    key = parse_dest(peer.web_url).key
    journal = Journal(state / "journal.sqlite")
    acknowledged = {uid for uid, _ in journal.sent_set(key)}
    journal.close()
    assert acknowledged, "the journal recorded no acknowledgement before the kill"
    assert acknowledged <= set(before)

    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300,
                          check=False, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["status"] == "imported"
    again = received(log)[len(before) :]
    assert not acknowledged & set(again), "an acknowledged instance was sent again"
    assert sorted(set(received(log))) == want  # nothing missing
    assert peer.get("/statistics")["CountInstances"] == FILES
    assert len(again) == len(set(again)), "the second run sent an instance twice"
    # what is sent twice is what was in flight or not yet journaled at the kill
    resent = set(before) & set(again)
    assert len(resent) <= BATCH * CONNECTIONS + DELIVERY_GROUP_ROWS
    print(
        f"killed after {len(before)} received, {len(acknowledged)} journaled; "
        f"second run sent {len(again)}, {len(set(before) & set(again))} of them again"
    )


def test_import_reports_an_instance_orthanc_rejects(orthanc_web, tmp_path: Path) -> None:
    """The job is partial; the rejected instance is failed with its reason in
    the report, the journal keeps the two stored ones, and a second import
    sends only the rejected one again."""
    peer, log = counted(orthanc_web, tmp_path)
    disc = tmp_path / "disc"
    paths = make_ct_series(disc, 3, patient_id="STOWREJ")
    ds = dcmread(paths[1])
    del ds.SeriesInstanceUID  # Orthanc cannot index it
    ds.save_as(paths[1])
    bad = str(ds.SOPInstanceUID)
    config = tmp_path / "pdimport.toml"
    config.write_text(
        f'[web]\nauth = "basic"\nusername = "{ORTHANC_USER[0]}"\n'
        f'password_file = "{secret(tmp_path, "password", ORTHANC_USER[1])}"\n'
    )
    command = [sys.executable, "-m", "pdimport", "import", str(disc), "--dest", peer.web_url,
               "--config", str(config), "--state-dir", str(tmp_path / "state"), "--json"]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert first.returncode == 1, first.stderr[-2000:]
    report = json.loads(first.stdout)
    assert report["status"] == "partial"
    states = {i["sop_instance_uid"]: i["state"] for i in report["instances"]}
    assert states.pop(bad) == "failed" and set(states.values()) == {"sent"}
    (problem,) = [p for p in report["problems"] if p["code"] == "store_failed"]
    assert "FailureReason 0xC000" in problem["detail"] and peer.web_url[9:] in problem["detail"]
    second = json.loads(
        subprocess.run(command, capture_output=True, text=True, timeout=300, check=False).stdout
    )
    assert second["counts"]["already_sent"] == 2
    assert [i["state"] for i in second["instances"] if i["sop_instance_uid"] == bad] == ["failed"]
    # the two stored went once (Orthanc fails the other before its Lua filter sees it)
    assert sorted(received(log)) == sorted(states)
