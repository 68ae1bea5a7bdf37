"""End to end: what a PACS would store is delivered (issue faults 5 and 6).

Copies of one SOP Instance UID that differ only in their encoding are one
instance whichever comes first on the medium; UID quirks that storescp,
dcmsend and Orthanc accept are delivered with a warning; only an object
without a usable SOP Instance UID is refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fixtures_dicom import (
    make_ct_series,
    make_invalid_uid,
    make_missing_sop_uid,
    make_uid_mismatch,
)
from fixtures_peers import ScriptedSCP
from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import CTImageStorage, JPEG2000Lossless
from test_import import problems, run_cli


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def _ct(stage: Path, patient_id: str) -> Path:
    """A small CT whose pixels fit its 12 stored bits (so J2K can take them)."""
    [path] = make_ct_series(stage, 1, patient_id=patient_id, rows=32, cols=32)
    ds = dcmread(path)
    rng = np.random.default_rng(5)
    ds.PixelData = rng.integers(0, 4096, (32, 32), dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _j2k(src: Path, dst: Path) -> Path:
    ds = dcmread(src)
    # same SOP Instance UID: another encoding of the same instance
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def _corrupt_j2k(src: Path, dst: Path) -> Path:
    """The same instance with a J2K codestream cut after its main header:
    the header scan accepts it, no decoder does."""
    ds = dcmread(src)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    sot = frame.find(b"\xff\x90")  # first tile-part: the main header ends here
    ds.PixelData = encapsulate([frame[:sot] + b"\xff\x90" + b"\x00" * 40 + b"\xff\xd9"])
    ds.save_as(dst, enforce_file_format=True)
    return dst


def _three_encodings(stage: Path) -> tuple[Path, Path, Path]:
    """(undecodable J2K, decodable J2K, uncompressed) copies of one instance."""
    raw = _ct(stage / "raw", "COPIES")
    good = _j2k(raw, stage / "good.dcm")
    bad = _corrupt_j2k(good, stage / "bad.dcm")
    return bad, good, raw


ORDERS = list(itertools.permutations(("bad", "good", "raw")))


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_one_instance_in_three_encodings_reaches_an_uncompressed_only_pacs(
    tmp_path, state, storescp, capsys, order
):
    bad, good, raw = _three_encodings(tmp_path / "stage")
    copies = {"bad": bad, "good": good, "raw": raw}
    disc = tmp_path / "disc"
    disc.mkdir()
    # Folder walk order is by name: the permutation is the order on the medium.
    for n, name in enumerate(order):
        (disc / f"IM{n}").write_bytes(copies[name].read_bytes())
    scp = storescp()  # uncompressed syntaxes only
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 0 and rep["status"] == "imported", rep["problems"]
    [got] = scp.files()
    assert np.array_equal(dcmread(got).pixel_array, dcmread(raw).pixel_array)
    states = sorted(i["state"] for i in rep["instances"])
    assert states == ["sent", "skipped", "skipped"]
    [sent] = [i for i in rep["instances"] if i["state"] == "sent"]
    assert sent["path"] == f"IM{order.index('raw')}"  # the copy taken as it is
    [undecodable] = problems(rep, "copy_undecodable")
    assert undecodable["path"] == f"IM{order.index('bad')}"
    assert not problems(rep, "uid_conflict")


def test_two_compressed_encodings_decode_for_an_uncompressed_only_pacs(
    tmp_path, state, storescp, capsys
):
    bad, good, raw = _three_encodings(tmp_path / "stage")
    disc = tmp_path / "disc"
    disc.mkdir()
    (disc / "A").write_bytes(bad.read_bytes())
    (disc / "B").write_bytes(good.read_bytes())
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 0, rep["problems"]
    [got] = scp.files()
    assert np.array_equal(dcmread(got).pixel_array, dcmread(raw).pixel_array)


@dataclass
class J2KOnlySCP(ScriptedSCP):
    """A PACS that takes CT images in JPEG 2000 Lossless only."""

    aet: str = "J2KONLY"

    def start(self) -> J2KOnlySCP:
        from pynetdicom import AE, evt

        ae = AE(ae_title=self.aet)
        ae.add_supported_context(CTImageStorage, [JPEG2000Lossless])
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        self.port = self._server.server_address[1]
        return self


@pytest.fixture
def j2k_only_scp(tmp_path: Path) -> Iterator[J2KOnlySCP]:
    peer = J2KOnlySCP(tmp_path / "j2k-only").start()
    yield peer
    peer.stop()


def test_a_pacs_refusing_the_preferred_copy_gets_the_one_it_takes(
    tmp_path, state, j2k_only_scp, capsys
):
    _bad, good, raw = _three_encodings(tmp_path / "stage")
    disc = tmp_path / "disc"
    disc.mkdir()
    (disc / "A").write_bytes(raw.read_bytes())
    (disc / "B").write_bytes(good.read_bytes())
    rc, rep = run_cli(
        capsys, "import", str(disc), "--dest", j2k_only_scp.url, "--state-dir", str(state)
    )
    assert rc == 0 and rep["status"] == "imported", rep["problems"]
    assert j2k_only_scp.stored == [str(dcmread(good).SOPInstanceUID)]
    states = {i["path"]: i["state"] for i in rep["instances"]}
    assert states == {"A": "skipped", "B": "sent"}


def test_copies_with_other_pixels_are_a_uid_conflict(tmp_path, state, storescp, capsys):
    raw = _ct(tmp_path / "stage", "CLASH")
    ds = dcmread(raw)
    pixels = ds.pixel_array.copy()
    pixels[0, 0] += 1
    ds.PixelData = pixels.tobytes()
    other = tmp_path / "other.dcm"
    ds.save_as(other, enforce_file_format=True)
    disc = tmp_path / "disc"
    disc.mkdir()
    (disc / "A").write_bytes(raw.read_bytes())
    (disc / "B").write_bytes(_j2k(other, tmp_path / "other_j2k.dcm").read_bytes())
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 1 and rep["status"] == "partial"
    [conflict] = problems(rep, "uid_conflict")
    assert conflict["path"] == "B"
    states = {i["path"]: i["state"] for i in rep["instances"]}
    assert states == {"A": "sent", "B": "conflict"}  # held, as before: the first is sent
    assert len(scp.files()) == 1


def test_invalid_uid_is_delivered_with_a_warning(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    make_invalid_uid(disc / "Q" / "IM0001")  # letters and an empty component
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 0 and rep["status"] == "imported", rep["problems"]
    [warning] = problems(rep, "invalid_uid")
    assert warning["path"] == "Q/IM0001"
    assert "SOPInstanceUID '1.2.840.abc.0..5'" in warning["detail"]  # the report says which
    assert [i["state"] for i in rep["instances"]] == ["sent"]
    assert [str(dcmread(f).SOPInstanceUID) for f in scp.files()] == ["1.2.840.abc.0..5"]


def test_uid_mismatch_is_passed_on_with_a_warning(tmp_path, state, capsys):
    """The inventory passes the file on; the sender's meta repair (send/)
    makes the C-STORE agree with the dataset, which storescp insists on.
    A file destination takes the file as it is."""
    disc = tmp_path / "disc"
    make_uid_mismatch(disc / "Q" / "IM0001")
    out = tmp_path / "out"
    out.mkdir()
    rc, rep = run_cli(
        capsys, "import", str(disc), "--dest", f"file://{out}", "--state-dir", str(state)
    )
    assert rc == 0 and rep["status"] == "imported", rep["problems"]
    [warning] = problems(rep, "uid_mismatch")
    assert warning["path"] == "Q/IM0001" and warning["detail"].startswith("meta '")
    assert [i["state"] for i in rep["instances"]] == ["sent"]
    assert len(list(out.rglob("*.dcm"))) == 1


def test_no_sop_instance_uid_is_refused(tmp_path, state, storescp, capsys):
    disc = tmp_path / "disc"
    good = make_ct_series(disc / "GOOD", 2, patient_id="QUIRK")
    make_missing_sop_uid(disc / "Q" / "NOUID")
    scp = storescp()
    rc, rep = run_cli(capsys, "import", str(disc), "--dest", scp.url, "--state-dir", str(state))
    assert rc == 1 and rep["status"] == "partial"
    [refused] = problems(rep, "missing_attribute")
    assert refused["path"] == "Q/NOUID"
    assert "Q/NOUID" not in {i["path"] for i in rep["instances"]}
    assert len(scp.files()) == len(good)
