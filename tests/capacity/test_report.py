"""The report's arithmetic: stage split, bounds and bottleneck, the check of
a measured point against the projection, the yearly line, the report files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdimport.capacity import plots, timing
from pdimport.capacity import projection as pj
from pdimport.capacity import report as rp
from pdimport.capacity.command import drive_counts
from pdimport.capacity.probe import decode_core_seconds


def test_stages_come_from_the_job_events_in_order() -> None:
    job = {
        "created": 102.0,
        "state": "imported",
        "events": [
            (102.5, "start_read"),
            (130.0, "read_done"),
            (130.2, "inventory"),
            (133.0, "deliver"),
            (141.0, "delivered"),
        ],
    }
    state, s = timing.disc_timing(100.0, 143.0, job, 141.5, decode_core_seconds=4.0, cores=2)
    assert state == "imported"
    assert s == pytest.approx(
        {
            "detect": 2.5,
            "read": 27.5,  # start_read → read_done
            "scan": 3.0,
            "decode": 2.0,  # 4 core-seconds over 2 cores
            "send": 6.0,
            "label": 0.5,
            "eject": 1.5,
        }
    )
    assert sum(s.values()) == pytest.approx(143.0 - 100.0)


def test_decode_never_exceeds_the_delivery_and_a_lost_disc_is_all_detect() -> None:
    assert timing.split_delivery(3.0, 100.0, 2) == (3.0, 0.0)
    state, s = timing.disc_timing(10.0, 25.0, None, None, 0.0, 2)
    assert state == "missing" and s["detect"] == 15.0 and sum(s.values()) == 15.0


def test_decode_work_counts_only_what_the_destination_refuses() -> None:
    pixels = {"1.2.840.10008.1.2.4.90": 10_000_000, "1.2.840.10008.1.2.1": 5_000_000}
    cost = {"1.2.840.10008.1.2.4.90": 1e-7}
    assert decode_core_seconds(pixels, {"1.2.840.10008.1.2.1"}, cost) == pytest.approx(1.0)
    assert decode_core_seconds(pixels, set(pixels), cost) == 0.0


DEMANDS = pj.Demands(
    drive_s=30.0,  # 120 discs/h per drive
    cpu_s=10.0,  # 2 cores: 720 discs/h
    disk_s=2.0,  # 1800 discs/h
    bytes_sent=100e6,
    link_rate=50e6,  # 1800 discs/h
    cores=2,
)


def test_bounds_projection_and_bottleneck() -> None:
    assert DEMANDS.bounds(1) == pytest.approx(
        {"drives": 120.0, "CPU": 720.0, "disk": 1800.0, "PACS link": 1800.0}
    )
    points = pj.projection(DEMANDS, 8)
    assert [p.discs_per_hour for p in points] == pytest.approx(
        [120, 240, 360, 480, 600, 720, 720, 720]
    )
    assert [p.bottleneck for p in points] == ["drives"] * 5 + ["CPU"] * 3
    assert pj.utilisation(DEMANDS, 360.0) == pytest.approx(
        {"CPU": 0.5, "disk": 0.2, "PACS link": 0.2}
    )
    unmeasured = pj.Demands(30.0, 0.0, 0.0, 0.0, 0.0, 2)
    assert pj.project(unmeasured, 8).discs_per_hour == pytest.approx(960.0)


def test_a_measured_point_is_checked_against_the_projection() -> None:
    ok = pj.check(predicted=480.0, measured=450.0)
    assert ok["within"] and ok["error"] == pytest.approx(-0.0625)
    off = pj.check(predicted=480.0, measured=380.0)
    assert not off["within"]
    assert pj.scaling(one=120.0, n=4, measured=450.0) == pytest.approx(0.9375)


def test_yearly_line() -> None:
    assert pj.yearly(20.5) == pytest.approx(41_000)
    assert pj.yearly_line(20.5, 4, "dvd") == (
        "at 8 h/day, 250 days/year: 41,000 discs/year with 4 DVD drives"
    )
    assert pj.yearly_line(1.0, 1, "cd").endswith("2,000 discs/year with 1 CD drive")


def test_the_bottleneck_is_the_saturated_shared_resource_else_the_drives() -> None:
    use = {
        "drives": 0.99,
        "CPU": 0.3,
        "CPU, whole machine": 0.4,
        "disk": 0.1,
        "PACS link": 0.9,
    }
    name, why = rp.name_bottleneck(use, 4, 2, 50e6)
    assert name == "PACS link" and "90% of 50 MB/s" in why
    name, why = rp.name_bottleneck({**use, "PACS link": 0.2}, 4, 2, 50e6)
    assert name == "drives" and "drives busy 99%" in why
    name, _ = rp.name_bottleneck({**use, "PACS link": 0.2, "CPU, whole machine": 0.95}, 4, 2, 0)
    assert name == "CPU"


def _run(drives: int, dph: float) -> dict:
    return {
        "drives": drives,
        "discs": 4 * drives,
        "discs_per_hour": dph,
        "images_per_s": dph / 3600 * 200,
        "mb_per_s": dph / 3600 * 100,
        "bottleneck": "drives",
        "evidence": "nothing shared saturated",
        "per_drive": [
            {
                "drive": i + 1,
                "devnode": f"/dev/loop{120 + i}",
                "discs": 4,
                "discs_per_hour": dph / drives,
                "mb_per_s": 1.0,
                "busy": 0.98,
            }
            for i in range(drives)
        ],
        "stages": dict.fromkeys(timing.STAGES, 1.0),
        "disc_seconds": 7.0,
        "utilisation": {
            "drives": 0.98,
            "CPU": 0.2,
            "CPU, whole machine": 0.3,
            "disk": 0.1,
            "PACS link": 0.1,
        },
        "notes": [],
        "series": [
            {
                "t": 1000.0 + t,
                "machine_cpu": 0.3,
                "pdimport_cores": 0.4,
                "disk_busy": 0.1,
                "bytes_sent": int(t * 1e6),
            }
            for t in range(10)
        ],
    }


def test_report_files_carry_one_entry_per_measured_drive_count(tmp_path: Path) -> None:
    runs = [_run(1, 118.0), _run(4, 400.0)]
    report = rp.build(runs, DEMANDS, "cd", {"cores": 2, "date": "now"})
    check = report["checks"][0]
    assert check["drives"] == 4 and check["predicted"] == pytest.approx(480.0)
    assert not check["within"] and "below the projection" in check["explanation"]
    assert check["scaling"] == pytest.approx(400.0 / (4 * 118.0))
    assert report["yearly"].endswith("discs/year with 4 CD drives")
    assert "CPU limits" in report["advice"] and report["advice"].startswith("6 drives")
    md, js = rp.write(report, tmp_path)
    data = json.loads(js.read_text())
    for entry in data["runs"]:
        assert {"drives", "discs_per_hour", "images_per_s", "mb_per_s", "bottleneck"} <= set(entry)
    assert [e["drives"] for e in data["runs"]] == [1, 4]
    text = md.read_text()
    assert "| 4 | 16 | 400.0 |" in text and "predicted 480.0 discs/h, measured 400.0" in text
    for png in plots.write_all(report, tmp_path):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_drive_counts() -> None:
    assert drive_counts("4") == [4]
    assert drive_counts("1-8") == list(range(1, 9))
    assert drive_counts("1,4") == [1, 4]
    for bad in ("0", "9", "a", "3-2"):
        with pytest.raises(ValueError, match="--drives"):
            drive_counts(bad)
