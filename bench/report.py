"""Side-by-side results collected by the benchmarks, printed at the end."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Row:
    scenario: str
    sender: str
    images: int
    megabytes: float
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.images / self.median


ROWS: list[Row] = []


def table() -> str:
    """A markdown table: medians, images/s, MB/s, ratio to the scenario's reference."""
    lines = [
        "| scenario | sender | median s | images/s | MB/s | × reference | rounds |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    reference: dict[str, float] = {}
    for row in ROWS:
        reference.setdefault(row.scenario, row.rate)  # the first row is the reference
        lines.append(
            f"| {row.scenario} | {row.sender} | {row.median:.2f} | {row.rate:.0f} | "
            f"{row.megabytes / row.median:.0f} | {row.rate / reference[row.scenario]:.2f} "
            f"| {len(row.seconds)} |"
        )
    return "\n".join(lines)
