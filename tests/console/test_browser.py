"""One real browser against the real daemon: headless Debian chromium logs
in; a viewer is refused a release, the Japanese page shows the kanji name, a
form without its CSRF token is refused; an operator releases a held
two-patient disc patient by patient and both arrive at dcmtk storescp under
the chosen IDs. Screenshots of each page go to ``tmp_path/artifacts``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
from fixtures_console import CHROMEDRIVER, CHROMIUM, PASSWORD
from fixtures_daemon import DaemonProc
from fixtures_peers import free_port

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="needs Debian chromium and chromium-driver (hardware/setup.sh installs them)",
)


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

    def log_in(name: str) -> None:
        browser.get(f"{url}/drives")
        assert "/login" in browser.current_url and "Satou" not in browser.page_source
        browser.find_element(By.ID, "name").send_keys(name)
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "login").click()
        arrived("/drives")

    def log_out() -> None:
        browser.find_element(By.CSS_SELECTOR, "header form button").click()
        arrived("/login")

    try:
        # A viewer sees the held disc but cannot release it.
        log_in("suzuki")
        browser.get(f"{url}/decisions")
        form = browser.find_element(By.ID, f"patient-{held_disc.job}-F456")
        form.find_element(By.CSS_SELECTOR, "button[value=keep_foreign]").click()
        WebDriverWait(browser, 15).until(lambda b: b.find_elements(By.ID, "error"))
        assert "may not do this" in browser.find_element(By.ID, "error").text
        shot("viewer-refused")
        # In Japanese (the switch on every page) the kanji name is shown.
        browser.get(f"{url}/decisions")
        browser.find_element(By.LINK_TEXT, "日本語").click()
        WebDriverWait(browser, 15).until(
            lambda b: "要判断" in b.find_element(By.TAG_NAME, "h1").text
        )
        assert "佐藤 太郎" in browser.find_element(By.ID, f"patient-{held_disc.job}-F123").text
        shot("decisions-ja")
        browser.find_element(By.LINK_TEXT, "English").click()
        WebDriverWait(browser, 15).until(
            lambda b: b.find_element(By.TAG_NAME, "h1").text == "Decisions"
        )
        log_out()
        # An operator's form whose CSRF token was taken out is refused.
        log_in("tanaka")
        browser.get(f"{url}/decisions")
        form = browser.find_element(By.ID, f"patient-{held_disc.job}-F456")
        browser.execute_script(
            "arguments[0].querySelector('input[name=csrf]').remove()",
            form.find_element(By.TAG_NAME, "form"),
        )
        form.find_element(By.CSS_SELECTOR, "button[value=keep_foreign]").click()
        WebDriverWait(browser, 15).until(lambda b: b.find_elements(By.ID, "error"))
        assert "CSRF token missing" in browser.find_element(By.ID, "error").text
        log_out()
        browser.get(f"{url}/drives")
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
        assert "imported" in release("F456", "L0002")
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
    # Both patients arrived at storescp, each under the local ID chosen for it.
    stored = [p for p in held_disc.pacs.out_dir.iterdir() if p.is_file()]
    ids = sorted(str(pydicom.dcmread(p, stop_before_pixels=True).PatientID) for p in stored)
    assert ids == ["L0001", "L0001", "L0002", "L0002"]
    assert sorted(p.name for p in shots.iterdir()) == [
        "confirm-F123.png",
        "confirm-F456.png",
        "decisions-ja.png",
        "decisions.png",
        "drives.png",
        "job.png",
        "login.png",
        "result.png",
        "today.png",
        "viewer-refused.png",
    ]
    keep = os.environ.get("PDIMPORT_ARTIFACTS")
    if keep:  # CI keeps the screenshots
        shutil.copytree(shots, Path(keep) / "console", dirs_exist_ok=True)
