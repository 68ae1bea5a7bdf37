"""Every place that shows a job's state says the same word.

The daemon runs in its own process with a watch folder and dcmtk ``storescp``
as the PACS. For an imported, a held, a partial, a failed and a
waiting-for-the-PACS-then-delivered job, the watch folder's result file (and
the folder it rests in), ``pdimport jobs``, ``pdimport report``, ``pdimport
status`` (and its status.json) and the printed label (``pdimport label``, read
back with pdftotext) must agree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_daemon import status, wait_until
from fixtures_dicom import make_ct_series, make_truncated_header
from fixtures_peers import DCMTK_STORESCP, _stop, free_port, wait_for_port

from pdimport.label.content import STATUS_WORDS

pytestmark = [
    pytest.mark.skipif(not os.access(DCMTK_STORESCP, os.X_OK), reason="needs dcmtk storescp"),
    pytest.mark.skipif(not shutil.which("pdftotext"), reason="needs poppler-utils"),
]


def pdimport(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pdimport", *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def storescp(port: int, out: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [DCMTK_STORESCP, "-aet", "STORESCP", "-od", str(out), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, proc)
    return proc


def drop(watch: Path, name: str, make) -> None:
    """Build an entry beside the watch folder, then move it in (complete at once)."""
    stage = watch.parent / f"stage-{name}"
    make(stage)
    os.rename(stage, watch / name)


def rests(watch: Path, name: str, state: str) -> dict:
    """The entry rests in ``state``'s folder with its report; returns the report."""
    result = watch / state / f"{name}.json"
    wait_until(result.exists, 90, f"{name} in {state}/")
    assert (watch / state / name).exists()
    others = [p.parent.name for p in watch.glob(f"*/{name}.json") if p.parent.name != state]
    assert others == [], f"{name} also has a result file in {others}"
    return json.loads(result.read_text(encoding="utf-8"))


def job_state(state_dir: Path, job: str) -> str:
    jobs = json.loads(pdimport(state_dir, "jobs", "--json").stdout)
    return {j["job"]: j["state"] for j in jobs}[job]


def report_status(state_dir: Path, job: str) -> str:
    stored = pdimport(state_dir, "report", job, "--json")
    assert stored.returncode == 0, stored.stderr
    return json.loads(stored.stdout)["status"]


def status_text(state_dir: Path) -> str:
    return pdimport(state_dir, "status").stdout


def assert_agree(state_dir: Path, watch: Path, name: str, expected: str, tmp: Path) -> str:
    """All places say ``expected`` for the job of entry ``name``.

    Each is polled briefly: a waiting job is retried now and then, and for
    the moment of a retry it is ``delivering`` everywhere.
    """
    report = rests(watch, name, expected)
    job = report["job"]
    assert report["status"] == expected
    for what, says in (
        ("pdimport jobs", lambda: job_state(state_dir, job) == expected),
        ("pdimport report", lambda: report_status(state_dir, job) == expected),
        ("status.json", lambda: status(state_dir)["jobs"].get(job, {}).get("state") == expected),
        ("pdimport status", lambda: f"job {job} {expected} " in status_text(state_dir)),
    ):
        wait_until(says, 20, f"{what} says {expected} for {name}")

    pdf = tmp / f"{name}-{expected}.pdf"
    rendered = pdimport(state_dir, "label", job, "--out", str(pdf))
    assert rendered.returncode == 0, rendered.stderr
    text = subprocess.run(
        ["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    words = " ".join(text.split())  # the label wraps long lines
    _ja, en, _sub_ja, sub_en = STATUS_WORDS[expected]
    assert en in words and sub_en in words, words
    return job


def test_status_jobs_report_result_file_and_label_agree(daemon_factory, tmp_path):
    port = free_port()
    state_dir, watch, pacs = tmp_path / "state", tmp_path / "watch", tmp_path / "pacs"
    watch.mkdir()
    pacs.mkdir()
    daemon_factory(
        {
            "state_dir": str(state_dir),
            "dest": [f"dicom://STORESCP@127.0.0.1:{port}"],
            "network.retries": 1,
            "network.retry_delay": 0.5,
            "network.connection_timeout": 2.0,
        },
        {"devices": [], "watch": str(watch), "watch_settle": 0.5, "retry_max_delay": 1.0},
    )

    def two_patients(d: Path) -> None:
        make_ct_series(d / "A", 2, patient_id="PATA")
        make_ct_series(d / "B", 2, patient_id="PATB")

    def one_broken(d: Path) -> None:
        make_ct_series(d / "CT", 3, patient_id="PATP")
        make_truncated_header(d / "CT" / "BROKEN.dcm")

    def corrupt_zip(d: Path) -> None:
        d.write_bytes(b"PK\x03\x04" + b"\xff" * 200)

    # The PACS is down: the first entry waits for it.
    drop(watch, "LATE", lambda d: make_ct_series(d, 3, patient_id="PATL"))
    late = assert_agree(state_dir, watch, "LATE", "waiting_for_destination", tmp_path)

    proc = storescp(port, pacs)
    try:
        # The PACS answers: the waiting job is delivered by the retry worker,
        # and every place says so, the result file included.
        assert assert_agree(state_dir, watch, "LATE", "imported", tmp_path) == late
        drop(watch, "OK", lambda d: make_ct_series(d, 4, patient_id="PATOK"))
        drop(watch, "TWO", two_patients)
        drop(watch, "PART", one_broken)
        drop(watch, "BAD.zip", corrupt_zip)
        assert_agree(state_dir, watch, "OK", "imported", tmp_path)
        assert_agree(state_dir, watch, "TWO", "held", tmp_path)
        assert_agree(state_dir, watch, "PART", "partial", tmp_path)
        assert_agree(state_dir, watch, "BAD.zip", "failed", tmp_path)
        # What the PACS holds: LATE's 3, OK's 4 and PART's 3 readable images.
        assert len(list(pacs.glob("*"))) == 3 + 4 + 3
    finally:
        _stop(proc)


def test_a_release_from_the_shell_reaches_the_running_daemon(daemon_factory, tmp_path):
    """A held watch-folder job released with ``pdimport release`` in another
    process ends ``imported`` everywhere, the daemon's status and the watch
    folder's result file included."""
    port = free_port()
    state_dir, watch, pacs = tmp_path / "state", tmp_path / "watch", tmp_path / "pacs"
    watch.mkdir()
    pacs.mkdir()
    dest = f"dicom://STORESCP@127.0.0.1:{port}"
    daemon_factory(
        {"state_dir": str(state_dir), "dest": [dest], "network.connection_timeout": 2.0},
        {"devices": [], "watch": str(watch), "watch_settle": 0.5},
    )
    proc = storescp(port, pacs)
    try:

        def two_patients(d: Path) -> None:
            make_ct_series(d / "A", 2, patient_id="PATA")
            make_ct_series(d / "B", 1, patient_id="PATB")

        drop(watch, "TWO", two_patients)
        job = assert_agree(state_dir, watch, "TWO", "held", tmp_path)
        for patient in ("PATA", "PATB"):
            done = pdimport(
                state_dir,
                "release",
                job,
                "--patient",
                patient,
                "--keep-foreign",
                "--operator",
                "Tanaka",
                "--dest",
                dest,
            )
            assert done.returncode in (0, 1), done.stderr
        assert assert_agree(state_dir, watch, "TWO", "imported", tmp_path) == job
        assert len(list(pacs.glob("*"))) == 3
    finally:
        _stop(proc)
