"""Identity sources against real servers: dcmtk's wlmscpfs (worklist, ISO
2022 IR 87 names), Orthanc (Patient Root registry), pynetdicom scripted
C-FIND SCPs (failure statuses), CSV and sqlite tables, expectations."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from pathlib import Path

import pytest
from fixtures_identity import REGISTRY, WORKLIST, WorklistEntry
from pydicom.dataset import Dataset

from pdimport.reconcile.model import Demographics, SourceDown
from pdimport.reconcile.sources import (
    add_expectation,
    list_expectations,
    open_source,
    remove_expectation,
)

TIMEOUT = 2.0
TARO = "Yamada^Tarou=山田^太郎=やまだ^たろう"
SOUTA = "Suzuki^Souta=鈴木^宗太=すずき^そうた"


def source(url: str, state_dir: Path, timeout: float = TIMEOUT):
    return open_source(url, timeout=timeout, calling_aet="PDIMPORT", state_dir=state_dir)


def born(birth_date: str, sex: str = "") -> Demographics:
    return Demographics(name="", birth_date=birth_date, sex=sex)


def keys(candidates) -> set[tuple[str, str]]:
    return {(c.local_id, c.accession_number) for c in candidates}


# ====================================================================== MWL
def test_worklist_candidates_by_birth_date_and_sex(wlmscpfs, tmp_path):
    peer = wlmscpfs()
    src = source(peer.url, tmp_path)
    men = src.candidates(born("19700101", "M"))
    assert keys(men) == {
        ("L1001", "A1001"),
        ("L1001", "A1004"),
        ("L1002", "A1002"),
        ("L2001", "A2001"),
    }
    names = {c.local_id: c.name for c in men}
    assert names == {"L1001": TARO, "L1002": SOUTA, "L2001": "Müller^Hans"}
    taro = next(c for c in men if c.local_id == "L1001")
    assert (taro.issuer, taro.birth_date, taro.sex, taro.source) == (
        "HOSP",
        "19700101",
        "M",
        peer.url,
    )
    everyone = src.candidates(born("19700101"))
    assert ("L1003", "A1003") in keys(everyone)
    assert src.candidates(born("19991231", "M")) == []
    assert src.candidates(born("")) == []  # no birth date: nobody is asked for


def test_worklist_answers_in_iso_2022_and_names_keep_three_groups(wlmscpfs, tmp_path):
    """wlmscpfs returns each file's own character set (``-csk``): the
    answers are ISO 2022 IR 87 bytes and one ISO_IR 100 answer, each decoded
    per its own Specific Character Set."""
    src = source(wlmscpfs().url, tmp_path)
    answers = {ds.PatientID: ds for ds in src.find(src.query())}
    assert b"\x1b$B" in answers["L1002"].PatientName.original_string
    assert list(answers["L1002"].SpecificCharacterSet) == ["", "ISO 2022 IR 87"]
    assert answers["L2001"].SpecificCharacterSet == "ISO_IR 100"
    by_id = {c.local_id: c for c in src.candidates_from(list(answers.values()))}
    assert by_id["L1002"].name.split("=") == ["Suzuki^Souta", "鈴木^宗太", "すずき^そうた"]
    assert by_id["L1003"].name.split("=") == ["Yamada^Hanako", "山田^花子", "やまだ^はなこ"]
    assert by_id["L2001"].name == "Müller^Hans"


def test_worklist_lookup_by_local_id(wlmscpfs, tmp_path):
    src = source(wlmscpfs().url, tmp_path)
    # two scheduled steps of one requested procedure: one candidate
    (sato,) = src.lookup("L1005")
    assert (sato.name, sato.accession_number) == ("Sato^Ichiro=佐藤^一郎=さとう^いちろう", "A1005")
    assert keys(src.lookup("L1001")) == {("L1001", "A1001"), ("L1001", "A1004")}
    assert src.lookup("L10*") == []  # wlmscpfs matches the wildcard; an ID is exact
    assert src.lookup("NOBODY") == []
    assert src.lookup("") == []


def test_worklist_stopped_mid_test_is_down(wlmscpfs, tmp_path):
    peer = wlmscpfs()
    src = source(peer.url, tmp_path)
    assert src.lookup("L1001")
    peer.stop()
    started = time.monotonic()
    with pytest.raises(SourceDown) as exc:
        src.candidates(born("19700101"))
    assert time.monotonic() - started < TIMEOUT
    assert exc.value.code == "identity_source_down"
    assert exc.value.source == peer.url
    assert "cannot connect" in str(exc.value) and "\n" not in str(exc.value)


def test_nothing_listening_is_down_at_once(tmp_path):
    url = f"mwl://WLM@127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(SourceDown, match="connection refused"):
        source(url, tmp_path).lookup("L1001")
    assert time.monotonic() - started < TIMEOUT


def test_silent_peer_is_down_after_the_timeout(tmp_path):
    """A peer that accepts the TCP connection and never answers the
    A-ASSOCIATE-RQ (the kernel's listen backlog; nobody reads)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"pdq://HUNG@127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(SourceDown, match="no answer to the association request within 1 s"):
            source(url, tmp_path, timeout=1.0).lookup("X")
        assert 0.9 <= time.monotonic() - started < 1.0 + TIMEOUT


def test_slow_worklist_is_down_after_the_timeout(wlmscpfs, tmp_path):
    peer = wlmscpfs(args=["--sleep-during", "4"])
    started = time.monotonic()
    with pytest.raises(SourceDown, match="no C-FIND response within 1 s"):
        source(peer.url, tmp_path, timeout=1.0).lookup("L1001")
    assert time.monotonic() - started < 1.0 + TIMEOUT


def test_rejected_association_is_down(wlmscpfs, tmp_path):
    peer = wlmscpfs(args=["--refuse"])
    with pytest.raises(SourceDown, match="association rejected by WLM"):
        source(peer.url, tmp_path).lookup("L1001")


def test_worklist_server_asked_as_registry_is_down(wlmscpfs, tmp_path):
    """wlmscpfs offers no Patient Root FIND (dcmtk rejects an association
    with no acceptable context): a misconfigured URL is a source that is
    down, not an empty answer."""
    peer = wlmscpfs()
    with pytest.raises(SourceDown, match="association rejected by WLM .*no reason given"):
        source(f"pdq://WLM@127.0.0.1:{peer.port}", tmp_path).lookup("L1001")


@pytest.mark.parametrize("status", [0xA700, 0xA900, 0xC000, 0xFE00])
@pytest.mark.parametrize("scheme", ["mwl", "pdq"])
def test_failure_status_is_down_even_after_answers(find_scp, tmp_path, status, scheme):
    answer = Dataset()
    answer.PatientID = "P1"
    answer.PatientName = "Doe^Jane"
    answer.PatientBirthDate = "19700101"
    scp = find_scp(status=status, answers=[answer])
    with pytest.raises(SourceDown, match=f"C-FIND status 0x{status:04X}"):
        source(scp.url(scheme), tmp_path).candidates(born("19700101"))


def test_queries_carry_the_keys_each_model_needs(find_scp, tmp_path):
    scp = find_scp()
    source(scp.url("mwl"), tmp_path).candidates(born("19700101", "F"))
    source(scp.url("pdq"), tmp_path).candidates(born("19700101"))
    source(scp.url("pdq"), tmp_path).lookup("P1")
    mwl, pdq, by_id = scp.queries
    assert mwl.SpecificCharacterSet == "ISO_IR 192"
    assert (mwl.PatientBirthDate, mwl.PatientSex) == ("19700101", "F")
    for keyword in ("PatientName", "PatientID", "IssuerOfPatientID", "AccessionNumber"):
        assert keyword in mwl and mwl[keyword].value in ("", None)
    (step,) = mwl.ScheduledProcedureStepSequence
    assert "ScheduledStationAETitle" in step and "Modality" in step
    assert pdq.QueryRetrieveLevel == "PATIENT"
    assert "AccessionNumber" not in pdq and "ScheduledProcedureStepSequence" not in pdq
    assert pdq.PatientSex in ("", None)  # unknown sex is no filter
    assert by_id.PatientID == "P1" and by_id.PatientBirthDate in ("", None)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ====================================================================== PDQ
def test_registry_candidates_and_lookup(orthanc_registry, tmp_path):
    url = f"pdq://ORTHANC@127.0.0.1:{orthanc_registry.port}"
    src = source(url, tmp_path)
    men = src.candidates(born("19650303", "M"))
    assert {(c.local_id, c.name) for c in men} == {
        ("R5001", "Tanaka^Hiroshi=田中^博=たなか^ひろし"),
        ("R5003", SOUTA),
    }
    assert all(c.issuer == "HOSP" and c.source == url for c in men)
    assert {c.local_id for c in src.candidates(born("19650303"))} == {"R5001", "R5002", "R5003"}
    (john,) = src.lookup("R5004")
    assert (john.name, john.birth_date, john.sex) == ("Doe^John", "19900909", "M")
    assert src.lookup("R9999") == []
    assert len(REGISTRY) == 4


def test_registry_stopped_is_down(orthanc_registry, tmp_path):
    src = source(f"pdq://ORTHANC@127.0.0.1:{orthanc_registry.port}", tmp_path)
    assert src.lookup("R5004")
    orthanc_registry.proc.terminate()
    orthanc_registry.proc.wait(10)
    with pytest.raises(SourceDown):
        src.lookup("R5004")


# ====================================================================== CSV
CSV_TEXT = (
    "\ufefflocal_id,name,birth_date,sex,issuer,ward\n"
    f"C1,{TARO},19700101,M,HOSP,3F\n"
    "C2,Yamada^Hanako,1970-01-01,f,HOSP,\n"
    "C3,Doe^John,19800202,,,\n"
    "\n"
)


def test_csv_candidates_and_lookup(tmp_path):
    table = tmp_path / "patients.csv"
    table.write_text(CSV_TEXT, encoding="utf-8")
    src = source(f"csv://{table}", tmp_path)
    (taro,) = src.candidates(born("19700101", "M"))
    assert (taro.local_id, taro.name, taro.issuer, taro.source) == ("C1", TARO, "HOSP", src.url)
    both = src.candidates(born("19700101"))
    assert [(c.local_id, c.birth_date, c.sex) for c in both] == [
        ("C1", "19700101", "M"),
        ("C2", "19700101", "F"),
    ]
    # a row without a sex is a candidate for either
    assert [c.local_id for c in src.candidates(born("19800202", "F"))] == ["C3"]
    assert [c.name for c in src.lookup("C3")] == ["Doe^John"]
    assert src.lookup("C9") == []


def test_csv_edited_live_is_re_read(tmp_path):
    table = tmp_path / "patients.csv"
    table.write_text(CSV_TEXT, encoding="utf-8")
    src = source(f"csv://{table}", tmp_path)
    assert src.lookup("C4") == []
    with open(table, "a", encoding="utf-8") as f:
        f.write("C4,Sato^Jiro,19900101,M,HOSP,\n")
    assert [c.name for c in src.lookup("C4")] == ["Sato^Jiro"]
    # same size, mtime put back: still seen (ctime moved)
    st = table.stat()
    table.write_text(table.read_text(encoding="utf-8").replace("Jiro", "Goro"), encoding="utf-8")
    os.utime(table, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert [c.name for c in src.lookup("C4")] == ["Sato^Goro"]


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("local_id,name,birth_date,sex\nC1,A,19700101,M\n", "line 1: header has no column issuer"),
        (CSV_TEXT + "C5,B,19700101\n", "line 6: 3 fields, the header has 6"),
        (CSV_TEXT.replace("1970-01-01", "1970-13-01"), "line 3: birth_date '1970-13-01'"),
        (CSV_TEXT.replace(",f,", ",X,"), "line 3: sex 'X'"),
        (CSV_TEXT.replace("C3,", ","), "line 4: local_id is empty"),
        ("", "line 1: header has no column local_id"),
    ],
)
def test_csv_malformed_is_down_naming_the_line(tmp_path, text, detail):
    table = tmp_path / "patients.csv"
    table.write_text(text, encoding="utf-8")
    with pytest.raises(SourceDown) as exc:
        source(f"csv://{table}", tmp_path).candidates(born("19700101"))
    assert str(table) in str(exc.value) and detail in str(exc.value)


def test_csv_not_utf8_or_missing_is_down(tmp_path):
    table = tmp_path / "patients.csv"
    src = source(f"csv://{table}", tmp_path)
    with pytest.raises(SourceDown, match=f"cannot read {table}"):
        src.lookup("C1")
    table.write_bytes(CSV_TEXT.encode("utf-8") + "C6,Jäger,19700101,M,,\n".encode("latin-1"))
    with pytest.raises(SourceDown, match="line 6: not UTF-8"):
        src.lookup("C1")
    table.write_text(CSV_TEXT, encoding="utf-8")  # fixed: up again
    assert src.lookup("C1")


# =================================================================== sqlite
def _database(path: Path, rows, columns="local_id, issuer, name, birth_date, sex") -> None:
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE patients ({columns})")
        db.executemany(
            f"INSERT INTO patients VALUES ({', '.join('?' * len(columns.split(',')))})", rows
        )
    db.close()


def test_sqlite_candidates_lookup_and_live_edit(tmp_path):
    path = tmp_path / "patients.db"
    _database(path, [("S1", "HOSP", TARO, "19700101", "M"), ("S2", "", "Doe^Jane", 19700101, "F")])
    src = source(f"sqlite://{path}", tmp_path)
    assert [(c.local_id, c.name) for c in src.candidates(born("19700101", "M"))] == [("S1", TARO)]
    assert [c.local_id for c in src.candidates(born("19700101"))] == ["S1", "S2"]
    assert src.lookup("S3") == []
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO patients VALUES ('S3', 'HOSP', 'Sato^Jiro', '19900101', 'M')")
    db.close()
    assert [c.name for c in src.lookup("S3")] == ["Sato^Jiro"]


def test_sqlite_malformed_or_missing_is_down(tmp_path):
    path = tmp_path / "patients.db"
    src = source(f"sqlite://{path}", tmp_path)
    with pytest.raises(SourceDown, match="no such file"):
        src.lookup("S1")
    assert not path.exists()  # read-only: asking did not create it
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE people (x)")
    db.close()
    with pytest.raises(SourceDown, match="no table 'patients'"):
        src.lookup("S1")
    other = tmp_path / "other.db"
    _database(other, [("S1", "", "A", "19700101")], columns="local_id, issuer, name, birth_date")
    with pytest.raises(SourceDown, match="has no column sex"):
        source(f"sqlite://{other}", tmp_path).lookup("S1")
    bad = tmp_path / "bad.db"
    _database(bad, [("S1", "", "A", "19700101", "M"), ("S2", "", "B", "yesterday", "M")])
    with pytest.raises(SourceDown, match="row 2: birth_date 'yesterday'"):
        source(f"sqlite://{bad}", tmp_path).lookup("S1")


# ============================================================= expectations
def test_expectations_add_list_remove(tmp_path):
    state = tmp_path / "state"
    assert list_expectations(state) == []
    assert remove_expectation(state, "E1") == 0
    first = add_expectation(state, "E1", name=TARO, birth_date="1970-01-01", sex="m", note="desk")
    second = add_expectation(state, "E2")
    third = add_expectation(state, "E1", birth_date="19700101")
    rows = list_expectations(state)
    assert [r["id"] for r in rows] == [first, second, third]
    assert rows[0] | {"created": ""} == {
        "id": first,
        "local_id": "E1",
        "name": TARO,
        "birth_date": "19700101",
        "sex": "M",
        "note": "desk",
        "created": "",
    }
    assert (state / "expectations.sqlite").is_file()
    assert remove_expectation(state, second) == 1  # by id
    assert remove_expectation(state, "E1") == 2  # by local id: all of them
    fourth = add_expectation(state, "E4")
    assert remove_expectation(state, str(fourth)) == 1  # digits nobody has as an ID
    assert list_expectations(state) == []
    for bad in (
        {"local_id": " "},
        {"local_id": "E5", "birth_date": "1970"},
        {"local_id": "E5", "sex": "Q"},
    ):
        with pytest.raises(ValueError):
            add_expectation(state, **bad)


def test_expectations_as_a_source(tmp_path):
    state = tmp_path / "state"
    add_expectation(state, "E1", name=TARO, birth_date="19700101", sex="M", note="ref. Dr. Ito")
    add_expectation(state, "E2", birth_date="19700101")  # no name, no sex
    add_expectation(state, "E3", name="Yamada^Hanako", birth_date="19700101", sex="F")
    add_expectation(state, "E4", name=TARO)  # no birth date: never a candidate
    src = source("expect:", state)
    men = src.candidates(born("19700101", "M"))
    assert [(c.local_id, c.note, c.source) for c in men] == [
        ("E1", "ref. Dr. Ito", "expect:"),
        ("E2", "", "expect:"),
    ]
    assert [c.local_id for c in src.candidates(born("19700101"))] == ["E1", "E2", "E3"]
    assert src.candidates(born("")) == []
    assert [c.name for c in src.lookup("E4")] == [TARO]
    assert src.lookup("E9") == []


def test_expectations_database_broken_is_down(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "expectations.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(SourceDown, match="expectations.sqlite"):
        source("expect:", state).lookup("E1")


# ===================================================================== URLs
def test_urls_parse_to_their_kinds(tmp_path):
    mwl = source("MWL://ris%20a@RIS.Example.org:104", tmp_path)
    assert (mwl.url, mwl.aet, mwl.host, mwl.port) == (
        "mwl://ris a@ris.example.org:104",
        "ris a",
        "ris.example.org",
        104,
    )
    pdq = source("pdq://PACS@[::1]:11112", tmp_path)
    assert (pdq.url, pdq.host) == ("pdq://PACS@[::1]:11112", "::1")
    assert source("csv:///srv/site/patients.csv", tmp_path).path == Path("/srv/site/patients.csv")
    assert source("sqlite:///srv/p%20q.db", tmp_path).path == Path("/srv/p q.db")
    assert source("expect:", tmp_path).url == "expect:"


@pytest.mark.parametrize(
    "url",
    [
        "ldap://dir.example.org",
        "hl7://ris:2575",
        "patients.csv",
        "",
        "mwl://RIS@host",
        "mwl://host:104",
        "mwl://RIS@host:0",
        "mwl://RIS@host:70000",
        "mwl://ABCDEFGHIJKLMNOPQ@host:104",
        "mwl://RIS@host:104?x=1",
        "csv://relative/patients.csv",
        "csv:///",
        "sqlite:patients.db",
        "expect:tomorrow",
    ],
)
def test_bad_urls_are_refused_naming_the_forms(tmp_path, url):
    with pytest.raises(ValueError) as exc:
        source(url, tmp_path)
    message = str(exc.value)
    assert repr(url) in message and "mwl://AET@host:port" in message and "expect:" in message


def test_a_bad_calling_ae_title_or_timeout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="calling AE title"):
        open_source("mwl://RIS@host:104", timeout=1, calling_aet="X" * 17, state_dir=tmp_path)
    with pytest.raises(ValueError, match="timeout"):
        open_source("mwl://RIS@host:104", timeout=0, calling_aet="PDIMPORT", state_dir=tmp_path)


def test_worklist_fixture_refuses_what_dump2dcm_cannot_carry():
    from fixtures_identity import worklist_dump

    assert b"\x1b$B" in worklist_dump(WORKLIST[2])
    with pytest.raises(ValueError, match="dump2dcm"):
        worklist_dump(WorklistEntry("X", "A]B", "19700101", "M", "A", SpecificCharacterSet=""))
