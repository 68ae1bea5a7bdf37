"""``pdimport bench``: discs per hour with N drives, and what limits it.

Makes the discs of the mix (cached), starts udev if needed, a receiver (or
uses ``--dest``), probes what the destination accepts and what decoding and
the link cost, then runs the real daemon with each drive count asked for,
and writes the report and the plots to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import math
import os
import platform
import shutil
from pathlib import Path
from typing import Any, Self

from pdimport import __version__
from pdimport.capacity import drivemodel as dm
from pdimport.capacity import generator, plots, probe, runner
from pdimport.capacity import mix as mixmod
from pdimport.capacity import projection as pj
from pdimport.capacity import report as reportmod
from pdimport.capacity.drive import missing_requirements

log = logging.getLogger(__name__)

#: Seconds a disc is expected to spend in a drive beyond the model's read
#: (detect, scan, deliver, label), to size the disc supply of a timed run.
OVERHEAD_GUESS = 5.0


def drive_counts(text: str) -> list[int]:
    """``"4"`` → [4]; ``"1-8"`` → [1..8]; ``"1,4"`` → [1, 4]: each measured in turn."""
    counts: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"--drives {text!r}: expected N, A-B or N,M") from None
        if not 1 <= a <= b <= 8:
            raise ValueError(f"--drives {text!r}: between 1 and 8")
        counts.update(range(a, b + 1))
    return sorted(counts)


def discs_needed(
    mix: mixmod.Mix,
    drives: int,
    minutes: float,
    profile: dm.DriveProfile,
    scale: float,
    cache: Path,
) -> int:
    """Discs enough for ``drives`` drives for ``minutes``, from the model."""
    sample = generator.ensure_discs(mix, min(len(mix.kinds), 4), cache)
    per_disc = sum(dm.time_to_read_sequentially(d.bytes, profile) for d in sample) / len(sample)
    per_disc = max((per_disc + OVERHEAD_GUESS) / scale, 0.5)
    return drives * (math.ceil(minutes * 60 / per_disc) + 2)


def _cache_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pdimport" / "bench"


def real_profile(base: dm.DriveProfile) -> tuple[dm.DriveProfile, list[probe.RealDrive]]:
    found = probe.optical_drives()
    if not found:
        raise ValueError("--real: no optical drive with a disc in it (/dev/sr*)")
    measured = [probe.measure_drive(d) for d in found]
    slowest = min(measured, key=lambda m: m.inner_rate)
    prof = dm.custom_profile(
        f"measured {slowest.devnode}",
        slowest.inner_rate,
        slowest.outer_rate,
        slowest.access_time,
        base,
    )
    return prof, measured


class _Progress:
    """Per-drive progress bars (rich), quiet when stdout is not a terminal."""

    def __init__(self, drives: int, total: float, by_time: bool) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[done]}"),
            TimeElapsedColumn(),
            disable=not os.isatty(1),
        )
        self.by_time = by_time
        self.overall = self.progress.add_task("run", total=total, done="")
        self.tasks = [
            self.progress.add_task(f"drive {i + 1}", total=None, done="0 discs")
            for i in range(drives)
        ]
        self.counts = [0] * drives
        self.started = 0.0

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        import time

        if not self.started:
            self.started = time.monotonic()
        if event == "insert":
            self.progress.update(
                self.tasks[fields["drive"]],
                description=f"drive {fields['drive'] + 1}: {fields['disc'][:22]}",
            )
        elif event == "ejected":
            i = fields["drive"]
            self.counts[i] += 1
            self.progress.update(self.tasks[i], done=f"{self.counts[i]} discs", advance=1)
            if not self.by_time:
                self.progress.update(self.overall, advance=1, done=f"{sum(self.counts)} discs")
        if self.by_time:
            self.progress.update(self.overall, completed=time.monotonic() - self.started)

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def bench_main(args: argparse.Namespace, dests: list[str] | None = None) -> int:
    """Run the bench; the exit status (0 ok, 2 cannot run, 64 usage).

    ``dests``: the configured destinations (``--dest`` or the config file);
    the first one takes the discs instead of the bench's own receiver.
    """
    chosen = dests[0] if dests else None
    counts = drive_counts(args.drives)
    if args.scale <= 0:
        raise ValueError("--scale must be positive")
    if args.discs is not None and args.discs < 1:
        raise ValueError("--discs must be at least 1")
    why = missing_requirements()
    if why:
        print(f"pdimport bench: emulated drives {why}")
        return 2
    profile = dm.PROFILES[args.profile]
    real: list[probe.RealDrive] = []
    if args.real:
        profile, real = real_profile(profile)
    mix = mixmod.load(args.mix).for_profile(args.profile)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"pdimport-bench-{stamp}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = _cache_dir(args.cache)
    minutes = args.minutes if args.discs is None else None
    if args.discs is None and minutes is None:
        minutes = 2.0
    need = args.discs or discs_needed(mix, max(counts), minutes or 2.0, profile, args.scale, cache)
    print(
        f"pdimport bench: {len(counts)} run(s) of {counts} {args.profile.upper()} drive(s); "
        f"making {need} disc(s) of the mix ({mix.source}) in {cache}",
        flush=True,
    )
    discs = generator.ensure_discs(mix, need, cache)
    receiver = None
    udevd = runner.Udevd()
    try:
        dest = chosen
        if not dest:
            receiver = runner.Receiver(out / "pacs", args.receiver).start()
            dest = receiver.url
        accepted = probe.accepted_syntaxes(dest)
        used = {ts for d in discs for ts in d.instances}
        cost = probe.decode_seconds_per_byte(used - accepted)
        pipe = probe.pipeline_probe(Path(discs[0].path), dest, out / "probe")
        disk_rate = probe.disk_write_rate(out / "probe")
        print(
            f"probe: {dest} accepts {len(accepted)} of {len(mixmod.SYNTAXES)} syntaxes; "
            f"{pipe.disc} imported from disk in {pipe.seconds:.1f} s, delivery "
            f"{pipe.send_rate / 1e6:.1f} MB/s; spool disk {disk_rate / 1e6:.0f} MB/s durable",
            flush=True,
        )
        udevd.start()
        runs = []
        for n in counts:
            folder = out / f"run-{n}-drives"
            shutil.rmtree(folder, ignore_errors=True)
            with _Progress(n, (minutes or 0) * 60 or float(args.discs), minutes is not None) as bar:
                result = runner.run(
                    discs[: args.discs] if args.discs else discs,
                    n,
                    profile,
                    folder,
                    dest,
                    minutes,
                    args.scale,
                    receiver.pid if receiver else 0,
                    bar,
                )
            summary = reportmod.summarise(result, accepted, cost, pipe.send_rate, disk_rate)
            runs.append(summary)
            print(
                f"{n} drive(s): {summary['discs']} discs, {summary['discs_per_hour']:.1f} discs/h, "
                f"{summary['images_per_s']:.1f} images/s, {summary['mb_per_s']:.2f} MB/s; "
                f"bottleneck {summary['bottleneck']}",
                flush=True,
            )
    finally:
        udevd.stop()
        if receiver is not None:
            receiver.stop()
    first = min(runs, key=lambda r: r["drives"])
    demands = pj.Demands(**first["demands"])
    env = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cores": os.cpu_count(),
        "version": __version__,
        "mix": mix.source,
        "shares": mix.shares(),
        "receiver": (receiver.kind if receiver else chosen),
        "dest": chosen or "",
        "model": profile.name,
        "scale": args.scale,
        "real_drives": [vars(r) for r in real],
        "accepted_syntaxes": sorted(accepted),
        "decode_seconds_per_mb": {k: v * 1e6 for k, v in cost.items()},
        "pipeline_probe": vars(pipe),
        "disk_write_rate": disk_rate,
    }
    full = reportmod.build(runs, demands, args.profile, env)
    md, js = reportmod.write(full, out)
    pngs = plots.write_all(full, out)
    print(reportmod.markdown(full).split("## Projection")[0].split("## Measured")[1].strip())
    print(f"\n{full['yearly']}\n{full['advice']}.")
    for c in full["checks"]:
        print(f"projection check, {c['drives']} drives: {c['explanation']} ({c['error']:+.0%})")
    print(f"\nreport: {md}\n        {js}\nplots:  " + "\n        ".join(str(p) for p in pngs))
    return 0
