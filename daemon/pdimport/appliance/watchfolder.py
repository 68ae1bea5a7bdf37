"""The watch folder: ISO images, zip packages and folders dropped into a directory.

A night operator copies media into ``--watch DIR`` and finds them in the
morning each moved to a folder named for its job's state, beside its JSON
report ``<name>.json``: ``imported/`` (nothing for a person to do), ``held/``
(a person decides), ``partial/`` (part of it could not be delivered),
``failed/`` (nothing usable), or ``waiting_for_destination/`` (read safely,
the PACS has not taken it yet). When such a job later changes state (the PACS
answers, a person releases a held one) the entry and its report move on to
the new state's folder, so the report there is always the job's last word.

An entry is imported only once it is complete. Copies are slow and may close
and reopen the file between chunks, so neither a single close-write event
nor one size check is enough: an entry is taken when

* it was moved in (an atomic ``rename``: the ``.part``-then-rename idiom), or
* it has been quiet (no inotify event, same size and mtime, recursively for a
  folder) for ``settle`` seconds, and no process holds a file of it open for
  writing.

A ledger (``STATE_DIR/watch.sqlite``) records each entry by name and content
signature before its import starts and after it ends, so a restart finishes
an interrupted move without importing again, and resumes an interrupted
import (the journal then resumes the job and never resends what a
destination acknowledged).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdimport.job.lifecycle import JobState
from pdimport.store.fsutil import write_bytes

log = logging.getLogger(__name__)

SUFFIXES = (".iso", ".img", ".zip")
_PARTIAL_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", "~")

#: Job states an entry can rest in; each is a folder of that name.
RESTING_STATES = (
    JobState.IMPORTED,
    JobState.HELD,
    JobState.PARTIAL,
    JobState.WAITING_FOR_DESTINATION,
    JobState.FAILED,
    JobState.DISCARDED,
)
#: Folders of earlier versions (``done/`` held what is now ``imported/``).
_LEGACY_FOLDERS = {"done": JobState.IMPORTED}
_OWN_FOLDERS = frozenset(RESTING_STATES) | frozenset(_LEGACY_FOLDERS)


@dataclass(frozen=True)
class WatchResult:
    """What the import callback reports for one entry."""

    job_id: str | None
    state: JobState
    report: dict[str, Any]


#: ``import_fn(path) -> WatchResult``; ``None`` means "interrupted, leave it".
ImportFn = Callable[[Path], "WatchResult | None"]


# ----------------------------------------------------------------- pure
def candidate_name(root: Path, path: str) -> str | None:
    """The top-level entry of ``root`` an event path belongs to, if any."""
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return None
    if not rel.parts:
        return None
    name = rel.parts[0]
    if name in _OWN_FOLDERS or name.startswith(".") or name.endswith(_PARTIAL_SUFFIXES):
        return None
    return name


def acceptable(path: Path) -> bool:
    """Folders and ``.iso``/``.img``/``.zip`` files are imported."""
    if path.is_symlink():
        return False  # a link could point anywhere on the appliance
    if path.is_dir():
        return True
    return path.is_file() and path.suffix.lower() in SUFFIXES


def signature(path: Path) -> tuple[int, int, int] | None:
    """``(files, bytes, newest mtime_ns)``; ``None`` when the entry is gone."""
    try:
        st = path.lstat()
    except OSError:
        return None
    if not path.is_dir():
        return (1, st.st_size, st.st_mtime_ns)
    files, total, newest = 0, 0, st.st_mtime_ns
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                sub = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            files += 1
            total += sub.st_size
            newest = max(newest, sub.st_mtime_ns)
    return (files, total, newest)


def open_for_writing(path: Path, proc: Path = Path("/proc")) -> bool:
    """True when some process holds ``path`` (or a file below it) open for writing.

    Best effort: processes we may not inspect are skipped.
    """
    target = os.path.realpath(path)
    prefix = target + os.sep
    for pid in _pids(proc):
        fd_dir = proc / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if (link == target or link.startswith(prefix)) and _writable(proc / pid, fd):
                return True
    return False


def _pids(proc: Path) -> list[str]:
    try:
        return [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return []


def _writable(pid_dir: Path, fd: str) -> bool:
    try:
        text = (pid_dir / "fdinfo" / fd).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags:"):
            return (int(line.split()[1], 8) & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
    return False


# --------------------------------------------------------------- ledger
@dataclass(frozen=True)
class Watched:
    """One ledger row: an entry, its state, its job, where it lies now."""

    key: str
    name: str
    state: str
    report: dict[str, Any] | None
    job_id: str | None
    place: str | None


class WatchLedger:
    """What became of each watch-folder entry (``STATE_DIR/watch.sqlite``)."""

    _COLUMNS = "key, name, state, report, job, place"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS watched (key TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "state TEXT NOT NULL, report TEXT, time REAL NOT NULL, job TEXT, place TEXT)"
        )
        have = {row[1] for row in self._db.execute("PRAGMA table_info(watched)")}
        for column in ("job", "place"):  # ledgers written before entries followed their job
            if column not in have:
                self._db.execute(f"ALTER TABLE watched ADD COLUMN {column} TEXT")
        self._db.execute("CREATE INDEX IF NOT EXISTS watched_job ON watched(job)")

    def get(self, key: str) -> Watched | None:
        return self._one(f"SELECT {self._COLUMNS} FROM watched WHERE key=?", key)

    def by_job(self, job_id: str) -> Watched | None:
        return self._one(f"SELECT {self._COLUMNS} FROM watched WHERE job=?", job_id)

    def _one(self, sql: str, arg: str) -> Watched | None:
        with self._lock:
            row = self._db.execute(sql, (arg,)).fetchone()
        if row is None:
            return None
        return Watched(row[0], row[1], row[2], json.loads(row[3]) if row[3] else None, *row[4:])

    def set(
        self,
        key: str,
        name: str,
        state: str,
        report: dict[str, Any] | None = None,
        job_id: str | None = None,
        place: str | None = None,
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO watched VALUES (?,?,?,?,?,?,?)",
                (
                    key,
                    name,
                    state,
                    json.dumps(report, ensure_ascii=False) if report else None,
                    time.time(),
                    job_id,
                    place,
                ),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def ledger_key(name: str, sig: tuple[int, int, int]) -> str:
    return f"{name}\0{sig[0]}:{sig[1]}:{sig[2]}"


# -------------------------------------------------------------- watcher
@dataclass
class _Candidate:
    deadline: float
    signature: tuple[int, int, int] | None


class WatchFolder:
    """Watches ``root`` and imports complete entries one at a time.

    Parameters
    ----------
    root : Path
        The watch folder; a folder per resting state is created inside.
    import_fn : callable
        ``import_fn(path) -> WatchResult | None`` (``None``: interrupted).
    ledger : WatchLedger
        Remembers entries across restarts.
    settle : float
        Seconds an entry must stay unchanged before it is taken.
    on_change : callable, optional
        Called with no argument when the number of waiting entries changes.
    reports : callable, optional
        ``reports(job_id) -> report | None``: a job's current report, read
        when the job of an entry changes state later (:meth:`job_changed`).
    claims : WatchClaims, optional
        A folder shared by the stations of a group: an entry is taken only
        once this station claimed it (:mod:`pdimport.appliance.group`).
    """

    def __init__(
        self,
        root: Path,
        import_fn: ImportFn,
        ledger: WatchLedger,
        settle: float = 5.0,
        on_change: Callable[[], None] | None = None,
        reports: Callable[[str], dict[str, Any] | None] | None = None,
        claims: Any = None,
    ) -> None:
        self.root = Path(root)
        self.settle = settle
        self._import = import_fn
        self._ledger = ledger
        self._on_change = on_change or (lambda: None)
        self._reports = reports or (lambda job_id: None)
        self._claims = claims
        self._inbox: queue.Queue[tuple[str, str]] = queue.Queue()
        self._candidates: dict[str, _Candidate] = {}
        self._observer: Any = None
        self._thread = threading.Thread(target=self._run, name="watch-folder", daemon=True)
        self.current: str | None = None

    # ------------------------------------------------------------ control
    def start(self) -> None:
        from watchdog.observers import Observer

        for state in RESTING_STATES:
            if state != JobState.DISCARDED:  # made when first needed
                (self.root / state).mkdir(parents=True, exist_ok=True)
        self._observer = Observer()
        self._observer.schedule(_Handler(self), str(self.root), recursive=True)
        self._observer.daemon = True
        self._observer.start()
        self._thread.start()
        # Cold scan after the observer runs, so nothing copied in between is missed.
        for entry in sorted(os.listdir(self.root)):
            self.notice(str(self.root / entry), moved_in=False)

    def stop(self, timeout: float = 10.0) -> None:
        self._inbox.put(("stop", ""))
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive() and self._observer is not None and self._observer.is_alive()

    def pending(self) -> int:
        return len(self._candidates) + (1 if self.current else 0)

    def job_changed(self, job_id: str, state: str) -> None:
        """A job changed state (a journal observer: enqueue only). An entry of
        that job resting in another state's folder moves to this one's."""
        if state in RESTING_STATES:
            self._inbox.put(("job", job_id))

    def notice(self, path: str, moved_in: bool) -> None:
        """An event touched ``path`` (called from the watchdog thread: enqueue only)."""
        name = candidate_name(self.root, path)
        if name is not None:
            self._inbox.put(("moved" if moved_in else "activity", name))

    # --------------------------------------------------------------- loop
    def _run(self) -> None:
        while True:
            try:
                kind, name = self._inbox.get(timeout=self._timeout())
            except queue.Empty:
                kind, name = "tick", ""
            if kind == "stop":
                return
            if kind in ("activity", "moved"):
                self._touch(name, moved=kind == "moved")
            elif kind == "job":
                self._follow(name)
            self._check_due()

    def _timeout(self) -> float | None:
        if not self._candidates:
            return None
        return max(0.0, min(c.deadline for c in self._candidates.values()) - time.monotonic())

    def _touch(self, name: str, moved: bool) -> None:
        now = time.monotonic()
        if moved and name not in self._candidates:
            # A rename is atomic: the entry is complete now.
            sig = signature(self.root / name)
            self._candidates[name] = _Candidate(now, sig)
        elif name in self._candidates:
            self._candidates[name].deadline = now + self.settle
        else:
            self._candidates[name] = _Candidate(now + self.settle, signature(self.root / name))
            self._on_change()

    def _check_due(self) -> None:
        now = time.monotonic()
        for name, cand in list(self._candidates.items()):
            if cand.deadline > now:
                continue
            if self._still_changing(name, cand, now):
                continue
            del self._candidates[name]
            self._take(name, cand.signature)
            self._on_change()
            now = time.monotonic()

    def _still_changing(self, name: str, cand: _Candidate, now: float) -> bool:
        path = self.root / name
        sig = signature(path)
        if sig is None:
            del self._candidates[name]  # gone again (a temp file, or taken back)
            return True
        if sig != cand.signature or open_for_writing(path):
            cand.signature = sig
            cand.deadline = now + self.settle
            return True
        return False

    # ------------------------------------------------------------- import
    def _take(self, name: str, sig: tuple[int, int, int] | None) -> None:
        path = self.root / name
        if sig is None or not acceptable(path):
            log.info("watch folder: ignoring %s (not a folder, .iso, .img or .zip)", name)
            return
        key = ledger_key(name, sig)
        known = self._ledger.get(key)
        state = resting_state(known.state) if known is not None else None
        if known is not None and state is not None:
            # Imported before a restart; only the move was missing.
            self._finish(key, path, WatchResult(known.job_id, state, known.report or {}))
            return
        if not self._claimed(name, key, sig):
            return
        self._ledger.set(key, name, "importing")
        self.current = name
        try:
            result = self._run_import(path)
        finally:
            self.current = None
        if result is None:
            log.info("watch folder: %s interrupted; it resumes at the next start", name)
            return
        self._ledger.set(key, name, result.state, result.report, result.job_id)
        self._finish(key, path, result)

    def _claimed(self, name: str, key: str, sig: tuple[int, int, int]) -> bool:
        """Whether this station takes the entry (always, outside a group)."""
        if self._claims is None:
            return True
        try:
            # the folder's path is part of a package's identity: stations
            # mount a shared folder at the same path, their own folders differ
            mine = bool(self._claims.claim(f"{self.root}/{key}"))
        except Exception as exc:  # noqa: BLE001 - the database is down: look again later
            log.warning("watch folder: %s waits: %s", name, exc)
            self._candidates[name] = _Candidate(time.monotonic() + self.settle, sig)
            return False
        if not mine:
            log.info("watch folder: %s is taken by another station", name)
        return mine

    def _run_import(self, path: Path) -> WatchResult | None:
        try:
            return self._import(path)
        except Exception as exc:
            log.exception("watch folder: import of %s failed", path)
            return WatchResult(
                None,
                JobState.FAILED,
                {
                    "status": JobState.FAILED,
                    "source": {"path": str(path)},
                    "problems": [{"code": "internal_error", "path": "", "detail": str(exc)}],
                },
            )

    def _finish(self, key: str, path: Path, result: WatchResult) -> None:
        dest = self._place(path, result.state, result.report)
        self._ledger.set(key, path.name, result.state, result.report, result.job_id, str(dest))
        log.info("watch folder: %s -> %s", path.name, dest)
        if self._claims is not None:
            try:
                self._claims.done(f"{self.root}/{key}", result.state, result.job_id)
            except Exception as exc:  # noqa: BLE001 - the claim is ours either way
                log.warning("watch folder: claim of %s not updated: %s", path.name, exc)

    def _place(self, path: Path, state: JobState, report: dict[str, Any]) -> Path:
        """Move ``path`` into ``state``'s folder and write its report beside it."""
        dest_dir = self.root / state
        dest_dir.mkdir(exist_ok=True)
        dest = _free_name(dest_dir, path.name)
        os.rename(path, dest)
        _write_json(dest_dir / f"{dest.name}.json", report)
        return dest

    def _follow(self, job_id: str) -> None:
        """Move the entry of ``job_id`` to the folder of the job's state now."""
        known = self._ledger.by_job(job_id)
        if known is None or not known.place:
            return  # not a watch-folder job, or its import is still running
        report = self._reports(job_id)
        state = resting_state(str(report.get("status", ""))) if report else None
        here = Path(known.place)
        if state is None or report is None or state == known.state or not here.exists():
            return
        dest = self._place(here, state, report)
        (here.parent / f"{here.name}.json").unlink(missing_ok=True)
        self._ledger.set(known.key, known.name, state, report, job_id, str(dest))
        log.info("watch folder: %s is %s now -> %s", known.name, state, dest)


def resting_state(value: str) -> JobState | None:
    """The resting state a stored word names (old words mapped); None for
    any other word (an import still running)."""
    value = _LEGACY_FOLDERS.get(value, value)
    return JobState(value) if value in RESTING_STATES else None


class _Handler:
    """watchdog event handler: every event only enqueues a name."""

    def __init__(self, folder: WatchFolder) -> None:
        self._folder = folder

    def dispatch(self, event: Any) -> None:
        if event.event_type == "moved":
            # Moved within or into the folder: the destination is what matters.
            self._folder.notice(event.dest_path, moved_in=True)
            return
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (ours included) are not activity
        self._folder.notice(event.src_path, moved_in=False)


def _free_name(directory: Path, name: str) -> Path:
    dest = directory / name
    n = 1
    while dest.exists() or (directory / f"{dest.name}.json").exists():
        n += 1
        stem, dot, ext = name.partition(".")
        dest = directory / (f"{stem}-{n}{dot}{ext}")
    return dest


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    write_bytes(path, json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8"))
