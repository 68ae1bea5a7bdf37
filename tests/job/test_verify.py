"""Spool hygiene and ``pdimport jobs --verify`` (issue 17, item 6).

A kill -9 during the read (a real child process) leaves ``spool/tmp/in-*``
files; the next start removes them, never one a running process owns. The
verifier proves that every file read ends delivered, quarantined with a
reason or skipped as identical, and says what does not.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fixtures_dicom import make_ct_series, make_truncated_pixel_data

from pdimport.cli import main
from pdimport.settings import defaults
from pdimport.store.journal import open_journal
from pdimport.store.spool import Spool, tmp_prefix

PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def _cli(capsys, *args: str) -> tuple[int, dict]:
    rc = main([*args, "--json"])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if out.strip() else {})


def _disc(root: Path) -> list[Path]:
    """Images, an identical copy, a broken file, a PDF, a viewer and random bytes."""
    series = make_ct_series(root / "DICOM", 4, patient_id="VER")
    shutil.copy(series[0], root / "DICOM" / "COPY1")
    make_truncated_pixel_data(root / "DICOM" / "BROKEN")
    (root / "REPORT.PDF").write_bytes(PDF)
    (root / "VIEWER").mkdir()
    (root / "VIEWER" / "VIEW.EXE").write_bytes(b"MZ" + b"\0" * 100)
    (root / "DATA.BIN").write_bytes(os.urandom(64))
    return series


def test_a_finished_import_verifies(tmp_path, state, storescp, capsys):
    _disc(tmp_path / "disc")
    scp = storescp()
    rc, rep = _cli(
        capsys, "import", str(tmp_path / "disc"), "--dest", scp.url, "--state-dir", str(state)
    )
    assert rep["status"] == "partial"  # BROKEN is truncated
    rc, verdict = _cli(capsys, "jobs", "--verify", rep["job"], "--state-dir", str(state))
    assert rc == 0, verdict
    assert verdict["holds"] and verdict["files"] == 9
    assert verdict["endings"] == {"delivered": 4, "quarantined": 4, "skipped_identical": 1}


def test_a_delivery_the_journal_does_not_record_is_listed(tmp_path, state, storescp, capsys):
    series = make_ct_series(tmp_path / "disc", 2, patient_id="VER")
    scp = storescp()
    _, rep = _cli(
        capsys, "import", str(tmp_path / "disc"), "--dest", scp.url, "--state-dir", str(state)
    )
    uid = rep["instances"][0]["sop_instance_uid"]
    journal = open_journal(defaults(), state)  # SQLite in state, or the PG pass's database
    journal.db.execute("DELETE FROM deliveries WHERE sop_instance_uid=?", (uid,))
    journal.close()
    rc, verdict = _cli(capsys, "jobs", "--verify", rep["job"], "--state-dir", str(state))
    assert rc == 1 and not verdict["holds"]
    [lost] = verdict["unaccounted"]
    assert lost["path"] == rep["instances"][0]["path"] and "no such delivery" in lost["why"]
    assert len(series) == 2


def test_a_spool_file_gone_is_listed(tmp_path, state, storescp, capsys):
    make_ct_series(tmp_path / "disc", 2, patient_id="VER")
    scp = storescp()
    _, rep = _cli(
        capsys, "import", str(tmp_path / "disc"), "--dest", scp.url, "--state-dir", str(state)
    )
    Spool(state / "spool").remove(rep["instances"][1]["sha256"])
    rc, verdict = _cli(capsys, "jobs", "--verify", rep["job"], "--state-dir", str(state))
    assert rc == 1
    assert verdict["unaccounted"] == [
        {"path": rep["instances"][1]["path"], "why": "its bytes are not in the spool"}
    ]


def test_unknown_job_is_exit_2(state, capsys):
    state.mkdir()
    assert main(["jobs", "--verify", "nope", "--state-dir", str(state)]) == 2


# ---------------------------------------------------------------- kill -9
#: The child imports for real, but its medium stalls in the middle of the
#: fourth file (the test then kills it: "during a read", deterministically).
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pdimport.job.importer import Importer
    from pdimport.settings import defaults

    source, state, marker, journal_url = sys.argv[1:5]

    class Stall:
        def __init__(self, fp, stall):
            self.fp, self.stall, self.calls = fp, stall, 0
        def read(self, n=-1):
            self.calls += 1
            if self.stall and self.calls > 1:
                Path(marker).write_text("reading")
                time.sleep(3600)
            return self.fp.read(n)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.fp.close()

    class Medium:
        def __init__(self, medium):
            self.medium, self.opened = medium, 0
        def open(self, entry):
            self.opened += 1
            return Stall(self.medium.open(entry), self.opened == 4)
        def __getattr__(self, name):
            return getattr(self.medium, name)

    imp = Importer(defaults().replace(state_dir=state, journal__url=journal_url))
    imp.read_source(source, wrap=Medium)
    """
)


def _wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the child ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


def test_kill_9_during_a_read_leaves_nothing_behind(tmp_path, state, storescp, capsys):
    series = make_ct_series(tmp_path / "disc", 8, patient_id="KILL9", rows=256, cols=256)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    marker = tmp_path / "reading"
    tmp = state / "spool" / "tmp"
    proc = subprocess.Popen(
        [
            *(sys.executable, str(script), str(tmp_path / "disc"), str(state), str(marker)),
            defaults().get("journal.url"),  # the PostgreSQL pass's database, or ""
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(marker.exists, "stall in the fourth file", proc)
        _wait_for(lambda: any(tmp.glob("in-*")), "temporary file of that file", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stale = sorted(p.name for p in tmp.glob("in-*"))
    assert stale and all(n.startswith(f"in-{proc.pid}.") for n in stale)
    # A temporary file that a running process owns (this one) must survive.
    mine = tmp / f"{tmp_prefix('in')}test"
    mine.write_bytes(b"in use")

    rc, jobs = _cli(capsys, "jobs", "--state-dir", str(state))
    [job] = jobs
    rc, verdict = _cli(capsys, "jobs", "--verify", job["job"], "--state-dir", str(state))
    assert rc == 1 and verdict["stale_tmp"] == stale
    # Files committed before the kill (0 to 3: the group commit may not have
    # run) were read and never inventoried: none of them is accounted for.
    assert len(verdict["unaccounted"]) == verdict["files"] <= 3, verdict

    scp = storescp()
    rc, rep = _cli(
        capsys, "import", str(tmp_path / "disc"), "--dest", scp.url, "--state-dir", str(state)
    )
    assert (rc, rep["job"], rep["counts"]["sent"]) == (0, job["job"], len(series))
    assert sorted(p.name for p in tmp.iterdir()) == [mine.name]  # only the live owner's
    rc, verdict = _cli(capsys, "jobs", "--verify", job["job"], "--state-dir", str(state))
    assert rc == 0 and verdict["endings"] == {"delivered": len(series)}, verdict
    mine.unlink()


def test_clean_tmp_removes_only_files_of_stopped_processes(tmp_path):
    spool = Spool(tmp_path / "spool")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    (spool.tmp / f"in-{pid}.1-abc").write_bytes(b"x")  # a stopped process
    (spool.tmp / "in-legacy").write_bytes(b"x")  # written before owners were recorded
    (spool.tmp / f"in-{os.getpid()}.1-abc").write_bytes(b"x")  # pid reused: wrong start time
    live = spool.workfile(".dcm")  # this process, now
    assert sorted(Spool(tmp_path / "spool").tmp.iterdir()) == [live]
