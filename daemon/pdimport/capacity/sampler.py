"""What the machine does while the bench runs, sampled twice a second:
CPU (the whole machine, pdimport's processes, the emulated drives, the
receiver), the spool disk's busy time, and the bytes read and delivered (from
the journal, read-only: the numbers ``/metrics`` is computed from).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    t: float  # time.time()
    machine_cpu: float  # busy fraction of all cores, 0..1
    pdimport_cores: float  # cores used by the daemon and its workers
    drives_cores: float  # cores used by the emulated drives (FUSE)
    receiver_cores: float
    disk_busy: float  # busy fraction of the spool's disk, 0..1 (all its users)
    written: int  # cumulative bytes pdimport's processes wrote to storage
    bytes_read: int  # cumulative, into the spool
    bytes_sent: int  # cumulative, acknowledged by the destination
    instances_sent: int


@dataclass
class Totals:
    """CPU seconds over the whole run, by owner, and disk busy seconds."""

    pdimport_cpu: float = 0.0
    drives_cpu: float = 0.0
    receiver_cpu: float = 0.0
    disk_busy: float = 0.0
    written: int = 0  # bytes pdimport's processes wrote to storage
    samples: list[Sample] = field(default_factory=list)


def _machine_ticks() -> tuple[int, int]:
    with open("/proc/stat") as fp:
        parts = fp.readline().split()[1:]
    values = [int(x) for x in parts]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values[:8]), idle


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime + stime in ticks)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fp:
                raw = fp.read()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        table[int(entry.name)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    return table


def _tree(table: dict[int, tuple[int, int]], roots: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo, seen = [], list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in table:
            continue
        seen.add(pid)
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _tree_ticks(table: dict[int, tuple[int, int]], roots: list[int]) -> int:
    return sum(table[pid][1] for pid in _tree(table, roots))


def _written(pids: list[int]) -> dict[int, int]:
    """Bytes each process caused to be written to storage (``/proc/PID/io``)."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io") as fp:
                for line in fp:
                    if line.startswith("write_bytes:"):
                        out[pid] = int(line.split()[1])
        except OSError:
            continue
    return out


def disk_stat_path(path: Path) -> Path | None:
    """``/sys/dev/block/M:m/stat`` of the device holding ``path``."""
    st = os.stat(path)
    stat = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat")
    return stat if stat.exists() else None


def _io_ticks_ms(stat: Path | None) -> int:
    if stat is None:
        return 0
    try:
        return int(stat.read_text().split()[9])
    except (OSError, IndexError, ValueError):
        return 0


def journal_counts(journal: Path) -> tuple[int, int, int]:
    """(bytes read into the spool, bytes delivered, instances delivered)."""
    if not journal.is_file():
        return 0, 0, 0
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error:
        return 0, 0, 0
    try:
        read = db.execute("SELECT coalesce(sum(size),0) FROM files WHERE state='read'").fetchone()
        sent = db.execute(
            "SELECT count(*), coalesce(sum(f.size),0) FROM deliveries d JOIN files f "
            "ON f.job_id = d.job_id AND f.sha256 = d.sha256 WHERE d.state = 'sent'"
        ).fetchone()
        return int(read[0]), int(sent[1]), int(sent[0])
    except sqlite3.Error:
        return 0, 0, 0  # the daemon has not made its tables yet
    finally:
        db.close()


class Sampler(threading.Thread):
    """Samples until :meth:`stop`; the result is :attr:`totals`."""

    def __init__(
        self,
        journal: Path,
        spool_dir: Path,
        pdimport_pids: list[int],
        drive_pids: list[int],
        receiver_pids: list[int],
        interval: float = 0.5,
    ) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.journal = journal
        self.disk = disk_stat_path(spool_dir)
        self.roots = (pdimport_pids, drive_pids, receiver_pids)
        self.interval = interval
        self.totals = Totals()
        self._stop_event = threading.Event()

    def run(self) -> None:
        cpus = os.cpu_count() or 1
        last_t = time.monotonic()
        last_machine = _machine_ticks()
        table = _process_table()
        last_owned = [_tree_ticks(table, r) for r in self.roots]
        last_io = _io_ticks_ms(self.disk)
        # Per process, so a worker that ends keeps what it wrote.
        written = _written(_tree(table, self.roots[0]))
        while not self._stop_event.wait(self.interval):
            now = time.monotonic()
            dt = max(now - last_t, 1e-6)
            machine = _machine_ticks()
            table = _process_table()
            owned = [_tree_ticks(table, r) for r in self.roots]
            io = _io_ticks_ms(self.disk)
            written.update(_written(_tree(table, self.roots[0])))
            total_d = max(machine[0] - last_machine[0], 1)
            busy = 1.0 - (machine[1] - last_machine[1]) / total_d
            # A process that ended takes its ticks with it: never count backwards.
            cores = [max(o - lo, 0) / TICK / dt for o, lo in zip(owned, last_owned, strict=True)]
            disk = min(max(io - last_io, 0) / 1000.0 / dt, 1.0)
            read, sent, instances = journal_counts(self.journal)
            self.totals.samples.append(
                Sample(
                    time.time(),
                    busy,
                    cores[0],
                    cores[1],
                    cores[2],
                    disk,
                    sum(written.values()),
                    read,
                    sent,
                    instances,
                )
            )
            self.totals.pdimport_cpu += cores[0] * dt
            self.totals.drives_cpu += cores[1] * dt
            self.totals.receiver_cpu += cores[2] * dt
            self.totals.disk_busy += disk * dt
            self.totals.written = sum(written.values())
            last_t, last_machine, last_owned, last_io = now, machine, owned, io
            if busy > 0.98 and cores[0] < 0.5 * cpus:
                log.debug("the machine is busy with work other than pdimport")

    def stop(self) -> Totals:
        self._stop_event.set()
        self.join(5)
        return self.totals
