"""The report's PNG plots (matplotlib, no display needed):

* ``capacity-throughput.png`` — discs/hour against drive count: measured
  points, the projection and each resource's bound;
* ``capacity-stages.png`` — the time per disc, stage by stage, per run;
* ``capacity-utilisation.png`` — CPU, disk and link use over time, per run.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from pdimport.capacity import projection as pj
from pdimport.capacity import timing

_COLOURS = {
    "drives": "tab:blue",
    "CPU": "tab:red",
    "disk": "tab:brown",
    "PACS link": "tab:purple",
}


def _save(plt: Any, fig: Any, path: Path) -> Path:
    """Lay the figure out, write it as ``path`` and free it."""
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def throughput(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    points = report["projection"]
    xs = [p["drives"] for p in points]
    top = max(p["discs_per_hour"] for p in points)
    for name in pj.RESOURCES:
        ys = [p["bounds"][name] for p in points]
        if all(y is None for y in ys):
            continue
        ax.plot(
            xs,
            [y if y is not None else float("nan") for y in ys],
            linestyle=":",
            color=_COLOURS[name],
            label=f"{name} bound",
        )
    ax.plot(xs, [p["discs_per_hour"] for p in points], "-", color="black", label="projection")
    runs = report["runs"]
    ax.plot(
        [r["drives"] for r in runs],
        [r["discs_per_hour"] for r in runs],
        "o",
        markersize=9,
        color="tab:green",
        label="measured",
    )
    for r in runs:
        ax.annotate(
            f"{r['discs_per_hour']:.0f}/h",
            (r["drives"], r["discs_per_hour"]),
            textcoords="offset points",
            xytext=(6, -12),
        )
    finite = [b for p in points for b in p["bounds"].values() if b is not None]
    # Show the nearest bounds above the projection, not one a hundred times higher.
    nearest = min([b for b in finite if b > top * 1.01], default=top)
    ax.set_ylim(0, max(top * 1.4, min(nearest * 1.1, top * 4)))
    if max(finite, default=0) > ax.get_ylim()[1]:
        ax.text(
            0.99,
            0.02,
            "bounds above the plot are far from limiting",
            ha="right",
            transform=ax.transAxes,
            fontsize=7,
            color="grey",
        )
    ax.set_xlabel("drives")
    ax.set_ylabel("discs per hour")
    ax.set_title(
        f"pdimport bench: {report['profile'].upper()} drives, {report['yearly']}", fontsize=9
    )
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _save(plt, fig, path)


def stages(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.5), dpi=110)
    runs = report["runs"]
    labels = [f"{r['drives']} drive{'s' if r['drives'] > 1 else ''}" for r in runs]
    left = [0.0] * len(runs)
    cmap = plt.get_cmap("tab10")
    for i, stage in enumerate(timing.STAGES):
        widths = [r["stages"][stage] for r in runs]
        ax.barh(labels, widths, left=left, color=cmap(i), label=stage)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_xlabel("seconds per disc (mean)")
    ax.set_title("time per disc by stage", fontsize=10)
    ax.legend(fontsize=8, ncol=len(timing.STAGES), loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return _save(plt, fig, path)


def utilisation(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    runs = report["runs"]
    fig, axes = plt.subplots(len(runs), 1, figsize=(7.5, 2.4 * len(runs)), dpi=110, squeeze=False)
    cores = report["environment"].get("cores", 1) or 1
    link = report["demands"].get("link_rate", 0.0)
    for ax, r in zip(axes[:, 0], runs, strict=True):
        series = r["series"]
        if not series:
            continue
        t0 = series[0]["t"]
        ts = [s["t"] - t0 for s in series]
        ax.plot(ts, [s["machine_cpu"] for s in series], color="grey", label="CPU, machine")
        ax.plot(
            ts,
            [s["pdimport_cores"] / cores for s in series],
            color="tab:red",
            label="CPU, pdimport",
        )
        ax.plot(
            ts,
            [s["disk_busy"] for s in series],
            color="tab:brown",
            label="spool disk (device, all users)",
        )
        if link:
            rates = [0.0]
            for a, b in itertools.pairwise(series):
                dt = max(b["t"] - a["t"], 1e-6)
                rates.append((b["bytes_sent"] - a["bytes_sent"]) / dt / link)
            ax.plot(ts, rates, color="tab:purple", label="PACS link")
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("busy")
        ax.set_title(f"{r['drives']} drive(s)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("seconds into the run")
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper right")
    return _save(plt, fig, path)


def write_all(report: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [
        throughput(report, out / "capacity-throughput.png"),
        stages(report, out / "capacity-stages.png"),
        utilisation(report, out / "capacity-utilisation.png"),
    ]
