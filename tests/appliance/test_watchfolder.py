"""The watch folder: entries copied in slowly are imported once, complete,
exactly once, also across a restart (stub import callback)."""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile
from pathlib import Path

import pytest

from pdimport.appliance.watchfolder import (
    WatchFolder,
    WatchLedger,
    WatchResult,
    candidate_name,
    ledger_key,
    open_for_writing,
    signature,
)
from pdimport.job.lifecycle import JobState

SETTLE = 1.0


@pytest.fixture(autouse=True)
def no_leaked_threads():
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            break
        leaked[0].join(0.1)
    assert not leaked, f"leaked threads: {leaked}"


class StubImport:
    """Records what it was asked to import and what the entry held then."""

    def __init__(self, outcome="imported"):
        self.calls: list[tuple[str, tuple]] = []
        self.outcome = outcome
        self.cond = threading.Condition()

    def __call__(self, path: Path):
        with self.cond:
            self.calls.append((path.name, signature(path)))
            self.cond.notify_all()
        return WatchResult(
            None,
            JobState(self.outcome),
            {"status": self.outcome, "source": {"path": str(path)}},
        )

    def wait_for(self, n, timeout=20.0):
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.calls) >= n, timeout), self.calls


@pytest.fixture
def folder(tmp_path):
    made = []

    def make(import_fn, root=None):
        ledger = WatchLedger(tmp_path / "state" / "watch.sqlite")
        wf = WatchFolder(root or tmp_path / "watch", import_fn, ledger, settle=SETTLE)
        (root or tmp_path / "watch").mkdir(exist_ok=True)
        wf.start()
        made.append((wf, ledger))
        return wf

    yield make
    for wf, ledger in made:
        wf.stop()
        ledger.close()


def wait_until(predicate, timeout=20.0):
    """The move to done/ follows the import callback; wait for it (bounded)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def zip_bytes(n_files=20, size=20_000) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n_files):
            zf.writestr(f"DICOM/IM{i:04d}", os.urandom(size))
    return buf.getvalue()


def copy_slowly(data: bytes, dest: Path, chunks=6, pause=0.3, reopen=True):
    """Like a slow network copy: chunk, (close, reopen), pause."""
    step = -(-len(data) // chunks)
    fp = open(dest, "wb")  # noqa: SIM115  reopened across iterations
    try:
        for i in range(0, len(data), step):
            fp.write(data[i : i + step])
            fp.flush()
            if reopen:
                fp.close()
                time.sleep(pause)
                fp = open(dest, "ab")  # noqa: SIM115  reopened across iterations
            else:
                time.sleep(pause)
    finally:
        fp.close()


def copy_folder_slowly(dest: Path, files=5, size=50_000, pause=0.3):
    (dest / "DICOM").mkdir(parents=True)
    for i in range(files):
        copy_slowly(os.urandom(size), dest / "DICOM" / f"IM{i}", chunks=2, pause=pause)


def test_zip_and_folder_copied_in_chunks_are_imported_once_complete(folder, tmp_path):
    stub = StubImport()
    wf = folder(stub)
    watch = tmp_path / "watch"
    data = zip_bytes()
    writers = [
        threading.Thread(target=copy_slowly, args=(data, watch / "study.zip")),
        threading.Thread(target=copy_folder_slowly, args=(watch / "CD_2024",)),
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stub.wait_for(2)
    wait_until(
        lambda: (
            (watch / "imported" / "study.zip.json").exists()
            and (watch / "imported" / "CD_2024.json").exists()
        )
    )
    time.sleep(SETTLE * 2)  # nothing more may come
    names = sorted(name for name, _ in stub.calls)
    assert names == ["CD_2024", "study.zip"]
    sig = dict(stub.calls)
    assert sig["study.zip"][1] == len(data)  # complete when taken
    assert sig["CD_2024"][0] == 6  # DICOM/ and its five files
    assert sig["CD_2024"][1] >= 5 * 50_000
    for name in names:
        assert (watch / "imported" / name).exists()
        report = json.loads((watch / "imported" / f"{name}.json").read_text())
        assert report["status"] == "imported"
        assert not (watch / name).exists()
    assert wf.pending() == 0


def test_an_open_writer_holds_the_entry_back(folder, tmp_path):
    stub = StubImport()
    folder(stub)
    path = tmp_path / "watch" / "big.iso"
    with open(path, "wb") as fp:
        fp.write(b"\0" * 4096)
        fp.flush()
        time.sleep(SETTLE * 3)  # quiet, stable size, but still open for writing
        assert stub.calls == []
        fp.write(b"\1" * 4096)
    stub.wait_for(1)
    assert stub.calls[0][1][1] == 8192


def test_failed_import_goes_to_failed_and_others_are_ignored(folder, tmp_path):
    stub = StubImport(outcome="failed")
    folder(stub)
    watch = tmp_path / "watch"
    (watch / "notes.txt").write_text("not a medium")
    (watch / ".hidden.zip").write_bytes(zip_bytes(1))
    (watch / "upload.zip.part").write_bytes(zip_bytes(1))
    (watch / "bad.img").write_bytes(b"garbage")
    stub.wait_for(1)
    wait_until((watch / "failed" / "bad.img.json").exists)
    time.sleep(SETTLE * 2)
    assert [name for name, _ in stub.calls] == ["bad.img"]
    assert (watch / "failed" / "bad.img").exists()
    assert json.loads((watch / "failed" / "bad.img.json").read_text())["status"] == "failed"
    assert (watch / "notes.txt").exists()  # left alone


def test_rename_into_place_is_taken_at_once(folder, tmp_path):
    stub = StubImport()
    folder(stub)
    watch = tmp_path / "watch"
    (watch / "x.zip.part").write_bytes(zip_bytes(2))
    t0 = time.monotonic()
    os.rename(watch / "x.zip.part", watch / "x.zip")
    stub.wait_for(1)
    assert time.monotonic() - t0 < SETTLE  # no settle wait after an atomic rename


def test_restart_never_imports_twice(folder, tmp_path):
    watch = tmp_path / "watch"
    watch.mkdir()
    (watch / "imported").mkdir()
    (watch / "a.zip").write_bytes(zip_bytes(2))
    (watch / "b.zip").write_bytes(zip_bytes(3))
    # A previous run imported a.zip and crashed before moving it.
    ledger = WatchLedger(tmp_path / "state" / "watch.sqlite")
    ledger.set(
        ledger_key("a.zip", signature(watch / "a.zip")),
        "a.zip",
        "done",  # the word of earlier versions for imported
        {"status": "imported", "job": "old"},
    )
    # ... and was stopped in the middle of b.zip.
    ledger.set(ledger_key("b.zip", signature(watch / "b.zip")), "b.zip", "importing")
    ledger.close()
    stub = StubImport()
    folder(stub)
    stub.wait_for(1)
    wait_until((watch / "imported" / "b.zip.json").exists)
    time.sleep(SETTLE * 2)
    assert [name for name, _ in stub.calls] == ["b.zip"]  # resumed, a.zip not again
    assert (watch / "imported" / "a.zip").exists()
    assert json.loads((watch / "imported" / "a.zip.json").read_text())["job"] == "old"
    assert (watch / "imported" / "b.zip").exists()


def test_interrupted_import_stays_and_resumes(folder, tmp_path):
    calls = []
    interrupted = threading.Event()

    def stop_midway(path):
        calls.append(path.name)
        interrupted.set()

    wf = folder(stop_midway)
    watch = tmp_path / "watch"
    (watch / "c.zip").write_bytes(zip_bytes(2))
    assert interrupted.wait(20)
    wf.stop()
    assert (watch / "c.zip").exists()  # left in place for the next start
    stub = StubImport()
    folder(stub)
    stub.wait_for(1)
    assert calls == ["c.zip"] and [n for n, _ in stub.calls] == ["c.zip"]
    wait_until((watch / "imported" / "c.zip.json").exists)


def test_same_name_again_later_is_a_new_package(folder, tmp_path):
    stub = StubImport()
    folder(stub)
    watch = tmp_path / "watch"
    (watch / "d.zip").write_bytes(zip_bytes(1))
    stub.wait_for(1)
    wait_until((watch / "imported" / "d.zip.json").exists)
    (watch / "d.zip").write_bytes(zip_bytes(2))
    stub.wait_for(2)
    wait_until((watch / "imported" / "d-2.zip.json").exists)
    assert sorted(p.name for p in (watch / "imported").iterdir()) == [
        "d-2.zip",
        "d-2.zip.json",
        "d.zip",
        "d.zip.json",
    ]


def test_candidate_names(tmp_path):
    root = tmp_path
    assert candidate_name(root, str(root / "a.zip")) == "a.zip"
    assert candidate_name(root, str(root / "CD" / "DICOM" / "IM1")) == "CD"
    assert candidate_name(root, str(root / "imported" / "a.zip")) is None
    assert candidate_name(root, str(root / ".tmp123")) is None
    assert candidate_name(root, str(root / "a.zip.part")) is None
    assert candidate_name(root, str(root)) is None
    assert candidate_name(root, "/elsewhere/a.zip") is None


def test_open_for_writing(tmp_path):
    path = tmp_path / "f"
    with open(path, "wb"):
        assert open_for_writing(path)
        assert open_for_writing(tmp_path)  # a file below a folder counts
    with open(path, "rb"):
        assert not open_for_writing(path)
