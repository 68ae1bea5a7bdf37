"""The audit trail: hash chain, tamper detection, export, observer, PS3.15 syslog."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_label import sample_report

from pdimport.record import audit, auditchain, auditcli, auditsyslog
from pdimport.record.audit import AuditLog
from pdimport.record.auditchain import GENESIS, verify
from pdimport.store.journal import Journal


def five(directory: Path) -> AuditLog:
    log = AuditLog(directory, consent="verbal", facility="Tokyo Central")
    log.append(
        "medium_inserted",
        medium={"label": "PDI", "id": "VOL1", "type": "cd", "drive": "/dev/sr0"},
        job="j1",
    )
    log.append("read_completed", job="j1", counts={"files": 3}, manifest_sha256="ab" * 32)
    log.append(
        "instances_delivered", job="j1", dest_aet="PACS", source_aet="PDIMPORT", counts={"sent": 3}
    )
    log.append("label_printed", job="j1", ok=True)
    log.append("medium_ejected", job="j1", actor="operator:suzuki")
    return log


def the_file(directory: Path) -> Path:
    (path,) = auditchain.log_files(directory)
    return path


# ------------------------------------------------------------------ the chain
def test_records_carry_core_fields_and_chain(tmp_path: Path) -> None:
    five(tmp_path)
    lines = the_file(tmp_path).read_bytes().splitlines(keepends=True)
    assert len(lines) == 5
    recs = [json.loads(x) for x in lines]
    assert recs[0]["prev"] == GENESIS
    for before, rec in zip(lines, recs[1:]):
        assert rec["prev"] == auditchain.sha256_hex(before)
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5]
    for r in recs:
        for key in (
            "time",
            "event",
            "actor",
            "facility",
            "medium",
            "source_aet",
            "dest_aet",
            "patients",
            "consent",
            "counts",
            "prev",
            "hash",
        ):
            assert key in r, key
        assert r["consent"] == "verbal"
    assert recs[0]["medium"]["id"] == "VOL1"
    assert recs[4]["actor"] == "operator:suzuki" and recs[3]["actor"] == "system"
    assert verify(tmp_path) == (True, None, "5 records intact")


def test_one_changed_byte_in_middle_record_is_named(tmp_path: Path) -> None:
    five(tmp_path)
    path = the_file(tmp_path)
    data = bytearray(path.read_bytes())
    lines = bytes(data).splitlines(keepends=True)
    # Record 3 (index 2): change one byte of its counts ("sent":3 -> "sent":4).
    start = sum(len(x) for x in lines[:2])
    pos = data.index(b'"sent":3', start) + len(b'"sent":')
    assert pos < start + len(lines[2])
    data[pos] = ord("4")
    path.write_bytes(bytes(data))
    ok, first_bad, reason = verify(tmp_path)
    assert not ok
    assert first_bad == 3  # 1-based record number: the third line, index 2
    assert reason.startswith("record 3 (") and "line 3" in reason
    assert auditcli.audit_verify_main(tmp_path.parent / "x") == 0  # no log: vacuously intact


def test_rewritten_record_with_fresh_hash_breaks_the_next_link(tmp_path: Path) -> None:
    five(tmp_path)
    path = the_file(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[1])
    rec.pop("hash")
    rec["counts"] = {"files": 999}
    lines[1] = auditchain.seal(rec)  # a forger who re-hashes record 2 itself
    path.write_bytes(b"".join(lines))
    ok, first_bad, reason = verify(tmp_path)
    assert (ok, first_bad) == (False, 2)
    assert "rewritten" in reason


def test_untouched_log_and_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    five(tmp_path / "audit")
    assert auditcli.audit_verify_main(tmp_path) == 0
    path = the_file(tmp_path / "audit")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"Tokyo Central", b"Tokyo Centrak", 1))  # record 1
    assert auditcli.audit_verify_main(tmp_path) == 1
    assert "record 1" in capsys.readouterr().err


def test_torn_last_line_is_closed_and_named(tmp_path: Path) -> None:
    log = five(tmp_path)
    path = the_file(tmp_path)
    with open(path, "ab") as fp:
        fp.write(b'{"seq":6,"time":"2025')  # power lost mid-write
    assert verify(tmp_path)[:2] == (False, 6)
    log.append("medium_ejected", job="j2")
    ok, first_bad, reason = verify(tmp_path)
    assert (ok, first_bad) == (False, 6) and "no hash" in reason
    assert len(path.read_bytes().splitlines()) == 7  # the new record is its own line


def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    logs = [AuditLog(tmp_path) for _ in range(4)]  # as if four processes

    def work(log: AuditLog) -> None:
        for i in range(25):
            log.append("conversion", job="j", n=i)

    threads = [threading.Thread(target=work, args=(lg,)) for lg in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert verify(tmp_path) == (True, None, "100 records intact")
    assert [r["seq"] for r in auditchain.records(tmp_path)] == list(range(1, 101))


def test_chain_runs_across_monthly_files(tmp_path: Path) -> None:
    five(tmp_path)
    old = the_file(tmp_path)
    old.rename(tmp_path / "audit-2000-01.jsonl")  # last month's file
    AuditLog(tmp_path).append("medium_ejected", job="j")
    assert len(auditchain.log_files(tmp_path)) == 2
    assert verify(tmp_path) == (True, None, "6 records intact")


def test_export_since_filters(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    five(tmp_path / "audit")
    path = the_file(tmp_path / "audit")
    lines = path.read_bytes().splitlines(keepends=True)
    # Re-date the first two records to 2020 and re-seal the chain.
    out, prev = [], None
    for i, line in enumerate(lines):
        rec = json.loads(line)
        rec.pop("hash")
        if i < 2:
            rec["time"] = "2020-06-01T00:00:00+00:00"
        rec["prev"] = auditchain.sha256_hex(prev) if prev else GENESIS
        prev = auditchain.seal(rec)
        out.append(prev)
    path.write_bytes(b"".join(out))
    assert verify(tmp_path / "audit")[0]
    since = datetime(2021, 1, 1, tzinfo=UTC)
    got = list(auditchain.export(tmp_path / "audit", since))
    assert [r["seq"] for r in got] == [3, 4, 5]
    assert len(list(auditchain.export(tmp_path / "audit", datetime(2019, 1, 1)))) == 5
    future = datetime.now(UTC) + timedelta(days=1)
    assert list(auditchain.export(tmp_path / "audit", future)) == []
    assert auditcli.audit_export_main(tmp_path, "2021-01-01") == 0
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in printed] == [3, 4, 5]
    assert auditcli.audit_export_main(tmp_path, "yesterday") == 64


def test_manifest_digest_is_sha256sum_text() -> None:
    import hashlib

    files = [("DICOMDIR", "a" * 64), ("DICOM/I1", "b" * 64), ("bad", None)]
    text = f"{'a' * 64}  DICOMDIR\n{'b' * 64}  DICOM/I1\n{'-' * 64}  bad\n"
    assert audit.manifest_digest(files) == hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------ syslog peers
class SyslogUdp:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]

    def receive(self, n: int) -> list[bytes]:
        return [self.sock.recvfrom(65535)[0] for _ in range(n)]


class SyslogTcp:
    """An RFC 6587 octet-counting receiver."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]

    def receive(self, n: int) -> list[bytes]:
        out = []
        while len(out) < n:
            conn, _ = self.sock.accept()
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
            while data:
                length, _, rest = data.partition(b" ")
                out.append(rest[: int(length)])
                data = rest[int(length) :]
        return out


@pytest.fixture(params=["udp", "tcp"])
def syslog_peer(request: pytest.FixtureRequest) -> Iterator[tuple[str, object]]:
    peer = SyslogUdp() if request.param == "udp" else SyslogTcp()
    yield f"{request.param}://127.0.0.1:{peer.port}", peer
    peer.sock.close()


SYSLOG_RE = re.compile(
    rb"^<85>1 (\S+) (\S+) pdimport (\d+) DICOM\+RFC3881 - \xef\xbb\xbf(.*)$", re.DOTALL
)


def parse(message: bytes) -> ET.Element:
    m = SYSLOG_RE.match(message)
    assert m, message[:200]
    datetime.fromisoformat(m.group(1).decode())  # RFC 3339 timestamp
    return ET.fromstring(m.group(4))


def codes(root: ET.Element, path: str) -> list[str]:
    return [e.get("csd-code", "") for e in root.iterfind(path)]


def test_ps315_messages_over_syslog(tmp_path: Path, syslog_peer) -> None:
    url, peer = syslog_peer
    report = sample_report("imported")
    node = auditsyslog.Node(aet="PDIMPORT", source_id="pdimport-test", site_id="HOSP")
    log = AuditLog(
        tmp_path, calling_aet="PDIMPORT", syslog=auditsyslog.SyslogSender(url), node=node
    )
    # What the pipeline emits for one disc.
    log.on_event(
        "medium_inserted",
        {
            "job": "j1",
            "source": "/dev/sr0",
            "kind": "dvd",
            "label": "PDI_20250104",
            "volume_id": "VOL-42",
            "drive": "bay 2",
        },
    )
    log.on_event(
        "read_completed", {"job": "j1", "files": 2, "manifest": [("a", "1" * 64), ("b", "2" * 64)]}
    )
    log.on_event(
        "instances_delivered", {"job": "j1", "dest": "dicom://PACS@127.0.0.1:104", "sent": 123}
    )
    log.on_event("job_finished", {"job": "j1", "status": "imported", "report": report})
    imp, xfer = (parse(m) for m in peer.receive(2))

    # Import, EventID 110107, the medium as Source Media participant.
    assert codes(imp, "EventIdentification/EventID") == ["110107"]
    assert imp.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    roles = {ap.find("RoleIDCode").get("csd-code"): ap for ap in imp.iterfind("ActiveParticipant")}
    assert set(roles) == {"110152", "110155"}
    media = roles["110155"]
    assert media.get("UserID") == "VOL-42" and media.get("UserIsRequestor") == "false"
    assert media.get("UserName") == "東京中央病院 Tokyo Central Hospital"
    assert codes(media, "MediaIdentifier/MediaType") == ["110033"]  # DVD, CID 405
    assert roles["110152"].get("UserID") == "PDIMPORT"
    assert imp.find("AuditSourceIdentification").get("AuditSourceID") == "pdimport-test"
    objs = {
        o.get("ParticipantObjectID"): o for o in imp.iterfind("ParticipantObjectIdentification")
    }
    assert codes(objs["A-0012345"], "ParticipantObjectIDTypeCode") == ["2"]
    assert (
        objs["A-0012345"].findtext("ParticipantObjectName")
        == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    )
    assert codes(objs["1.2.3"], "ParticipantObjectIDTypeCode") == ["110180"]

    # DICOM Instances Transferred, EventID 110104: we are the source, PACS the destination.
    assert codes(xfer, "EventIdentification/EventID") == ["110104"]
    assert xfer.find("EventIdentification").get("EventActionCode") == "R"
    parts = {ap.find("RoleIDCode").get("csd-code"): ap for ap in xfer.iterfind("ActiveParticipant")}
    assert parts["110153"].get("UserID") == "PDIMPORT"
    assert parts["110152"].get("UserID") == "PACS"
    assert parts["110152"].get("NetworkAccessPointID") == "127.0.0.1"
    assert parts["110152"].get("NetworkAccessPointTypeCode") == "2"
    assert {
        o.get("ParticipantObjectID") for o in xfer.iterfind("ParticipantObjectIdentification")
    } == {"A-0012345", "1.2.3", "1.2.4"}

    # And the local log holds the same story, chained.
    recs = list(auditchain.records(tmp_path))
    assert [r["event"] for r in recs] == [
        "medium_inserted",
        "read_completed",
        "instances_delivered",
        "job_finished",
    ]
    assert recs[1]["manifest_sha256"] == audit.manifest_digest([("a", "1" * 64), ("b", "2" * 64)])
    assert recs[2]["dest_aet"] == "PACS" and recs[2]["source_aet"] == "PDIMPORT"
    assert recs[3]["medium"]["id"] == "VOL-42"  # carried from the insert event
    assert recs[3]["patients"] == [{"original": "A-0012345", "issuer": "", "local": "0098765"}]
    assert recs[3]["facility"] == "東京中央病院 Tokyo Central Hospital"
    assert verify(tmp_path)[0]


def test_outcome_is_truthful_for_held_jobs() -> None:
    xml = auditsyslog.import_message(
        auditsyslog.Node(), {"label": "X", "type": "iso"}, [], status="held"
    )
    root = ET.fromstring(xml)
    assert root.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert codes(root, "ActiveParticipant/MediaIdentifier/MediaType") == ["110032"]  # CD


def test_unreachable_repository_does_not_raise(tmp_path: Path) -> None:
    from fixtures_cups import free_port

    sender = auditsyslog.SyslogSender(f"tcp://127.0.0.1:{free_port()}", timeout=2)
    assert sender.send(b"<AuditMessage/>") is False
    log = AuditLog(tmp_path, syslog=sender, node=auditsyslog.Node())
    log.on_event("job_finished", {"job": "j", "status": "failed", "report": sample_report()})
    assert verify(tmp_path)[0]


def test_observer_uses_journal_for_manifest_and_report(tmp_path: Path) -> None:
    from pdimport.store.journal import Journal

    journal = Journal(tmp_path / "journal.sqlite")
    job = journal.create_job("k", "iso", "/x.iso", "PDI")
    journal.record_file(job.id, 0, "DICOMDIR", 10, "c" * 64, "read")
    journal.record_file(job.id, 1, "bad", 10, None, "error", "unreadable_sector")
    journal.save_report(job.id, sample_report() | {"job": job.id})
    log = AuditLog(tmp_path / "audit", journal=journal)
    log.on_event("read_completed", {"job": job.id, "files": 2})
    log.on_event("job_finished", {"job": job.id, "status": "imported"})
    journal.close()
    read, done = auditchain.records(tmp_path / "audit")
    assert read["manifest_sha256"] == audit.manifest_digest([("DICOMDIR", "c" * 64), ("bad", None)])
    assert read["counts"] == {"files": 2, "read_errors": 1}
    assert done["patients"][0]["local"] == "0098765"


def test_append_fsyncs_before_returning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = auditchain.os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(auditchain.os, "fsync", spy)
    AuditLog(tmp_path).append("hold", job="j")
    assert len(synced) == 2  # the file, then (new file) its directory
    synced.clear()
    AuditLog(tmp_path).append("release", job="j", actor="operator:sato")
    assert len(synced) == 1


# ------------------------------------------------------- the journal's chain head
def _state_with_trail(tmp_path: Path, n: int = 5) -> tuple[Path, Journal]:
    journal = Journal(tmp_path / "journal.sqlite")
    log = AuditLog(tmp_path / "audit", journal=journal)
    for i in range(n):
        log.append("hold", job=f"j{i}")
    return the_file(tmp_path / "audit"), journal


def test_head_follows_every_append_and_intact_trail_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, journal = _state_with_trail(tmp_path)
    last = json.loads(path.read_bytes().splitlines()[-1])
    assert journal.audit_head(audit.TRAIL) == (5, last["hash"])
    journal.close()
    assert auditcli.audit_verify_main(tmp_path) == 0
    assert "5 records intact" in capsys.readouterr().out


@pytest.mark.parametrize("cut", [1, 2])
def test_records_cut_off_the_end_are_tampering(
    tmp_path: Path, cut: int, capsys: pytest.CaptureFixture
) -> None:
    path, journal = _state_with_trail(tmp_path)
    journal.close()
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-cut]))  # a valid chain, only shorter
    assert verify(tmp_path / "audit") == (True, None, f"{5 - cut} records intact")
    assert auditcli.audit_verify_main(tmp_path) == 1
    err = capsys.readouterr().err
    assert (
        f"trail is shorter than the journal knows: {5 - cut} records on file, 5 in the journal"
    ) in err


def test_deleted_trail_file_is_missing_not_intact(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, journal = _state_with_trail(tmp_path)
    journal.close()
    path.unlink()
    assert auditcli.audit_verify_main(tmp_path) == 1
    assert "trail file missing" in capsys.readouterr().err


def test_replaced_last_record_is_not_the_head(tmp_path: Path) -> None:
    path, journal = _state_with_trail(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    rec = json.loads(lines[-1])
    rec.pop("hash")
    rec["actor"] = "someone else"
    path.write_bytes(b"".join(lines[:-1]) + auditchain.seal(rec))  # re-hashed forgery
    ok, first_bad, reason = verify(tmp_path / "audit", journal.audit_head(audit.TRAIL))
    journal.close()
    assert (ok, first_bad) == (False, 5) and "chain head" in reason


def test_head_behind_by_one_is_a_crash_during_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _path, journal = _state_with_trail(tmp_path)

    def crash(*_a: object) -> None:
        raise sqlite3.OperationalError("disk I/O error")  # power lost after the fsync

    monkeypatch.setattr(journal, "set_audit_head", crash)
    AuditLog(tmp_path / "audit", journal=journal).append("release", job="j9")
    monkeypatch.undo()
    assert journal.audit_head(audit.TRAIL)[0] == 5
    ok, first_bad, reason = verify(tmp_path / "audit", journal.audit_head(audit.TRAIL))
    assert (ok, first_bad) == (True, None)
    assert "head behind by 1 (crash during append" in reason
    assert auditcli.audit_verify_main(tmp_path, journal) == 0
    # Two records the journal never heard of are no crash.
    AuditLog(tmp_path / "audit").append("release", job="j10")
    ok, first_bad, reason = verify(tmp_path / "audit", journal.audit_head(audit.TRAIL))
    assert (ok, first_bad) == (False, 6) and "longer than the journal knows" in reason
    # The next append through the journal brings the head up to the trail.
    AuditLog(tmp_path / "audit", journal=journal).append("release", job="j11")
    assert verify(tmp_path / "audit", journal.audit_head(audit.TRAIL))[0]
    journal.close()


def test_from_settings_keeps_the_head_without_a_journal_argument(tmp_path: Path) -> None:
    AuditLog.from_settings(tmp_path).append("label_printed", job="j", reprint=True)
    journal = Journal(tmp_path / "journal.sqlite")
    assert journal.audit_head(audit.TRAIL)[0] == 1
    journal.close()


def test_dicomweb_destination_is_named_by_its_url() -> None:
    """A STOW-RS destination has no AE title: its audit participant is the
    URL (no AETITLES= alternative, no AE-title type code), on its host."""
    url = "dicomweb+https://pacs.example.org:8443/dicom-web"
    assert audit.aet_of(url) == (url, "pacs.example.org")
    assert audit.aet_of("dicom://PACS@10.0.0.5:104") == ("PACS", "10.0.0.5")
    assert audit.aet_of("file:///srv/out") == ("", "")
    node = auditsyslog.Node(aet="PDIMPORT", source_id="pdimport-test", site_id="HOSP")
    xml = auditsyslog.instances_transferred_message(node, url, "pacs.example.org", [])
    root = ET.fromstring(xml)
    parts = {ap.find("RoleIDCode").get("csd-code"): ap for ap in root.iterfind("ActiveParticipant")}
    dest = parts["110152"]
    assert dest.get("UserID") == url
    assert dest.get("AlternativeUserID") is None
    assert dest.find("UserIDTypeCode") is None
    assert dest.get("NetworkAccessPointTypeCode") == "1"
