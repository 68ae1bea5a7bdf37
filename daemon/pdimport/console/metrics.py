"""``/metrics`` in the Prometheus text format, counted from the journal and
the status board at scrape time (nothing is kept in memory to drift from them).

Metric names:

* ``pdimport_jobs{outcome}`` — jobs in the journal by state;
* ``pdimport_decisions_pending`` — held patients waiting for a person;
  ``pdimport_held_jobs`` — jobs held;
* ``pdimport_queue_length{queue}`` — the daemon's queues (``watch``, ``retry``);
* ``pdimport_drives{state}`` — drives by state;
* ``pdimport_files_read_total``, ``pdimport_bytes_read_total`` — files read
  into the spool; ``pdimport_file_errors_total`` — files that could not be;
* ``pdimport_instances_delivered_total{dest}`` — instances a destination acknowledged;
  ``pdimport_bytes_delivered_total{dest}`` — bytes of their originals;
* ``pdimport_stage_seconds{stage}`` — histogram of the time jobs spent
  reading, scanning (inventory) and delivering;
* ``pdimport_delivery_latency_seconds{dest}`` — histogram of the time from a
  job's start to each of its instances acknowledged.

Every sample carries a ``station`` label (``station.name``, else the host
name): the stations of a hospital group share one journal, and Prometheus
tells their scrapes apart by it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from pdimport.console import journal_stats
from pdimport.job.holdqueue import held_jobs
from pdimport.job.lifecycle import JobState
from pdimport.store.journal import Journal


class JournalCollector:
    """A prometheus_client collector over ``journal.sqlite`` and the board."""

    def __init__(
        self,
        journal_path: Path,
        journal: Journal,
        snapshot: Callable[[], dict[str, Any]],
        station: str = "",
    ) -> None:
        self.journal_path = journal_path
        self.journal = journal
        self.snapshot = snapshot
        self.station = station

    def collect(self) -> Iterator[Metric]:
        for metric in self._collect():
            metric.samples = [
                s._replace(labels={**s.labels, "station": self.station}) for s in metric.samples
            ]
            yield metric

    def _collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "pdimport_jobs", "jobs in the journal by state", labels=["outcome"]
        )
        read = CounterMetricFamily("pdimport_files_read", "files read into the spool")
        nbytes = CounterMetricFamily("pdimport_bytes_read", "bytes read into the spool")
        errors = CounterMetricFamily("pdimport_file_errors", "files that could not be read")
        sent = CounterMetricFamily(
            "pdimport_instances_delivered", "instances acknowledged", labels=["dest"]
        )
        nsent = CounterMetricFamily(
            "pdimport_bytes_delivered",
            "bytes of the originals whose instances were acknowledged",
            labels=["dest"],
        )
        stages = HistogramMetricFamily(
            "pdimport_stage_seconds", "seconds jobs spent in each stage", labels=["stage"]
        )
        latency = HistogramMetricFamily(
            "pdimport_delivery_latency_seconds",
            "seconds from a job's start to each instance acknowledged",
            labels=["dest"],
        )
        by_state = dict.fromkeys((str(s) for s in JobState), 0)
        durations: dict[str, journal_stats.Histogram] = {
            stage: journal_stats.Histogram(journal_stats.STAGE_BUCKETS)
            for stage in journal_stats.STAGES.values()
        }
        with journal_stats.reader(self.journal) as db:
            if db is not None:
                mine, arg = journal_stats.own(db, self.station, "id")
                for state, n in db.execute(
                    f"SELECT state, count(*) FROM jobs WHERE 1 = 1{mine} GROUP BY state", arg
                ):
                    by_state[state] = n
                mine, arg = journal_stats.own(db, self.station)
                files = db.execute(
                    f"SELECT count(*), coalesce(sum(size), 0) FROM files WHERE state='read'{mine}",
                    arg,
                ).fetchone()
                failed = db.execute(
                    f"SELECT count(*) FROM files WHERE state='error'{mine}", arg
                ).fetchone()
                delivered = db.execute(
                    f"SELECT dest, count(*) FROM deliveries WHERE state='sent'{mine} GROUP BY dest",
                    arg,
                ).fetchall()
                durations = journal_stats.stage_durations(db, self.station)
                latencies = journal_stats.delivery_latency(db, self.station)
                for dest, n in journal_stats.bytes_delivered(db, self.station):
                    nsent.add_metric([dest], n)
                read.add_metric([], files[0])
                nbytes.add_metric([], files[1])
                errors.add_metric([], failed[0])
                for dest, n in delivered:
                    sent.add_metric([dest], n)
                for dest, hist in sorted(latencies.items()):
                    latency.add_metric([dest], hist.buckets(), hist.total)
        for stage, hist in durations.items():
            stages.add_metric([stage], hist.buckets(), hist.total)
        for state, n in sorted(by_state.items()):
            jobs.add_metric([state], n)
        yield from (jobs, read, nbytes, errors, sent, nsent, stages, latency)
        held = held_jobs(self.journal)
        yield GaugeMetricFamily("pdimport_held_jobs", "jobs held for a decision", value=len(held))
        yield GaugeMetricFamily(
            "pdimport_decisions_pending",
            "held patients waiting for a decision",
            value=sum(len(j["patients"]) for j in held),
        )
        snap = self.snapshot()
        queues = GaugeMetricFamily("pdimport_queue_length", "daemon queues", labels=["queue"])
        for name, n in sorted({"watch": 0, "retry": 0, **snap.get("queue", {})}.items()):
            queues.add_metric([name], n)
        drives = GaugeMetricFamily("pdimport_drives", "drives by state", labels=["state"])
        states: dict[str, int] = {}
        for drive in snap.get("drives", {}).values():
            states[drive.get("state", "?")] = states.get(drive.get("state", "?"), 0) + 1
        for state, n in sorted(states.items()):
            drives.add_metric([state], n)
        yield from (queues, drives)


def registry(collector: JournalCollector) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
