"""Storage commitment end to end against a real Orthanc (issue 17): a job
is imported only when the PACS has committed every instance; an unanswered
request waits and asks again without sending again; an instance the PACS
does not commit is sent again by the next run."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from fixtures_dicom import make_ct_series
from fixtures_peers import free_port
from test_commitment import register

from pdimport.cli import main
from pdimport.record import auditchain


def run(capsys, *args: str) -> tuple[int, dict]:
    rc = main([*args, "--json"])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if out.strip() else {})


def delete(orthanc, orthanc_id: str) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{orthanc.http_port}/instances/{orthanc_id}", method="DELETE"
    )
    with urllib.request.urlopen(req, timeout=5):
        pass


def setup(tmp_path: Path, orthanc, timeout: float) -> tuple[Path, list[str], int]:
    src = tmp_path / "disc"
    make_ct_series(src, 3, patient_id="COMMIT1")
    port = free_port()
    cfg = tmp_path / "pdimport.toml"
    cfg.write_text(
        f'[network]\ncommitment_listen = "127.0.0.1:{port}"\ncommitment_timeout = {timeout}\n'
    )
    dest = f"dicom://{orthanc.aet}@127.0.0.1:{orthanc.port}?commitment=1"
    args = ["--dest", dest, "--config", str(cfg), "--state-dir", str(tmp_path / "state")]
    return src, args, port


def test_a_job_is_imported_once_the_pacs_commits_every_instance(tmp_path, orthanc, capsys):
    src, args, port = setup(tmp_path, orthanc, 20)
    register(orthanc, "PDIMPORT", port)
    rc, report = run(capsys, "import", str(src), *args)
    assert rc == 0 and report["status"] == "imported", report["problems"]
    events = [r for r in auditchain.records(tmp_path / "state" / "audit")]
    [committed] = [e for e in events if e.get("event") == "instances_committed"]
    assert (committed["committed"], committed["failed"]) == (3, 0), committed


def test_unanswered_waits_then_a_lost_instance_is_sent_again(tmp_path, orthanc, capsys):
    src, args, port = setup(tmp_path, orthanc, 2)
    # Orthanc does not know our AE title yet: its report has nowhere to go
    rc, report = run(capsys, "import", str(src), *args)
    assert report["status"] == "waiting_for_destination", report["problems"]
    assert "commitment_unanswered" in {p["code"] for p in report["problems"]}
    stored = orthanc.get("/instances")
    assert len(stored) == 3
    # the PACS lost one instance meanwhile; now it can call us back
    delete(orthanc, stored[0])
    register(orthanc, "PDIMPORT", port)
    rc, report = run(capsys, "import", str(src), *args)
    assert report["status"] == "partial", report["problems"]
    failed = [p for p in report["problems"] if p["code"] == "commitment_failed"]
    assert len(failed) == 1 and "no such object instance" in failed[0]["detail"]
    assert all(i.get("previously_sent") for i in report["instances"])  # nothing sent again
    # the next run sends the lost one again, and the PACS commits it
    rc, report = run(capsys, "import", str(src), *args)
    assert rc == 0 and report["status"] == "imported", report["problems"]
    assert sorted(bool(i.get("previously_sent")) for i in report["instances"]) == [
        False,
        True,
        True,
    ]
    assert len(orthanc.get("/instances")) == 3
