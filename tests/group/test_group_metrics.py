"""Every station's ``/metrics`` counts its own jobs on the group's shared
journal, so a Prometheus sum over the ``station`` label counts each job,
file and acknowledged instance once."""

from __future__ import annotations

from pdimport.console.metrics import JournalCollector
from pdimport.store.journal import Journal


def _samples(collector: JournalCollector) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for m in collector.collect()
        for s in m.samples
    }


def test_each_station_counts_its_own_jobs(pg_url, tmp_path):
    journals = {name: Journal(pg_url, name) for name in ("A", "B")}
    try:
        for name, n in (("A", 3), ("B", 5)):
            j = journals[name]
            job = j.create_job(f"dir:{name}", "dir", f"/media/{name}", name)
            for i in range(n):
                j.record_file(job.id, i, f"f{i}", 1000, f"{name}{i:063d}", "read")
                j.record_delivery(
                    "dicom://PACS@h:104",
                    f"1.2.{name == 'A' and 1 or 2}.{i}",
                    f"{name}{i:063d}",
                    "sent",
                    0,
                    "",
                    "",
                    job.id,
                )
        seen = {}
        for name, j in journals.items():
            collector = JournalCollector(tmp_path / "unused", j, dict, station=name)
            seen[name] = _samples(collector)
        for name, n in (("A", 3), ("B", 5)):
            st = ("station", name)
            assert seen[name][("pdimport_files_read_total", (st,))] == n
            assert seen[name][("pdimport_bytes_read_total", (st,))] == n * 1000
            key = ("pdimport_instances_delivered_total", (("dest", "dicom://PACS@h:104"), st))
            assert seen[name][key] == n
            assert seen[name][("pdimport_jobs", (("outcome", "queued"), st))] == 1
    finally:
        for j in journals.values():
            j.close()
