"""End to end: a real systemd-udevd, ISO images on loop devices, the daemon in
its own process importing into a file:// destination and "ejecting" (detaching)
each loop device; SIGTERM mid-read and restart; the watch folder across a
restart. Root only."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest
from fixtures_daemon import status, wait_until
from fixtures_dicom import make_ct_series

ROOT = os.geteuid() == 0
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not ROOT, reason="needs root (loop devices, udevd)"),
    pytest.mark.skipif(
        not shutil.which("losetup") or not shutil.which("genisoimage"),
        reason="needs losetup and genisoimage",
    ),
]


def _free_loops(n: int) -> list[str]:
    free = []
    for dev in sorted(Path("/sys/block").glob("loop[0-9]*"), key=lambda p: int(p.name[4:])):
        if not (dev / "loop" / "backing_file").exists():
            free.append(dev.name)
    if len(free) < n:
        pytest.skip(f"needs {n} free loop devices")
    return free[:n]


def _attached(name: str) -> bool:
    return Path(f"/sys/block/{name}/loop/backing_file").exists()


@pytest.fixture(scope="module")
def udevd():
    """A running systemd-udevd: reuse one, else start our own child."""
    running = (
        subprocess.run(
            ["pgrep", "-x", "systemd-udevd"], capture_output=True, check=False
        ).returncode
        == 0
    )
    proc = None
    if not running:
        binary = "/lib/systemd/systemd-udevd"
        if not os.access(binary, os.X_OK):
            pytest.skip("no systemd-udevd")
        proc = subprocess.Popen([binary], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(
            lambda: (
                subprocess.run(
                    ["udevadm", "control", "--ping"],
                    capture_output=True,
                    check=False,
                ).returncode
                == 0
            ),
            10,
            "udevd",
        )
    subprocess.run(["udevadm", "settle", "-t", "10"], check=False)
    yield
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def loops():
    """Loop devices we attach; whatever is still attached is detached after."""
    ours: list[str] = []
    yield ours
    for name in ours:
        if _attached(name):
            subprocess.run(["losetup", "-d", f"/dev/{name}"], check=False)


def make_iso(tmp: Path, name: str, n: int, patient: str) -> Path:
    src = tmp / f"src-{name}"
    make_ct_series(src / "DICOM", n, patient_id=patient)
    iso = tmp / f"{name}.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-J", "-R", "-V", name.upper(), "-o", str(iso), str(src)],
        check=True,
    )
    return iso


def deliveries(state: Path) -> list[tuple]:
    db = sqlite3.connect(state / "journal.sqlite")
    try:
        return db.execute("SELECT sop_instance_uid, state, attempts FROM deliveries").fetchall()
    finally:
        db.close()


def test_three_images_at_once_are_imported_and_detached(udevd, loops, daemon_factory, tmp_path):
    names = _free_loops(3)
    images = [make_iso(tmp_path, f"disc{i}", 4 + i, f"PAT{i}") for i in range(3)]
    state, out = tmp_path / "state", tmp_path / "out"
    d = daemon_factory(
        {"state_dir": str(state), "dest": [f"file://{out}"]},
        {"devices": names, "debounce": 0.5, "eject_after": "delivered"},
    )
    for name, image in zip(names, images):  # at once: no waiting in between
        subprocess.run(
            ["losetup", "-r", "--show", f"/dev/{name}", str(image)], check=True, capture_output=True
        )
        loops.append(name)
    wait_until(lambda: not any(_attached(n) for n in names), 120, "all loop devices detached")
    wait_until(lambda: len(list(out.glob("*"))) == 4 + 5 + 6, 30, "15 instances delivered")
    snap = status(state)
    jobs = [j for j in snap["jobs"].values() if j.get("state") == "imported"]
    assert len(jobs) == 3, snap
    for name in names:
        assert snap["drives"][f"/dev/{name}"]["state"] == "empty"
    rows = deliveries(state)
    assert len(rows) == 15 and all(r[1] == "sent" and r[2] == 1 for r in rows)
    rc, took = d.terminate()
    assert rc == 0 and took < 20
    d.wait_message("STOPPING=1", timeout=5)


def test_sigterm_mid_read_then_restart_loses_nothing_and_sends_once(
    udevd, loops, daemon_factory, tmp_path
):
    (name,) = _free_loops(1)
    image = make_iso(tmp_path, "big", 400, "PATBIG")
    state, out = tmp_path / "state", tmp_path / "out"
    base = {"state_dir": str(state), "dest": [f"file://{out}"]}
    extra = {"devices": [name], "debounce": 0.3}
    d = daemon_factory(base, extra)
    subprocess.run(
        ["losetup", "-r", "--show", f"/dev/{name}", str(image)], check=True, capture_output=True
    )
    loops.append(name)
    wait_until(
        lambda: (
            (state / "status.json").exists()
            and status(state)["drives"].get(f"/dev/{name}", {}).get("state")
            in ("reading", "read", "delivering")
        ),
        60,
        "reading",
    )
    rc, took = d.terminate()
    assert rc == 0 and took < 20
    assert _attached(name), "interrupted before the read ended: not ejected"
    db = sqlite3.connect(state / "journal.sqlite")
    assert (
        db.execute(
            "SELECT COUNT(*) FROM jobs WHERE state IN ('imported','partial','failed','held')"
        ).fetchone()[0]
        == 0
    )
    db.close()
    # Restart: the image is still attached (not ejected), cold plug resumes the job.
    d2 = daemon_factory(base, extra)
    wait_until(lambda: not _attached(name), 120, "detached after the resumed import")
    wait_until(lambda: len(list(out.glob("*"))) == 400, 30, "400 instances")
    rows = deliveries(state)
    assert len(rows) == 400
    assert all(r[1] == "sent" for r in rows)
    assert max(r[2] for r in rows) == 1, "an instance was sent twice"
    rc, _ = d2.terminate()
    assert rc == 0


def test_watch_folder_zip_and_iso_across_restart(daemon_factory, tmp_path):
    state, out, watch = tmp_path / "state", tmp_path / "out", tmp_path / "watch"
    watch.mkdir()
    base = {"state_dir": str(state), "dest": [f"file://{out}"]}
    extra = {"devices": [], "watch": str(watch), "watch_settle": 1.0}
    src = tmp_path / "zipsrc"
    make_ct_series(src, 6, patient_id="PATZIP")
    zbuf = tmp_path / "pkg.zip"
    with zipfile.ZipFile(zbuf, "w") as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"DICOM/{f.name}")
    iso = make_iso(tmp_path, "wiso", 5, "PATISO")

    def copy_slowly(data: Path, dest: Path) -> None:
        blob = data.read_bytes()
        step = -(-len(blob) // 5)
        for i in range(0, len(blob), step):
            with open(dest, "ab") as fp:
                fp.write(blob[i : i + step])
            time.sleep(0.3)

    d = daemon_factory(base, extra)
    writers = [
        threading.Thread(target=copy_slowly, args=(zbuf, watch / "pkg.zip")),
        threading.Thread(target=copy_slowly, args=(iso, watch / "disc.iso")),
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    wait_until(
        lambda: (
            (watch / "imported" / "pkg.zip.json").exists()
            and (watch / "imported" / "disc.iso.json").exists()
        ),
        60,
        "both imported",
    )
    rc, _ = d.terminate()
    assert rc == 0
    d2 = daemon_factory(base, extra)  # restart: nothing imported again
    time.sleep(3)
    rc, _ = d2.terminate()
    assert rc == 0
    assert json.loads((watch / "imported" / "pkg.zip.json").read_text())["status"] == "imported"
    assert len(list(out.glob("*"))) == 11
    rows = deliveries(state)
    assert len(rows) == 11 and max(r[2] for r in rows) == 1
    db = sqlite3.connect(state / "journal.sqlite")
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 2
    db.close()


def test_outage_pacs_down_then_back_everything_arrives_once(daemon_factory, tmp_path):
    """storescp is down while a package is read; it starts later; the daemon
    delivers by itself, each instance once."""
    from fixtures_peers import DCMTK_STORESCP, _stop, free_port, wait_for_port

    if not os.access(DCMTK_STORESCP, os.X_OK):
        pytest.skip("dcmtk storescp not installed")
    port = free_port()
    state, watch, received = tmp_path / "state", tmp_path / "watch", tmp_path / "pacs"
    watch.mkdir()
    received.mkdir()
    base = {
        "state_dir": str(state),
        "dest": [f"dicom://STORESCP@127.0.0.1:{port}"],
        "network.retries": 1,
        "network.retry_delay": 0.5,
        "network.connection_timeout": 2.0,
    }
    extra = {"devices": [], "watch": str(watch), "watch_settle": 0.5, "retry_max_delay": 2.0}
    src = watch / "CD_OUTAGE"
    d = daemon_factory(base, extra)
    make_ct_series(tmp_path / "stage" / "DICOM", 8, patient_id="PATOUT")
    os.rename(tmp_path / "stage", src)  # moved in: complete at once
    waiting = watch / "waiting_for_destination" / "CD_OUTAGE.json"
    wait_until(waiting.exists, 60, "read and queued")
    report = json.loads(waiting.read_text())
    assert report["status"] == "waiting_for_destination"
    assert status(state)["queue"]["retry"] == 1
    proc = subprocess.Popen(
        [DCMTK_STORESCP, "-aet", "STORESCP", "-od", str(received), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        wait_until(lambda: len(list(received.glob("*"))) == 8, 60, "delivered after outage")
        wait_until(lambda: status(state)["queue"]["retry"] == 0, 30, "retry queue empty")
        # The entry and its report followed the job: imported now, nothing left behind.
        done = watch / "imported" / "CD_OUTAGE.json"
        wait_until(done.exists, 30, "result file rewritten")
        assert json.loads(done.read_text())["status"] == "imported"
        assert (watch / "imported" / "CD_OUTAGE").is_dir()
        assert (
            not waiting.exists() and not (watch / "waiting_for_destination" / "CD_OUTAGE").exists()
        )
        rows = deliveries(state)
        assert len(rows) == 8 and all(r[1] == "sent" for r in rows)
        rc, _ = d.terminate()
        assert rc == 0
    finally:
        _stop(proc)
