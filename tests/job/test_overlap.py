"""Delivery while a folder is still read (issue 13): survey in place, decide,
then copy and send from the spool.

No timing assertions: the medium "hangs" on a file until a condition is
seen (an acknowledged instance in the journal, files at storescp), so a
delivery that waits for the read's end fails the test, whatever the
machine's speed.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from fixtures_dicom import make_ct_series
from fixtures_media import make_iso
from pydicom import dcmread
from test_pipelining import HookedMedium

from pdimport.job import overlap
from pdimport.job.importer import Importer
from pdimport.media import open_medium
from pdimport.send import parse_dest, repair
from pdimport.settings import defaults

#: Upper bound for waiting on the early delivery (a failure, not a timing).
WAIT = 60.0
FILES = overlap.FIRST_CHUNK + 8


def importer(tmp_path: Path) -> Importer:
    return Importer(defaults().replace(state_dir=str(tmp_path / "state")))


def sent_rows(imp: Importer, job_id: str) -> int:
    rows = imp.journal.db.execute(
        "SELECT COUNT(*) FROM deliveries WHERE job_id=? AND state='sent'", (job_id,)
    )
    return int(rows[0][0])


def wait_for(condition) -> bool:
    """True once ``condition()`` holds; False after WAIT seconds."""
    tick = threading.Event()
    for _ in range(int(WAIT * 50)):
        if condition():
            return True
        tick.wait(0.02)
    return condition()


def read_hooked(imp: Importer, folder: Path, dest: Any, hook) -> str:
    """Phase 1 of ``folder`` through a medium that calls ``hook(job_id, entry)``
    before it opens an entry, with ``dest`` to send to."""
    medium = open_medium(str(folder), imp.settings)
    try:
        job = imp.start_job(medium, str(folder), "import")
        imp.read(job, HookedMedium(medium, lambda entry: hook(job.id, entry)), [dest])
    finally:
        medium.close()
    return job.id


@pytest.mark.parametrize("kind", ["folder", "iso"])
def test_delivery_starts_before_the_read_ends(tmp_path, storescp, monkeypatch, kind) -> None:
    folder = tmp_path / "disc"
    make_ct_series(folder / "DICOM", FILES, patient_id="OVL1")
    source = folder
    if kind == "iso":  # a disc image on a local disk: its headers copied out first
        subprocess.run(["dcmmkdir", "+r", "DICOM"], cwd=folder, check=True, capture_output=True)
        source = make_iso(folder, tmp_path / "disc.iso")
    scp = storescp(nodelay=True)
    dest = parse_dest(scp.url)
    imp = importer(tmp_path)
    medium = open_medium(str(source), imp.settings)
    last = medium.entries()[-1].path
    medium.close()
    seen: dict[str, Any] = {"opens": 0}

    def hang_on_last(job_id: str, entry: Any) -> None:
        # The drive "hangs" before the last file until instances read before
        # it are acknowledged and at the receiver: only a delivery that runs
        # during the read can ever satisfy it. (The survey of a disc image
        # opens every file once before the read does.)
        if entry.path != last:
            return
        seen["opens"] += 1
        if seen["opens"] == (2 if kind == "iso" else 1):
            seen["journal"] = wait_for(lambda: sent_rows(imp, job_id) > 0)
            seen["storescp"] = len(scp.files())

    job_id = read_hooked(imp, source, dest, hang_on_last)
    assert seen["journal"], "nothing was acknowledged before the last file was read"
    assert seen["storescp"] >= 1
    walks: list[Any] = []
    plan = repair.plan
    monkeypatch.setattr(repair, "plan", lambda *a: walks.append(a) or plan(*a))
    report = imp.process(job_id, [dest]).report
    assert walks == []  # what the early delivery prepared is not walked again
    assert report["status"] == "imported", report["problems"]
    assert report["counts"]["sent"] == FILES
    # sent by this job, once: not "already there", not twice at the receiver
    assert report["counts"]["already_sent"] == 0
    assert not any(i.get("previously_sent") for i in report["instances"])
    assert len(scp.files()) == FILES
    assert sent_rows(imp, job_id) == FILES


def test_a_file_changed_between_survey_and_copy_holds_the_job(tmp_path, storescp) -> None:
    folder = tmp_path / "disc"
    files = make_ct_series(folder / "DICOM", FILES, patient_id="OVL2")
    changed = files[overlap.FIRST_CHUNK + 2]
    scp = storescp(nodelay=True)
    dest = parse_dest(scp.url)
    imp = importer(tmp_path)

    def rewrite(job_id: str, entry: Any) -> None:
        # After the survey, before its copy: the file now holds another UID
        # of the same length (a file that changes size is read as truncated).
        if entry.path.endswith(changed.name):
            ds = dcmread(changed)
            uid = str(ds.SOPInstanceUID)
            ds.SOPInstanceUID = uid[:-1] + ("3" if uid[-1] == "7" else "7")
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            size = changed.stat().st_size
            ds.save_as(changed)
            assert changed.stat().st_size == size

    job_id = read_hooked(imp, folder, dest, rewrite)
    acknowledged = sent_rows(imp, job_id)
    report = imp.process(job_id, [dest]).report
    assert report["status"] == "held", report["problems"]
    assert "source_changed" in report["hold_reasons"]
    [problem] = [p for p in report["problems"] if p["code"] == "source_changed"]
    assert problem["path"].endswith(changed.name) and "sop_instance_uid" in problem["detail"]
    # Nothing from the changed file on was sent; what went before it is
    # reported sent and was sent once.
    by_path = {i["path"]: i["state"] for i in report["instances"]}
    assert by_path[f"DICOM/{changed.name}"] == "held"
    assert acknowledged <= overlap.FIRST_CHUNK + 2
    assert sum(1 for s in by_path.values() if s == "sent") == acknowledged
    assert len(scp.files()) == acknowledged == sent_rows(imp, job_id)
    # The hold stays until a person decides: the same step again sends nothing.
    again = imp.process(job_id, [dest]).report
    assert again["status"] == "held" and len(scp.files()) == acknowledged


def test_a_second_patient_in_the_last_file_is_held_with_nothing_sent(tmp_path, storescp) -> None:
    folder = tmp_path / "disc"
    make_ct_series(folder / "DICOM", FILES, patient_id="OVL3", name="A{:04d}")
    make_ct_series(folder / "DICOM", 1, patient_id="OTHER", name="Z{:04d}")
    scp = storescp(nodelay=True)
    imp = importer(tmp_path)
    result = imp.run(str(folder), [scp.url])
    assert result.report["status"] == "held"
    assert result.report["hold_reasons"] == ["multi_patient"]
    assert scp.files() == [] and sent_rows(imp, result.job_id) == 0


def test_a_zip_package_keeps_the_single_read(tmp_path) -> None:
    """Only media that can be read twice cheaply are surveyed first."""
    folder = tmp_path / "disc"
    make_ct_series(folder, 3)
    source = Path(shutil.make_archive(str(tmp_path / "disc"), "zip", folder))
    imp = importer(tmp_path)
    medium = open_medium(str(source), imp.settings)
    try:
        job = imp.start_job(medium, str(source), "import")
        dest = parse_dest("dicom://X@127.0.0.1:9")
        assert overlap.start(imp, job, medium, medium.entries(), [dest]) is None
    finally:
        medium.close()


@pytest.mark.parametrize("pace", ["keeping_up", "backlog", "slow_receiver"])
def test_one_association_carries_the_chunks_of_a_read(tmp_path, storescp, monkeypatch, pace):
    """The chunks go on the association opened for the first one, not on
    one each: while the sender keeps up with the read (each later chunk one
    file), and when the read is ahead (every chunk as big as a chunk may
    be). Only a receiver slower than SLOW_RESPONSE a C-STORE (here: any)
    gets a backlog from the send workers, on every association: a PACS that
    waits on its database for each instance gains from parallel ones."""
    folder = tmp_path / "disc"
    make_ct_series(folder / "DICOM", FILES, patient_id="OVL2")
    log = tmp_path / "storescp.log"
    scp = storescp(nodelay=True, log=log)
    dest = parse_dest(scp.url)
    imp = importer(tmp_path)
    medium = open_medium(str(folder), imp.settings)
    order = [e.path for e in medium.entries()]
    medium.close()
    waited: list[bool] = []

    def one_at_a_time(job_id: str, entry: Any) -> None:
        # After the first chunk, the "drive" hands over a file only once every
        # file before it is acknowledged: each later chunk is one file.
        n = order.index(entry.path)
        if n >= overlap.FIRST_CHUNK:
            waited.append(wait_for(lambda: sent_rows(imp, job_id) >= n))

    if pace != "keeping_up":  # FIRST_CHUNK files queued at the first take: 8 full chunks
        monkeypatch.setattr(overlap, "MAX_CHUNK", 4)
    if pace == "slow_receiver":
        monkeypatch.setattr(overlap, "SLOW_RESPONSE", 0.0)
    hook = one_at_a_time if pace == "keeping_up" else lambda job_id, entry: None
    job_id = read_hooked(imp, folder, dest, hook)
    if pace == "keeping_up":
        assert waited and all(waited), "the early delivery did not keep up with the read"
    assert sent_rows(imp, job_id) == FILES  # all of it by the early delivery
    report = imp.process(job_id, [dest]).report
    assert report["status"] == "imported", report["problems"]
    assert len(scp.files()) == FILES
    associations = log.read_text(errors="replace").count("Association Acknowledged")
    if pace == "slow_receiver":
        assert associations > 1, "the backlog stayed on the one association"
    else:
        assert associations == 1, f"{associations} associations for {FILES} files"
