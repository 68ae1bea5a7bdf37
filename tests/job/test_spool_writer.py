"""The spool writer's group commit (pipeline.SpoolWriter): files are
journaled and handed on only once durable, several at a time when the
reader is ahead, one at a time as soon as the reader is slow, and a file
read completely is never dropped."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pdimport.job.spoolwriter import SpoolWriter
from pdimport.store import fsutil
from pdimport.store import spool as spool_mod
from pdimport.store.journal import Journal
from pdimport.store.spool import Spool


@pytest.fixture
def parts(tmp_path: Path):
    sp = Spool(tmp_path / "spool")
    journal = Journal(tmp_path / "journal.sqlite")
    handed: list[tuple[str, str]] = []
    commits = counted_commits(sp)
    writer = SpoolWriter(sp, journal, "job", lambda path, sha: handed.append((path, sha)))
    return SimpleNamespace(
        spool=sp, journal=journal, handed=handed, commits=commits, writer=writer, tmp=tmp_path
    )


def counted_commits(sp: Spool) -> list[int]:
    """The sizes of the groups ``sp`` commits, in order, as they happen."""
    commits: list[int] = []
    real_commit = sp.commit

    def counting_commit(staged):
        commits.append(len(staged))
        return real_commit(staged)

    sp.commit = counting_commit  # type: ignore[method-assign]
    return commits


def _entry(name: str, data: bytes) -> SimpleNamespace:
    return SimpleNamespace(path=name, size=len(data))


def _send(writer: SpoolWriter, seq: int, name: str, data: bytes, end: bool = True) -> None:
    writer.begin(seq, _entry(name, data))
    writer.data(data)
    if end:
        writer.end()


def _wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_files_queued_ahead_commit_as_one_group(parts) -> None:
    blobs = [bytes([n]) * (1000 + n) for n in range(8)]
    for n, data in enumerate(blobs):  # all queued before the writer runs: reader ahead
        _send(parts.writer, n, f"F{n}", data)
    parts.writer.start()
    parts.writer.close()
    assert parts.commits == [8]
    records = parts.journal.files("job")
    assert [(r.seq, r.path, r.state) for r in records] == [(n, f"F{n}", "read") for n in range(8)]
    for r, data in zip(records, blobs):
        assert r.sha256 == hashlib.sha256(data).hexdigest()
        assert parts.spool.path(r.sha256).read_bytes() == data
    assert parts.handed == [(f"F{n}", hashlib.sha256(d).hexdigest()) for n, d in enumerate(blobs)]
    assert not list((parts.tmp / "spool" / "tmp").iterdir())


def test_a_slow_file_does_not_hold_back_the_finished_one(parts) -> None:
    parts.writer.start()
    _send(parts.writer, 0, "DONE", b"a" * 5000)
    _send(parts.writer, 1, "SLOW", b"b" * 100, end=False)  # the drive is retrying
    assert _wait_for(lambda: [r.path for r in parts.journal.files("job")] == ["DONE"])
    assert parts.handed and parts.handed[0][0] == "DONE"
    parts.writer.end()
    parts.writer.close()
    assert [r.path for r in parts.journal.files("job")] == ["DONE", "SLOW"]


def test_abandon_keeps_whole_files_and_drops_the_partial_one(parts) -> None:
    for n in range(3):
        _send(parts.writer, n, f"F{n}", bytes([n]) * 3000)
    _send(parts.writer, 3, "PARTIAL", b"p" * 3000, end=False)
    parts.writer.start()
    parts.writer.close(finish=False)
    assert [r.path for r in parts.journal.files("job")] == ["F0", "F1", "F2"]
    assert not list((parts.tmp / "spool" / "tmp").iterdir())


def test_a_failed_file_between_good_ones_keeps_the_order(parts) -> None:
    _send(parts.writer, 0, "A", b"a" * 10)
    parts.writer.begin(1, _entry("BAD", b""))
    parts.writer.fail("unreadable_sector", "medium error at LBA 1234")
    _send(parts.writer, 2, "C", b"c" * 10)
    parts.writer.start()
    parts.writer.close()
    records = parts.journal.files("job")
    assert [(r.path, r.state, r.code) for r in records] == [
        ("A", "read", ""),
        ("BAD", "error", "unreadable_sector"),
        ("C", "read", ""),
    ]


def test_commit_without_syncfs_fsyncs_each_file(tmp_path: Path, monkeypatch) -> None:
    synced: list[str] = []
    monkeypatch.setattr(spool_mod, "sync_filesystem", lambda path: False)
    monkeypatch.setattr(spool_mod, "_fsync_file", lambda name: synced.append(name))
    monkeypatch.setattr(spool_mod, "fsync_dir", lambda path: synced.append(str(path)))
    sp = Spool(tmp_path / "spool")
    staged = [sp.stage([bytes([n]) * 10]) for n in range(3)]
    digests = sp.commit(staged)
    assert len(synced) == 6  # three files, three bucket folders
    assert all(sp.path(d).read_bytes() == bytes([n]) * 10 for n, d in enumerate(digests))


def test_syncfs_is_available_here(tmp_path: Path) -> None:
    """The group commit's one sync per group needs syncfs(2) (Linux)."""
    assert fsutil.sync_filesystem(tmp_path) is True


def test_the_writer_keeps_writing_while_a_group_is_synced(tmp_path: Path) -> None:
    """While one group waits for the disk, the next files are written (to
    the spool's temporary folder) and then commit together, in read order."""
    sp = Spool(tmp_path / "spool")
    journal = Journal(tmp_path / "journal.sqlite")
    release = threading.Event()
    commits: list[list[str]] = []
    real_commit = sp.commit

    def slow_first_commit(staged):
        if not commits:
            commits.append([])
            assert release.wait(10)
        else:
            commits.append([])
        return real_commit(staged)

    sp.commit = slow_first_commit  # type: ignore[method-assign]
    handed: list[str] = []
    writer = SpoolWriter(sp, journal, "job", lambda path, sha: handed.append(path))
    writer.start()
    _send(writer, 0, "F0", b"0" * 1000)
    assert _wait_for(lambda: len(commits) == 1)  # F0's group is being synced
    for n in range(1, 6):
        _send(writer, n, f"F{n}", bytes([n]) * 1000)
    tmp = tmp_path / "spool" / "tmp"
    assert _wait_for(lambda: len(list(tmp.iterdir())) == 6)  # F0 and the five after it
    assert journal.files("job") == [] and handed == []
    release.set()
    writer.close()
    assert [r.path for r in journal.files("job")] == [f"F{n}" for n in range(6)]
    assert handed == [f"F{n}" for n in range(6)]
    assert 2 <= len(commits) <= 3  # F0, then the rest in one or two groups
    assert not list(tmp.iterdir())


def test_a_failed_commit_stops_the_reader_and_keeps_nothing_half_done(
    tmp_path: Path,
) -> None:
    sp = Spool(tmp_path / "spool")
    journal = Journal(tmp_path / "journal.sqlite")

    def broken_commit(staged):
        sp.discard(staged)
        raise OSError(5, "Input/output error")

    sp.commit = broken_commit  # type: ignore[method-assign]
    writer = SpoolWriter(sp, journal, "job", lambda path, sha: None)
    writer.start()
    _send(writer, 0, "F0", b"0" * 1000)
    assert _wait_for(lambda: writer.error is not None)
    with pytest.raises(OSError):
        _send(writer, 1, "F1", b"1" * 1000)
    writer.close(finish=False)
    assert journal.files("job") == []
    assert not list((tmp_path / "spool" / "tmp").iterdir())


def test_groups_grow_while_the_reader_stays_ahead(tmp_path: Path, monkeypatch) -> None:
    """The first group is small (its files are handed on soon), each full
    one after is twice the one before, up to the largest."""
    from pdimport.job import spoolwriter

    monkeypatch.setattr(spoolwriter, "_WRITE_QUEUE", 10_000)  # the whole medium queued ahead
    monkeypatch.setattr(spoolwriter, "_GROUP_FILES", 64)
    sp = Spool(tmp_path / "spool")
    commits = counted_commits(sp)
    journal = Journal(tmp_path / "journal.sqlite")
    writer = SpoolWriter(sp, journal, "job", lambda path, sha: None)
    first = spoolwriter._FIRST_GROUP_FILES
    total = first + 2 * first + 64 + 64 + 5
    for n in range(total):
        _send(writer, n, f"F{n}", n.to_bytes(4, "big") * 8)
    writer.start()
    writer.close()
    assert commits == [first, 2 * first, 64, 64, 5]
    assert [r.seq for r in journal.files("job")] == list(range(total))
