"""One real browser watches a real disc: headless Debian chromium on the
console of the daemon in its own process, a real systemd-udevd announcing an
ISO image on a loop device, read through the optical drive model
(hardware/fusedrive.py: the drive model of a 52x CD at half speed served
through FUSE behind the loop device) so that it lasts seconds. The drives page updates by server-sent events, without a reload,
from reading (the bar moving) to imported; then the job page; a screenshot of
each page. Root only (loop devices)."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fixtures_console import CHROMEDRIVER, CHROMIUM, PASSWORD, metric
from fixtures_daemon import DaemonProc, status_text
from fixtures_dicom import make_ct_series
from fixtures_peers import free_port
from test_daemon_e2e import _free_loops

from pdimport.console.users import UserStore

HARDWARE = Path(__file__).resolve().parents[2] / "hardware"
sys.path.insert(0, str(HARDWARE))
import fusedrive

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, udevd)"),
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason="needs Debian chromium and chromium-driver (hardware/setup.sh installs them)",
    ),
    pytest.mark.skipif(not shutil.which("genisoimage"), reason="needs genisoimage"),
]


def _disc(tmp: Path) -> Path:
    src = tmp / "disc-src"
    make_ct_series(
        src / "DICOM", 60, patient_id="CDP1", patient_name="Yamada^Hanako", rows=256, cols=256
    )
    iso = tmp / "cd.iso"
    cmd = ["genisoimage", "-quiet", "-J", "-R", "-V", "CT_YAMADA", "-o", str(iso), str(src)]
    subprocess.run(cmd, check=True)
    return iso


_PROGRESS_JS = """
const row = document.querySelector('#drives tr.drive');
if (!row) return null;
const bar = row.querySelector('progress');
return {state: row.querySelector('.drive-state').textContent.trim(),
        value: bar ? bar.value : null,
        marker: window.__notReloaded === true,
        updates: Number(document.getElementById('drives').getAttribute('data-updates') || 0)};
"""


def test_a_disc_on_a_loop_device_is_watched_from_reading_to_imported(
    tmp_path,
    udevd,
    loops,
    browser,
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    (loop,) = _free_loops(1)
    iso = _disc(tmp_path)
    state, out, shots = tmp_path / "state", tmp_path / "out", tmp_path / "artifacts"
    shots.mkdir()
    users = UserStore(state / "users.sqlite")
    users.add("root", "admin", PASSWORD)
    users.close()
    port = free_port()
    daemon = DaemonProc(
        tmp_path,
        {"state_dir": str(state), "dest": [f"file://{out}"], "console.listen": f"127.0.0.1:{port}"},
        {"devices": [loop], "debounce": 0.3, "eject_after": "delivered"},
    )
    url = f"http://127.0.0.1:{port}"
    drive = None

    def shot(name: str) -> None:
        browser.save_screenshot(str(shots / f"{name}.png"))

    def arrived(path: str) -> None:
        WebDriverWait(browser, 15).until(lambda b: b.current_url.split("?")[0].endswith(path))

    try:
        browser.get(f"{url}/drives")
        browser.find_element(By.ID, "name").send_keys("root")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "login").click()
        arrived("/drives")
        browser.execute_script("window.__notReloaded = true;")
        drive = fusedrive.emulated_drive(iso, "cd", scale=0.5, device=f"/dev/{loop}")
        drive.__enter__()  # the disc goes in; the daemon ejects it (detaches the loop)
        loops.append(loop)

        values: list[float] = []
        status_line = row_mid_read = ""
        deadline = time.monotonic() + 120
        seen: dict = {}
        while time.monotonic() < deadline:
            seen = browser.execute_script(_PROGRESS_JS) or {}
            value = seen.get("value")
            if value is not None and (not values or value != values[-1]):
                values.append(float(value))
                if 20 <= value <= 80 and not status_line:
                    shot("drives-reading")
                    status_line = _status(state)
                    row_mid_read = browser.find_element(By.CSS_SELECTOR, "#drives tr.drive").text
            if "imported" in seen.get("state", ""):
                break
            time.sleep(0.1)
        assert "imported" in seen.get("state", ""), seen
        print(f"bar values seen: {values}; page updates by SSE: {seen['updates']}")
        rises = [b for a, b in itertools.pairwise(values) if b > a]
        assert len(rises) >= 2, f"the bar never moved: {values}"
        assert seen["marker"], "the page was reloaded"
        assert seen["updates"] >= 3  # each one an event the server pushed
        assert "Yamada" in row_mid_read, row_mid_read  # named from the headers, mid-read
        # `pdimport status` told the same read in words, mid-read
        assert re.search(
            r"reading \d+% \d+/60 files [\d.]+/[\d.]+ MB [\d.]+ MB/s ETA \d+:\d\d", status_line
        ), status_line
        shot("drives")

        browser.find_element(By.CSS_SELECTOR, "#drives tr.drive a.job").click()
        WebDriverWait(browser, 15).until(lambda b: "/jobs/" in b.current_url)
        live = browser.find_element(By.ID, "live").text
        assert "imported" in live
        assert "Yamada" in browser.page_source
        preview = browser.find_element(By.CSS_SELECTOR, "img.preview")
        WebDriverWait(browser, 30).until(
            lambda b: b.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", preview
            )
        )
        shot("job")
        job_id = browser.current_url.rstrip("/").rsplit("/", 1)[-1]
        for page in ("today", "decisions", "audit", "about", "users"):
            browser.get(f"{url}/{page}")
            arrived(f"/{page}")
            shot(page)
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
        rc, _took = daemon.terminate()
        assert rc == 0
    finally:
        daemon.close()
        if drive is not None:
            drive.__exit__(None, None, None)
    assert len(list(out.glob("*"))) == 60
    db = sqlite3.connect(state / "journal.sqlite")
    try:
        assert db.execute("SELECT id, state FROM jobs").fetchall() == [(job_id, "imported")]
    finally:
        db.close()
    assert metric(metrics, "pdimport_files_read_total") == 60
    assert metric(metrics, 'pdimport_jobs{outcome="imported"}') == 1
    assert sorted(p.stem for p in shots.iterdir()) == sorted(
        ["drives-reading", "drives", "job", "today", "decisions", "audit", "about", "users"]
    )
    keep = os.environ.get("PDIMPORT_ARTIFACTS")
    if keep:  # CI keeps the screenshots
        shutil.copytree(shots, Path(keep) / "console-disc", dirs_exist_ok=True)


def _status(state: Path) -> str:
    out = status_text(state)
    return next((line for line in out.splitlines() if line.startswith("  job ")), out)
