"""The operator console through Starlette's TestClient: login and roles,
CSRF, throttling, the decisions page releasing a held two-patient disc
patient by patient through the hold queue, /metrics against the journal, and
the Japanese page."""

from __future__ import annotations

import io
import re

import pydicom
import pytest
from fixtures_console import PASSWORD, csrf_of, login, metric

from pdimport.cli import main
from pdimport.console.server import ConsoleError, check_listen
from pdimport.record import auditchain
from pdimport.store.journal import open_journal

NAMES = ("Satou", "佐藤", "Other", "Person")


def test_every_page_needs_a_login_and_no_name_shows_before(console, held_disc):
    _app, client = console()
    for path in ("/drives", "/today", "/decisions", f"/jobs/{held_disc.job}", "/audit", "/about"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
        page = client.get(path)
        assert page.url.path == "/login"
        assert not [n for n in NAMES if n in page.text], path
    assert client.get(f"/jobs/{held_disc.job}/label.png", follow_redirects=False).status_code == 303
    assert client.get("/events").status_code == 401
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and not [n for n in NAMES if n in metrics.text]
    assert login(client, "suzuki").status_code == 200
    assert "Satou" in client.get("/decisions").text


def test_session_cookie_is_httponly_and_strict(console):
    _app, client = console()
    r = login(client, "tanaka")
    cookie = next(h for h in r.history[0].headers.get_list("set-cookie") if "session" in h)
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_wrong_passwords_are_throttled(console, held_disc):
    _app, client = console()
    for _ in range(5):
        assert login(client, "tanaka", "wrong password").status_code == 401
    refused = login(client, "tanaka")  # the right password, too late
    assert refused.status_code == 429 and "Too many" in refused.text
    held_disc.clock.now += 301  # the window slides past the failures
    assert login(client, "tanaka").url.path == "/drives"


def test_idle_session_ends(console, held_disc):
    _app, client = console()
    login(client, "tanaka")
    assert client.get("/today").url.path == "/today"
    held_disc.clock.now += 901  # console.idle_timeout is 900 s
    assert client.get("/today").url.path == "/login"


def test_a_form_without_its_csrf_token_is_refused(console, held_disc):
    _app, client = console()
    page = client.get("/login")
    no_token = client.post("/login", data={"name": "tanaka", "password": PASSWORD})
    assert no_token.status_code == 403
    assert csrf_of(page.text)
    login(client, "tanaka")
    form = {"job": held_disc.job, "patient": "F456", "action": "keep_foreign"}
    assert client.post("/decisions/apply", data=form).status_code == 403
    assert client.post("/decisions/apply", data={**form, "csrf": "forged"}).status_code == 403
    assert client.post("/logout", data={}).status_code == 403
    assert _state(held_disc) == "held"


def test_a_viewer_cannot_release(console, held_disc):
    _app, client = console()
    login(client, "suzuki")
    token = csrf_of(client.get("/decisions").text)
    form = {"csrf": token, "job": held_disc.job, "patient": "F456", "action": "keep_foreign"}
    assert client.post("/decisions/confirm", data=form).status_code == 403
    assert client.post("/decisions/apply", data=form).status_code == 403
    assert client.post(f"/jobs/{held_disc.job}/retry", data=form).status_code == 403
    assert _state(held_disc) == "held"
    assert not _audit(held_disc, "release")


def test_an_operator_releases_a_two_patient_disc_patient_by_patient(console, held_disc):
    _app, client = console(after_decision=lambda job: told.append(job))
    told: list[str] = []
    login(client, "tanaka")
    page = client.get("/decisions")
    assert "F123" in page.text and "F456" in page.text
    assert "Satou" in page.text and "19800214" in page.text  # the disc's demographics
    assert "2 patients" in page.text  # the hold reason in words
    token = csrf_of(page.text)
    ask = {"csrf": token, "job": held_disc.job, "patient": "F123", "action": "release"}
    # a multi-patient hold looks nobody up: the operator types the local ID
    confirm = client.post("/decisions/confirm", data={**ask, "typed_id": "L0001"})
    assert confirm.status_code == 200 and 'id="confirm"' in confirm.text and "L0001" in confirm.text
    assert _state(held_disc) == "held"  # asking is not deciding
    done = client.post("/decisions/apply", data={**ask, "local_id": "L0001"})  # as confirmed
    assert done.status_code == 200 and "needs a decision" in done.text  # F456 still waits
    assert _patients_at_pacs(held_disc) == ["L0001", "L0001"]
    page = client.get("/decisions")
    assert "F456" in page.text and 'id="patient-' + held_disc.job + '-F123"' not in page.text
    done = client.post(
        "/decisions/apply",
        data={"csrf": token, "job": held_disc.job, "patient": "F456", "action": "keep_foreign"},
    )
    assert done.status_code == 200 and "imported" in done.text
    assert _state(held_disc) == "imported"
    assert _patients_at_pacs(held_disc) == ["F456", "F456", "L0001", "L0001"]
    assert told == [held_disc.job, held_disc.job]
    releases = _audit(held_disc, "release")
    assert [(r["actor"], r["patient"]) for r in releases] == [
        ("tanaka", "F123"),
        ("tanaka", "F456"),
    ]
    assert "No job waits" in client.get("/decisions").text
    detail = client.get(f"/jobs/{held_disc.job}")
    assert "tanaka" in detail.text and "L0001" in detail.text
    assert client.get(f"/jobs/{held_disc.job}/label.png").headers["content-type"] == "image/png"


def test_an_unknown_local_id_changes_nothing_and_says_why(console, held_disc):
    _app, client = console()
    login(client, "tanaka")
    token = csrf_of(client.get("/decisions").text)
    r = client.post(
        "/decisions/apply",
        data={
            "csrf": token,
            "job": held_disc.job,
            "patient": "F123",
            "action": "release",
            "typed_id": "NOBODY",
        },
    )
    assert r.status_code == 409 and "Nothing was changed" in r.text and "NOBODY" in r.text
    assert _state(held_disc) == "held" and not _audit(held_disc, "release")


def test_discard_needs_a_reason_and_is_recorded(console, held_disc):
    _app, client = console()
    login(client, "tanaka")
    token = csrf_of(client.get("/decisions").text)
    form = {"csrf": token, "job": held_disc.job, "patient": "F456", "action": "discard"}
    assert client.post("/decisions/confirm", data=form).status_code == 400
    r = client.post("/decisions/apply", data={**form, "reason": "wrong disc"})
    assert r.status_code == 200
    [event] = _audit(held_disc, "discard")
    assert event["actor"] == "tanaka" and event["reason"] == "wrong disc"


def test_metrics_equal_the_journal(console, held_disc):
    _app, client = console()

    text = client.get("/metrics").text
    journal = open_journal(held_disc.cfg)
    try:
        jobs = journal.jobs(1000)
    finally:
        journal.close()
    for state in ("held", "imported", "failed"):
        assert metric(text, f'pdimport_jobs{{outcome="{state}"}}') == sum(
            1 for j in jobs if j.state == state
        )
    assert metric(text, "pdimport_decisions_pending") == 2
    assert metric(text, "pdimport_held_jobs") == 1
    assert metric(text, "pdimport_files_read_total") == 4
    assert metric(text, 'pdimport_queue_length{queue="watch"}') == 0
    login(client, "tanaka")
    token = csrf_of(client.get("/decisions").text)
    for patient in ("F123", "F456"):
        client.post(
            "/decisions/apply",
            data={
                "csrf": token,
                "job": held_disc.job,
                "patient": patient,
                "action": "keep_foreign",
            },
        )
    text = client.get("/metrics").text
    journal = open_journal(held_disc.cfg)
    [(sent,)] = journal.db.execute("SELECT count(*) FROM deliveries WHERE state='sent'")
    journal.close()
    dest = held_disc.cfg.dest[0]
    assert metric(text, f'pdimport_instances_delivered_total{{dest="{dest}"}}') == sent == 4
    assert metric(text, "pdimport_decisions_pending") == 0
    assert metric(text, 'pdimport_jobs{outcome="imported"}') == 1


def test_the_japanese_page_shows_the_kanji_name(console):
    _app, client = console()
    ja = {"Accept-Language": "ja-JP,ja;q=0.9,en;q=0.5"}
    login(client, "tanaka", **ja)
    page = client.get("/decisions", headers=ja)
    assert "佐藤 太郎" in page.text and "要判断" in page.text and 'lang="ja"' in page.text
    today = client.get("/today?date=", headers=ja)
    assert "判断待ち" in today.text and "佐藤 太郎" in today.text
    client.get("/lang/en?next=/decisions", headers=ja)  # the switch beats the browser
    page = client.get("/decisions", headers=ja)
    assert 'lang="en"' in page.text and "Decisions" in page.text


def test_today_summarises_the_batch(console):
    _app, client = console()
    login(client, "suzuki")
    page = client.get("/today")
    assert re.search(r"0/1 imported, 1 needs a decision", page.text)
    assert "1 needs a decision" in client.get("/today?outcome=held").text
    assert "Satou" not in client.get("/today?outcome=imported").text
    # the held two-patient disc: 2 studies, 0 of its 4 objects sent yet
    assert re.search(r"<td>2</td>\s*<td class=\"counts\">0/4</td>", page.text)


def test_audit_verify_and_export(console, held_disc):
    _app, client = console()
    login(client, "suzuki")
    verdict = client.get("/audit?verify=1")
    assert 'class="ok"' in verdict.text and "intact" in verdict.text
    export = client.get("/audit/export?since=2000-01-01")
    assert export.status_code == 200 and '"event": "medium_inserted"' in export.text
    assert client.get("/audit/export?since=2000-01-01&until=2000-01-02").text == ""
    assert "pdimport 0." in client.get("/about").text


def test_listening_off_loopback_needs_tls(cfg):
    assert check_listen(cfg) == ("127.0.0.1", 8104)
    assert check_listen(cfg.replace(console__listen="[::1]:9000")) == ("::1", 9000)
    with pytest.raises(ConsoleError, match="not a loopback address"):
        check_listen(cfg.replace(console__listen="0.0.0.0:8104"))
    with pytest.raises(ConsoleError, match="go together"):
        check_listen(cfg.replace(console__listen="0.0.0.0:8104", console__tls_cert="/c.pem"))
    tls = cfg.replace(
        console__listen="10.0.0.5:8443", console__tls_cert="/c.pem", console__tls_key="/k.pem"
    )
    assert check_listen(tls) == ("10.0.0.5", 8443)


def test_user_add_and_list(tmp_path, capsys, monkeypatch):
    state = str(tmp_path / "state")
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert main(["user", "add", "sato", "--role", "admin", "--state-dir", state]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["user", "add", "kato", "--role", "viewer", "--state-dir", state]) == 64
    assert main(["user", "list", "--state-dir", state]) == 0
    out = capsys.readouterr().out
    assert "sato  admin" in out and "kato" not in out.split("user sato")[-1]


def _state(held_disc) -> str:
    journal = open_journal(held_disc.cfg)
    try:
        job = journal.job(held_disc.job)
        assert job is not None
        return str(job.state)
    finally:
        journal.close()


def _audit(held_disc, event: str) -> list[dict]:
    return [
        r for r in auditchain.records(held_disc.cfg.state_path / "audit") if r["event"] == event
    ]


def _patients_at_pacs(held_disc) -> list[str]:
    files = [p for p in held_disc.pacs.out_dir.iterdir() if p.is_file()]
    return sorted(str(pydicom.dcmread(p, stop_before_pixels=True).PatientID) for p in files)
