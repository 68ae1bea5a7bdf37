"""Pure pieces: settings table, spool, journal, grouping rules."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from pdimport.model import Header
from pdimport.policy.group import Instance, group_patients, normalise_name
from pdimport.problems import Problem
from pdimport.settings import SettingsError, load
from pdimport.store.journal import Journal
from pdimport.store.spool import Spool


# ------------------------------------------------------------------ settings
def test_settings_defaults_file_and_flags(tmp_path):
    cfg_file = tmp_path / "pdimport.toml"
    cfg_file.write_text('calling_aet = "FROMFILE"\n[network]\ndimse_timeout = 5\n')
    cfg = load(cfg_file, {"calling_aet": "FROMFLAG", "state_dir": None})
    assert cfg.calling_aet == "FROMFLAG"  # flags override the file
    assert cfg.get("network.dimse_timeout") == 5.0  # int coerced to float
    assert cfg.state_dir == "/var/lib/pdimport"  # default kept when the flag is unset
    with pytest.raises(AttributeError):
        cfg.calling_aet = "X"


@pytest.mark.parametrize(
    "text",
    [
        "nonsense = 1\n",
        "[network]\ndimse_timeout = -1\n",
        'calling_aet = "WAY_TOO_LONG_AE_TITLE"\n',
        "x = [\n",
    ],
)
def test_settings_refuse_bad_config(tmp_path, text):
    cfg_file = tmp_path / "bad.toml"
    cfg_file.write_text(text)
    with pytest.raises(SettingsError):
        load(cfg_file)


def test_problem_codes_are_checked():
    with pytest.raises(ValueError):
        Problem("no_such_code")
    assert Problem("truncated", "a", "b").as_dict() == {
        "code": "truncated",
        "path": "a",
        "detail": "b",
    }


# --------------------------------------------------------------------- spool
def test_spool_is_content_addressed_and_not_executable(tmp_path):
    spool = Spool(tmp_path / "spool")
    data = b"x" * 3_000_000
    sha, size = spool.put([data[:1000], data[1000:]])
    assert sha == hashlib.sha256(data).hexdigest() and size == len(data)
    path = spool.path(sha)
    assert path.read_bytes() == data
    assert not stat.S_IMODE(path.stat().st_mode) & 0o111
    assert spool.put_bytes(data) == (sha, size)  # stored once
    assert spool.has(sha, size) and not spool.has(sha, size + 1)
    assert os.listdir(tmp_path / "spool" / "tmp") == []


def test_spool_keeps_nothing_when_the_stream_fails(tmp_path):
    spool = Spool(tmp_path / "spool")

    def broken():
        yield b"abc"
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        spool.put(broken())
    assert os.listdir(tmp_path / "spool" / "tmp") == []
    assert not spool.has(hashlib.sha256(b"abc").hexdigest())


def test_spool_rejects_non_hash_names(tmp_path):
    with pytest.raises(ValueError):
        Spool(tmp_path).path("../../etc/passwd")


def test_a_new_spool_keeps_one_folder_per_two_hex_digits(tmp_path):
    root = tmp_path / "spool"
    spool = Spool(root)
    shas = [spool.put_bytes(bytes([n]) * 100)[0] for n in range(40)]
    for sha in shas:
        assert spool.path(sha) == root / sha[:2] / sha and spool.path(sha).is_file()
    buckets = {p.name for p in root.iterdir() if p.is_dir() and p.name != "tmp"}
    assert buckets == {sha[:2] for sha in shas}
    assert not any(p.is_dir() for b in buckets for p in (root / b).iterdir())
    assert Spool(root)._two_level is False  # marked: reopened, still one level


def test_a_spool_of_the_two_level_layout_keeps_its_files_readable(tmp_path):
    """A spool an earlier version wrote (``ab/cd/abcd…``, no layout mark):
    its files are found, kept once, and removed where they are; new files go
    to the one-level place."""
    root = tmp_path / "spool"
    old = b"read before the upgrade"
    old_sha = hashlib.sha256(old).hexdigest()
    earlier = root / old_sha[:2] / old_sha[2:4] / old_sha
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(old)
    spool = Spool(root)
    assert spool.path(old_sha) == earlier and spool.has(old_sha, len(old))
    assert spool.put_bytes(old) == (old_sha, len(old))
    assert not (root / old_sha[:2] / old_sha).exists()  # not stored a second time
    new_sha, _ = spool.put_bytes(b"read after the upgrade")
    assert spool.path(new_sha) == root / new_sha[:2] / new_sha and spool.path(new_sha).is_file()
    assert spool.remove(old_sha) and not earlier.exists() and not spool.has(old_sha)


# ------------------------------------------------------------------- journal
def test_journal_never_downgrades_an_acknowledged_delivery(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    job = j.create_job("dir:/x", "dir", "/x", "")
    j.record_delivery("dicom://A@h:1", "1.2.3", "ab" * 32, "sent", 0, "", "", job.id)
    j.record_delivery(
        "dicom://A@h:1", "1.2.3", "ab" * 32, "failed", 0xC000, "store_failed", "0xC000", job.id
    )
    d = j.delivery("dicom://A@h:1", "1.2.3", "ab" * 32)
    assert d.state == "sent" and d.status == 0 and d.attempts == 2
    assert j.sent_set("dicom://A@h:1") == {("1.2.3", "ab" * 32)}
    assert j.sent_set("dicom://B@h:1") == set()
    j.close()


def test_journal_finds_unfinished_job_only(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    job = j.create_job("iso:/a.iso:1:2", "iso", "/a.iso", "LBL")
    assert j.find_unfinished("iso:/a.iso:1:2", "import").id == job.id
    for event in ("start_read", "read_done", "inventory", "deliver", "delivered"):
        j.transition(job.id, event)
    assert j.find_unfinished("iso:/a.iso:1:2", "import") is None
    j.close()


# ------------------------------------------------------------------ grouping
def _inst(uid, sha="0" * 64, **h):
    base = {
        "encoding": "part10",
        "transfer_syntax": "1.2.840.10008.1.2.1",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "sop_instance_uid": uid,
        "patient_id": "P1",
        "patient_name": "DOE^JOHN",
        "patient_birth_date": "19700101",
        "study_uid": "1.1",
        "series_uid": "1.1.1",
        "modality": "CT",
    }
    base.update(h)
    return Instance(path=f"DICOM/{uid}", sha256=sha, header=Header(**base))


def test_one_patient_despite_name_formatting():
    a = _inst("1", patient_name="Doe^John^^^")
    b = _inst("2", patient_name="DOE^JOHN=ドウ^ジョン", series_uid="1.1.2", modality="SR")
    pats = group_patients([a, b])
    assert len(pats) == 1
    study = pats[0].studies["1.1"]
    assert [s.modality for s in study.series.values()] == ["CT", "SR"]


@pytest.mark.parametrize(
    "change",
    [
        {"patient_id": "P2"},
        {"patient_name": "ROE^JANE"},
        {"patient_birth_date": "19800101"},
        {"issuer_of_patient_id": "OTHERHOSP"},
    ],
)
def test_different_person_is_a_second_patient(change):
    assert len(group_patients([_inst("1"), _inst("2", **change)])) == 2


def test_normalise_name():
    assert normalise_name("doe^john^^=") == "DOE^JOHN"
    assert normalise_name("") == ""
