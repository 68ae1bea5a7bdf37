"""Scanning overlaps reading (issue 4): the header scan of files already in the
spool runs while the medium is still being read, phase 2 reuses the results,
and nothing about the outcome changes.

No timing assertions: a test that waits for a condition fails when the
condition never comes, never when the machine is slow.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from fixtures_dicom import make_ct_series, make_noise_dcm, make_truncated_header
from fixtures_media import make_iso

from pdimport.job import prescan
from pdimport.job.importer import Importer
from pdimport.job.prescan import PrescanStore
from pdimport.media import open_medium
from pdimport.model import MediumReadError
from pdimport.settings import defaults

PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
#: Upper bound for waiting on the scan worker (failure, not timing).
WAIT = 60.0


class Stop(BaseException):
    """Stands for the daemon's ``Interrupted``: a read that stops mid-medium."""


class HookedMedium:
    """A real medium whose ``open`` runs a hook first (slow drive, pull-out)."""

    def __init__(self, medium: Any, hook) -> None:
        self._medium = medium
        self._hook = hook

    def open(self, entry: Any):
        self._hook(entry)
        return self._medium.open(entry)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._medium, name)


class CountingScanner:
    """Wraps the job's scanner and counts the files each phase asks it for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.files = 0

    def is_available(self) -> bool:
        return True

    def scan(self, paths, encodings):
        self.files += len(paths)
        return self.inner.scan(paths, encodings)


@pytest.fixture
def disc(tmp_path: Path) -> Path:
    """A PDI folder: a CT series, a DICOMDIR, a report, a viewer, broken files."""
    root = tmp_path / "disc"
    make_ct_series(root / "DICOM" / "ST1" / "SE1", 12, patient_id="PIPE1", name="IM{:04d}")
    subprocess.run(["dcmmkdir", "+r", "DICOM"], cwd=root, check=True, capture_output=True)
    (root / "REPORT.PDF").write_bytes(PDF)
    (root / "VIEWER").mkdir()
    (root / "VIEWER" / "VIEWER.EXE").write_bytes(b"MZ\x90\x00" + b"\0" * 64)
    make_noise_dcm(root / "DICOM" / "ST1" / "NOISE")
    make_truncated_header(root / "DICOM" / "ST1" / "TRUNC")
    return root


def importer(tmp_path: Path, name: str, prescans: PrescanStore | None = None) -> Importer:
    # Other Content conversion mints new UIDs on every run (and scans its
    # output): off, so that two runs of one medium can be compared.
    return Importer(
        defaults().replace(state_dir=str(tmp_path / name), convert_other_content=False),
        prescans=prescans,
    )


def images(report: dict) -> int:
    return sum(1 for i in report["instances"] if i["kind"] == "image")


def comparable(report: dict) -> dict:
    """A report without what differs between two runs of the same medium."""
    out = {k: v for k, v in report.items() if k not in ("job", "created", "finished")}
    out["problems"] = sorted((p["code"], p["path"], p["detail"]) for p in report["problems"])
    return out


def run_serial(imp: Importer, source: str, monkeypatch) -> dict:
    """The behaviour before pipelining: nothing is scanned during the read."""
    with monkeypatch.context() as m:
        m.setattr(prescan.PrescanWorker, "submit", lambda self, path, sha: None)
        return imp.run(source, []).report


# ------------------------------------------------------------------ tests
def test_scan_results_exist_before_the_read_ends(disc: Path, tmp_path: Path) -> None:
    imp = importer(tmp_path, "state")
    medium = open_medium(str(disc), imp.settings)
    job = imp.start_job(medium, str(disc), "import")
    entries = medium.entries()
    seen: dict[str, int] = {}

    def slow_last_file(entry: Any) -> None:
        # The drive "hangs" before the last file until the scanner has
        # results for earlier ones: only a scan that runs during the read
        # can ever satisfy it.
        if entry.path == entries[-1].path:
            done = threading.Event()
            while not done.wait(0.01) and imp.prescans.peek(job.id) < 5:
                if seen.setdefault("waits", 0) > WAIT * 100:
                    break
                seen["waits"] += 1
            seen["before_end"] = imp.prescans.peek(job.id)

    try:
        imp.read(job, HookedMedium(medium, slow_last_file))
    finally:
        medium.close()
    assert seen["before_end"] >= 5
    counting = CountingScanner(imp.scanner)
    imp.scanner = counting
    report = imp.process(job.id, []).report
    # Phase 2 reused the results: every DICOM file was scanned during the read.
    assert counting.files == 0
    assert images(report) == 12


def test_pipelined_result_equals_serial(disc: Path, tmp_path: Path, monkeypatch) -> None:
    serial = run_serial(importer(tmp_path, "serial"), str(disc), monkeypatch)
    pipelined = importer(tmp_path, "piped").run(str(disc), []).report
    assert images(serial) == 12
    assert {"truncated", "not_dicom"} <= {p["code"] for p in serial["problems"]}
    assert comparable(pipelined) == comparable(serial)


def test_iso_pipelined_equals_serial(disc: Path, tmp_path: Path, monkeypatch) -> None:
    image = make_iso(disc, tmp_path / "disc.iso")
    serial = run_serial(importer(tmp_path, "serial"), str(image), monkeypatch)
    pipelined = importer(tmp_path, "piped").run(str(image), []).report
    assert comparable(pipelined) == comparable(serial)


@pytest.mark.parametrize("restart", [False, True], ids=["same-process", "after-restart"])
def test_interrupted_read_resumes(disc: Path, tmp_path: Path, monkeypatch, restart: bool) -> None:
    reference = run_serial(importer(tmp_path, "ref"), str(disc), monkeypatch)
    imp = importer(tmp_path, "state")
    medium = open_medium(str(disc), imp.settings)
    entries = medium.entries()
    stop_at = entries[len(entries) // 2].path

    def pull_out(entry: Any) -> None:
        if entry.path == stop_at:
            raise Stop()

    job = imp.start_job(medium, str(disc), "import")
    with pytest.raises(Stop):
        imp.read(job, HookedMedium(medium, pull_out))
    medium.close()
    assert not imp.journal.job(job.id).read_complete
    read_before = {f.path for f in imp.journal.files(job.id)}
    assert read_before and stop_at not in read_before
    # A new process keeps only the journal and the spool; the same one keeps
    # its scan results too.
    again = importer(tmp_path, "state", None if restart else imp.prescans)
    resumed = again.run(str(disc), []).report
    assert resumed["job"] == job.id
    assert comparable(resumed) == comparable(reference)


def test_read_error_mid_file_is_a_problem_and_the_rest_is_read(disc: Path, tmp_path: Path) -> None:
    imp = importer(tmp_path, "state")
    medium = open_medium(str(disc), imp.settings)
    bad = next(e for e in medium.entries() if e.path.endswith("IM0003"))

    class Failing:
        def __init__(self, fp):
            self.fp, self.calls = fp, 0

        def read(self, n=-1):
            self.calls += 1
            if self.calls > 1:
                raise MediumReadError("unreadable_sector", "LBA 1234")
            return self.fp.read(100)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fp.close()

    class Scratched(HookedMedium):
        def open(self, entry):
            fp = self._medium.open(entry)
            return Failing(fp) if entry.path == bad.path else fp

    job = imp.start_job(medium, str(disc), "import")
    try:
        imp.read(job, Scratched(medium, None))
    finally:
        medium.close()
    files = {f.path: f for f in imp.journal.files(job.id)}
    assert files[bad.path].state == "error" and files[bad.path].code == "unreadable_sector"
    assert all(f.state == "read" for p, f in files.items() if p != bad.path)
    assert list(imp.spool.root.joinpath("tmp").glob("in-*")) == []  # no partial file kept
    report = imp.process(job.id, []).report
    assert images(report) == 11
    assert any(
        p["code"] == "unreadable_sector" and p["path"] == bad.path for p in report["problems"]
    )
