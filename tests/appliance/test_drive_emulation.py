"""The optical drive emulation in hardware/drive_emulation.py.

A fake clock stands in for time: the emulated drive "sleeps" by advancing
it, so the tests measure model seconds without waiting.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path

import pytest
from fixtures_media import make_iso, make_tree, sha256

from pdimport.media import IsoMedium
from pdimport.model import MediumReadError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hardware"))
import drive_emulation as de

MB = 1_000_000


class FakeClock:
    """``now`` only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds
        self.slept += seconds


@pytest.fixture(scope="module")
def disc(tmp_path_factory):
    """A CD image of 40 files of 200 kB (random: every misread shows)."""
    root = tmp_path_factory.mktemp("drive")
    files = {f"S{i // 10}/IM{i:04d}": os.urandom(200_000 + i) for i in range(40)}
    src = make_tree(root / "src", files)
    return make_iso(src, root / "disc.iso", extra=["-no-pad"]), files


def read_all(medium, entries, pread) -> dict[str, str]:
    out = {}
    for entry in entries:
        with medium.open(entry, pread=pread) as fp:
            out[entry.path] = sha256(fp.read())
    return out


# ------------------------------------------------------------------ model
@pytest.mark.parametrize(
    "profile, inner, outer",
    [
        (de.CD_52X, 3.4 * MB, 8.0 * MB),
        (de.DVD_16X, 9.2 * MB, 22.2 * MB),
        (de.BD_12X, 22.3 * MB, 54.0 * MB),
    ],
)
def test_cav_rates_grow_with_radius(profile, inner, outer):
    assert profile.rate_at(0) == pytest.approx(inner, rel=0.03)
    assert profile.rate_at(profile.capacity) == pytest.approx(outer, rel=0.03)
    assert profile.rate_at(profile.capacity * 4) == profile.outer_rate
    rates = [profile.rate_at(profile.capacity * i // 10) for i in range(11)]
    assert rates == sorted(rates)


@pytest.mark.parametrize(
    "profile, low, high",
    [
        (de.CD_52X, 120, 210),  # full CD: ~2.5 min (hardware notes §3.3)
        (de.DVD_16X, 270, 360),  # DVD-5: ~5-6 min
        (de.BD_12X, 600, 900),  # BD-R 25 GB: ~12-15 min in the notes; 11 min at CAV 12x
    ],
)
def test_full_disc_sequential_time(profile, low, high):
    assert low < de.time_to_read_sequentially(profile.capacity, profile) < high


def test_transfer_time_matches_numeric_integral():
    profile, end = de.DVD_16X, 3_000_000_000
    step = end // 10_000
    numeric = sum(step / profile.rate_at(x + step // 2) for x in range(0, end, step))
    assert profile.transfer_time(0, end) == pytest.approx(numeric, rel=1e-4)
    assert profile.transfer_time(0, end) == pytest.approx(
        profile.transfer_time(0, end // 3) + profile.transfer_time(end // 3, end)
    )
    # past a full disc the rate stays at the rim
    beyond = profile.transfer_time(profile.capacity, profile.capacity + 22_160_000)
    assert beyond == pytest.approx(1.0)


# ------------------------------------------------------- reading an image
def test_lba_order_costs_the_sequential_time(disc, media_settings):
    image, files = disc
    fake = FakeClock()
    medium = IsoMedium(str(image), media_settings)
    try:
        with de.ThrottledPread(image, de.CD_52X, clock=fake.clock, sleep=fake.sleep) as drive:
            digests = read_all(medium, medium.entries(), drive)
    finally:
        medium.close()
    assert digests == {path: sha256(data) for path, data in files.items()}
    model = de.time_to_read_sequentially(image.stat().st_size, de.CD_52X)
    assert drive.stats.seeks == 0 and drive.stats.errors == 0
    assert fake.now == pytest.approx(drive.stats.model_time)
    # only the directory area at the start is not read: within a few percent
    assert fake.now == pytest.approx(model, rel=0.03)


def test_reverse_order_pays_a_seek_per_file(disc, media_settings):
    image, files = disc
    fake = FakeClock()
    medium = IsoMedium(str(image), media_settings)
    try:
        with de.ThrottledPread(image, de.CD_52X, clock=fake.clock, sleep=fake.sleep) as drive:
            digests = read_all(medium, medium.entries()[::-1], drive)
    finally:
        medium.close()
    assert digests == {path: sha256(data) for path, data in files.items()}
    model = de.time_to_read_sequentially(image.stat().st_size, de.CD_52X)
    assert drive.stats.seeks >= len(files) - 1
    assert fake.now > model + 0.9 * (len(files) - 1) * de.CD_52X.seek_time
    # the spin-up hides nothing: without it, reverse costs more than twice forward
    assert fake.now - de.CD_52X.spin_up > 2 * (model - de.CD_52X.spin_up)


def test_short_forward_gap_is_read_through_not_sought(disc):
    image, _ = disc
    fake = FakeClock()
    with de.ThrottledPread(image, de.CD_52X, clock=fake.clock, sleep=fake.sleep) as drive:
        drive(-1, 2048, 0)
        drive(-1, 2048, 4 * 2048)  # 3 sectors skipped: ~2 ms at the inner rate
        drive(-1, 2048, 2048)  # backwards: a seek
        drive(-1, 2048, 600 * 2048)  # 1.2 MB ahead: a seek is cheaper than reading through
    assert (drive.stats.skips, drive.stats.seeks) == (1, 2)


def test_scale_runs_the_model_faster(disc):
    image, _ = disc
    costs = []
    for scale in (1.0, 100.0):
        fake = FakeClock()
        with de.ThrottledPread(
            image, de.DVD_16X, clock=fake.clock, sleep=fake.sleep, scale=scale
        ) as drive:
            for offset in range(0, 4 << 20, 1 << 20):
                drive(-1, 1 << 20, offset)
        costs.append((fake.now, drive.stats.model_time))
    (real1, model1), (real100, model100) = costs
    assert model1 == pytest.approx(model100)
    assert real100 == pytest.approx(real1 / 100)


def test_real_clock_really_waits(disc):
    image, _ = disc
    with de.ThrottledPread(image, de.BD_12X, scale=200.0) as drive:
        started = time.monotonic()
        drive(-1, 1 << 20, 0)
        elapsed = time.monotonic() - started
    assert elapsed >= 0.95 * drive.stats.model_time / 200  # spin-up 5 s -> 25 ms


# ------------------------------------------------------------ bad sectors
def test_bad_sector_short_read_then_eio(disc):
    image, _ = disc
    fake = FakeClock()
    with de.ThrottledPread(
        image, de.CD_52X, clock=fake.clock, sleep=fake.sleep, bad_lbas={100}
    ) as drive:
        assert len(drive(-1, 256 * 1024, 90 * 2048)) == 10 * 2048  # up to the bad sector
        with pytest.raises(OSError) as exc:
            drive(-1, 256 * 1024, 100 * 2048)
        assert exc.value.errno == errno.EIO
        assert len(drive(-1, 2048, 101 * 2048)) == 2048
    assert drive.stats.errors == 2 and drive.stats.bad_reads == [100, 100]
    assert drive.stats.model_time > 2 * de.CD_52X.error_time


def test_bad_sector_is_unreadable_sector_for_that_file_only(disc, media_settings):
    image, files = disc
    medium = IsoMedium(str(image), media_settings)
    fake = FakeClock()
    try:
        victim = medium.entries()[7]
        bad = victim.order + 30
        with de.ThrottledPread(
            image, de.DVD_16X, clock=fake.clock, sleep=fake.sleep, bad_lbas={bad}
        ) as drive:
            readable = {}
            for entry in medium.entries():
                if entry == victim:
                    with (
                        pytest.raises(MediumReadError) as exc,
                        medium.open(entry, pread=drive) as fp,
                    ):
                        fp.read()
                    continue
                with medium.open(entry, pread=drive) as fp:
                    readable[entry.path] = sha256(fp.read())
    finally:
        medium.close()
    assert exc.value.code == "unreadable_sector"
    assert exc.value.detail.endswith(f"unreadable LBA {bad}")
    assert readable == {p: sha256(d) for p, d in files.items() if p != victim.path}
    assert set(drive.stats.bad_reads) == {bad}
