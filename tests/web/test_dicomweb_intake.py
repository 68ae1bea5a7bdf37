"""DICOMweb intake end to end: a study stored in a real Orthanc with its
DICOMweb plugin (authentication on) goes through `pdimport import
dicomweb+http://…/studies/UID` into dcmtk's storescp, as a disc would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures_dicom import make_ct_series
from fixtures_peers import ORTHANC_USER, free_port
from pydicom import dcmread
from pydicom.uid import RLELossless, generate_uid

from pdimport.cli import main
from pdimport.record import auditchain, auditsyslog


def run_cli(capsys, *args: str) -> tuple[int, dict]:
    rc = main([*args, "--json"])
    out = capsys.readouterr().out
    return rc, (json.loads(out) if out.strip() else {})


def web_config(tmp_path: Path, peer=None, **extra: str) -> Path:
    """A config file with the peer's credentials (password in its own file)."""
    secret = tmp_path / "web-password"
    secret.write_text(ORTHANC_USER[1] + "\n")
    lines = ["[web]", 'auth = "basic"', f'username = "{ORTHANC_USER[0]}"']
    lines.append(f'password_file = "{secret}"')
    if peer is not None and peer.ca is not None:
        lines.append(f'ca_bundle = "{peer.ca}"')
        if peer.client_cert:
            lines.append(f'client_cert = "{peer.client_cert[0]}"')
            lines.append(f'client_key = "{peer.client_cert[1]}"')
    if extra:
        lines.append("[intake]")
        lines += [f"{k} = {v}" for k, v in extra.items()]
    path = tmp_path / "pdimport.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_study(
    root: Path, patient_id: str = "WEB001", compressed: bool = True, study_uid: str = ""
) -> tuple[str, dict[str, list[Path]]]:
    """A two-series CT study: three native instances and two RLE ones."""
    study_uid = study_uid or generate_uid()
    series: dict[str, list[Path]] = {}
    for n, (count, rle) in enumerate([(3, False), (2, compressed)]):
        uid = generate_uid()
        files = make_ct_series(
            root / f"se{n}", count, patient_id=patient_id, study_uid=study_uid, series_uid=uid
        )
        if rle:
            for path in files:
                ds = dcmread(path)
                ds.compress(RLELossless)
                ds.save_as(path, enforce_file_format=True)
        series[uid] = files
    return study_uid, series


def upload(peer, files) -> None:
    for path in files:
        peer.upload(Path(path).read_bytes())


def datasets(paths) -> dict[str, object]:
    """SOP Instance UID -> (transfer syntax, the dataset's elements as bytes)."""
    out = {}
    for p in paths:
        ds = dcmread(p)
        out[str(ds.SOPInstanceUID)] = (
            str(ds.file_meta.TransferSyntaxUID),
            {elem.tag: elem.value for elem in ds},
        )
    return out


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_study_arrives_whole_and_a_second_import_sends_nothing(
    tmp_path, state, orthanc_web, storescp, capsys
):
    peer = orthanc_web()
    study_uid, series = make_study(tmp_path / "study")
    every = [p for files in series.values() for p in files]
    upload(peer, every)
    scp = storescp(accept_all=True, bit_preserving=True)
    url = f"{peer.web_url}/studies/{study_uid}"
    cfg = web_config(tmp_path, qido_page_size="2")  # five instances: three QIDO-RS pages
    args = ["import", url, "--dest", scp.url, "--state-dir", str(state), "--config", str(cfg)]
    rc, rep = run_cli(capsys, *args)
    assert rc == 0, rep["problems"]
    assert rep["source"]["kind"] == "dicomweb"
    assert rep["source"]["path"] == url
    assert rep["source"]["label"] == f"127.0.0.1:{peer.http_port}"
    assert rep["counts"]["sent"] == 5
    # every instance, compressed ones in their own syntax, element for element
    assert datasets(scp.files()) == datasets(every)
    [patient] = rep["patients"]
    [study] = patient["studies"]
    assert sorted(se["instances"] for se in study["series"]) == [2, 3]
    # the audit trail names the remote source as the medium
    recs = list(auditchain.records(state / "audit"))
    inserted = [r for r in recs if r["event"] == "medium_inserted"]
    assert inserted[0]["medium"]["type"] == "dicomweb"
    assert inserted[0]["medium"]["source"] == url
    # and the DICOM audit message (PS3.15 A.5.3.6 Import) calls the medium a URI
    xml = auditsyslog.import_message(auditsyslog.Node(), inserted[0]["medium"], rep["patients"])
    assert b'originalText="URI"' in xml
    # the label of the job, rendered to a file (the file printer's way)
    assert (
        main(["label", rep["job"], "--out", str(tmp_path / "l.png"), "--state-dir", str(state)])
        == 0
    )
    assert (tmp_path / "l.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    # the same study again: nothing is sent twice
    before = len(scp.files())
    rc, again = run_cli(capsys, *args)
    assert rc == 0, again["problems"]
    assert again["job"] != rep["job"] and again["counts"]["already_sent"] == 5
    assert all(i.get("previously_sent") for i in again["instances"])
    assert len(scp.files()) == before


def test_series_url_imports_that_series_only(tmp_path, state, orthanc_web, storescp, capsys):
    peer = orthanc_web()
    study_uid, series = make_study(tmp_path / "study", compressed=False)
    upload(peer, [p for files in series.values() for p in files])
    wanted = next(uid for uid, files in series.items() if len(files) == 2)
    scp = storescp()
    url = f"{peer.web_url}/studies/{study_uid}/series/{wanted}"
    rc, rep = run_cli(
        capsys, "import", url, "--dest", scp.url, "--state-dir", str(state),
        "--config", str(web_config(tmp_path)),
    )  # fmt: skip
    assert rc == 0, rep["problems"]
    assert datasets(scp.files()).keys() == datasets(series[wanted]).keys()


def test_two_patients_in_one_study_are_held(tmp_path, state, orthanc_web, storescp, capsys):
    peer = orthanc_web()
    study_uid = generate_uid()
    upload(peer, make_ct_series(tmp_path / "a", 2, patient_id="ONE", study_uid=study_uid))
    upload(peer, make_ct_series(tmp_path / "b", 2, patient_id="TWO", study_uid=study_uid,
                                patient_name="Other^Patient"))  # fmt: skip
    scp = storescp()
    rc, rep = run_cli(
        capsys, "import", f"{peer.web_url}/studies/{study_uid}", "--dest", scp.url,
        "--state-dir", str(state), "--config", str(web_config(tmp_path)),
    )  # fmt: skip
    assert rc == 1
    assert rep["status"] == "held" and "multi_patient" in rep["hold_reasons"]
    assert scp.files() == []


def test_https_with_client_certificate(tmp_path, state, orthanc_web, tls_files, storescp, capsys):
    peer = orthanc_web(tls=tls_files, client_cert=True)
    study_uid, series = make_study(tmp_path / "study")
    every = [p for files in series.values() for p in files]
    upload(peer, every)
    scp = storescp(accept_all=True)
    rc, rep = run_cli(
        capsys, "import", f"{peer.web_url}/studies/{study_uid}", "--dest", scp.url,
        "--state-dir", str(state), "--config", str(web_config(tmp_path, peer)),
    )  # fmt: skip
    assert rc == 0, rep["problems"]
    assert datasets(scp.files()).keys() == datasets(every).keys()


def test_wrong_password_and_no_server_are_coded_failures(tmp_path, state, orthanc_web, capsys):
    peer = orthanc_web()
    cfg = web_config(tmp_path)
    (tmp_path / "web-password").write_text("wrong\n")
    uid = generate_uid()
    dest = ["--dest", f"file://{tmp_path}/out"]
    url = f"{peer.web_url}/studies/{uid}".replace("://", "://someone:pa55word@")
    rc, rep = run_cli(
        capsys, "import", url, *dest, "--state-dir", str(state), "--config", str(cfg),
    )  # fmt: skip
    assert rc == 2
    assert [p["code"] for p in rep["problems"]] == ["remote_refused"]
    assert "pa55word" not in json.dumps(rep) and "someone" not in json.dumps(rep)
    assert "401" in rep["problems"][0]["detail"]
    rc, rep = run_cli(
        capsys, "import", f"dicomweb+http://127.0.0.1:{free_port()}/dicom-web/studies/{uid}",
        *dest, "--state-dir", str(state), "--config", str(cfg),
    )  # fmt: skip
    assert rc == 2
    assert [p["code"] for p in rep["problems"]] == ["remote_unreachable"]


@pytest.mark.parametrize(
    "url",
    [
        "dicomweb+http://127.0.0.1:1/dicom-web/series/1.2.3",
        "dicomweb+http://127.0.0.1:1/dicom-web/studies/1.2.x/../..",
        "dicomweb+http://127.0.0.1:1/dicom-web/studies/1.2.3/series/..%2f",
    ],
)
def test_a_url_naming_no_study_is_a_usage_error(url, tmp_path, capsys):
    dest = ["--dest", f"file://{tmp_path}/out"]
    assert main(["import", url, *dest, "--state-dir", str(tmp_path / "s")]) == 64
    err = capsys.readouterr().err
    assert "studies/UID" in err or "is not a UID" in err


def test_bearer_token_behind_a_gateway(tmp_path, state, orthanc_web, storescp, capsys):
    peer = orthanc_web(bearer="t0ken-for-pdimport")
    study_uid, series = make_study(tmp_path / "study", compressed=False)
    every = [p for files in series.values() for p in files]
    upload(peer, every)
    (tmp_path / "token").write_text("t0ken-for-pdimport\n")
    cfg = tmp_path / "bearer.toml"
    cfg.write_text(f'[web]\nauth = "bearer"\ntoken_file = "{tmp_path / "token"}"\n')
    scp = storescp()
    rc, rep = run_cli(
        capsys, "import", f"{peer.web_url}/studies/{study_uid}", "--dest", scp.url,
        "--state-dir", str(state), "--config", str(cfg),
    )  # fmt: skip
    assert rc == 0, rep["problems"]
    assert datasets(scp.files()).keys() == datasets(every).keys()
