"""Storage Commitment Push Model against a real Orthanc (PS3.4 Annex J).

Orthanc answers on an association of its own, to the AE title that asked,
which it must know as a modality (registered over its REST API here)."""

from __future__ import annotations

import json
import urllib.request

import pytest
from fixtures_dicom import make_ct_series
from fixtures_peers import free_port
from pydicom import dcmread
from pydicom.uid import generate_uid

from pdimport.send.commitment import CommitmentError, request_commitment
from pdimport.send.dest import parse_dest

CT = "1.2.840.10008.5.1.4.1.1.2"


def register(orthanc, aet: str, port: int) -> None:
    body = json.dumps({"AET": aet, "Host": "127.0.0.1", "Port": port}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{orthanc.http_port}/modalities/{aet.lower()}", body, method="PUT"
    )
    with urllib.request.urlopen(req, timeout=5):
        pass


def store(orthanc, tmp_path) -> list[tuple[str, str]]:
    files = make_ct_series(tmp_path / "ct", 3, patient_id="COMMIT")
    stored = []
    for f in files:
        req = urllib.request.Request(
            f"http://127.0.0.1:{orthanc.http_port}/instances", f.read_bytes(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5):
            pass
        ds = dcmread(f, stop_before_pixels=True)
        stored.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    return stored


def test_orthanc_commits_what_it_stored_and_names_what_it_has_not(orthanc, tmp_path):
    stored = store(orthanc, tmp_path)
    missing = (CT, generate_uid())
    port = free_port()
    register(orthanc, "PDIMPORT", port)
    dest = parse_dest(f"dicom://{orthanc.aet}@127.0.0.1:{orthanc.port}")
    result = request_commitment(
        dest, [*stored, missing], calling_aet="PDIMPORT", listen=("127.0.0.1", port), timeout=20
    )
    assert result.committed == {uid for _, uid in stored}
    assert set(result.failed) == {missing[1]}
    assert "no such object instance" in result.reason(missing[1])


def test_a_destination_that_never_reports_is_commitment_unanswered(orthanc, tmp_path):
    stored = store(orthanc, tmp_path)
    # Orthanc does not know this AE title, so it has nowhere to send its report.
    dest = parse_dest(f"dicom://{orthanc.aet}@127.0.0.1:{orthanc.port}")
    with pytest.raises(CommitmentError) as err:
        request_commitment(
            dest, stored, calling_aet="NOBODY", listen=("127.0.0.1", free_port()), timeout=2
        )
    assert err.value.code == "commitment_unanswered"
