"""Whole processes side by side (issue 13): what a hospital IT engineer times.

Every row is a command run as a child process, timed from start to exit
(wall clock), peak RSS of the command itself (GNU time), against its peer
in the same run, on the same files, warm page cache and warm numba cache:

* ``import-nodelay`` / ``import-nagle``: ``pdimport import FOLDER`` vs
  ``dcmsend +sd +r`` and ``storescu +sd +r`` into dcmtk ``storescp`` with
  ``TCP_NODELAY=1`` and as Debian ships it (Nagle), and ``cp -r`` + ``sync``
  of the folder (1,000 CT images 512×512, about 526 MB);
* ``scan``: ``pdimport scan FOLDER --json`` vs a plain pydicom script that
  groups the same files by patient/study/series with ``stop_before_pixels``
  (10,000 files 256×256);
* ``iso-watch``: an ISO image of the CT folder dropped into the watch folder
  of a running daemon (``pdimport daemon`` in its own process, started before
  the clock) until its report appears, vs ``cp`` + ``sync`` of the image plus
  ``dcmsend`` of its files to the same receiver (TCP_NODELAY=1);
* ``startup``: ``pdimport import`` of a one-file folder vs ``dcmsend`` of the
  same file; ``pdimport --help`` vs ``python -c pass``;
* ``memory``: peak RSS of ``pdimport import`` of a 5,000-file DVD image
  (256×256 images, about 660 MB), beside ``dcmsend`` of the same files;
* ``n-media``: 1, then 2 and 4 discs of 400 CT images (210 MB) at once in
  emulated DVD 16× drives, read by ``pdimport daemon`` and delivered to
  ``storescp --fork``; the rounds alternate 1, 2, 4 drives; each medium
  from insertion to its job at rest, against the 1-drive time.

Targets (issue 13): import ≥ 1.0× dcmsend with TCP_NODELAY, ≥ 4× with Nagle;
scan ≥ 10× the pydicom script; ISO ≤ 1.3× cp+sync+dcmsend; one-file import
≤ 1.0 s; ``--help`` ≤ 0.3 s; peak RSS ≤ 300 MB; N media at once (2 and 4
emulated DVD 16× drives, the daemon reading them through udevd): each
medium's wall time ≤ 1.1× its time alone in one drive, unless the CPU or the
receiver saturated, which the row then names (``bench/nmedia.py``; skipped
with the reason where loop devices, FUSE or udevd cannot run).

Every round starts after a ``sync`` (outside the clock), so no command
flushes the files an earlier one left dirty (see :func:`measure`).

Sizes: ``BENCH_E2E_SCALE`` (default 1) multiplies every corpus size, e.g.
0.05 for a quick run; ``BENCH_E2E_ROUNDS`` (default 3) rounds per peer.
Corpora are built under a temporary folder per session, never committed.

Run: ``python -m pytest bench/bench_e2e.py --benchmark-only -q``
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nmedia
import pytest
from bench_scan import _GROUPING_SCRIPT
from corpus import make_ct_series
from fixtures_peers import DCMTK_STORESCP, _stop, free_port, wait_for_port

pytestmark = pytest.mark.bench

SCALE = float(os.environ.get("BENCH_E2E_SCALE", "1"))
ROUNDS = int(os.environ.get("BENCH_E2E_ROUNDS", "3"))
CT_FILES = max(2, int(1000 * SCALE))
SCAN_FILES = max(2, int(10000 * SCALE))
DVD_FILES = max(2, int(5000 * SCALE))
NMEDIA_IMAGES = max(2, int(400 * SCALE))
NMEDIA_DRIVES = (1, 2, 4)
DAEMON = str(Path(__file__).resolve().parent.parent / "daemon")
DCMSEND, STORESCU = "/usr/bin/dcmsend", "/usr/bin/storescu"


@dataclass
class Run:
    seconds: float
    rss_mb: float


@dataclass
class Row:
    scenario: str
    peer: str
    runs: list[Run] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def rss(self) -> float:
        return max(r.rss_mb for r in self.runs)


#: (scenario, peer) -> Row, in the order measured
RESULTS: dict[tuple[str, str], Row] = {}
#: scenario -> (the peer it is compared with, what the target says: "≥ 1.0" …)
REFERENCE = {
    "import-nodelay": ("dcmsend", "pdimport", ">=", 1.0),
    "import-nagle": ("dcmsend", "pdimport", ">=", 4.0),
    "scan": ("pydicom-script", "pdimport-scan", ">=", 10.0),
    "iso-watch": ("cp+sync+dcmsend", "pdimport-daemon", ">=", 1 / 1.3),
    "startup-import": ("dcmsend", "pdimport", ">=", 0.0),
    "startup-help": ("python -c pass", "pdimport --help", ">=", 0.0),
    "memory": ("dcmsend", "pdimport", ">=", 0.0),
    "n-media": ("1 drive", "", ">=", 0.0),
}
#: (scenario, peer) -> the target cell written by the row itself (n-media)
VERDICTS: dict[tuple[str, str], str] = {}
#: absolute targets: (scenario, peer) -> (what, limit)
ABSOLUTE = {
    ("startup-import", "pdimport"): ("s", 1.0),
    ("startup-help", "pdimport --help"): ("s", 0.3),
    ("memory", "pdimport"): ("MB", 300.0),
}


# ------------------------------------------------------------------ running
def _env(nodelay: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    env["PYTHONPATH"] = DAEMON + os.pathsep + env.get("PYTHONPATH", "")
    if nodelay:
        env["TCP_NODELAY"] = "1"
    return env


#: GNU time (Debian's ``time``): a child's own peak RSS. The ``wait4``
#: rusage of a child this process starts reports at least this process's RSS
#: (its mm's high-water mark passes through fork/vfork and exec): every
#: command showed the 113 MB of pytest, ``true`` 310 MB under a 300 MB parent.
GNU_TIME = "/usr/bin/time"


def timed(cmd: list[str], env: dict[str, str] | None = None, ok=(0,)) -> Run:
    """Run one command to its end: wall seconds and its own peak RSS."""
    with tempfile.NamedTemporaryFile("r", prefix="pdimport-e2e-rss-") as rss:
        start = time.perf_counter()
        proc = subprocess.run(
            [GNU_TIME, "-f", "%M", "-o", rss.name, *cmd],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env or _env(),
        )
        seconds = time.perf_counter() - start
        peak_kb = int(rss.read().split()[-1])  # after "Command exited with ..." if any
    if proc.returncode not in ok:
        raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}: {proc.stderr[-2000:]!r}")
    return Run(seconds, peak_kb / 1024)


def measure(benchmark, scenario: str, peer: str, once, files: int) -> None:
    """``once()`` returns a Run; ROUNDS of them after one warm-up round.

    Every round starts on a clean page cache (``sync`` before it, outside
    the clock): the files the receiver wrote in the round before are not
    left dirty for the next command to flush. A command that makes its own
    files durable (``syncfs``, as pdimport's spool does, or ``cp`` +
    ``sync``) would otherwise also pay for writing out what the peer before
    it left in memory, which a peer that syncs nothing never does."""
    row = RESULTS.setdefault((scenario, peer), Row(scenario, peer))

    def go() -> None:
        os.sync()
        row.runs.append(once())

    os.sync()
    once()  # warm-up: page cache, numba cache, receiver's first association
    benchmark.group = f"e2e {scenario}"
    benchmark.pedantic(go, rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update(
        scenario=scenario, peer=peer, files=files, median_s=row.median, peak_rss_mb=row.rss
    )


# ------------------------------------------------------------------ corpora
@pytest.fixture(scope="module", autouse=True)
def _gnu_time() -> None:
    if not os.access(GNU_TIME, os.X_OK):
        pytest.skip("GNU time not installed (Debian package time; hardware/setup.sh installs it)")


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pdimport-e2e-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module")
def ct_folder(work: Path) -> Path:
    make_ct_series(work / "ct" / "DICOM", CT_FILES)
    return work / "ct"


@pytest.fixture(scope="module")
def scan_folder(work: Path) -> Path:
    make_ct_series(work / "scan", SCAN_FILES, size=256)
    return work / "scan"


def _iso(folder: Path, out: Path, label: str) -> Path:
    subprocess.run(
        ["genisoimage", "-quiet", "-J", "-R", "-V", label, "-o", str(out), str(folder)],
        check=True,
    )
    return out


@pytest.fixture(scope="module")
def ct_iso(work: Path, ct_folder: Path) -> Path:
    return _iso(ct_folder, work / "ct.iso", "CT1000")


@pytest.fixture(scope="module")
def dvd(work: Path) -> tuple[Path, Path]:
    folder = work / "dvd"
    make_ct_series(folder / "DICOM", DVD_FILES, size=256)
    return folder, _iso(folder, work / "dvd.iso", "DVD5000")


@pytest.fixture(scope="module")
def one_file(work: Path) -> Path:
    make_ct_series(work / "one", 1)
    return work / "one"


@dataclass
class Receiver:
    port: int
    out: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"dicom://STORESCP@127.0.0.1:{self.port}"

    def clear(self) -> None:
        for p in self.out.iterdir():
            p.unlink()


def _storescp(work: Path, nodelay: bool) -> Iterator[Receiver]:
    """dcmtk storescp writing every file (``-uf``), one per receiver mode."""
    if not os.access(DCMTK_STORESCP, os.X_OK):
        pytest.skip("dcmtk storescp not installed")
    port = free_port()
    out = work / f"rx-{port}"
    out.mkdir()
    cmd = [DCMTK_STORESCP, "-aet", "STORESCP", "-uf", "-od", str(out), str(port)]
    proc = subprocess.Popen(cmd, env=_env(nodelay), stderr=subprocess.DEVNULL)
    wait_for_port(port, proc)
    yield Receiver(port, out, proc)
    _stop(proc)


@pytest.fixture(scope="module")
def rx_nodelay(work: Path) -> Iterator[Receiver]:
    yield from _storescp(work, nodelay=True)


@pytest.fixture(scope="module")
def rx_nagle(work: Path) -> Iterator[Receiver]:
    yield from _storescp(work, nodelay=False)


# ------------------------------------------------------------------ peers
def _pdimport(*args: str, nodelay: bool = True, ok=(0,)) -> Run:
    with tempfile.TemporaryDirectory(prefix="pdimport-e2e-state-") as state:
        return timed(
            [sys.executable, "-m", "pdimport", *args, "--state-dir", state],
            _env(nodelay),
            ok,
        )


def _dcmsend(rx: Receiver, target: Path, nodelay: bool) -> Run:
    return timed(
        [DCMSEND, "-aec", "STORESCP", "127.0.0.1", str(rx.port), "+sd", "+r", str(target)],
        _env(nodelay),
    )


def _storescu(rx: Receiver, target: Path, nodelay: bool) -> Run:
    return timed(
        [STORESCU, "-aec", "STORESCP", "+sd", "+r", "127.0.0.1", str(rx.port), str(target)],
        _env(nodelay),
    )


def _cp_sync(src: Path, dst: Path) -> Run:
    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    subprocess.run(["sync"], check=True)
    seconds = time.perf_counter() - start
    if dst.is_dir():
        shutil.rmtree(dst)
    else:
        dst.unlink()
    return Run(seconds, 0.0)


def _cleared(rx: Receiver, run: Run) -> Run:
    rx.clear()
    return run


# ------------------------------------------------------------------ import rows
IMPORT_PEERS = ["dcmsend", "storescu", "pdimport", "cp -r + sync"]


@pytest.mark.parametrize("peer", IMPORT_PEERS)
@pytest.mark.parametrize("mode", ["nodelay", "nagle"])
def test_import_folder(benchmark, request, ct_folder: Path, work: Path, mode: str, peer: str):
    rx: Receiver = request.getfixturevalue(f"rx_{mode}")
    nodelay = mode == "nodelay"
    folder = ct_folder / "DICOM"
    if peer == "cp -r + sync":
        if mode == "nagle":
            pytest.skip("no receiver involved")
        once = lambda: _cp_sync(folder, work / "cp-target")
    elif peer == "dcmsend":
        once = lambda: _cleared(rx, _dcmsend(rx, folder, nodelay))
    elif peer == "storescu":
        once = lambda: _cleared(rx, _storescu(rx, folder, nodelay))
    else:
        once = lambda: _cleared(rx, _pdimport("import", str(folder), "--dest", rx.url))
    measure(benchmark, f"import-{mode}", peer, once, CT_FILES)


# ------------------------------------------------------------------ scan row
#: the pydicom grouping script of bench/bench_scan.py, whose process row this extends
GROUPING_SCRIPT = _GROUPING_SCRIPT


@pytest.mark.parametrize("peer", ["pydicom-script", "pdimport-scan"])
def test_scan_folder(benchmark, scan_folder: Path, peer: str):
    if peer == "pydicom-script":
        once = lambda: timed([sys.executable, "-c", GROUPING_SCRIPT, str(scan_folder)])
    else:
        once = lambda: _pdimport("scan", str(scan_folder), "--json")
    measure(benchmark, "scan", peer, once, SCAN_FILES)


# ------------------------------------------------------------------ ISO from the watch folder
def _daemon(work: Path, rx: Receiver, n: int) -> tuple[Path, Any]:
    """A daemon with a state directory of its own, watching a folder of its own.

    A new one per round: the journal of a daemon that already delivered the
    image knows its instances are at the receiver, and a second drop would
    only be read ("already there"), never sent.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "appliance"))
    from fixtures_daemon import DaemonProc

    watch = work / f"watch-{n}"
    watch.mkdir()
    base = {"state_dir": str(work / f"daemon-state-{n}"), "dest": [rx.url]}
    os.environ["TCP_NODELAY"] = "1"  # the daemon's environment, as the receiver's
    try:
        d = DaemonProc(work, base, {"devices": [], "watch": str(watch), "watch_settle": 0.2})
    finally:
        os.environ.pop("TCP_NODELAY", None)
    return watch, d


def _through_watch(work: Path, image: Path, rx: Receiver, n: list[int]) -> Run:
    """Start a daemon (before the clock), drop the image in (a rename:
    complete at once) and time until its report is written; every instance
    must have arrived."""
    n[0] += 1
    watch, d = _daemon(work, rx, n[0])
    try:
        name = f"disc{n[0]}.iso"
        staged = watch.parent / name
        shutil.copyfile(image, staged)
        os.sync()
        start = time.perf_counter()
        os.rename(staged, watch / name)
        report = watch / "imported" / f"{name}.json"
        others = [watch / s / f"{name}.json" for s in ("held", "failed", "partial")]
        while not report.exists():
            if any(p.exists() for p in others):
                raise RuntimeError(f"{name} not imported: {[p for p in others if p.exists()]}")
            time.sleep(0.02)
        seconds = time.perf_counter() - start
    finally:
        d.terminate()
        d.close()
    arrived = len(list(rx.out.iterdir()))
    rx.clear()
    if arrived < CT_FILES:
        raise RuntimeError(f"{name}: {arrived} of {CT_FILES} instances arrived")
    return Run(seconds, 0.0)


@pytest.mark.parametrize("peer", ["cp+sync+dcmsend", "pdimport-daemon"])
def test_iso_from_watch_folder(benchmark, ct_iso, ct_folder, rx_nodelay, work, peer):
    if peer == "pdimport-daemon":
        counter = [0]
        once = lambda: _through_watch(work, ct_iso, rx_nodelay, counter)
    else:

        def once() -> Run:
            copy = _cp_sync(ct_iso, work / "iso-copy")
            send = _dcmsend(rx_nodelay, ct_folder, nodelay=True)
            rx_nodelay.clear()
            return Run(copy.seconds + send.seconds, send.rss_mb)

    measure(benchmark, "iso-watch", peer, once, CT_FILES)


# ------------------------------------------------------------------ start-up and memory
@pytest.mark.parametrize("peer", ["dcmsend", "pdimport"])
def test_startup_import(benchmark, one_file, rx_nodelay, peer):
    if peer == "dcmsend":
        once = lambda: _cleared(rx_nodelay, _dcmsend(rx_nodelay, one_file, True))
    else:
        once = lambda: _cleared(
            rx_nodelay, _pdimport("import", str(one_file), "--dest", rx_nodelay.url)
        )
    measure(benchmark, "startup-import", peer, once, 1)


@pytest.mark.parametrize("peer", ["python -c pass", "pdimport --help"])
def test_startup_help(benchmark, peer):
    args = ["-c", "pass"] if peer.startswith("python") else ["-m", "pdimport", "--help"]
    measure(benchmark, "startup-help", peer, lambda: timed([sys.executable, *args]), 0)


@pytest.mark.parametrize("peer", ["dcmsend", "pdimport"])
def test_memory_dvd_image(benchmark, dvd, rx_nodelay, peer):
    folder, image = dvd
    if peer == "dcmsend":
        once = lambda: _cleared(rx_nodelay, _dcmsend(rx_nodelay, folder, True))
    else:
        once = lambda: _cleared(
            rx_nodelay, _pdimport("import", str(image), "--dest", rx_nodelay.url)
        )
    measure(benchmark, "memory", peer, once, DVD_FILES)


# ------------------------------------------------------------------ N media at once
@pytest.fixture(scope="module")
def nmedia_rig(work: Path) -> Iterator[nmedia.Rig]:
    why = nmedia.why_not()
    if why:
        pytest.skip(f"N media: {why}")
    rig = nmedia.Rig(work / "nmedia", NMEDIA_IMAGES, max(NMEDIA_DRIVES))
    try:
        rig.start()
    except nmedia.BenchError as exc:  # udevd would not start, no free loop devices
        rig.stop()
        pytest.skip(f"N media: {exc}")
    yield rig
    rig.stop()


def _drives(n: int) -> str:
    return f"{n} drive" + ("s" if n > 1 else "")


@pytest.mark.timeout(ROUNDS * len(NMEDIA_DRIVES) * 300)  # ~50 s a round at full size
def test_n_media_at_once(benchmark, nmedia_rig: nmedia.Rig):
    rounds: dict[int, list[nmedia.Round]] = {n: [] for n in NMEDIA_DRIVES}

    def go() -> None:  # alternating 1, 2, 4 drives: the machine's load hits all alike
        for n in NMEDIA_DRIVES:
            rounds[n].append(nmedia_rig.round(n))

    benchmark.group = "e2e n-media"
    benchmark.pedantic(go, rounds=ROUNDS, iterations=1)
    for n, done in rounds.items():
        row = RESULTS.setdefault(("n-media", _drives(n)), Row("n-media", _drives(n)))
        row.runs = [Run(m.seconds, 0.0) for r in done for m in r.media]
        assert all(m.state == "imported" for r in done for m in r.media), done
        benchmark.extra_info[f"media_s_{n}"] = [round(t.seconds, 2) for t in row.runs]
        benchmark.extra_info[f"stages_{n}"] = nmedia.mean_stages(done)
        benchmark.extra_info[f"arrival_mb_s_{n}"] = [r.arrival_rate() / 1e6 for r in done]
        benchmark.extra_info[f"cpu_delivering_{n}"] = [r.cpu(delivery_only=True) for r in done]
    single = RESULTS[("n-media", "1 drive")].median
    for n in NMEDIA_DRIVES[1:]:
        ratio, text = nmedia.verdict(rounds[1], rounds[n], nmedia_rig.alone_rate)
        if nmedia_rig.repeated:  # said, not hidden: udev lost an insertion
            text += f"; {len(nmedia_rig.repeated)} round(s) run again: {nmedia_rig.repeated[0]}"
        VERDICTS[("n-media", _drives(n))] = text
        benchmark.extra_info[f"ratio_{n}"] = ratio
    benchmark.extra_info.update(
        scenario="n-media",
        files=NMEDIA_IMAGES,
        single_s=single,
        receiver_alone_mb_s=nmedia_rig.alone_rate / 1e6,
        verdicts={peer: text for (_s, peer), text in VERDICTS.items()},
    )


# ------------------------------------------------------------------ summary
def table() -> str:
    """The summary printed by bench/conftest.py: each row against its peer."""
    lines = [
        "| scenario | command | median s | peak RSS MB | peer ÷ this (speed) | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for (scenario, peer), row in RESULTS.items():
        ref_peer, subject, _op, want = REFERENCE[scenario]
        ref = RESULTS.get((scenario, ref_peer))
        ratio = ref.median / row.median if ref is not None else float("nan")
        target = ""
        if peer == subject and want:
            target = f"≥ {want:.2f}× {ref_peer}: {'met' if ratio >= want else 'NOT met'}"
        target = VERDICTS.get((scenario, peer), target)
        if (scenario, peer) in ABSOLUTE:
            unit, limit = ABSOLUTE[(scenario, peer)]
            value = row.median if unit == "s" else row.rss
            verdict = "met" if value <= limit else "NOT met"
            target = (target + "; " if target else "") + f"≤ {limit:g} {unit}: {verdict}"
        lines.append(
            f"| {scenario} | {peer} | {row.median:.2f} | {row.rss:.0f} | {ratio:.2f} | {target} |"
        )
    return "\n".join(lines)
