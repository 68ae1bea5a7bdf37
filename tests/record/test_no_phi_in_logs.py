"""No PHI in logs (issue 17): log lines carry job ids, counts and codes, never
patient names or IDs; those stay in the journal, reports, audit and console.

An import that reconciles one patient, holds a two-patient disc and releases
it patient by patient, into a real storescp, with every logger at DEBUG
(``-vv``, what a site turns on when it debugs).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fixtures_dicom import make_ct_series

from pdimport.cli import main

NAMES = {
    "F123": "Yamadera^Kotarou=山寺^小太郎=やまでら^こたろう",
    "F456": "Okonogi^Shizue",
}
BORN = {"PatientBirthDate": "19800214", "PatientSex": "M"}
JAPANESE = {"SpecificCharacterSet": ["ISO 2022 IR 6", "ISO 2022 IR 87"]}


def phi_words() -> set[str]:
    words = {"L0001", "L0002", "19800214"}
    for pid, name in NAMES.items():
        words.add(pid)
        for group in name.split("="):
            words.update(part for part in group.split("^") if len(part) > 1)
    return words


STDERR: list[str] = []


def run(capfd, *args: str) -> tuple[int, dict]:
    rc = main([*args, "--json"])
    out, err = capfd.readouterr()  # err: the lines of every process, workers too
    STDERR.extend(err.splitlines())
    return rc, (json.loads(out) if out.strip() else {})


def test_import_hold_and_release_log_no_patient_name_or_id(tmp_path: Path, storescp, capfd, caplog):
    registry = tmp_path / "patients.csv"
    registry.write_text(
        "local_id,issuer,name,birth_date,sex\n"
        "L0001,LOCALHOSP,YAMADERA^KOTAROU,19800214,M\n"
        "L0002,LOCALHOSP,OKONOGI^SHIZUE,19800214,M\n",
        encoding="utf-8",
    )
    one, two = tmp_path / "one", tmp_path / "two"
    make_ct_series(
        one / "F123", 2, patient_id="F123", patient_name=NAMES["F123"], **JAPANESE, **BORN
    )
    for pid, name in NAMES.items():
        attrs = {**JAPANESE, **BORN} if pid == "F123" else BORN
        make_ct_series(two / pid, 2, patient_id=pid, patient_name=name, **attrs)
    scp = storescp()
    state = tmp_path / "state"
    args = ("-vv", "--dest", scp.url, "--state-dir", str(state), "--identity", f"csv://{registry}")
    caplog.set_level(logging.DEBUG)  # -vv: pdimport and pynetdicom at DEBUG

    rc, rep = run(capfd, "import", str(one), *args)
    assert rc == 0 and rep["patients"][0]["local_id"] == "L0001", rep
    rc, rep = run(capfd, "import", str(two), *args)
    assert rc == 1 and rep["hold_reasons"] == ["multi_patient"], rep
    job = rep["job"]
    rc, _ = run(
        capfd,
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
    rc, rep = run(
        capfd, "release", job, "--patient", "F456", "--keep-foreign", "--operator", "Tanaka", *args
    )
    assert rc == 0 and rep["status"] == "imported", rep
    assert len(scp.files()) == 6

    lines = [f"{r.name}: {r.getMessage()}" for r in caplog.records] + STDERR
    assert len(lines) > 10, lines  # the run did log
    assert "F456" in json.dumps(rep)  # the words are there to be found, in the report
    leaks = [(w, ln) for ln in lines for w in phi_words() if w in ln]
    assert not leaks, "\n".join(f"{w!r} in {ln}" for w, ln in leaks[:20])
