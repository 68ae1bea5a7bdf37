"""The DICOMweb peers of the network tests refuse what they should: a test
of the fixtures, so that a delivery test passing means pdimport authenticated."""

import urllib.error
import urllib.request

import pytest


def test_plain(orthanc_web):
    p = orthanc_web()
    assert p.get("/dicom-web/studies") == []
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{p.http_port}/dicom-web/studies")
    assert e.value.code == 401
    e.value.close()


def test_tls(orthanc_web, tls_files):
    p = orthanc_web(tls=tls_files, client_cert=True)
    assert p.get("/dicom-web/studies") == []
    p.client_cert = None
    with pytest.raises(urllib.error.HTTPError) as e:
        p.get("/system")
    assert e.value.code == 400  # nginx: no required SSL certificate was sent
    e.value.close()


def test_bearer(orthanc_web):
    p = orthanc_web(bearer="tok123")
    assert p.get("/dicom-web/studies") == []
    p.bearer = "bad"
    with pytest.raises(urllib.error.HTTPError) as e:
        p.get("/system")
    assert e.value.code == 401
    e.value.close()
