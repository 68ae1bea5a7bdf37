"""``python -m pdimport import`` started from a folder whose modules shadow
what the daemon and its decode workers import (the field fault: a folder
with a ``dl`` made gdcm's ``import dl`` fail in every decode worker,
``internal_error``, "unexpected EOF").

A JPEG 2000 and a JPEG lossless file (GDCM's decoder, the one that imports
``dl``) go to a storescp that only accepts uncompressed syntaxes, so both
are decoded in the worker pool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
)
from test_decode import encode, make_ct
from test_workers import hostile_folder

import pdimport

DAEMON = str(Path(pdimport.__file__).resolve().parent.parent)


def test_import_from_a_hostile_working_directory_decodes_in_the_workers(
    tmp_path: Path, storescp
) -> None:
    medium = tmp_path / "medium"
    medium.mkdir()
    expected = {}
    for name, ts in (("j2k_lossless", JPEG2000Lossless), ("jpeg_lossless_sv1", JPEGLosslessSV1)):
        raw = make_ct(tmp_path / "raw" / f"{name}.dcm")
        src = encode(raw, name, medium / f"{name}.dcm")
        ds = dcmread(src)
        assert ds.file_meta.TransferSyntaxUID == ts
        expected[str(ds.SOPInstanceUID)] = dcmread(raw).pixel_array
    hostile = hostile_folder(tmp_path / "hostile")
    scp = storescp()  # uncompressed syntaxes only
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    env["PYTHONPATH"] = DAEMON  # the installation; the tests folders are not on it
    args = ["import", str(medium), "--dest", scp.url, "--state-dir", str(tmp_path / "state")]
    proc = subprocess.run(
        [sys.executable, "-m", "pdimport", *args, "--json"],
        cwd=hostile,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert not list(hostile.glob("*.imported")), proc.stderr
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "imported" and report["problems"] == []
    received = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, scp.files())}
    assert set(received) == set(expected)
    for uid, pixels in expected.items():
        ds = received[uid]
        assert ds.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        assert np.array_equal(ds.pixel_array, pixels)


@pytest.mark.parametrize("safe", [False, True], ids=["python", "python -P"])
def test_the_entry_point_drops_the_working_directory(tmp_path: Path, safe: bool) -> None:
    """The daemon's own process: ``scan`` reads headers with numpy and pydicom."""
    medium = make_ct(tmp_path / "medium" / "ct.dcm").parent
    hostile = hostile_folder(tmp_path / "hostile")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    env["PYTHONPATH"] = DAEMON
    flags = ["-P"] if safe else []
    state = ["--state-dir", str(tmp_path / "state")]
    proc = subprocess.run(
        [sys.executable, *flags, "-m", "pdimport", "scan", *state, "--json", str(medium)],
        cwd=hostile,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert not list(hostile.glob("*.imported")), proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"]["dicom"] == 1
