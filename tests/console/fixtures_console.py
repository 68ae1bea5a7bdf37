"""Fixtures of the console tests: a state directory with a held two-patient
job made by ``pdimport import`` (dcmtk storescp is the PACS, a CSV
table the identity source), accounts, and a TestClient logged in."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fixtures_dicom import make_ct_series

from pdimport.cli import main
from pdimport.console.app import ConsoleDeps, create_app
from pdimport.console.users import UserStore, users_target
from pdimport.job.importer import Importer

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
KANJI = "Satou^Tarou=佐藤^太郎=さとう^たろう"
JAPANESE = {"SpecificCharacterSet": ["ISO 2022 IR 6", "ISO 2022 IR 87"]}
BORN = {"PatientBirthDate": "19800214", "PatientSex": "M"}
PASSWORD = "correct horse battery"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


@dataclass
class Clock:
    """A monotonic clock the test moves (throttle window, idle timeout)."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class HeldDisc:
    cfg: Any
    job: str
    pacs: Any
    report: dict
    clock: Clock = field(default_factory=Clock)


@pytest.fixture
def held_disc(tmp_path: Path, cfg, storescp, capsys) -> HeldDisc:
    """A two-patient disc imported and held (``multi_patient``): F123 (a
    kanji name; L0001 in the registry) and F456 (L0002 in the registry, if
    a person says so)."""
    pacs = storescp(aet="PACS")  # dcmtk: what arrives is what a PACS would store
    table = tmp_path / "patients.csv"
    table.write_text(
        "local_id,issuer,name,birth_date,sex\nL0001,LOCALHOSP,SATO^TARO=サトウ^タロウ,19800214,M\n"
        "L0002,LOCALHOSP,OTHER^PERSON,19800214,M\n",
        encoding="utf-8",
    )
    src = tmp_path / "disc"
    make_ct_series(src / "F123", 2, patient_id="F123", patient_name=KANJI, **JAPANESE, **BORN)
    make_ct_series(src / "F456", 2, patient_id="F456", patient_name="Other^Person", **BORN)
    dest = f"dicom://PACS@127.0.0.1:{pacs.port}"
    cfg = cfg.replace(dest=[dest], reconcile__sources=[f"csv://{table}"])
    argv = ["import", str(src), "--json", "--state-dir", str(cfg.state_path), "--dest", dest]
    assert main([*argv, "--identity", f"csv://{table}"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "held" and report["hold_reasons"] == ["multi_patient"]
    users = UserStore(users_target(cfg))
    for name, role in (("tanaka", "operator"), ("suzuki", "viewer"), ("root", "admin")):
        users.add(name, role, PASSWORD)
    users.close()
    return HeldDisc(cfg, report["job"], pacs, report)


@pytest.fixture
def console(held_disc):
    """``console()`` -> (Console, TestClient) on the held disc's state directory."""
    from starlette.testclient import TestClient

    made = []

    def start(**deps: Any):
        importers: list[Importer] = []

        def importer() -> Importer:
            if not importers:
                importers.append(Importer(held_disc.cfg))
            return importers[0]

        app = create_app(
            ConsoleDeps(
                held_disc.cfg,
                lambda: {"drives": {}, "jobs": {}, "queue": {}},
                importer,
                clock=held_disc.clock,
                **deps,
            )
        )
        client = TestClient(app.app, base_url="http://127.0.0.1")
        made.append((app, client, importers))
        return app, client

    yield start
    for app, client, importers in made:
        client.close()
        app.close()
        for imp in importers:
            imp.close()


def login(client, name: str, password: str = PASSWORD, **headers: str):
    page = client.get("/login", headers=headers)
    return client.post(
        "/login",
        data={"csrf": csrf_of(page.text), "name": name, "password": password, "next": "/drives"},
        headers=headers,
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


def metric(text: str, name: str, station: str | None = None) -> float:
    """The value of one sample of a ``/metrics`` page, named without its
    ``station`` label, which every sample must carry (``station``: its
    value, the host name by default)."""
    import socket

    station = socket.gethostname() if station is None else station
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    for line in samples:
        assert f'station="{station}"' in line, line
    plain = re.sub(r',?station="[^"]*"', "", "\n".join(samples)).replace("{}", "")
    plain = plain.replace("{,", "{")
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", plain, re.MULTILINE)
    assert found, name
    return float(found.group(1))
