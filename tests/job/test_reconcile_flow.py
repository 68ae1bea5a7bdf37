"""Reconciliation end to end: a disc from another hospital is filed under the
local patient, held when nobody (or several) match, and a person's decisions
release or discard it from the spool. The PACS is a real Orthanc; the
identity source a CSV table (the sources themselves are tested against
wlmscpfs and Orthanc in tests/reconcile/)."""

from __future__ import annotations

import io
import json
import shutil
import urllib.request
from pathlib import Path

import pydicom
import pytest
from fixtures_dicom import dciodvfy_errors, make_ct_series
from fixtures_peers import free_port

from pdimport.cli import main
from pdimport.record import auditchain

KANJI = "Satou^Tarou=佐藤^太郎=さとう^たろう"
JAPANESE = {"SpecificCharacterSet": ["ISO 2022 IR 6", "ISO 2022 IR 87"]}
BORN = {"PatientBirthDate": "19800214", "PatientSex": "M"}


def disc(root: Path, patients: list[tuple[str, str, dict]], n: int = 2) -> Path:
    for pid, name, attrs in patients:
        make_ct_series(root / pid, n, patient_id=pid, patient_name=name, **attrs)
    return root


def registry(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    lines = ["local_id,issuer,name,birth_date,sex"]
    lines += [f"{lid},LOCALHOSP,{name},{born},{sex}" for lid, name, born, sex in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(capsys, *args: str) -> tuple[int, dict]:
    rc = main([*args, "--json"])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if out.strip() else {})


def held(capsys, state: Path) -> list[dict]:
    assert main(["jobs", "--held", "--json", "--state-dir", str(state)]) == 0
    return json.loads(capsys.readouterr().out)


def audit_events(state: Path) -> list[dict]:
    return list(auditchain.records(state / "audit"))


@pytest.fixture
def csv_source(tmp_path: Path) -> Path:
    return registry(
        tmp_path / "patients.csv",
        [
            ("L0001", "SATO^TARO=サトウ^タロウ", "19800214", "M"),  # another romanisation, katakana
            ("L0002", "Suzuki^Hanako=鈴木^花子", "19800214", "F"),
        ],
    )


def base_args(state: Path, orthanc, source: Path | None) -> list[str]:
    args = ["--state-dir", str(state), "--dest", f"dicom://{orthanc.aet}@127.0.0.1:{orthanc.port}"]
    if source is not None:
        args += ["--identity", f"csv://{source}"]
    return args


def test_kanji_disc_is_filed_under_the_local_patient(tmp_path, orthanc, csv_source, capsys):
    src = disc(tmp_path / "disc", [("F123", KANJI, {**JAPANESE, **BORN})], n=3)
    state = tmp_path / "state"
    rc, report = run(capsys, "import", str(src), *base_args(state, orthanc, csv_source))
    assert rc == 0, report["problems"]
    [patient] = report["patients"]
    assert patient["id"] == "F123" and patient["local_id"] == "L0001"
    assert patient["match"]["source"] == f"csv://{csv_source}"
    stored = orthanc.instances()
    assert len(stored) == 3
    on_disc = {i["sop_instance_uid"] for i in report["instances"]}
    assert {i["SOPInstanceUID"] for i in stored} == on_disc  # UIDs unchanged
    for tags in stored:
        assert tags["PatientID"] == "L0001" and tags["IssuerOfPatientID"] == "LOCALHOSP"
        assert tags["PatientName"].startswith("SATO^TARO")
        others = tags["OtherPatientIDsSequence"]
        assert {"F123"} <= {o["PatientID"] for o in others}
        [coercion] = [
            o
            for o in tags["OriginalAttributesSequence"]
            if o["ReasonForTheAttributeModification"] == "COERCE"
        ]
        old = coercion["ModifiedAttributesSequence"][0]
        assert old["PatientID"] == "F123" and old["PatientName"].startswith("Satou^Tarou")
    events = [r for r in audit_events(state) if r["event"] == "coercion"]
    assert events and events[0]["local_id"] == "L0001" and events[0]["foreign_id"] == "F123"


def test_coerced_objects_pass_dciodvfy(tmp_path, orthanc, csv_source, capsys):
    if not shutil.which("dciodvfy"):
        pytest.skip("dicom3tools dciodvfy not installed")
    src = disc(tmp_path / "disc", [("F123", KANJI, {**JAPANESE, **BORN})], n=1)
    state = tmp_path / "state"
    rc, report = run(capsys, "import", str(src), *base_args(state, orthanc, csv_source))
    assert rc == 0, report["problems"]
    [iid] = orthanc.get("/instances")
    blob = tmp_path / "stored.dcm"
    with urllib.request.urlopen(f"http://127.0.0.1:{orthanc.http_port}/instances/{iid}/file") as r:
        blob.write_bytes(r.read())
    original = next((src / "F123").iterdir())
    # The synthetic CT lacks a few Type 2 attributes; the coercion must add no error.
    assert set(dciodvfy_errors(blob)) <= set(dciodvfy_errors(original))
    assert set(dciodvfy_errors(original)) == {
        e for e in dciodvfy_errors(original) if "Missing attribute" in e
    }


def test_two_candidates_hold_the_disc_with_both_listed(tmp_path, orthanc, capsys):
    source = registry(
        tmp_path / "twins.csv",
        [("L1", "SATO^TARO", "19800214", "M"), ("L2", "Satoh^Taroh", "19800214", "M")],
    )
    src = disc(tmp_path / "disc", [("F123", KANJI, {**JAPANESE, **BORN})])
    state = tmp_path / "state"
    rc, report = run(capsys, "import", str(src), *base_args(state, orthanc, source))
    assert rc == 1 and report["status"] == "held"
    assert report["hold_reasons"] == ["ambiguous_match"]
    [job] = held(capsys, state)
    assert sorted(c["local_id"] for c in job["patients"][0]["candidates"]) == ["L1", "L2"]
    assert orthanc.get("/instances") == []


@pytest.mark.parametrize(
    ("policy", "status", "patient_id"),
    [("hold", "held", None), ("keep", "imported", "F999"), ("prefix", "imported", "EXT-F999")],
)
def test_no_candidate_under_each_policy(
    tmp_path, orthanc, csv_source, capsys, policy, status, patient_id
):
    src = disc(tmp_path / "disc", [("F999", "Nobody^Known", BORN)])
    state = tmp_path / "state"
    cfg = tmp_path / "pdimport.toml"
    cfg.write_text(f'[reconcile]\nunmatched = "{policy}"\n')
    rc, report = run(
        capsys, "import", str(src), "--config", str(cfg), *base_args(state, orthanc, csv_source)
    )
    assert report["status"] == status
    assert [p["code"] for p in report["problems"]].count("no_match") == 1
    stored = orthanc.instances()
    if patient_id is None:
        assert rc == 1 and stored == [] and report["hold_reasons"] == ["no_match"]
    else:
        assert rc == 0 and {t["PatientID"] for t in stored} == {patient_id}
        assert {t["IssuerOfPatientID"] for t in stored} == {"TESTHOSP"}


def test_a_source_that_is_down_holds_the_disc(tmp_path, orthanc, capsys):
    src = disc(tmp_path / "disc", [("F123", KANJI, {**JAPANESE, **BORN})])
    state = tmp_path / "state"
    rc, report = run(
        capsys, "import", str(src), *base_args(state, orthanc, tmp_path / "no-such-table.csv")
    )
    assert rc == 1 and report["hold_reasons"] == ["identity_source_down"]
    assert orthanc.get("/instances") == []  # never sent under the foreign ID by accident


def test_two_patient_disc_released_one_patient_at_a_time(tmp_path, orthanc, csv_source, capsys):
    src = disc(
        tmp_path / "disc",
        [("F123", KANJI, {**JAPANESE, **BORN}), ("F456", "Other^Person", BORN)],
    )
    state = tmp_path / "state"
    args = base_args(state, orthanc, csv_source)
    rc, report = run(capsys, "import", str(src), *args)
    assert rc == 1 and report["hold_reasons"] == ["multi_patient"]
    job = report["job"]
    shutil.rmtree(src)  # the disc went home with the patient: the spool has it all
    rc, report = run(
        capsys,
        "release",
        job,
        "--patient",
        "F123",
        "--local-id",
        "L0001",
        "--operator",
        "Tanaka",
        *args,
    )
    assert rc == 1 and report["status"] == "held"  # F456 still waits
    assert {t["PatientID"] for t in orthanc.instances()} == {"L0001"}
    rc, report = run(
        capsys, "release", job, "--patient", "F456", "--keep-foreign", "--operator", "Tanaka", *args
    )
    assert rc == 0 and report["status"] == "imported"
    assert sorted(t["PatientID"] for t in orthanc.instances()) == ["F456", "F456", "L0001", "L0001"]
    assert [d["patient"] for d in report["decisions"]] == ["F123", "F456"]
    assert main(["jobs", "--json", "--state-dir", str(state)]) == 0
    jobs = json.loads(capsys.readouterr().out)
    assert {j["job"]: j["state"] for j in jobs}[job] == "imported"
    releases = [r for r in audit_events(state) if r["event"] == "release"]
    assert [(r["actor"], r["patient"]) for r in releases] == [
        ("Tanaka", "F123"),
        ("Tanaka", "F456"),
    ]


def test_discard_records_the_decision(tmp_path, orthanc, capsys):
    src = disc(tmp_path / "disc", [("A1", "One^Patient", BORN), ("B2", "Two^Patient", BORN)])
    state = tmp_path / "state"
    args = base_args(state, orthanc, None)
    rc, report = run(capsys, "import", str(src), *args)
    assert report["status"] == "held"
    rc, report = run(
        capsys, "discard", report["job"], "--reason", "wrong disc", "--operator", "Sato", *args
    )
    assert report["status"] == "discarded" and rc == 1
    assert {d["action"] for d in report["decisions"]} == {"discard"}
    assert orthanc.get("/instances") == []
    discards = [r for r in audit_events(state) if r["event"] == "discard"]
    assert sorted(r["patient"] for r in discards) == ["A1", "B2"]
    assert all(r["actor"] == "Sato" and r["reason"] == "wrong disc" for r in discards)


def test_unknown_job_or_patient_is_a_usage_error_and_changes_nothing(
    tmp_path, orthanc, csv_source, capsys
):
    src = disc(tmp_path / "disc", [("A1", "One^Patient", BORN), ("B2", "Two^Patient", BORN)])
    state = tmp_path / "state"
    args = base_args(state, orthanc, csv_source)
    _, report = run(capsys, "import", str(src), *args)
    job = report["job"]
    before = held(capsys, state)
    for extra in (
        ["release", "no-such-job", "--local-id", "L0001"],
        ["release", job, "--patient", "ZZZ", "--local-id", "L0001"],
        ["release", job, "--patient", "A1", "--local-id", "UNKNOWN-LOCAL"],
        ["release", job, "--local-id", "L0001"],  # two patients held: which one?
        ["discard", "no-such-job", "--reason", "x"],
    ):
        assert main([*extra, "--operator", "Tanaka", *args]) == 64, extra
        err = capsys.readouterr().err
        assert err.startswith("pdimport: ") and "Traceback" not in err
    assert held(capsys, state) == before
    assert not [r for r in audit_events(state) if r["event"] in ("release", "discard")]


def test_worklist_match_takes_the_accession_number(tmp_path, orthanc, wlmscpfs, capsys):
    ris = wlmscpfs()  # entries in ISO 2022 IR 87 (tests/fixtures_identity.py)
    src = disc(
        tmp_path / "disc",
        [
            (
                "F55",
                "Satou^Ichirou=佐藤^一郎",
                {**JAPANESE, "PatientBirthDate": "19800505", "PatientSex": "M"},
            )
        ],
    )
    state = tmp_path / "state"
    cfg = tmp_path / "pdimport.toml"
    cfg.write_text('[reconcile]\naccession = "worklist"\n')
    args = [*base_args(state, orthanc, None), "--identity", ris.url, "--config", str(cfg)]
    rc, report = run(capsys, "import", str(src), *args)
    assert rc == 0, report["problems"]
    assert report["patients"][0]["match"]["source"] == ris.url
    stored = orthanc.instances()
    assert {t["PatientID"] for t in stored} == {"L1005"}
    assert {t["AccessionNumber"] for t in stored} == {"A1005"}
    # the name as the worklist gave it, in the object (Orthanc's own JSON may
    # not decode every ISO 2022 declaration, so read the stored file itself)
    for iid in orthanc.get("/instances"):
        with urllib.request.urlopen(
            f"http://127.0.0.1:{orthanc.http_port}/instances/{iid}/file"
        ) as r:
            ds = pydicom.dcmread(io.BytesIO(r.read()))
        assert str(ds.PatientName) == "Sato^Ichiro=佐藤^一郎=さとう^いちろう"


def test_an_expectation_registered_ahead_names_the_patient(tmp_path, orthanc, capsys):
    state = tmp_path / "state"
    assert (
        main(
            [
                "expect",
                "--local-id",
                "L777",
                "--name",
                "Katou^Ken",
                "--birth",
                "19900101",
                "--sex",
                "M",
                "--note",
                "referral 12",
                "--state-dir",
                str(state),
            ]
        )
        == 0
    )
    capsys.readouterr()
    src = disc(
        tmp_path / "disc", [("F9", "KATO^KEN", {"PatientBirthDate": "19900101", "PatientSex": "M"})]
    )
    args = [*base_args(state, orthanc, None), "--identity", "expect:"]
    rc, report = run(capsys, "import", str(src), *args)
    assert rc == 0, report["problems"]
    assert {t["PatientID"] for t in orthanc.instances()} == {"L777"}
    assert main(["expect", "--list", "--json", "--state-dir", str(state)]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["local_id"] == "L777" and row["note"] == "referral 12"


def test_split_policy_reconciles_each_patient_and_never_merges(tmp_path, orthanc, capsys):
    source = registry(
        tmp_path / "two.csv",
        [("L1", "One^Patient", "19800214", "M"), ("L2", "Two^Patient", "19800214", "M")],
    )
    src = disc(tmp_path / "disc", [("A1", "One^Patient", BORN), ("B2", "Two^Patient", BORN)])
    state = tmp_path / "state"
    cfg = tmp_path / "pdimport.toml"
    cfg.write_text('[policy]\nmulti_patient = "split"\n')
    rc, report = run(
        capsys, "import", str(src), "--config", str(cfg), *base_args(state, orthanc, source)
    )
    assert rc == 0 and report["status"] == "imported", report["problems"]
    by_uid = {i["sop_instance_uid"]: i["path"].split("/")[0] for i in report["instances"]}
    stored = {t["SOPInstanceUID"]: t["PatientID"] for t in orthanc.instances()}
    assert {uid: {"A1": "L1", "B2": "L2"}[by_uid[uid]] for uid in by_uid} == stored


def test_a_retry_keeps_the_identity_the_first_run_settled(tmp_path, csv_source, capsys):
    """The PACS was down when the disc was read and reconciled; by the retry
    the registry is down too. The job is delivered under the identity it was
    settled with, never held from waiting nor re-asked (a patient under two
    identities), and a disc reconciled to nobody keeps its foreign ID."""
    src = disc(tmp_path / "disc", [("F123", KANJI, {**JAPANESE, **BORN})])
    state, out = tmp_path / "state", tmp_path / "out"
    closed = f"dicom://NOBODY@127.0.0.1:{free_port()}"
    common = ["--state-dir", str(state)]
    rc, report = run(
        capsys, "import", str(src), "--dest", closed, "--identity", f"csv://{csv_source}", *common
    )
    assert report["status"] == "waiting_for_destination", report
    assert report["patients"][0]["local_id"] == "L0001"
    gone = tmp_path / "registry-moved.csv"  # the registry is unreachable by now
    rc, report = run(
        capsys,
        "import",
        str(src),
        "--dest",
        f"file://{out}",
        "--identity",
        f"csv://{gone}",
        *common,
    )
    assert rc == 0 and report["status"] == "imported", report
    assert report["patients"][0]["local_id"] == "L0001"
    assert {str(pydicom.dcmread(f).PatientID) for f in out.iterdir()} == {"L0001"}
