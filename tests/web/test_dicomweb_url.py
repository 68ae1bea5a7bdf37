"""Intake URLs: what names a study, what the journal calls it, and what never
reaches a report (credentials)."""

from __future__ import annotations

import threading

import pytest
from fixtures_peers import free_port

from pdimport.settings import load
from pdimport.web.dicomweb import is_dicomweb, parse_query, parse_url
from pdimport.web.poller import QidoLedger, QidoPoller


def test_study_and_series():
    ref = parse_url("dicomweb+https://pacs.example/dicom-web/studies/1.2.3")
    assert (ref.root, ref.study, ref.series) == ("https://pacs.example/dicom-web", "1.2.3", "")
    ref = parse_url("dicomweb+http://h:8042/dw/studies/1.2.3/series/4.5/")
    assert (ref.root, ref.study, ref.series) == ("http://h:8042/dw", "1.2.3", "4.5")
    assert ref.url == "dicomweb+http://h:8042/dw/studies/1.2.3/series/4.5"
    assert ref.key == "dicomweb:http://h:8042/dw/studies/1.2.3/series/4.5"


def test_the_same_study_spelt_differently_is_one_source_without_credentials():
    a = parse_url("dicomweb+https://PACS.Example:443/dicom-web/studies/1.2.3/")
    b = parse_url("DICOMweb+HTTPS://user:secret@pacs.example/dicom-web/studies/1.2.3")
    assert a.key == b.key == "dicomweb:https://pacs.example/dicom-web/studies/1.2.3"
    assert "secret" not in b.url and "user" not in b.key


@pytest.mark.parametrize(
    "url",
    [
        "dicomweb+ftp://h/studies/1.2",
        "dicomweb+http:///studies/1.2",
        "dicomweb+http://h/studies/",
        "dicomweb+http://h/studies/1.2/instances/3.4",
        "dicomweb+http://h/studies/" + "1." * 40 + "1",  # longer than 64 characters
        "dicomweb+http://h:99999/studies/1.2",
    ],
)
def test_not_a_study(url):
    with pytest.raises(ValueError):
        parse_url(url)


def test_is_dicomweb():
    assert is_dicomweb("dicomweb+https://h/x") and not is_dicomweb("/media/dicomweb+https")


def test_query_url():
    root, path, query = parse_query("dicomweb+http://h:1/dw/studies?ModalitiesInStudy=CT&x=1")
    assert (root, path, query) == ("http://h:1/dw", "studies", "ModalitiesInStudy=CT&x=1")
    with pytest.raises(ValueError):
        parse_query("dicomweb+http://h/dw/series?Modality=CT")


def test_a_poller_whose_server_is_down_imports_nothing_and_lives_on(tmp_path):
    cfg = load(
        overrides={
            "state_dir": str(tmp_path),
            "intake.qido_url": f"dicomweb+http://127.0.0.1:{free_port()}/dw/studies",
        }
    )
    asked: list[str] = []
    poller = QidoPoller(cfg, QidoLedger(tmp_path / "qido.sqlite"), asked.append, threading.Event())
    assert poller.poll() == [] and asked == []


def test_without_credentials():
    from pdimport.web.dicomweb import without_credentials

    assert (
        without_credentials("dicomweb+https://u:p@ss@h:1/dw/studies/1.2")
        == "dicomweb+https://h:1/dw/studies/1.2"
    )
    assert without_credentials("/media/u:p@x") == "/media/u:p@x"  # a path stays a path
