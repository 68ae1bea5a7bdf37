"""Delivery: destination URLs, C-STORE against real peers, file destination.

Peers are real processes or pynetdicom servers on 127.0.0.1 (fixtures_peers).
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.dsutils import split_dataset

from pdimport import settings as settings_mod
from pdimport.model import SendItem, SendOutcome
from pdimport.send import DicomDest, FileDest, deliver, parse_dest
from pdimport.send import association as association_mod
from pdimport.send.dicom import MAX_CONTEXTS, classify_status, plan_batches
from pdimport.send.link import new_link
from pdimport.transcode.reencode import TranscodeError, convert

CT = "CT_small.dcm"
JPEG_LOSSY = "SC_rgb_jpeg_dcmtk.dcm"  # JPEG Baseline, YBR_FULL, Lossy Image Compression 01
J2K = "JPEG2000.dcm"  # JPEG 2000 (irreversible)
RLE = "MR_small_RLE.dcm"
BIG_ENDIAN = "MR_small_bigendian.dcm"
UNDECODABLE = "JPEG-lossy.dcm"  # 12-bit JPEG Extended that no installed decoder reads
PRIVATE_ROOT = "1.2.826.0.1.3680043.10.1011"


# ----------------------------------------------------------------- helpers
def make_item(
    tmp_path: Path, name: str, sop_class: str | None = None, drop_lossy: bool = False
) -> SendItem:
    """A pydicom test file with a fresh SOP Instance UID, saved as in a spool."""
    ds = pydicom.dcmread(get_testdata_file(name, download=False))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if sop_class:
        ds.SOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPClassUID = sop_class
    if drop_lossy:
        del ds.LossyImageCompression
    path = tmp_path / "spool" / f"{ds.SOPInstanceUID}.dcm"
    path.parent.mkdir(exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return SendItem(
        key=f"key-{ds.SOPInstanceUID}",
        path=path,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
        size=path.stat().st_size,
    )


def run(
    url: str, items: list[SendItem], cfg: settings_mod.Settings, tmp_path: Path
) -> dict[str, SendOutcome]:
    outcomes: list[SendOutcome] = []
    deliver(parse_dest(url), items, cfg, outcomes.append, tmp_path / "work")
    assert sorted(o.key for o in outcomes) == sorted(i.key for i in items), "one outcome each"
    return {o.key: o for o in outcomes}


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset after the File Meta Information."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


def received_by_uid(files: list[Path]) -> dict[str, pydicom.Dataset]:
    out = {}
    for path in files:
        ds = pydicom.dcmread(path)
        out[str(ds.SOPInstanceUID)] = (ds, path)
    return out


# ------------------------------------------------------------ destinations
def test_parse_dicom_dest_normalises_key() -> None:
    dest = parse_dest("DICOM://PACS_1@PACS.Example.org:104/")
    assert dest == DicomDest("PACS_1", "pacs.example.org", 104)
    assert dest.key == "dicom://PACS_1@pacs.example.org:104"
    assert parse_dest("dicom://A%20B@[::1]:11112").connect_host == "::1"


def test_parse_file_dest(tmp_path: Path) -> None:
    dest = parse_dest(f"file://{tmp_path}/out/../pacs")
    assert dest == FileDest(tmp_path / "pacs")
    assert dest.key == f"file://{tmp_path}/pacs"


@pytest.mark.parametrize(
    "url",
    [
        "dicom://TOO_LONG_AE_TITLE_X@host:104",  # 17 characters
        "dicom://@host:104",
        "dicom://A\\B@host:104",
        "dicom://PACS@host:0",
        "dicom://PACS@host:70000",
        "dicom://PACS@host",
        "dicom://PACS@ho st:104",
        "file://relative/path",
        "file:///",
        "http://pacs/",
        "",
    ],
)
def test_parse_dest_refuses(url: str) -> None:
    with pytest.raises(ValueError, match="destination|AE title|port"):
        parse_dest(url)


# --------------------------------------------------------------- planning
def test_plan_offers_present_and_fallback_syntaxes(tmp_path: Path) -> None:
    items = [make_item(tmp_path, JPEG_LOSSY), make_item(tmp_path, CT)]
    (batch,) = plan_batches(items)
    pairs = {(str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in batch.contexts}
    sc, ct = items[0].sop_class_uid, items[1].sop_class_uid
    assert pairs == {
        (sc, "1.2.840.10008.1.2.4.50"),
        (sc, "1.2.840.10008.1.2.1"),
        (sc, "1.2.840.10008.1.2"),
        (ct, "1.2.840.10008.1.2.1"),
        (ct, "1.2.840.10008.1.2"),
    }


def test_plan_splits_above_128_contexts(tmp_path: Path) -> None:
    base = make_item(tmp_path, CT)
    items = [
        SendItem(f"k{n}", base.path, f"{PRIVATE_ROOT}.{n}", f"1.2.3.{n}", "1.2.840.10008.1.2.4.50")
        for n in range(130)
    ]
    batches = plan_batches(items)
    assert len(batches) == 4  # 3 contexts per class, 42 classes per association
    assert all(len(b.contexts) <= MAX_CONTEXTS for b in batches)
    assert [i.key for b in batches for i in b.items] == [i.key for i in items]


@pytest.mark.parametrize(
    "status, state, code",
    [
        (0x0000, "sent", ""),
        (0x0001, "sent", "store_warning"),
        (0xB000, "sent", "store_warning"),
        (0xB007, "sent", "store_warning"),
        (0xA700, "retry", "store_failed"),
        (0xA7FF, "retry", "store_failed"),
        (0x0210, "retry", "store_failed"),
        (0x0213, "retry", "store_failed"),
        (0xA900, "failed", "store_failed"),
        (0xC000, "failed", "store_failed"),
        (0x0122, "failed", "store_failed"),
        (0x0211, "failed", "store_failed"),
    ],
)
def test_classify_status(status: int, state: str, code: str) -> None:
    assert classify_status(status) == (state, code)


# ------------------------------------------------------- dcmtk storescp
@pytest.mark.parametrize(
    "name, drop_lossy, lossy",
    [
        (JPEG_LOSSY, False, True),
        (JPEG_LOSSY, True, True),
        (J2K, False, True),
        (RLE, False, False),
    ],
)
def test_compressed_is_decoded_for_uncompressed_storescp(
    storescp, cfg, tmp_path, name, drop_lossy, lossy
) -> None:
    scp = storescp()
    item = make_item(tmp_path, name, drop_lossy=drop_lossy)
    original = item.path.read_bytes()
    out = run(scp.url, [item], cfg, tmp_path)[item.key]
    assert out.state == "sent" and out.status == 0
    assert out.transfer_syntax == ExplicitVRLittleEndian
    assert out.converted_path is not None and out.converted_path.is_file()
    assert item.path.read_bytes() == original  # the spooled original is untouched
    ds, _ = received_by_uid(scp.files())[item.sop_instance_uid]
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.get("LossyImageCompression") == ("01" if lossy else None)
    source = pydicom.dcmread(item.path)
    assert ds.PhotometricInterpretation in ("RGB", "MONOCHROME2")
    assert np.array_equal(ds.pixel_array, source.pixel_array)


@pytest.mark.parametrize("name", [JPEG_LOSSY, J2K, RLE, CT])
def test_accept_all_storescp_gets_original_bytes(storescp, cfg, tmp_path, name) -> None:
    scp = storescp(accept_all=True, bit_preserving=True)
    item = make_item(tmp_path, name)
    out = run(scp.url, [item], cfg, tmp_path)[item.key]
    assert out.state == "sent" and out.converted_path is None
    assert out.transfer_syntax == item.transfer_syntax
    ds, path = received_by_uid(scp.files())[item.sop_instance_uid]
    assert ds.file_meta.TransferSyntaxUID == item.transfer_syntax
    assert dataset_bytes(path) == dataset_bytes(item.path)


def test_big_endian_to_default_storescp(storescp, cfg, tmp_path) -> None:
    scp = storescp()
    item = make_item(tmp_path, BIG_ENDIAN)
    out = run(scp.url, [item], cfg, tmp_path)[item.key]
    assert out.state == "sent"
    ds, _ = received_by_uid(scp.files())[item.sop_instance_uid]
    source = pydicom.dcmread(item.path)
    assert np.array_equal(ds.pixel_array, source.pixel_array)
    assert ds.PatientName == source.PatientName


def test_big_endian_conversion_swaps_pixel_bytes(tmp_path) -> None:
    item = make_item(tmp_path, BIG_ENDIAN)
    dst = tmp_path / "le.dcm"
    assert convert(item.path, dst, ExplicitVRLittleEndian) == ExplicitVRLittleEndian
    ds, source = pydicom.dcmread(dst), pydicom.dcmread(item.path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(ds.pixel_array, source.pixel_array)


def test_undecodable_object_is_decode_failed(storescp, cfg, tmp_path) -> None:
    scp = storescp()
    bad, good = make_item(tmp_path, UNDECODABLE), make_item(tmp_path, CT)
    outs = run(scp.url, [bad, good], cfg, tmp_path)
    assert outs[bad.key].state == "failed" and outs[bad.key].code == "decode_failed"
    assert outs[good.key].state == "sent"
    with pytest.raises(TranscodeError):
        convert(bad.path, tmp_path / "x.dcm", ExplicitVRLittleEndian)


def test_unknown_sop_class_is_no_presentation_context(storescp, cfg, tmp_path) -> None:
    scp = storescp()
    private = make_item(tmp_path, CT, sop_class=f"{PRIVATE_ROOT}.1")
    good = make_item(tmp_path, CT)
    outs = run(scp.url, [private, good], cfg, tmp_path)
    assert outs[private.key].state == "failed"
    assert outs[private.key].code == "no_presentation_context"
    assert outs[good.key].state == "sent"
    # Every context refused: pynetdicom aborts; still no_presentation_context.
    alone = make_item(tmp_path, CT, sop_class=f"{PRIVATE_ROOT}.2")
    assert run(scp.url, [alone], cfg, tmp_path)[alone.key].code == "no_presentation_context"


# ----------------------------------------------------- status and faults
@pytest.mark.parametrize(
    "status, state, code",
    [
        (0xA700, "retry", "store_failed"),
        (0xC000, "failed", "store_failed"),
        (0xB000, "sent", "store_warning"),
    ],
)
def test_scripted_status(scripted_scp, cfg, tmp_path, status, state, code) -> None:
    scp = scripted_scp(status=status)
    item = make_item(tmp_path, CT)
    out = run(scp.url, [item], cfg, tmp_path)[item.key]
    assert (out.state, out.code, out.status) == (state, code, status)
    assert f"0x{status:04X}" in out.detail


def test_no_response_is_unknown(scripted_scp, cfg, tmp_path) -> None:
    scp = scripted_scp(hang=True)
    first, second = make_item(tmp_path, CT), make_item(tmp_path, CT)
    outs = run(scp.url, [first, second], cfg.replace(network__dimse_timeout=1.0), tmp_path)
    assert (outs[first.key].state, outs[first.key].code) == ("unknown", "outcome_unknown")
    assert outs[first.key].status is None
    assert scp.stored == [first.sop_instance_uid]  # it did store: unknown, not failed
    # pynetdicom aborts after the timeout; the rest comes back for a retry.
    assert (outs[second.key].state, outs[second.key].code) == ("retry", "association_failed")


def test_a_send_worker_stuck_on_one_item_is_stopped(silent_scp, cfg, tmp_path) -> None:
    """Parallel delivery: a worker that holds one instance far too long (here
    a peer that never answers it, with a DIMSE timeout of minutes) is killed;
    that instance is 'unknown' (sent again later), the others are delivered."""
    from pdimport.send.dicom import NetSettings
    from pdimport.send.pool import send_parallel

    items = [make_item(tmp_path, CT) for _ in range(6)]
    stuck = items[2]
    scp = silent_scp(silent={stuck.sop_instance_uid}, once=False)
    (batch,) = plan_batches(items)
    net = NetSettings.of(cfg.replace(network__dimse_timeout=300.0))
    outcomes: list[SendOutcome] = []
    send_parallel(
        parse_dest(scp.url), batch, net, outcomes.append, tmp_path / "work", 2, item_timeout=2.0
    )
    by_key = {o.key: o for o in outcomes}
    assert sorted(by_key) == sorted(i.key for i in items), "one outcome each"
    assert (by_key[stuck.key].state, by_key[stuck.key].code) == ("unknown", "outcome_unknown")
    assert "send worker exited" in by_key[stuck.key].detail
    assert all(by_key[i.key].state == "sent" for i in items if i is not stuck)


def test_closed_port_is_retry_quickly(cfg, tmp_path) -> None:
    items = [make_item(tmp_path, CT), make_item(tmp_path, RLE)]
    outs = run(f"dicom://NOBODY@127.0.0.1:{_closed_port()}", items, cfg, tmp_path)
    assert {(o.state, o.code) for o in outs.values()} == {("retry", "association_failed")}


def _count_connections(scp) -> list[object]:
    from pynetdicom import evt

    opened: list[object] = []
    scp._server.bind(evt.EVT_CONN_OPEN, opened.append)
    return opened


def test_permanent_rejection_fails_after_one_attempt(scripted_scp, cfg, tmp_path, caplog) -> None:
    scp = scripted_scp()
    scp._server.ae.require_called_aet = True  # A-ASSOCIATE-RJ result 1, reason 7
    opened = _count_connections(scp)
    items = [make_item(tmp_path, CT), make_item(tmp_path, RLE)]
    outs = run(f"dicom://WRONG@127.0.0.1:{scp.port}", items, cfg, tmp_path).values()
    assert {(o.state, o.code) for o in outs} == {("failed", "association_rejected")}
    for out in outs:
        assert "permanent" in out.detail and "Called AE title not recognised" in out.detail
    assert len(opened) == 1, "a permanent rejection is not asked again"
    assert scp.stored == []


def test_permanent_rejection_over_parallel_associations_fails(scripted_scp, cfg, tmp_path) -> None:
    from pdimport.send.dicom import NetSettings
    from pdimport.send.pool import send_parallel

    scp = scripted_scp()
    scp._server.ae.require_called_aet = True
    items = [make_item(tmp_path, CT) for _ in range(4)]
    (batch,) = plan_batches(items)
    outcomes: list[SendOutcome] = []
    down = send_parallel(
        parse_dest(f"dicom://WRONG@127.0.0.1:{scp.port}"),
        batch,
        NetSettings.of(cfg),
        outcomes.append,
        tmp_path / "work",
        2,
    )
    assert down is not None and down.state == "failed"
    assert sorted(o.key for o in outcomes) == sorted(i.key for i in items)
    assert {(o.state, o.code) for o in outcomes} == {("failed", "association_rejected")}


def test_transient_rejection_is_retry(scripted_scp, cfg, tmp_path) -> None:
    scp = scripted_scp()
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    scp._server.ae.maximum_associations = 1  # a second one: result 2, local limit exceeded
    other = AE()
    other.add_requested_context(CTImageStorage)
    held = other.associate("127.0.0.1", scp.port, ae_title=scp.aet)
    assert held.is_established
    item = make_item(tmp_path, CT)
    try:
        out = run(f"dicom://{scp.aet}@127.0.0.1:{scp.port}", [item], cfg, tmp_path)[item.key]
    finally:
        held.release()
    assert (out.state, out.code) == ("retry", "association_rejected")
    assert "transient" in out.detail and "permanent" not in out.detail


def test_refused_connection_names_host_port_and_cause(cfg, tmp_path, caplog) -> None:
    port = _closed_port()
    outs = run(f"dicom://NOBODY@127.0.0.1:{port}", [make_item(tmp_path, CT)], cfg, tmp_path)
    (out,) = outs.values()
    assert (out.state, out.code) == ("retry", "association_failed")
    assert out.detail == f"connection refused by 127.0.0.1:{port} (is the PACS running?)"
    assert not [r for r in caplog.records if r.exc_info], "no traceback logged"


def test_unknown_host_is_a_configuration_failure(cfg, tmp_path, caplog) -> None:
    outs = run("dicom://AE@no-such-host.invalid:104", [make_item(tmp_path, CT)], cfg, tmp_path)
    (out,) = outs.values()
    # A name that does not exist will not exist on the next try either.
    assert (out.state, out.code) == ("failed", "association_failed")
    assert out.detail == (
        "no-such-host.invalid:104: name does not resolve (check the destination URL)"
    )
    assert not [r for r in caplog.records if r.exc_info], "no traceback logged"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when we return


# --------------------------------------------------- socket and reactor
def test_live_association_has_tcp_nodelay(receiver, cfg, tmp_path) -> None:
    recv = receiver()
    dest = parse_dest(f"dicom://{recv.aet}@127.0.0.1:{recv.port}")
    link = new_link(dest, plan_batches([make_item(tmp_path, CT)])[0].contexts, cfg, tmp_path)
    try:
        link.connect()
        sock = link._assoc.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert link.timeouts.connect == cfg.get("network.connection_timeout")
        assert link.timeouts.acse == cfg.get("network.acse_timeout")
        assert link.timeouts.dimse == cfg.get("network.dimse_timeout")
    finally:
        link.close()


def test_quickack_is_rearmed_after_every_read(storescp, cfg, tmp_path, monkeypatch) -> None:
    """Debian's storescp leaves Nagle on: each C-STORE-RSP waits for our
    delayed ACK (~40 ms) unless we re-arm TCP_QUICKACK after each recv()
    (performance.md §3d). The speed-up itself is measured in bench/, not here:
    this checks that every read on a live association re-arms it."""
    if not association_mod._HAS_QUICKACK:
        pytest.skip("TCP_QUICKACK is Linux-only")
    calls = {"recv": 0, "quickack": 0}
    real_fill = association_mod.StoreAssociation._fill
    real_quickack = association_mod.quickack

    def counting_fill(self, deadline):
        calls["recv"] += 1
        return real_fill(self, deadline)

    def counting_quickack(sock):
        calls["quickack"] += 1
        real_quickack(sock)

    monkeypatch.setattr(association_mod.StoreAssociation, "_fill", counting_fill)
    monkeypatch.setattr(association_mod, "quickack", counting_quickack)
    scp = storescp()
    base = make_item(tmp_path, CT)
    items = [
        SendItem(
            f"k{n}", base.path, base.sop_class_uid, base.sop_instance_uid, base.transfer_syntax
        )
        for n in range(30)
    ]
    outs = run(scp.url, items, cfg, tmp_path)
    assert {o.state for o in outs.values()} == {"sent"}
    assert calls["recv"] > 30 and calls["quickack"] == calls["recv"]


# --------------------------------------------------- embedded receiver
def test_receiver_round_trip_and_immediate_outcomes(receiver, cfg, tmp_path) -> None:
    recv = receiver()
    items = [make_item(tmp_path, n) for n in (CT, JPEG_LOSSY, J2K, RLE)]
    seen: list[int] = []

    def on_outcome(out: SendOutcome) -> None:
        # Reported before the next C-STORE goes out: journal-before-next.
        seen.append(len(recv.received))

    deliver(
        parse_dest(f"dicom://{recv.aet}@127.0.0.1:{recv.port}"),
        items,
        cfg,
        on_outcome,
        tmp_path / "work",
    )
    assert seen == [1, 2, 3, 4]
    got = received_by_uid(recv.received)
    for item in items:
        _ds, path = got[item.sop_instance_uid]
        assert path.name == f"{item.sop_instance_uid}.dcm"
        assert dataset_bytes(path) == dataset_bytes(item.path)


def test_more_than_128_contexts_use_several_associations(receiver, cfg, tmp_path) -> None:
    classes = [f"{PRIVATE_ROOT}.{n}" for n in range(65)]  # 2 contexts each: 130
    recv = receiver(extra_sop_classes=classes)
    items = [make_item(tmp_path, CT, sop_class=c) for c in classes]
    outs = run(f"dicom://{recv.aet}@127.0.0.1:{recv.port}", items, cfg, tmp_path)
    assert {o.state for o in outs.values()} == {"sent"}
    assert recv.associations == 2
    assert len(recv.received) == 65


# ------------------------------------------------------------ file dest
def test_file_destination(tmp_path, cfg) -> None:
    items = [make_item(tmp_path, CT), make_item(tmp_path, RLE)]
    weird = SendItem(
        "weird", items[0].path, items[0].sop_class_uid, "../../etc/passwd", items[0].transfer_syntax
    )
    url = f"file://{tmp_path}/out"
    outs = run(url, items + [weird], cfg, tmp_path)
    assert {o.state for o in outs.values()} == {"sent"}
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert sorted(f"{i.sop_instance_uid}.dcm" for i in items) == [
        n for n in names if n[0].isdigit() and "." in n[:-4]
    ]
    assert len(names) == 3 and not any(n.startswith(".") for n in names)
    assert (tmp_path / "out" / f"{items[0].sop_instance_uid}.dcm").read_bytes() == items[
        0
    ].path.read_bytes()
    # A resend of the same bytes is idempotent; other bytes under the UID conflict.
    assert run(url, items[:1], cfg, tmp_path)[items[0].key].state == "sent"
    clash = SendItem(
        "clash",
        items[1].path,
        items[1].sop_class_uid,
        items[0].sop_instance_uid,
        items[1].transfer_syntax,
    )
    out = run(url, [clash], cfg, tmp_path)["clash"]
    assert (out.state, out.code) == ("failed", "uid_conflict")


# --------------------------------------------------------------- Orthanc
def test_orthanc_end_to_end(orthanc, cfg, tmp_path) -> None:
    items = [make_item(tmp_path, n) for n in (CT, JPEG_LOSSY, RLE)]
    outs = run(orthanc.url, items, cfg, tmp_path)
    assert {o.state for o in outs.values()} == {"sent"}
    stored = {tags["SOPInstanceUID"] for tags in orthanc.instances()}
    assert stored == {i.sop_instance_uid for i in items}


def test_dcmdump_reads_converted_file(storescp, cfg, tmp_path) -> None:
    scp = storescp()
    item = make_item(tmp_path, J2K)
    run(scp.url, [item], cfg, tmp_path)
    (path,) = scp.files()
    dump = subprocess.run(
        ["dcmdump", "-M", "+P", "0002,0010", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "=LittleEndianExplicit" in dump


# ------------------------------------------------------- pynetdicom internals
def _python(code: str) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_compat_refuses_an_unverified_pynetdicom() -> None:
    done = _python(
        "import pynetdicom; pynetdicom.__version__ = '9.9.9'\nimport pdimport.send.compat"
    )
    assert done.returncode != 0
    assert "ImportError" in done.stderr and "verified on pynetdicom 3.0.4" in done.stderr
    assert "not 9.9.9" in done.stderr


def test_importing_the_send_layer_sets_no_pynetdicom_global() -> None:
    done = _python(
        "from pynetdicom import _config\n"
        "import pdimport.send, pdimport.send.scu, pdimport.send.pool, pdimport.demo.receiver\n"
        "print(_config.STORE_SEND_CHUNKED_DATASET)\n"
        "from pdimport import settings\n"
        "from pdimport.send.link import new_link\n"
        "new_link(pdimport.send.parse_dest('dicom://A@h:104'), [], settings.defaults(), '.')\n"
        "print(_config.STORE_SEND_CHUNKED_DATASET)\n"
        "import pdimport.send.compat\n"
        "pdimport.send.compat.stream_datasets_from_files()\n"
        "print(_config.STORE_SEND_CHUNKED_DATASET)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "True"]


def test_a_session_keeps_its_association_and_grows_its_contexts(tmp_path, storescp) -> None:
    """StoreSession (early delivery): chunks of one SOP class share one
    association; a chunk of another class opens one that proposes both, on
    which the first class still goes."""
    from pdimport.send.scu import StoreSession

    log = tmp_path / "storescp.log"
    scp = storescp(nodelay=True, log=log)
    cfg = settings_mod.defaults()
    session = StoreSession(parse_dest(scp.url), cfg, tmp_path / "work")
    outcomes: list[SendOutcome] = []
    ct = "CT_small.dcm"
    chunks = [
        [make_item(tmp_path, ct)],
        [make_item(tmp_path, ct), make_item(tmp_path, ct)],
        [make_item(tmp_path, "MR_small.dcm")],
        [make_item(tmp_path, ct)],
    ]
    for chunk in chunks:
        assert session.send(chunk, outcomes.append) is None
    session.close()
    assert [o.state for o in outcomes] == ["sent"] * 5
    assert len(scp.files()) == 5
    assert log.read_text(errors="replace").count("Association Acknowledged") == 2
