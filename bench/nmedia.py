"""The N-media row of bench_e2e (issue 13): N discs at once, through the appliance.

Each round puts one disc of CT images into each of N emulated DVD 16× drives
at the same moment and lets the real daemon (``pdimport daemon``, its own
process) find them through ``systemd-udevd``, read them at the drive model's
speed (FUSE behind read-only loop devices) and deliver them to dcmtk
``storescp --fork`` (one process per association, as a PACS serves several;
``TCP_NODELAY=1`` as the other rows' receiver). All of that is the machinery
of ``pdimport bench`` (:mod:`pdimport.capacity`): :func:`runner.run` with one
disc per drive is one round.

A medium's wall time runs from its insertion (the bench attaching the loop
device) to its job at rest (the journal's final event: delivered, partial,
held, failed). When N media take longer each than one alone, the row says
what was saturated while they ran:

* the CPU: the busy share of the whole machine (``/proc/stat``, sampled
  twice a second by :class:`pdimport.capacity.sampler.Sampler`), over the
  round and over the part of it in which the media were being delivered;
* the receiver: its arrival rate (bytes acknowledged over the time some
  medium was being delivered) against its best rate alone (one disc imported
  from the local disk, :func:`pdimport.capacity.probe.pipeline_probe`, and the
  1-drive rounds, counted the same way), and how long a medium's delivery waited for its
  first acknowledgement against the 1-drive rounds (the send queue waiting).

A resource at :data:`pdimport.capacity.report.SATURATED` or more of its
capacity is saturated, as ``pdimport bench`` judges it.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdimport.capacity import drivemodel, generator, probe, runner, timing
from pdimport.capacity.drive import missing_requirements
from pdimport.capacity.mix import DiscKind, Mix, SeriesSpec
from pdimport.capacity.report import SATURATED
from pdimport.capacity.runner import BenchError
from pdimport.capacity.sampler import Sample
from pdimport.job.lifecycle import EMPTY

PROFILE = drivemodel.DVD_16X
#: Ratio of a medium's wall time among N to its time alone the issue allows.
ALLOWED = 1.1
#: Seconds a disc may sit in a drive the daemon has not noticed. udev's event
#: and the debounce take about 2 s: past this the event never came (on a
#: shared machine, another user's udevd stopped under us, say).
UNSEEN = 60.0
#: Seconds more than alone a medium's delivery may wait for its first
#: acknowledgement before the row calls the send queue waiting.
QUEUE_WAIT = 1.0


class Unseen(BenchError):
    """The daemon never saw a disc the bench inserted."""


def why_not() -> str:
    """Why the row cannot run here, or ``""``."""
    why = missing_requirements()  # root, /dev/fuse, fusermount3, losetup
    if why:
        return f"emulated drives {why}"
    if not Path("/dev/loop-control").exists():
        return "no loop device driver (/dev/loop-control)"
    if not os.access(runner.UDEVD, os.X_OK):
        return f"no udevd ({runner.UDEVD})"
    if not shutil.which("storescp"):
        return "dcmtk storescp not installed"
    return ""


def ct_discs(images: int, count: int, folder: Path) -> list[generator.DiscInfo]:
    """``count`` IHE PDI discs of one CT series each (512×512, uncompressed),
    every disc with its own patient and UIDs."""
    series = (SeriesSpec("CT", images, 512, "explicit"),)
    kind = DiscKind("dvd_ct", 1.0, "dvd", series, description="bench_e2e N media")
    return generator.ensure_discs(Mix((kind,), seed=13, source="bench_e2e"), count, folder)


@dataclass
class Medium:
    label: str
    state: str
    inserted: float  # time.time()
    at_rest: float
    start_read: float  # the job's events
    read_done: float
    deliver: float
    first_ack: float
    last_ack: float
    bytes_sent: int

    @property
    def seconds(self) -> float:
        return self.at_rest - self.inserted

    def stages(self) -> dict[str, float]:
        """Seconds from insertion to reading (udev, debounce, spin-up, the
        directory), reading, scanning what was left, delivering."""
        return {
            "detect": self.start_read - self.inserted,
            "read": self.read_done - self.start_read,
            "scan": self.deliver - self.read_done,
            "deliver": self.at_rest - self.deliver,
        }


@dataclass
class Round:
    drives: int
    media: list[Medium]
    samples: list[Sample] = field(default_factory=list)

    def _window(self, spans: list[tuple[float, float]]) -> list[Sample]:
        return [s for s in self.samples if any(a <= s.t <= b for a, b in spans)]

    def delivering(self) -> list[tuple[float, float]]:
        """The times some medium was being delivered, as disjoint spans."""
        spans = sorted((m.deliver, max(m.last_ack, m.deliver)) for m in self.media)
        out: list[tuple[float, float]] = []
        for a, b in spans:
            if out and a <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        return out

    def cpu(self, delivery_only: bool = False) -> tuple[float, float]:
        """(busy share of the machine, share pdimport's processes used), 0..1."""
        whole = [(min(m.inserted for m in self.media), max(m.at_rest for m in self.media))]
        picked = self._window(self.delivering() if delivery_only else whole)
        if not picked:
            return float("nan"), float("nan")
        cores = os.cpu_count() or 1
        busy = statistics.fmean(s.machine_cpu for s in picked)
        return busy, statistics.fmean(s.pdimport_cores for s in picked) / cores

    def arrival_rate(self) -> float:
        """Bytes per second the receiver acknowledged while media were delivered."""
        span = sum(b - a for a, b in self.delivering())
        return sum(m.bytes_sent for m in self.media) / span if span > 0 else 0.0

    def queue_wait(self) -> float:
        """Longest a medium's delivery waited for its first acknowledgement."""
        return max(max(m.first_ack - m.deliver, 0.0) for m in self.media)


def _acks(journal: Path) -> dict[str, tuple[float, float, int]]:
    """job id → (first acknowledgement, last, bytes acknowledged)."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = db.execute(
            "SELECT d.job_id, min(d.time), max(d.time), coalesce(sum(f.size), 0) "
            "FROM deliveries d JOIN files f ON f.job_id = d.job_id AND f.sha256 = d.sha256 "
            "WHERE d.state = 'sent' GROUP BY d.job_id"
        ).fetchall()
    finally:
        db.close()
    return {str(j): (float(a), float(b), int(n)) for j, a, b, n in rows}


def delivery_rate(journal: Path) -> float:
    """Bytes per second acknowledged between each job's deliver event and its
    last acknowledgement, over the jobs of ``journal``: how :meth:`Round.arrival_rate`
    counts, for an import that ran alone."""
    acks = _acks(journal)
    sent, span = 0, 0.0
    for job in timing.job_records(journal).values():
        deliver = next((t for t, e in job["events"] if e == "deliver"), None)
        if deliver is not None and job["id"] in acks:
            sent += acks[job["id"]][2]
            span += max(acks[job["id"]][1] - deliver, 0.0)
    return sent / span if span > 0 else 0.0


def media_of(result: runner.RunResult) -> list[Medium]:
    """Each disc of a round, from the bench's insert and the journal."""
    journal = result.state_dir / "journal.sqlite"
    jobs = timing.job_records(journal)
    acks = _acks(journal)
    out = []
    for d in result.discs:
        job = jobs.get(d.disc.label)
        if job is None or d.timed_out:
            why = "stuck in its drive" if d.timed_out else "never became a job"
            raise BenchError(f"{d.disc.label} in {d.devnode}: {why}")
        final = [t for t, e in job["events"] if e in timing.FINAL_EVENTS]
        if not final:
            raise BenchError(f"{d.disc.label}: its job never came to rest")
        first: dict[str, float] = {}
        for t, e in job["events"]:
            first.setdefault(e, t)
        start = first.get("start_read", float(job["created"]))
        read = first.get("read_done", start)
        deliver = first.get("deliver", final[-1])
        ack0, ack1, sent = acks.get(job["id"], (final[-1], final[-1], 0))
        times = (d.inserted, final[-1], start, read, deliver, ack0, ack1)
        out.append(Medium(d.disc.label, str(job["state"]), *times, sent))
    return out


@contextlib.contextmanager
def _nodelay() -> Iterator[None]:
    """``TCP_NODELAY=1`` for the storescp started inside (dcmtk reads it)."""
    before = os.environ.get("TCP_NODELAY")
    os.environ["TCP_NODELAY"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TCP_NODELAY", None)
        else:
            os.environ["TCP_NODELAY"] = before


def _udevd_state() -> str:
    answers = subprocess.run(["udevadm", "control", "--ping"], capture_output=True, check=False)
    return "udevd answers" if answers.returncode == 0 else "udevd does not answer"


class _Guard:
    """``runner.run``'s progress callback: ends a round in which the daemon
    has not noticed a disc :data:`UNSEEN` seconds after it went in, instead
    of waiting out the runner's stuck-disc timeout (minutes)."""

    def __init__(self) -> None:
        self.devnodes: dict[int, str] = {}
        self.inserted: dict[int, float] = {}
        self.seen: set[int] = set()

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        if event == "drive":
            self.devnodes[fields["drive"]] = fields["devnode"]
        elif event == "insert":  # from the feeder threads; ticks come from the caller's
            self.inserted[fields["drive"]] = time.monotonic()
        elif event == "tick":
            drives = fields["status"].get("drives", {})
            for i, when in list(self.inserted.items()):
                dev = self.devnodes.get(i, "")
                if drives.get(dev, {}).get("state", EMPTY) != EMPTY:
                    self.seen.add(i)
                elif i not in self.seen and time.monotonic() - when > UNSEEN:
                    raise Unseen(f"{dev}: no disc seen {UNSEEN:.0f} s after it went in")


class Rig:
    """udevd, the receiver and the discs, shared by every round of the row."""

    def __init__(self, work: Path, images: int, most: int) -> None:
        self.work = work
        self.images = images
        self.most = most
        self.udevd = runner.Udevd()
        self.receiver = runner.Receiver(work / "pacs", "storescp")
        self.discs: list[generator.DiscInfo] = []
        self.alone_rate = 0.0  # bytes/s the receiver took from one import alone
        self.rounds = 0
        self.repeated: list[str] = []  # rounds run again, and why

    def start(self) -> Rig:
        """Raises :class:`BenchError` when udevd or the loop devices cannot be had."""
        self.work.mkdir(parents=True, exist_ok=True)
        runner.free_loops(self.most)
        self.udevd.start()
        self.discs = ct_discs(self.images, self.most, self.work / "discs")
        with _nodelay():
            self.receiver.start()
        # The receiver's rate alone (one import of a disc image from the local
        # disk, as pdimport bench probes it); it also warms the numba cache.
        probe.pipeline_probe(Path(self.discs[0].path), self.receiver.url, self.work / "alone")
        self.alone_rate = delivery_rate(next(self.work.glob("alone/*/journal.sqlite")))
        self._clear()
        return self

    def round(self, drives: int) -> Round:
        """One disc in each of ``drives`` drives at once, until all are at rest.

        A round whose insertion udev never announced is run once more (with
        udevd started again if it went away), and :attr:`repeated` says so.
        """
        try:
            return self._round(drives)
        except Unseen as exc:
            self.repeated.append(f"{drives} drive(s): {exc} ({_udevd_state()})")
            return self._round(drives)

    def _round(self, drives: int) -> Round:
        self.rounds += 1
        out = self.work / f"round-{self.rounds}-{drives}"
        self.udevd.start()  # the one we found may have been another user's, and gone
        try:
            result = runner.run(
                self.discs[:drives], drives, PROFILE, out, self.receiver.url, None,
                receiver_pid=self.receiver.pid, progress=_Guard(),
            )  # fmt: skip
            return Round(drives, media_of(result), result.totals.samples)
        finally:
            shutil.rmtree(out, ignore_errors=True)  # the spool: a copy of every disc
            self._clear()

    def _clear(self) -> None:
        for p in self.receiver.folder.iterdir():
            if p.is_file():
                p.unlink()

    def stop(self) -> None:
        self.receiver.stop()
        self.udevd.stop()


def mean_stages(rounds: list[Round]) -> dict[str, float]:
    media = [m.stages() for r in rounds for m in r.media]
    return {k: statistics.fmean(s[k] for s in media) for k in media[0]}


def verdict(alone: list[Round], rounds: list[Round], alone_rate: float) -> tuple[float, str]:
    """(median medium time ÷ the 1-drive median, what the row says about it).

    ``alone``: the 1-drive rounds of the same run; ``alone_rate``: the
    receiver's rate with one import from the local disk (:meth:`Rig.start`).
    The receiver is saturated when the N media's arrival rate reaches
    :data:`SATURATED` of the best rate it had alone, or when their first
    acknowledgements waited :data:`QUEUE_WAIT` s longer than alone.
    """
    single = statistics.median(m.seconds for r in alone for m in r.media)
    # One probe on a shared machine is one sample: the rate alone is the best
    # of it and the 1-drive rounds' (a medium alone too, in the same run).
    alone_rate = max([alone_rate, *(r.arrival_rate() for r in alone)])
    ratio = statistics.median(m.seconds for r in rounds for m in r.media) / single
    # The higher of the round's share and its deliveries' (where media meet);
    # a short delivery may fall between two samples (nan): the round's stands.
    shares = [(*r.cpu(), *r.cpu(delivery_only=True)) for r in rounds]
    busy = max(x for s in shares for x in s[0::2] if not math.isnan(x))
    mine = max(x for s in shares for x in s[1::2] if not math.isnan(x))
    arrival = max(r.arrival_rate() for r in rounds)
    load = arrival / alone_rate if alone_rate > 0 else float("nan")
    wait = max(r.queue_wait() for r in rounds)
    waited = wait - max(r.queue_wait() for r in alone) >= QUEUE_WAIT
    facts = (
        f"CPU busy {busy:.0%} (pdimport {mine:.0%}); receiver {arrival / 1e6:.0f} MB/s, "
        f"{load:.0%} of its {alone_rate / 1e6:.0f} MB/s alone, first ack after ≤ {wait:.1f} s"
    )
    saturated = []
    if busy >= SATURATED:
        # the machine is shared (and the drives and the receiver run on it too)
        saturated.append("CPU" + (" (pdimport under half of it)" if mine < busy / 2 else ""))
    if load >= SATURATED or waited:
        saturated.append("receiver" + (" (the send queue waited)" if waited else ""))
    if ratio <= ALLOWED:
        return ratio, f"{ratio:.2f} ≤ {ALLOWED}: met; {facts}"
    if saturated:
        return ratio, f"{ratio:.2f} > {ALLOWED}, {' and '.join(saturated)} saturated; {facts}"
    return ratio, f"{ratio:.2f} > {ALLOWED}: NOT met, nothing saturated; {facts}"
