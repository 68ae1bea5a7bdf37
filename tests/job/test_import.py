"""End to end: a medium (folder, ISO, zip) through `pdimport import` into real
PACS peers (dcmtk storescp, Orthanc) on 127.0.0.1.

Media are built by the real tools: dcmtk `dcmmkdir` writes the DICOMDIRs,
genisoimage masters the images.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from fixtures_dicom import (
    fresh_copy,
    make_ct_series,
    make_dicomdir_escape,
    make_dicomdir_self_loop,
    make_empty,
    make_noise_dcm,
    make_raw,
)
from fixtures_media import make_iso
from fixtures_pg import journal_config
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless
from test_scan import BROKEN

from pdimport.cli import main
from pdimport.problems import PROBLEM_CODES

PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)


# ------------------------------------------------------------------ helpers
def build_pdi(
    root: Path, n: int = 5, patient_id: str = "PDI001", extras: bool = True, dicomdir: bool = True
) -> list[Path]:
    """An IHE PDI layout: DICOM/ST1/SE1/IM*, a DICOMDIR by dcmmkdir, and
    what real discs carry beside the images."""
    series = make_ct_series(
        root / "DICOM" / "ST1" / "SE1", n, patient_id=patient_id, name="IM{:04d}"
    )
    if dicomdir:
        subprocess.run(["dcmmkdir", "+r", "DICOM"], cwd=root, check=True, capture_output=True)
        assert (root / "DICOMDIR").is_file()
    if extras:
        (root / "REPORT").mkdir()
        (root / "REPORT" / "REPORT.PDF").write_bytes(PDF)
        (root / "VIEWER").mkdir()
        (root / "VIEWER" / "VIEWER.EXE").write_bytes(b"MZ\x90\x00" + b"\0" * 200)
        (root / "VIEWER" / "VIEWER.DLL").write_bytes(b"MZ\x90\x00" + b"\0" * 100)
        (root / "AUTORUN.INF").write_text("[autorun]\nopen=VIEWER\\VIEWER.EXE\n")
        (root / "IHE_PDI").mkdir()
        (root / "IHE_PDI" / "INDEX.HTM").write_text("<html>index</html>")
        (root / "README.TXT").write_text("Images of one patient.\n")
    return series


def sop_uids(paths) -> set[str]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}


def run_cli(capsys, *args: str) -> tuple[int, dict]:
    rc = main([*args, "--json"])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if out.strip() else {})


def _default(name: str, fallback):
    from pdimport.settings import defaults

    try:
        return defaults().get(name)
    except KeyError:
        return fallback


def problems(report: dict, code: str) -> list[dict]:
    return [p for p in report["problems"] if p["code"] == code]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


# ---------------------------------------------------------------- the happy path
def test_iso_with_dicomdir_into_storescp(tmp_path, state, storescp, capsys):
    stage = tmp_path / "stage"
    series = build_pdi(stage, n=5)
    iso = make_iso(stage, tmp_path / "disc.iso", volid="REFERRAL")
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(iso), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 0, rep["problems"]
    assert rep["status"] == "imported"
    assert rep["source"] == {
        "kind": "iso",
        "path": str(iso),
        "label": "REFERRAL",
        "facility": rep["source"]["facility"],
    }
    # the PDF report beside the images arrives too, as Encapsulated PDF
    [converted] = rep["converted"]
    assert converted["path"] == "REPORT/REPORT.PDF"
    assert converted["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.104.1"
    assert sop_uids(scp.files()) == sop_uids(series) | {converted["sop_instance_uid"]}
    assert rep["counts"]["sent"] == 6 and rep["counts"]["converted"] == 1
    [patient] = rep["patients"]
    assert patient["id"] == "PDI001"
    [study] = patient["studies"]  # the document joined the disc's one study
    assert sorted(se["instances"] for se in study["series"]) == [1, 5]
    assert rep["flags"]["other_content"] is True
    assert {(o["path"], o["type"]) for o in rep["other_content"]} == {("REPORT/REPORT.PDF", "pdf")}
    ignored = {i["path"]: i["reason"] for i in rep["ignored"]}
    assert ignored["VIEWER/VIEWER.EXE"] == "viewer"
    assert ignored["AUTORUN.INF"] == "autorun"
    assert ignored["IHE_PDI/INDEX.HTM"] == "ihe_pdi_web"
    assert all(i["state"] == "sent" for i in rep["instances"])
    # the journal keeps a copy of the report
    rc = main(["report", rep["job"], "--state-dir", str(state), "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["job"] == rep["job"]


def test_same_import_again_sends_nothing(tmp_path, state, receiver, capsys):
    build_pdi(tmp_path / "disc", n=4, extras=False)
    recv = receiver()
    url = f"dicom://{recv.aet}@127.0.0.1:{recv.port}"
    rc, first = run_cli(
        capsys, "import", str(tmp_path / "disc"), "--dest", url, "--state-dir", str(state)
    )
    assert rc == 0 and len(recv.received) == 4
    rc, second = run_cli(
        capsys, "import", str(tmp_path / "disc"), "--dest", url, "--state-dir", str(state)
    )
    assert rc == 0 and second["status"] == "imported"
    assert second["job"] != first["job"]
    assert len(recv.received) == 4  # nothing was sent again
    assert second["counts"]["already_sent"] == 4
    assert all(i.get("previously_sent") for i in second["instances"])


def test_zip_package(tmp_path, state, storescp, capsys):
    series = build_pdi(tmp_path / "pkg", n=3)
    package = tmp_path / "netpdi.zip"
    with zipfile.ZipFile(package, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((tmp_path / "pkg").rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(tmp_path / "pkg").as_posix())
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(package), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 0, rep["problems"]
    assert rep["source"]["kind"] == "zip"
    converted = {c["sop_instance_uid"] for c in rep["converted"]}
    assert len(converted) == 1
    assert sop_uids(scp.files()) == sop_uids(series) | converted


def test_orthanc_end_to_end(tmp_path, state, orthanc, capsys):
    stage = tmp_path / "stage"
    series = build_pdi(stage, n=4, extras=False)
    iso = make_iso(stage, tmp_path / "disc.iso")
    rc, rep = run_cli(capsys, "import", str(iso), "--dest", orthanc.url, "--state-dir", str(state))
    assert rc == 0, rep["problems"]
    stored = orthanc.instances()
    assert {s["SOPInstanceUID"] for s in stored} == sop_uids(series)
    assert {s["PatientID"] for s in stored} == {"PDI001"}


# --------------------------------------------------------- real-world encodings
def test_datasets_without_preamble_or_meta_get_file_meta(tmp_path, state, storescp, capsys):
    disc = tmp_path / "old"
    paths = [
        make_raw(disc / f"IMG{i}", enc, PatientID="RAW")
        for i, enc in enumerate(["implicit_le", "explicit_le", "explicit_be"])
    ]
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 0, rep["problems"]
    assert {i["encoding"] for i in rep["instances"]} == {
        "implicit_le",
        "explicit_le",
        "explicit_be",
    }
    received = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in scp.files()}
    for path in paths:
        original = dcmread(path, force=True)
        ds = received[str(original.SOPInstanceUID)]
        assert ds.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
        assert ds.PixelData == original.PixelData


@pytest.mark.parametrize("accept_all", [False, True])
def test_compressed_objects(tmp_path, state, storescp, capsys, accept_all):
    disc = tmp_path / "disc"
    disc.mkdir()
    files = {
        name: fresh_copy(
            name,
            disc / name.replace(".dcm", "").upper()[:8],
            patient_id="CMP1",
            PatientName="Comp^Ressed",
            PatientBirthDate="19600101",
            PatientSex="F",  # the bundled files differ (M, F): two patients otherwise
        )
        for name in ("JPEG2000.dcm", "MR_small_RLE.dcm")
    }
    scp = storescp(accept_all=accept_all)
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 0, rep["problems"]
    got = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in scp.files()}
    assert len(got) == 2
    for path in files.values():
        src = dcmread(path)
        ts = got[str(src.SOPInstanceUID)].file_meta.TransferSyntaxUID
        if accept_all:
            assert (
                ts == src.file_meta.TransferSyntaxUID in (JPEG2000Lossless, RLELossless)
                or ts == src.file_meta.TransferSyntaxUID
            )
        else:
            assert ts == ExplicitVRLittleEndian
    # the decoded copies were removed once the delivery was over
    assert not list((state / "work").iterdir())


def test_remove_converted_takes_every_copy_of_the_keys_and_nothing_else(tmp_path):
    from pdimport.model import SendItem
    from pdimport.send.link import converted_path, remove_converted

    def item(key: str) -> SendItem:
        return SendItem(
            key=key,
            path=tmp_path / key,
            sop_class_uid="1.2",
            sop_instance_uid="1.3",
            transfer_syntax=JPEG2000Lossless,
            size=1,
        )

    work = tmp_path / "work"
    work.mkdir()
    mine, other = item("a" * 64 + "1.2.3"), item("b" * 64 + "1.2.4")
    for it in (mine, other):
        for ts in (ExplicitVRLittleEndian, "1.2.840.10008.1.2"):
            converted_path(work, it, ts).write_bytes(b"x")
    partial = converted_path(work, mine, ExplicitVRLittleEndian).name
    (work / f".{partial[:32]}.k3j2.tmp").write_bytes(b"half")  # a killed decode's leftover
    assert remove_converted(work, [mine.key]) == 3
    assert sorted(p.name for p in work.iterdir()) == sorted(
        converted_path(work, other, ts).name for ts in (ExplicitVRLittleEndian, "1.2.840.10008.1.2")
    )


# ------------------------------------------------------------------- the checks
def test_two_patients_hold_the_medium(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    make_ct_series(disc / "A", 2, patient_id="P-ONE", patient_name="One^Patient")
    make_ct_series(disc / "B", 2, patient_id="P-TWO", patient_name="Two^Patient")
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 1
    assert rep["status"] == "held" and rep["hold_reasons"] == ["multi_patient"]
    assert rep["flags"]["multi_patient"] is True
    assert len(rep["patients"]) == 2
    assert scp.files() == []
    assert {i["state"] for i in rep["instances"]} == {"held"}


def test_same_id_different_birth_date_is_two_patients(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    make_ct_series(disc / "A", 1, patient_id="SAME", PatientBirthDate="19500101")
    make_ct_series(disc / "B", 1, patient_id="SAME", PatientBirthDate="19800101")
    rc, rep = run_cli(
        capsys, "import", str(disc), "--dest", storescp().url, "--state-dir", str(state)
    )
    assert rc == 1 and rep["hold_reasons"] == ["multi_patient"]


def test_uid_conflict_sends_first_copy_only(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    [first, second] = make_ct_series(disc / "A", 2, patient_id="UIDC")
    ds = dcmread(second)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = dcmread(first).SOPInstanceUID
    (disc / "B").mkdir()
    ds.save_as(disc / "B" / "CLASH")
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 1 and rep["status"] == "partial"
    [conflict] = problems(rep, "uid_conflict")
    assert conflict["path"] == "B/CLASH"
    states = {i["path"]: i["state"] for i in rep["instances"]}
    assert states["A/IM0001"] == "sent" and states["B/CLASH"] == "conflict"
    got = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in scp.files()}
    assert len(scp.files()) == 2  # A/IM0001 and A/IM0002; not the clash
    assert got[str(ds.SOPInstanceUID)].InstanceNumber == dcmread(first).InstanceNumber


def test_identical_copy_is_imported_once(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    series = make_ct_series(disc / "A", 2, patient_id="DUP")
    (disc / "COPY").mkdir()
    shutil.copy(series[0], disc / "COPY" / "IM0001")
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 0, rep["problems"]
    assert len(scp.files()) == 2
    assert sorted(i["state"] for i in rep["instances"]) == ["sent", "sent", "skipped"]


BAD_INPUTS = [(name, maker, code) for name, maker, code in BROKEN] + [
    ("empty", make_empty, "empty_file"),
    ("noise", make_noise_dcm, "not_dicom"),
]


@pytest.mark.parametrize("maker, code", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_broken_file_is_a_problem_and_the_rest_arrives(
    tmp_path, state, storescp, capsys, maker, code
):
    disc = tmp_path / "disc"
    good = make_ct_series(disc / "GOOD", 3, patient_id="BRK")
    (disc / "BAD").mkdir()
    maker(disc / "BAD" / "BROKEN.dcm")
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    # An error costs the file (partial); bytes that never were DICOM (info) cost nothing.
    expected = (1, "partial") if PROBLEM_CODES[code][0] == "error" else (0, "imported")
    assert (rc, rep["status"]) == expected
    found = [p for p in rep["problems"] if p["path"] == "BAD/BROKEN.dcm"]
    assert [p["code"] for p in found] == [code], found
    assert sop_uids(scp.files()) == sop_uids(good)


def test_dicomdir_names_a_missing_file(tmp_path, state, storescp, capsys):
    stage = tmp_path / "stage"
    series = build_pdi(stage, n=4, extras=False)
    series[2].unlink()
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(stage), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 1 and rep["status"] == "partial"
    [missing] = problems(rep, "missing_file")
    assert missing["path"].upper() == "DICOM/ST1/SE1/IM0003"
    assert len(scp.files()) == 3


def test_files_the_dicomdir_does_not_name_are_imported(tmp_path, state, storescp, capsys):
    stage = tmp_path / "stage"
    series = build_pdi(stage, n=2, extras=False)
    extra = make_ct_series(
        stage / "LATER", 1, patient_id="PDI001", study_uid=str(dcmread(series[0]).StudyInstanceUID)
    )
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(stage), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 0, rep["problems"]
    assert sop_uids(scp.files()) == sop_uids(series + extra)
    assert [p["path"] for p in problems(rep, "unindexed_file")] == ["LATER/IM0001"]


def test_dicomdir_file_id_escaping_the_medium_is_refused(tmp_path, state, storescp, capsys):
    root = tmp_path / "disc"
    make_dicomdir_escape(root)
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(root), "--dest", scp.url, "--state-dir", str(state))
    assert problems(rep, "dicomdir_unsafe_path")
    assert rep["counts"]["sent"] == rep["counts"]["dicom"] > 0
    assert len(scp.files()) == rep["counts"]["sent"]
    assert rc == 1


def test_self_looping_dicomdir_still_imports_everything(tmp_path, state, storescp, capsys):
    root = tmp_path / "disc"
    make_dicomdir_self_loop(root)
    dicom_files = [p for p in root.rglob("*") if p.is_file() and p.name != "DICOMDIR"]
    scp = storescp()
    _rc, rep = run_cli(capsys, "import", str(root), "--dest", scp.url, "--state-dir", str(state))
    assert problems(rep, "dicomdir_invalid")
    assert sop_uids(scp.files()) == sop_uids(dicom_files)


# -------------------------------------------------------------- CLI contract
def test_scan_sends_nothing(tmp_path, state, capsys):
    build_pdi(tmp_path / "disc", n=2)
    rc, rep = run_cli(capsys, "scan", str(tmp_path / "disc"), "--state-dir", str(state))
    assert rc == 0 and rep["mode"] == "scan"
    assert rep["counts"]["dicom"] == 2 and rep["counts"]["sent"] == 0


def test_scan_fallbacks_are_counted_in_the_report(tmp_path, state, capsys):
    """A file the fast scanner leaves to pydicom is still imported, and counted."""
    disc = tmp_path / "disc"
    padded = build_pdi(disc, n=3)[0]
    padded.write_bytes(padded.read_bytes() + b"\0" * 8)  # trailing padding: not modelled
    rc, rep = run_cli(capsys, "scan", str(disc), "--state-dir", str(state), "--scanner", "numba")
    assert rc == 0 and rep["counts"]["dicom"] == 3
    assert rep["counts"]["scan_fallbacks"] == 1 and rep["scan_fallbacks"] == {"trailing": 1}
    rc, rep = run_cli(
        capsys, "scan", str(disc), "--state-dir", str(tmp_path / "s2"), "--scanner", "pydicom"
    )
    assert rc == 0 and rep["counts"]["scan_fallbacks"] == 0


def test_unusable_medium_exits_2(tmp_path, state, capsys):
    bad = tmp_path / "garbage.iso"
    bad.write_bytes(os.urandom(70_000))
    rc, rep = run_cli(
        capsys, "import", str(bad), "--dest", f"file://{tmp_path}/out", "--state-dir", str(state)
    )
    assert rc == 2 and rep["status"] == "failed"
    assert rep["problems"][0]["code"] == "unreadable_medium"


@pytest.mark.parametrize(
    "args",
    [
        ["import", "x"],
        ["import", "x", "--dest", "http://pacs"],
        ["import", "x", "--dest", "dicom://WAY_TOO_LONG_AE_TITLE@h:1"],
        ["nonsense"],
    ],
)
def test_usage_errors_exit_64(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(
            main([*args, "--state-dir", str(tmp_path)] if args[0] != "nonsense" else args)
        )
    assert exc.value.code == 64


def test_file_destination(tmp_path, state, capsys):
    series = build_pdi(tmp_path / "disc", n=3, extras=False)
    out = tmp_path / "out"
    rc, _rep = run_cli(
        capsys,
        "import",
        str(tmp_path / "disc"),
        "--dest",
        f"file://{out}",
        "--state-dir",
        str(state),
    )
    assert rc == 0
    assert sop_uids(out.glob("*.dcm")) == sop_uids(series)


# ------------------------------------------------------------ kill and restart
def test_sigkill_mid_send_then_restart_delivers_each_instance_once(tmp_path, storescp):
    series = make_ct_series(tmp_path / "disc" / "S", 200, patient_id="KILL", rows=256, cols=256)
    scp = storescp()
    state = tmp_path / "state"
    cmd = [
        sys.executable,
        "-m",
        "pdimport",
        "import",
        str(tmp_path / "disc"),
        "--dest",
        scp.url,
        "--state-dir",
        str(state),
        *journal_config(tmp_path),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(scp.files()) < 40:
        assert proc.poll() is None, "the import finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(scp.files())
    assert before < 200, "killed too late to test anything"
    done = subprocess.run(
        cmd + ["--json"], capture_output=True, check=False, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # The restart finished the same job, from the spool and the journal.
    assert report["counts"]["sent"] == 200
    # The bound the README states: what was in flight (DEPTH items on each
    # parallel association) plus one journal commit group.
    from pdimport.send.pool import DEPTH
    from pdimport.store.groupcommit import DELIVERY_GROUP_ROWS

    bound = max(1, int(_default("network.associations", 1))) * DEPTH + DELIVERY_GROUP_ROWS
    assert report["counts"]["already_sent"] >= before - bound
    scp.proc.terminate()
    log = scp.proc.communicate(timeout=10)[1].decode(errors="replace")
    files = scp.files()
    assert len(files) == 200 and sop_uids(files) == sop_uids(series)
    # storescp overwrites a file it receives twice and says so: only the
    # instances in flight or in the last uncommitted group at the kill may
    # have been sent again; everything committed before it was not.
    assert log.count("already exists") <= bound, log
