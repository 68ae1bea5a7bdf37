"""One real browser against the real daemon: headless Debian chromium logs
in, sees the drives page, opens the decisions page and releases a held
two-patient disc. Screenshots of each page go to ``tmp_path/artifacts``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
from fixtures_console import PASSWORD
from fixtures_daemon import DaemonProc
from fixtures_peers import free_port

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="needs Debian chromium and chromium-driver (hardware/setup.sh installs them)",
)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,900",
        "--lang=en-US",
        "--disable-dev-shm-usage",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(10)
    yield driver
    driver.quit()


def test_log_in_watch_the_drives_and_release_a_held_disc(tmp_path, held_disc, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def arrived(path: str) -> None:
        # A click only starts the navigation: the old page's elements go stale.
        WebDriverWait(browser, 15).until(lambda b: b.current_url.split("?")[0].endswith(path))

    shots = tmp_path / "artifacts"
    shots.mkdir()
    port = free_port()
    cfg = held_disc.cfg
    daemon = DaemonProc(
        tmp_path,
        {
            "state_dir": str(cfg.state_path),
            "dest": list(cfg.dest),
            "reconcile.sources": list(cfg.get("reconcile.sources")),
            "console.listen": f"127.0.0.1:{port}",
        },
        {"devices": []},
    )
    url = f"http://127.0.0.1:{port}"

    def shot(name: str) -> None:
        browser.save_screenshot(str(shots / f"{name}.png"))

    def release(patient: str, typed_id: str | None) -> str:
        browser.get(f"{url}/decisions")
        form = browser.find_element(By.ID, f"patient-{held_disc.job}-{patient}")
        if typed_id:
            form.find_element(By.NAME, "typed_id").send_keys(typed_id)
        action = "release" if typed_id else "keep_foreign"
        form.find_element(By.CSS_SELECTOR, f"button[value={action}]").click()
        arrived("/decisions/confirm")
        shot(f"confirm-{patient}")
        browser.find_element(By.ID, "confirm").click()
        arrived("/decisions/apply")
        return browser.find_element(By.ID, "result").text

    try:
        browser.get(f"{url}/drives")
        assert "/login" in browser.current_url and "Satou" not in browser.page_source
        browser.find_element(By.ID, "name").send_keys("tanaka")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        shot("login")
        browser.find_element(By.ID, "login").click()
        arrived("/drives")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Drives"
        assert "Watch folder" in browser.find_element(By.ID, "drives").text
        shot("drives")
        browser.get(f"{url}/decisions")
        assert "Satou" in browser.page_source
        shot("decisions")
        assert "needs a decision" in release("F123", "L0001")
        assert "imported" in release("F456", None)
        shot("result")
        browser.get(f"{url}/today?date=")
        shot("today")
        browser.get(f"{url}/jobs/{held_disc.job}")
        assert "tanaka" in browser.page_source
        shot("job")
        rc, _took = daemon.terminate()
        assert rc == 0
    finally:
        daemon.close()
    stored = [p for p in held_disc.pacs.out_dir.iterdir() if p.is_file()]
    ids = sorted(str(pydicom.dcmread(p, stop_before_pixels=True).PatientID) for p in stored)
    assert ids == ["F456", "F456", "L0001", "L0001"]
    assert sorted(p.name for p in shots.iterdir()) == [
        "confirm-F123.png",
        "confirm-F456.png",
        "decisions.png",
        "drives.png",
        "job.png",
        "login.png",
        "result.png",
        "today.png",
    ]
    keep = os.environ.get("PDIMPORT_ARTIFACTS")
    if keep:  # CI keeps the screenshots
        shutil.copytree(shots, Path(keep) / "console", dirs_exist_ok=True)
