"""The admin users page, the job page (previews, marks, problems in words,
reprint, retry) and /metrics' durations and bytes, through Starlette's
TestClient on state made by real imports."""

from __future__ import annotations

import io
import itertools
import json
import re
import sqlite3
from pathlib import Path

import pydicom
import pytest
from fixtures_console import PASSWORD, csrf_of, login, metric
from fixtures_dicom import make_ct_series, make_empty
from fixtures_peers import free_port
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, RTPlanStorage, generate_uid

from pdimport.cli import main
from pdimport.console.problems_ja import PROBLEM_WORDS_JA
from pdimport.console.users import UserStore
from pdimport.problems import PROBLEM_CODES
from pdimport.record import auditchain

PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def _audit(state: Path, event: str) -> list[dict]:
    return [r for r in auditchain.records(state / "audit") if r["event"] == event]


# ------------------------------------------------------------------ users
def test_only_an_admin_reaches_the_users_page(console):
    _app, client = console()
    for name in ("suzuki", "tanaka"):  # viewer, operator
        login(client, name)
        token = csrf_of(client.get("/drives").text)
        assert client.get("/users").status_code == 403
        form = {"csrf": token, "name": "intruder", "role": "admin", "password": "x" * 12}
        assert client.post("/users/add", data=form).status_code == 403
        assert client.post("/users/remove", data={"csrf": token, "name": "root"}).status_code == 403
        assert "/users" not in client.get("/drives").text  # not even the link
        client.cookies.clear()
    login(client, "root")
    assert 'href="/users"' in client.get("/drives").text
    assert "intruder" not in client.get("/users").text


def test_an_admin_adds_resets_and_removes_a_user_each_recorded(console, held_disc):
    _app, client = console()
    state = held_disc.cfg.state_path
    login(client, "root")
    page = client.get("/users")
    assert all(f'id="user-{n}"' in page.text for n in ("root", "suzuki", "tanaka"))
    token = csrf_of(page.text)
    add = {"name": "kato", "role": "operator", "password": "first password"}
    assert client.post("/users/add", data=add).status_code == 403  # no CSRF token
    page = client.post("/users/add", data={**add, "csrf": token})
    assert "User kato (operator) saved" in page.text and 'id="user-kato"' in page.text
    assert "exists already" in client.post("/users/add", data={**add, "csrf": token}).text

    kato = type(client)(client.app, base_url="http://127.0.0.1")
    assert login(kato, "kato", "first password").url.path == "/drives"
    reset = {"csrf": token, "name": "kato", "password": "second password"}
    assert "Password of kato set" in client.post("/users/password", data=reset).text
    assert kato.get("/today").url.path == "/login"  # the old password's session ended
    assert login(kato, "kato", "first password").status_code == 401
    assert login(kato, "kato", "second password").url.path == "/drives"

    assert (
        "cannot remove your own"
        in client.post("/users/remove", data={"csrf": token, "name": "root"}).text
    )
    assert (
        "User kato removed"
        in client.post("/users/remove", data={"csrf": token, "name": "kato"}).text
    )
    assert kato.get("/today").url.path == "/login"
    kato.close()
    users = UserStore(state / "users.sqlite")
    assert [u.name for u in users.users()] == ["root", "suzuki", "tanaka"]
    users.close()
    records = [
        (r["event"], r["actor"], r["user"])
        for r in auditchain.records(state / "audit")
        if r["event"].startswith("user_")
    ]
    assert records == [
        ("user_added", "root", "kato"),
        ("user_password_set", "root", "kato"),
        ("user_removed", "root", "kato"),
    ]
    assert not [r for r in auditchain.records(state / "audit") if "second password" in str(r)]


# ------------------------------------------------------------- job detail
def _broken_j2k_disc(root: Path) -> Path:
    """A CT series, a series whose JPEG 2000 codestream is garbage, an empty file."""
    make_ct_series(root / "GOOD", 3, patient_id="PV1", rows=128, cols=128)
    [bad] = make_ct_series(root / "BAD", 1, patient_id="PV1")
    ds = pydicom.dcmread(bad)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(range(256)) * 8])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(bad, enforce_file_format=True)
    make_empty(root / "GOOD" / "EMPTY")
    return root


def test_the_job_page_previews_each_series_and_a_broken_one_is_a_placeholder(
    console, held_disc, tmp_path, capsys
):
    state = held_disc.cfg.state_path
    disc = _broken_j2k_disc(tmp_path / "pv")
    out = tmp_path / "out"
    argv = ["import", str(disc), "--json", "--state-dir", str(state), "--dest", f"file://{out}"]
    main(argv)
    report = json.loads(capsys.readouterr().out)
    _app, client = console()
    login(client, "suzuki")
    page = client.get(f"/jobs/{report['job']}")
    assert page.status_code == 200
    series = re.findall(r'src="(/jobs/[^"]+/series/([^/"]+)/preview.png)"', page.text)
    assert len(series) == 2
    kinds = {}
    for url, uid in series:
        r = client.get(url)
        assert r.status_code == 200
        kinds[uid] = r.headers["content-type"]
        if r.headers["content-type"] == "image/png":
            image = Image.open(io.BytesIO(r.content))
            low, high = image.getextrema()
            assert image.size == (128, 128) and high > low
    good = next(s["uid"] for s in _series(report) if s["instances"] == 3)
    assert kinds.pop(good) == "image/png"
    assert list(kinds.values()) == ["image/svg+xml"]  # the broken codestream
    cache = state / "console" / "previews"
    assert len(list(cache.glob("*.png"))) == 1 and len(list(cache.glob("*.none"))) == 1
    assert client.get(series[0][0]).status_code == 200  # again, from the cache
    assert client.get(f"/jobs/{report['job']}/series/1.2.3/preview.png").status_code == 200
    assert client.get("/jobs/nope/series/1.2.3/preview.png").status_code == 200


def _series(report: dict) -> list[dict]:
    return [se for p in report["patients"] for st in p["studies"] for se in st["series"]]


def test_every_problem_code_has_japanese_words_and_the_job_page_shows_them(
    console, held_disc, tmp_path, capsys
):
    assert sorted(PROBLEM_CODES) == sorted(PROBLEM_WORDS_JA)
    state = held_disc.cfg.state_path
    disc = _broken_j2k_disc(tmp_path / "pw")
    main(["import", str(disc), "--json", "--state-dir", str(state), "--dest", "file:///dev/null/x"])
    report = json.loads(capsys.readouterr().out)
    codes = {p["code"] for p in report["problems"]}
    assert "empty_file" in codes
    _app, client = console()
    ja = {"Accept-Language": "ja"}
    login(client, "suzuki", **ja)
    page = client.get(f"/jobs/{report['job']}", headers=ja).text
    for code in codes:
        assert f"<code>{code}</code>" in page and PROBLEM_WORDS_JA[code] in page
    en = client.get(f"/lang/en?next=/jobs/{report['job']}").text
    for code in codes:
        assert PROBLEM_CODES[code][1] in en.replace("&#39;", "'")


def test_reprint_writes_the_label_again_and_is_recorded(console, held_disc, tmp_path):
    labels = tmp_path / "labels"
    held_disc.cfg = held_disc.cfg.replace(printer__backend="file", printer__target=str(labels))
    _app, client = console()
    login(client, "tanaka")
    page = client.get(f"/jobs/{held_disc.job}")
    assert 'id="reprint"' in page.text and 'id="retry"' not in page.text  # held: decide first
    token = csrf_of(page.text)
    assert client.post(f"/jobs/{held_disc.job}/reprint", data={}).status_code == 403
    done = client.post(f"/jobs/{held_disc.job}/reprint", data={"csrf": token})
    assert "Label printed" in done.text
    assert [p.stem for p in labels.iterdir()] == [held_disc.job]
    [record] = [r for r in _audit(held_disc.cfg.state_path, "label_printed") if r.get("reprint")]
    assert record["actor"] == "tanaka" and record["ok"] is True


def test_retry_delivers_a_job_that_waited_for_the_pacs(console, held_disc, tmp_path, receiver):
    port = free_port()
    state, dest = held_disc.cfg.state_path, f"dicom://LATE@127.0.0.1:{port}"
    make_ct_series(tmp_path / "late", 3, patient_id="PLATE")
    argv = ["import", str(tmp_path / "late"), "--state-dir", str(state), "--dest", dest, "--json"]
    assert main([*argv, "--config", str(_quick(tmp_path))]) == 1
    job = next(j for j in _jobs(state) if j[1] == "waiting_for_destination")[0]
    pacs = receiver(aet="LATE", port=port)  # the PACS is back
    # as it was imported: no identity source (a changed one re-settles the job)
    held_disc.cfg = held_disc.cfg.replace(dest=[dest], reconcile__sources=[])
    _app, client = console()
    login(client, "tanaka")
    page = client.get(f"/jobs/{job}")
    assert 'id="retry"' in page.text
    done = client.post(f"/jobs/{job}/retry", data={"csrf": csrf_of(page.text)})
    assert "Delivered again: imported" in done.text
    assert dict(_jobs(state))[job] == "imported"
    assert len([p for p in pacs.out_dir.rglob("*") if p.is_file()]) == 3
    assert [r["actor"] for r in _audit(state, "retry_requested")] == ["tanaka"]
    login(client, "suzuki")
    page = client.get(f"/jobs/{job}")
    assert 'id="retry"' not in page.text and 'id="reprint"' not in page.text  # a viewer


def _quick(tmp_path: Path) -> Path:
    config = tmp_path / "quick.toml"
    config.write_text(
        "[network]\nretries = 1\nretry_delay = 0.1\nconnection_timeout = 1.0\n", encoding="utf-8"
    )
    return config


def _jobs(state: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(state / "journal.sqlite")
    try:
        return db.execute("SELECT id, state FROM jobs ORDER BY created").fetchall()
    finally:
        db.close()


# ---------------------------------------------------------------- metrics
def test_metrics_durations_latency_and_bytes_equal_the_journal(console, held_disc):
    _app, client = console()
    login(client, "tanaka")
    token = csrf_of(client.get("/decisions").text)
    for patient in ("F123", "F456"):
        form = {"csrf": token, "job": held_disc.job, "patient": patient, "action": "keep_foreign"}
        assert client.post("/decisions/apply", data=form).status_code == 200
    text = client.get("/metrics").text
    db = sqlite3.connect(held_disc.cfg.state_path / "journal.sqlite")
    try:
        events = db.execute("SELECT job_id, time, target FROM job_events ORDER BY job_id, time")
        stays: dict[str, list[float]] = {"read": [], "scan": [], "deliver": []}
        rows = events.fetchall()
        for (job, t0, target), (job2, t1, _next) in itertools.pairwise(rows):
            stage = {"reading": "read", "inventoried": "scan", "delivering": "deliver"}.get(target)
            if stage and job == job2:
                stays[stage].append(t1 - t0)
        sent = db.execute(
            "SELECT d.time - j.created FROM deliveries d JOIN jobs j ON j.id = d.job_id"
            " WHERE d.state = 'sent'"
        ).fetchall()
        [(nbytes,)] = db.execute("SELECT sum(size) FROM files WHERE state = 'read'").fetchall()
    finally:
        db.close()
    # read once, scanned once, delivered twice (one release per patient)
    assert [len(stays[s]) for s in ("read", "scan", "deliver")] == [1, 1, 2]
    for stage, seconds in stays.items():
        label = f'{{stage="{stage}"}}'
        assert metric(text, f"pdimport_stage_seconds_count{label}") == len(seconds)
        assert metric(text, f"pdimport_stage_seconds_sum{label}") == pytest.approx(sum(seconds))
        inf = f'pdimport_stage_seconds_bucket{{le="+Inf",stage="{stage}"}}'
        assert metric(text, inf) == len(seconds)
    dest = held_disc.cfg.dest[0]
    label = f'{{dest="{dest}"}}'
    assert metric(text, f"pdimport_delivery_latency_seconds_count{label}") == len(sent) == 4
    assert metric(text, f"pdimport_delivery_latency_seconds_sum{label}") == pytest.approx(
        sum(s for (s,) in sent)
    )
    assert metric(text, f"pdimport_bytes_delivered_total{label}") == nbytes
    assert metric(text, "pdimport_bytes_read_total") == nbytes
    assert PASSWORD not in text


def _rt_plan_and_pdf_disc(root: Path) -> Path:
    """A CT series, an RT Plan of the same study, a PDF report beside them."""
    [ct, *_] = make_ct_series(root / "DICOM" / "CT", 2, patient_id="PRT1")
    ds = pydicom.dcmread(ct)
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = RTPlanStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.Modality = generate_uid(), "RTPLAN"
    ds.save_as(root / "DICOM" / "RTPLAN", enforce_file_format=True)
    (root / "REPORT").mkdir()
    (root / "REPORT" / "REPORT.PDF").write_bytes(PDF)
    return root


def test_the_job_page_marks_rt_and_other_content(console, held_disc, tmp_path, capsys):
    state = held_disc.cfg.state_path
    disc = _rt_plan_and_pdf_disc(tmp_path / "rt")
    main(
        ["import", str(disc), "--json", "--state-dir", str(state), "--dest", f"file://{tmp_path}/o"]
    )
    report = json.loads(capsys.readouterr().out)
    assert report["flags"]["rt"] and report["flags"]["other_content"]
    _app, client = console()
    login(client, "suzuki")
    page = client.get(f"/jobs/{report['job']}").text
    assert page.count('class="badge kind-rt"') == 1  # the plan's series, not the CT's
    assert page.count('class="preview"') == 1  # a plan has no image to preview
    assert "Other Content (not DICOM)" in page and "REPORT/REPORT.PDF" in page
    assert "converted to DICOM" in page


def test_about_shows_each_destinations_last_contact_and_echoes_on_request(
    console, held_disc, tmp_path
):
    down = f"dicom://GONE@127.0.0.1:{free_port()}"
    held_disc.cfg = held_disc.cfg.replace(
        dest=[*held_disc.cfg.dest, down], network__connection_timeout=2.0
    )
    _app, client = console()
    login(client, "suzuki")
    page = client.get("/about")
    assert held_disc.cfg.dest[0] in page.text and 'id="echo"' not in page.text
    token = csrf_of(page.text)
    assert client.post("/about/echo", data={"csrf": token}).status_code == 403  # a viewer
    client.cookies.clear()
    login(client, "tanaka")
    token = csrf_of(client.get("/decisions").text)
    form = {"csrf": token, "job": held_disc.job, "patient": "F456", "action": "keep_foreign"}
    client.post("/decisions/apply", data=form)  # something is acknowledged by the PACS
    page = client.post("/about/echo", data={"csrf": token}).text
    pacs, gone = held_disc.cfg.dest
    assert re.search(rf"{re.escape(pacs)}: C-ECHO success in \d+ ms", page)
    assert f"{gone}: connection refused by 127.0.0.1:" in page
    rows = dict(re.findall(r"<tr><td><code>([^<]+)</code></td><td>([^<]+)</td>", page))
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[pacs]) and rows[gone] == "—"


def test_the_audit_page_shows_where_the_trail_breaks(console, held_disc):
    _app, client = console()
    login(client, "suzuki")
    assert "intact" in client.get("/audit?verify=1").text
    [log] = sorted((held_disc.cfg.state_path / "audit").glob("*.jsonl"))
    lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = (
        lines[1]
        .replace('"medium_inserted"', '"medium_removed"')
        .replace('"read_completed"', '"read_forged"')
    )
    log.write_text("".join(lines), encoding="utf-8")
    verdict = client.get("/audit?verify=1").text
    assert 'class="error"' in verdict and "The trail breaks at record 2" in verdict
