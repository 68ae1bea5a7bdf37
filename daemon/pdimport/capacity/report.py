"""The numbers of a bench: per run (one per drive count), the projection,
and ``report.md`` / ``report.json`` (one entry per measured drive count with
``drives``, ``discs_per_hour``, ``images_per_s``, ``mb_per_s`` and
``bottleneck``; field names are stable, new fields may be added)."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pdimport.capacity import projection as pj
from pdimport.capacity import timing
from pdimport.capacity.probe import decode_core_seconds
from pdimport.capacity.runner import RunResult

#: A shared resource this busy is saturated: adding drives will not help.
SATURATED = 0.85


def _bytes_sent(state: Path) -> int:
    from pdimport.capacity.sampler import journal_counts

    return journal_counts(state / "journal.sqlite")[1]


def _received(state: Path) -> int:
    db = sqlite3.connect(f"file:{state / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM deliveries WHERE state='sent'").fetchone()[0])
    finally:
        db.close()


def summarise(
    run: RunResult,
    accepted: set[str],
    decode_cost: dict[str, float],
    link_rate: float,
    disk_rate: float,
    cores: int | None = None,
) -> dict[str, Any]:
    """One run's figures: throughput overall and per drive, the stage split,
    the resources' use, the bottleneck with its evidence, and the demands."""
    cores = cores or os.cpu_count() or 1
    discs = [d for d in run.discs if d.ejected > 0]
    jobs = timing.job_records(run.state_dir / "journal.sqlite")
    labels = timing.label_times(run.state_dir)
    timings = []
    for d in discs:
        job = jobs.get(d.disc.label)
        decode = decode_core_seconds(d.disc.pixel_bytes, accepted, decode_cost)
        state, stages = timing.disc_timing(
            d.inserted, d.ejected, job, labels.get(job["id"]) if job else None, decode, cores
        )
        timings.append(
            timing.DiscTiming(
                d.disc.label,
                job["id"] if job else "",
                state,
                d.ejected - d.inserted,
                stages,
                d.disc.dicom,
                d.disc.bytes,
            )
        )
    unread = {t.label for t in timings if t.state == "missing"}
    per_drive: list[dict[str, Any]] = []
    for i, dev in enumerate(run.devnodes):
        fed = [d for d in discs if d.drive == i]
        window = (max(d.ejected for d in fed) - min(d.inserted for d in fed)) if fed else 0.0
        busy = sum(d.ejected - d.inserted for d in fed)
        # A disc the daemon never made a job of was not imported: not counted.
        mine = [d for d in fed if d.disc.label not in unread]
        rate = len(mine) * 3600.0 / window if window > 0 else 0.0
        per_drive.append(
            {
                "drive": i + 1,
                "devnode": dev,
                "discs": len(mine),
                "discs_per_hour": rate,
                "images_per_s": rate / 3600 * sum(d.disc.dicom for d in mine) / max(len(mine), 1),
                "mb_per_s": rate / 3600 * sum(d.disc.bytes for d in mine) / max(len(mine), 1) / 1e6,
                "busy": busy / window if window > 0 else 0.0,
            }
        )
    notes = list(run.notes)
    if unread:
        notes.append(
            f"{len(unread)} disc(s) came out of a drive without a job (the daemon never read "
            f"them): {', '.join(sorted(unread))}; not counted"
        )
    discs = [d for d in discs if d.disc.label not in unread]
    timings = [t for t in timings if t.state != "missing"]
    n = max(len(discs), 1)
    dph = sum(p["discs_per_hour"] for p in per_drive)
    images = sum(d.disc.dicom for d in discs) / n
    mean_bytes = sum(d.disc.bytes for d in discs) / n
    window = run.ended - run.started
    totals = run.totals
    sent = _bytes_sent(run.state_dir)
    demands = pj.Demands(
        drive_s=sum(t.total for t in timings) / n + _swap_gap(run),
        cpu_s=totals.pdimport_cpu / n,
        disk_s=totals.written / n / disk_rate if disk_rate > 0 else 0.0,
        bytes_sent=sent / n,
        link_rate=link_rate,
        cores=cores,
    )
    samples = totals.samples
    machine = sum(s.machine_cpu for s in samples) / max(len(samples), 1)
    use = {
        "drives": sum(p["busy"] for p in per_drive) / max(len(per_drive), 1),
        "CPU": totals.pdimport_cpu / window / cores if window > 0 else 0.0,
        "CPU, whole machine": machine,
        "CPU, emulated drives": totals.drives_cpu / window / cores if window > 0 else 0.0,
        "CPU, receiver": totals.receiver_cpu / window / cores if window > 0 else 0.0,
        "disk": totals.written / window / disk_rate if window > 0 and disk_rate > 0 else 0.0,
        "disk, whole device": totals.disk_busy / window if window > 0 else 0.0,
        "PACS link": (sent / window / link_rate) if window > 0 and link_rate > 0 else 0.0,
    }
    bottleneck, evidence = name_bottleneck(use, run.drives, cores, link_rate)
    states: dict[str, int] = {}
    for t in timings:
        states[t.state] = states.get(t.state, 0) + 1
    return {
        "drives": run.drives,
        "discs": len(discs),
        "discs_per_hour": dph,
        "images_per_s": dph / 3600 * images,
        "mb_per_s": dph / 3600 * mean_bytes / 1e6,
        "bottleneck": bottleneck,
        "evidence": evidence,
        "per_drive": per_drive,
        "stages": timing.mean_stages(timings),
        "disc_seconds": sum(t.total for t in timings) / n,
        "utilisation": use,
        "demands": asdict(demands),
        "job_states": states,
        "instances_delivered": _received(run.state_dir),
        "window_s": window,
        "timed_out": sum(d.timed_out for d in discs),
        "notes": notes,
        "series": [asdict(s) for s in samples],
        "discs_detail": [asdict(t) for t in timings],
    }


def _swap_gap(run: RunResult) -> float:
    """Mean seconds a drive stood empty between an eject and the next insert."""
    gaps = []
    for i in range(run.drives):
        mine = sorted((d for d in run.discs if d.drive == i), key=lambda d: d.inserted)
        gaps += [b.inserted - a.ejected for a, b in itertools.pairwise(mine)]
    return sum(gaps) / len(gaps) if gaps else 0.0


def name_bottleneck(
    use: dict[str, float], drives: int, cores: int, link_rate: float
) -> tuple[str, str]:
    """The saturated shared resource, else the drives; and why."""
    shared = {k: use[k] for k in ("CPU", "disk", "PACS link")}
    worst = max(shared, key=lambda k: shared[k])
    facts = (
        f"drives busy {use['drives']:.0%} of the run; pdimport used {use['CPU']:.0%} of "
        f"{cores} cores (the whole machine {use['CPU, whole machine']:.0%}); pdimport's writes "
        f"took {use['disk']:.0%} of the spool disk's rate (the device busy "
        f"{use.get('disk, whole device', 0.0):.0%} with every user); PACS link "
        + (
            f"at {use['PACS link']:.0%} of {link_rate / 1e6:.0f} MB/s"
            if link_rate
            else "not measured"
        )
    )
    if shared[worst] >= SATURATED:
        return worst, f"{worst} saturated: {facts}"
    if use["CPU, whole machine"] >= SATURATED:
        return "CPU", f"CPU saturated by the machine as a whole (other work too): {facts}"
    return "drives", f"nothing shared saturated, the drives set the pace: {facts}"


def build(
    runs: list[dict[str, Any]],
    demands: pj.Demands,
    profile: str,
    environment: dict[str, Any],
) -> dict[str, Any]:
    """The whole report: measured runs, the projection and its check."""
    points = pj.projection(demands, 8)
    one = next((r for r in runs if r["drives"] == 1), runs[0])
    checks = []
    for r in runs:
        if r is one:
            continue
        predicted = pj.project(demands, r["drives"]).discs_per_hour
        c = pj.check(predicted, r["discs_per_hour"])
        c["drives"] = r["drives"]
        c["scaling"] = pj.scaling(
            one["discs_per_hour"] / one["drives"], r["drives"], r["discs_per_hour"]
        )
        c["explanation"] = _explain(c, r)
        checks.append(c)
    best = max(points, key=lambda p: p.discs_per_hour)
    knee = next(p for p in points if p.discs_per_hour >= 0.99 * best.discs_per_hour)
    measured = max(runs, key=lambda r: r["drives"])
    return {
        "profile": profile,
        "environment": environment,
        "runs": [{k: v for k, v in r.items()} for r in runs],
        "demands": asdict(demands),
        "projection": [pj.as_dict(p) for p in points],
        "checks": checks,
        "yearly": pj.yearly_line(measured["discs_per_hour"], measured["drives"], profile),
        "yearly_projected": pj.yearly_line(knee.discs_per_hour, knee.drives, profile),
        "advice": (
            f"{knee.drives} drive{'s' if knee.drives > 1 else ''} reach "
            f"{knee.discs_per_hour:.0f} discs/h; beyond that the {knee.bottleneck} "
            "limits and more drives add nothing"
            if knee.bottleneck != "drives"
            else f"every drive up to 8 adds throughput: the drives remain the bottleneck "
            f"({best.discs_per_hour:.0f} discs/h with 8)"
        ),
    }


def _explain(c: dict[str, Any], run: dict[str, Any]) -> str:
    if c["within"]:
        return f"within {pj.TOLERANCE:.0%} of the projection"
    use = run["utilisation"]
    if use["CPU, whole machine"] >= SATURATED and use["CPU"] < SATURATED:
        return (
            "off the projection: the machine's CPU was saturated by other work as well "
            f"({use['CPU, whole machine']:.0%} busy, pdimport {use['CPU']:.0%})"
        )
    if c["error"] < 0:
        return (
            "below the projection: the demands measured with one drive grew under load "
            f"(a disc took {run['disc_seconds']:.0f} s here); bottleneck {run['bottleneck']}"
        )
    return "above the projection: one drive's run was slowed by something the others were not"


# ---------------------------------------------------------------- writing
def write(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    js = out / "report.json"
    js.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    md = out / "report.md"
    md.write_text(markdown(report), encoding="utf-8")
    return md, js


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# pdimport bench: {report['profile'].upper()} drives",
        "",
        f"Measured {env.get('date', '')} on {env.get('host', '')} ({env.get('cores')} cores), "
        f"pdimport {env.get('version', '')}; mix {env.get('mix', '')}; receiver "
        f"{env.get('receiver', '')}; drive model {env.get('model', '')}"
        + (f", {env['scale']:g}x faster than real time" if env.get("scale", 1) != 1 else "")
        + ".",
        "",
        "## Measured",
        "",
        "| drives | discs | discs/h | images/s | MB/s | bottleneck |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['drives']} | {r['discs']} | {r['discs_per_hour']:.1f} | "
            f"{r['images_per_s']:.1f} | {r['mb_per_s']:.2f} | {r['bottleneck']} |"
        )
    lines += ["", "Per drive:", "", "| drives | drive | device | discs | discs/h | MB/s | busy |"]
    lines.append("|---:|---:|---|---:|---:|---:|---:|")
    for r in report["runs"]:
        for p in r["per_drive"]:
            lines.append(
                f"| {r['drives']} | {p['drive']} | {p['devnode']} | {p['discs']} | "
                f"{p['discs_per_hour']:.1f} | {p['mb_per_s']:.2f} | {p['busy']:.0%} |"
            )
    lines += ["", "## Time per disc (mean seconds)", ""]
    stages = timing.STAGES
    lines.append("| drives | " + " | ".join(stages) + " | total |")
    lines.append("|---:|" + "---:|" * (len(stages) + 1))
    for r in report["runs"]:
        s = r["stages"]
        lines.append(
            f"| {r['drives']} | "
            + " | ".join(f"{s[k]:.1f}" for k in stages)
            + f" | {r['disc_seconds']:.1f} |"
        )
    lines += [
        "",
        "decode is estimated: it runs inside the send workers (see pdimport.capacity.timing).",
        "",
        "## Bottleneck",
        "",
    ]
    for r in report["runs"]:
        lines.append(f"- {r['drives']} drive(s): **{r['bottleneck']}**. {r['evidence']}.")
        for note in r["notes"]:
            lines.append(f"  - note: {note}")
    lines += ["", "## Projection (from the 1-drive demands)", ""]
    lines.append("| drives | discs/h | bottleneck | drives | CPU | disk | PACS link |")
    lines.append("|---:|---:|---|---:|---:|---:|---:|")
    for p in report["projection"]:
        b = p["bounds"]
        cells = " | ".join("∞" if b[k] is None else f"{b[k]:.0f}" for k in pj.RESOURCES)
        lines.append(f"| {p['drives']} | {p['discs_per_hour']:.1f} | {p['bottleneck']} | {cells} |")
    if report["checks"]:
        lines += ["", "Checked against the measured runs:", ""]
        for c in report["checks"]:
            lines.append(
                f"- {c['drives']} drives: predicted {c['predicted']:.1f} discs/h, measured "
                f"{c['measured']:.1f} ({c['error']:+.0%}; {c['scaling']:.2f} x {c['drives']} of "
                f"one drive): {c['explanation']}."
            )
    lines += [
        "",
        "## Yearly capacity",
        "",
        f"- measured: {report['yearly']}",
        f"- projected: {report['yearly_projected']}",
        f"- {report['advice']}.",
        "",
    ]
    return "\n".join(lines)
