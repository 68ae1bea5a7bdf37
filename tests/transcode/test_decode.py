"""Parallel decode (issue 4): pixel identity with dcmtk for every lossless
transfer syntax, lossy marking kept, failures per item, bounded lookahead.

Compressed inputs are made by dcmtk's encoders (dcmcrle, dcmcjpeg, dcmcjpls)
and, for JPEG 2000 which free dcmtk lacks, by pydicom with OpenJPEG.
Delivery: a large compressed series to an uncompressed-only storescp goes
through the pool.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from fixtures_dicom import new_dataset
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from pdimport import settings as settings_mod
from pdimport.model import SendItem, SendOutcome
from pdimport.send import deliver, parse_dest
from pdimport.transcode import decode as decode_mod
from pdimport.transcode.decode import DecodePool, decode_file, decode_many, decoder_for

#: name -> (encoder command, dcmtk decoder); None = encoded by pydicom.
LOSSLESS = {
    "rle": (["dcmcrle"], "dcmdrle"),
    "jpeg_lossless_sv1": (["dcmcjpeg", "+e1"], "dcmdjpeg"),
    "jpeg_lossless_p14": (["dcmcjpeg", "+el"], "dcmdjpeg"),
    "jpeg_ls": (["dcmcjpls"], "dcmdjpls"),
    "j2k_lossless": (None, "gdcmconv"),
}


def needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")


def make_ct(
    path: Path, signed: bool = False, size: int = 96, bits: int = 16, stored: int = 12
) -> Path:
    """A small CT slice with noise (so that no codec gets an easy ride)."""
    rng = np.random.default_rng(abs(hash((signed, size, bits))) % 2**32)
    ds = new_dataset()
    ds.PatientID, ds.PatientName, ds.Modality = "DEC1", "Decode^Test", "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, stored, stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    lo, hi = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    yy, xx = np.mgrid[:size, :size]
    body = np.where(
        (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2,
        (lo + hi) // 2 + 400,
        lo + 24,
    )
    pixels = (body + rng.normal(0, 12, (size, size))).clip(lo, hi)
    dtype = {(8, False): np.uint8, (16, False): np.uint16, (16, True): np.int16}[(bits, signed)]
    ds.PixelData = pixels.astype(dtype).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def encode(raw: Path, name: str, out: Path) -> Path:
    cmd = LOSSLESS[name][0]
    if cmd is None:
        ds = dcmread(raw)
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        ds.save_as(out, enforce_file_format=True)
        return out
    needs(cmd[0])
    subprocess.run([*cmd, str(raw), str(out)], check=True, capture_output=True)
    return out


def reference_decode(name: str, src: Path, out: Path) -> Path:
    tool = LOSSLESS[name][1]
    needs(tool)
    args = [tool, "--raw", str(src), str(out)] if tool == "gdcmconv" else [tool, str(src), str(out)]
    subprocess.run(args, check=True, capture_output=True)
    return out


def pixels(path: Path) -> np.ndarray:
    return dcmread(path).pixel_array


# -------------------------------------------------------------- identity
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("name", list(LOSSLESS))
def test_lossless_decode_is_pixel_identical_to_dcmtk(
    tmp_path: Path, name: str, signed: bool
) -> None:
    raw = make_ct(tmp_path / "raw.dcm", signed=signed)
    src = encode(raw, name, tmp_path / f"{name}.dcm")
    ref = reference_decode(name, src, tmp_path / "ref.dcm")
    [res] = list(decode_many([(src, tmp_path / "ours.dcm")], ExplicitVRLittleEndian, workers=1))
    assert res.ok, res.detail
    ours = dcmread(tmp_path / "ours.dcm")
    assert ours.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ours.SOPInstanceUID == dcmread(src).SOPInstanceUID
    assert "LossyImageCompression" not in ours or ours.LossyImageCompression == "00"
    assert np.array_equal(ours.pixel_array, pixels(ref))
    assert np.array_equal(ours.pixel_array, pixels(raw))  # and to the original


def test_every_lossless_syntax_uses_a_measured_decoder(tmp_path: Path) -> None:
    # The preference table must name a plugin that is installed here, or the
    # pool silently falls back to pydicom's choice (possibly 6x slower).
    for uid in (
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90",
    ):
        assert decoder_for(uid), uid


# ------------------------------------------------------------------ lossy
def _jpeg_baseline(tmp_path: Path) -> Path:
    needs("dcmcjpeg")
    raw = make_ct(tmp_path / "raw8.dcm", bits=8, stored=8)
    out = tmp_path / "baseline.dcm"
    subprocess.run(["dcmcjpeg", "+eb", str(raw), str(out)], check=True, capture_output=True)
    return out


def test_lossy_source_keeps_lossy_marking(tmp_path: Path) -> None:
    src = _jpeg_baseline(tmp_path)
    before = dcmread(src)
    decode_file(src, tmp_path / "out.dcm", ExplicitVRLittleEndian)
    ds = dcmread(tmp_path / "out.dcm")
    assert ds.LossyImageCompression == "01"
    # dcmcjpeg recorded method and ratio: they describe the original
    # compression and are kept as they were.
    assert ds.LossyImageCompressionMethod == before.LossyImageCompressionMethod
    assert ds.LossyImageCompressionRatio == before.LossyImageCompressionRatio


def test_lossy_marking_added_when_the_source_lacks_it(tmp_path: Path) -> None:
    src = _jpeg_baseline(tmp_path)
    ds = dcmread(src)
    for keyword in (
        "LossyImageCompression",
        "LossyImageCompressionMethod",
        "LossyImageCompressionRatio",
    ):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(tmp_path / "unmarked.dcm")
    decode_file(tmp_path / "unmarked.dcm", tmp_path / "out.dcm", ImplicitVRLittleEndian)
    out = dcmread(tmp_path / "out.dcm")
    assert out.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert out.LossyImageCompression == "01"
    assert out.LossyImageCompressionMethod == "ISO_10918_1"
    assert float(out.LossyImageCompressionRatio) > 1.0


# ------------------------------------------------------------ failures
def crash_on_marker(src: str, dst: str, target_ts: str) -> str:
    """Decoder used by the pool in the crash test: a segfault in a 'codec'."""
    if "CRASH" in os.path.basename(src):
        os.kill(os.getpid(), signal.SIGSEGV)
    return decode_file(src, dst, target_ts)


@pytest.fixture
def rle_series(tmp_path: Path) -> list[Path]:
    needs("dcmcrle")
    out = []
    for i in range(6):
        raw = make_ct(tmp_path / "raw" / f"{i}.dcm")
        out.append(encode(raw, "rle", tmp_path / f"rle{i}.dcm"))
    return out


def test_worker_crash_fails_one_item_and_the_others_succeed(
    tmp_path: Path, rle_series: list[Path]
) -> None:
    crash = tmp_path / "CRASH.dcm"
    shutil.copy(rle_series[0], crash)
    sources = [rle_series[0], crash, *rle_series[1:], crash, rle_series[1]]
    items = [(src, tmp_path / "out" / f"{n}.dcm", n) for n, src in enumerate(sources)]
    with DecodePool(workers=2, decode=crash_on_marker) as pool:
        results = list(pool.map(items, ExplicitVRLittleEndian))
    assert [r.item for r in results] == items  # submission order, every item once
    failed = [r for r in results if not r.ok]
    assert [r.item[0] for r in failed] == [crash, crash]
    assert all("crashed" in r.detail and "SIGSEGV" in r.detail for r in failed)
    for r in results:
        if r.ok:
            assert np.array_equal(pixels(r.item[1]), pixels(r.item[0]))


def hang_on_marker(src: str, dst: str, target_ts: str) -> str:
    """Decoder used by the pool in the timeout test: a 'codec' that loops."""
    if "HANG" in os.path.basename(src):
        while True:
            time.sleep(1)
    return decode_file(src, dst, target_ts)


def test_a_decode_that_never_ends_is_stopped_and_fails_alone(
    tmp_path: Path, rle_series: list[Path]
) -> None:
    hang = tmp_path / "HANG.dcm"
    shutil.copy(rle_series[0], hang)
    sources = [rle_series[0], hang, *rle_series[1:4]]
    items = [(src, tmp_path / "out" / f"{n}.dcm", n) for n, src in enumerate(sources)]
    with DecodePool(workers=2, decode=hang_on_marker, timeout=2) as pool:
        results = list(pool.map(items, ExplicitVRLittleEndian))
        assert all(w.alive for w in pool._pool.workers)  # the stuck one was replaced
    assert [r.item for r in results] == items
    assert [(r.item[0], r.ok) for r in results if not r.ok] == [(hang, False)]
    assert "took longer than 2 s" in results[1].detail
    assert all(np.array_equal(pixels(r.item[1]), pixels(r.item[0])) for r in results if r.ok)


def hog_on_marker(src: str, dst: str, target_ts: str) -> str:
    """Decoder used by the pool in the memory test: a 'codec' asking for 8 GiB."""
    if "HOG" in os.path.basename(src):
        buffers = [bytearray(1 << 30) for _ in range(8)]
        return str(len(buffers))
    return decode_file(src, dst, target_ts)


def test_a_decode_that_asks_for_too_much_memory_fails_alone(
    tmp_path: Path, rle_series: list[Path]
) -> None:
    hog = tmp_path / "HOG.dcm"
    shutil.copy(rle_series[0], hog)
    sources = [rle_series[0], hog, rle_series[1]]
    items = [(src, tmp_path / "out" / f"{n}.dcm", n) for n, src in enumerate(sources)]
    with DecodePool(workers=1, decode=hog_on_marker, memory=3 << 30) as pool:
        results = list(pool.map(items, ExplicitVRLittleEndian))
    assert [(r.ok, r.item[0]) for r in results] == [
        (True, sources[0]),
        (False, hog),
        (True, sources[2]),
    ]
    assert "MemoryError" in results[1].detail


def test_corrupt_input_is_a_per_item_failure(tmp_path: Path, rle_series: list[Path]) -> None:
    broken = tmp_path / "broken.dcm"
    data = rle_series[0].read_bytes()
    broken.write_bytes(data[: len(data) - 3000])  # pixel data cut short
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(os.urandom(5000))
    sources = [rle_series[1], broken, garbage, rle_series[2]]
    results = list(
        decode_many(
            [(s, tmp_path / f"o{n}.dcm") for n, s in enumerate(sources)],
            ExplicitVRLittleEndian,
            workers=2,
        )
    )
    assert [r.ok for r in results] == [True, False, False, True]
    assert all(r.detail for r in results)
    assert [r.code for r in results if not r.ok] == ["decode_failed"] * 2
    assert not (tmp_path / "o1.dcm").exists() and not (tmp_path / "o2.dcm").exists()


def test_lookahead_is_bounded_whatever_the_series_size(
    tmp_path: Path, rle_series: list[Path]
) -> None:
    taken = 0

    def items():
        nonlocal taken
        for n in range(40):
            taken += 1
            yield rle_series[n % len(rle_series)], tmp_path / f"o{n}.dcm"

    handed_back = 0
    with DecodePool(workers=2, lookahead=3) as pool:
        for res in pool.map(items(), ExplicitVRLittleEndian):
            handed_back += 1
            assert res.ok, res.detail
            # Never more than `lookahead` items between the source and us.
            assert taken - handed_back < 3
        assert pool.peak_outstanding <= 3
    assert handed_back == 40


def test_unsupported_target_is_refused(tmp_path: Path, rle_series: list[Path]) -> None:
    [res] = list(
        decode_many([(rle_series[0], tmp_path / "x.dcm")], "1.2.840.10008.1.2.4.50", workers=1)
    )
    assert not res.ok and "uncompressed" in res.detail


# ------------------------------------------------------------ delivery
def spooled_rle(tmp_path: Path, n: int) -> tuple[SendItem, np.ndarray]:
    """A synthetic CT slice, RLE-compressed by pydicom, as a spooled SendItem,
    and its original pixels (each slice differs: row ``n`` is marked)."""
    ds = dcmread(make_ct(tmp_path / "raw" / f"{n}.dcm", size=64))
    pixels_in = ds.pixel_array.copy()
    pixels_in[n % 64, :] = 7 * n
    ds.PixelData = pixels_in.tobytes()
    ds.compress(RLELossless)
    path = tmp_path / "spool" / f"{n}.dcm"
    path.parent.mkdir(exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    item = SendItem(
        key=f"key-{n}",
        path=path,
        sop_class_uid=str(ds.SOPClassUID),
        sop_instance_uid=str(ds.SOPInstanceUID),
        transfer_syntax=RLELossless,
        size=path.stat().st_size,
    )
    return item, pixels_in


def test_compressed_series_to_uncompressed_storescp_goes_through_the_pool(
    storescp, tmp_path: Path, monkeypatch
) -> None:
    scp = storescp()  # default configuration: uncompressed syntaxes only
    series = [spooled_rle(tmp_path, n) for n in range(24)]
    items = [item for item, _ in series]
    corrupt = items[5]
    data = corrupt.path.read_bytes()
    corrupt.path.write_bytes(data[: len(data) - 3000])  # RLE segments cut short
    pooled: list[str] = []
    real_decode_many = decode_mod.decode_many

    def observed(jobs, target_ts, *args, **kwargs):
        def noted():
            for job in jobs:
                pooled.append(str(job[0]))
                yield job

        return real_decode_many(noted(), target_ts, *args, **kwargs)

    monkeypatch.setattr(decode_mod, "decode_many", observed)
    outcomes: list[SendOutcome] = []
    cfg = settings_mod.defaults().replace(state_dir=str(tmp_path / "state"))
    deliver(parse_dest(scp.url), items, cfg, outcomes.append, tmp_path / "work")

    assert sorted(o.key for o in outcomes) == sorted(i.key for i in items), "one outcome each"
    assert pooled == [str(i.path) for i in items]  # every item decoded by the pool
    by_key = {o.key: o for o in outcomes}
    bad = by_key.pop(corrupt.key)
    assert (bad.state, bad.code) == ("failed", "decode_failed") and bad.detail
    assert {(o.state, o.transfer_syntax) for o in by_key.values()} == {
        ("sent", ExplicitVRLittleEndian)
    }
    received = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, scp.files())}
    assert set(received) == {i.sop_instance_uid for i in items if i is not corrupt}
    for item, pixels_in in series:
        if item is not corrupt:
            ds = received[item.sop_instance_uid]
            assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert np.array_equal(ds.pixel_array, pixels_in)


def test_even_one_conversion_is_decoded_out_of_process(
    storescp, tmp_path: Path, monkeypatch
) -> None:
    """A codec that crashes on one file fails that file (decode_failed); the
    sending process, the daemon, lives on and sends the rest."""
    scp = storescp()
    items = [spooled_rle(tmp_path, n)[0] for n in range(2)]
    crash = items[0].path.with_name("CRASH.dcm")
    items[0].path.rename(crash)
    items[0] = dataclasses.replace(items[0], path=crash)
    real_pool = decode_mod.DecodePool
    monkeypatch.setattr(
        decode_mod, "DecodePool", lambda *a, **kw: real_pool(*a, decode=crash_on_marker, **kw)
    )
    outcomes: list[SendOutcome] = []
    cfg = settings_mod.defaults().replace(state_dir=str(tmp_path / "state"))
    deliver(parse_dest(scp.url), items, cfg, outcomes.append, tmp_path / "work")
    by_key = {o.key: o for o in outcomes}
    bad = by_key[items[0].key]
    assert (bad.state, bad.code) == ("failed", "decode_failed") and "SIGSEGV" in bad.detail
    assert by_key[items[1].key].state == "sent"
    assert len(scp.files()) == 1
