"""Decode throughput per transfer syntax: pdimport's DecodePool vs dcmtk and
gdcmconv, 1 process and all cores; and the in-process decoder candidates
that ``pdimport.transcode.decode.DECODER_PREFERENCE`` is chosen from (numba included).

Inputs: ``BENCH_DECODE_FILES`` (default 24) synthetic 512x512x16-bit CT
slices (12 bits stored, phantom + noise), compressed by dcmtk (RLE, JPEG
lossless SV1, JPEG-LS, JPEG baseline on an 8-bit copy) and pydicom/OpenJPEG
(JPEG 2000 lossless). MB/s = decoded pixel bytes per second.

Peers per syntax (same run, rounds interleaved by pytest-benchmark):
``pool-1`` / ``pool-N`` (file -> file, as the sender will use it), the
dcmtk tool (one process per file, the tools take one file each) run
serially and with N in parallel, ``gdcmconv --raw`` likewise, and
``plugin:<name>`` (pixel decode only, in this process).

Run: ``python -m pytest bench/bench_decode.py --benchmark-only -q``
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fixtures_dicom import new_dataset
from pydicom import dcmread
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

from pdimport.transcode.decode import DecodePool, decoder_for

pytestmark = pytest.mark.bench

FILES = int(os.environ.get("BENCH_DECODE_FILES", "24"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CORES = os.cpu_count() or 1
#: syntax -> (encoder command or None for pydicom, dcmtk decoder or None, 8-bit input)
SYNTAXES = {
    "rle": (["dcmcrle"], "dcmdrle", False),
    "jpeg_lossless": (["dcmcjpeg", "+e1"], "dcmdjpeg", False),
    "jpeg_ls": (["dcmcjpls"], "dcmdjpls", False),
    "j2k_lossless": (None, None, False),
    "jpeg_baseline": (["dcmcjpeg", "+eb"], "dcmdjpeg", True),
}
#: (syntax, peer) -> (seconds of each round, decoded bytes)
RESULTS: dict[tuple[str, str], tuple[list[float], int]] = {}


# ------------------------------------------------------------------ inputs
def _ct(path: Path, n: int, eight_bit: bool) -> None:
    rng = np.random.default_rng(n)
    yy, xx = np.mgrid[:512, :512]
    body = ((yy - 256) ** 2 + (xx - 256) ** 2) < 205**2
    pixels = (np.where(body, 1040, 24) + rng.normal(0, 12, (512, 512))).clip(0, 4095)
    ds = new_dataset()
    ds.PatientID, ds.Modality, ds.InstanceNumber = "BENCHDEC", "CT", n + 1
    ds.Rows = ds.Columns = 512
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    if eight_bit:  # a windowed copy, as JPEG baseline carries
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = ((pixels - 900) / 400 * 255).clip(0, 255).astype(np.uint8).tobytes()
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """syntax -> compressed files."""
    root = tmp_path_factory.mktemp("decode")
    out: dict[str, list[Path]] = {}
    for name, (cmd, _, eight_bit) in SYNTAXES.items():
        if cmd and shutil.which(cmd[0]) is None:
            continue
        folder = root / name
        folder.mkdir()
        out[name] = []
        for n in range(FILES):
            raw, dst = folder / f"raw{n}.dcm", folder / f"in{n}.dcm"
            _ct(raw, n, eight_bit)
            if cmd is None:
                ds = dcmread(raw)
                ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
                ds.save_as(dst, enforce_file_format=True)
            else:
                subprocess.run([*cmd, str(raw), str(dst)], check=True, capture_output=True)
            raw.unlink()
            out[name].append(dst)
    return out


def _decoded_bytes(files: list[Path]) -> int:
    ds = dcmread(files[0], stop_before_pixels=True)
    return len(files) * ds.Rows * ds.Columns * ds.BitsAllocated // 8 * ds.SamplesPerPixel


def _record(benchmark, syntax: str, peer: str, nbytes: int) -> None:
    seconds = list(benchmark.stats.stats.data)
    RESULTS[(syntax, peer)] = (seconds, nbytes)
    mbs = nbytes / statistics.median(seconds) / 1e6
    benchmark.extra_info.update(syntax=syntax, peer=peer, mb_per_s=round(mbs, 1), files=FILES)
    ref = RESULTS.get((syntax, "dcmtk-1"))
    if ref:
        benchmark.extra_info["x_dcmtk_1proc"] = round(
            statistics.median(ref[0]) / statistics.median(seconds), 2
        )


def _files(corpus, syntax: str) -> list[Path]:
    if syntax not in corpus:
        pytest.skip(f"no encoder for {syntax}")
    return corpus[syntax]


# ------------------------------------------------------------------ peers
def _run_cli(args_of, files: list[Path], out: Path, parallel: int) -> None:
    def one(src: Path) -> None:
        subprocess.run(args_of(src, out / src.name), check=True, capture_output=True)

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, files))


@pytest.mark.parametrize("procs", [1, CORES], ids=["1", "N"])
@pytest.mark.parametrize("syntax", list(SYNTAXES))
def test_dcmtk(benchmark, corpus, tmp_path, syntax: str, procs: int) -> None:
    tool = SYNTAXES[syntax][1]
    if tool is None or shutil.which(tool) is None:
        pytest.skip(f"dcmtk has no decoder for {syntax}")
    files = _files(corpus, syntax)
    benchmark.pedantic(
        _run_cli, args=(lambda s, d: [tool, str(s), str(d)], files, tmp_path, procs), rounds=ROUNDS
    )
    _record(benchmark, syntax, f"dcmtk-{'1' if procs == 1 else 'N'}", _decoded_bytes(files))


@pytest.mark.parametrize("procs", [1, CORES], ids=["1", "N"])
@pytest.mark.parametrize("syntax", list(SYNTAXES))
def test_gdcmconv(benchmark, corpus, tmp_path, syntax: str, procs: int) -> None:
    if shutil.which("gdcmconv") is None:
        pytest.skip("gdcmconv is not installed")
    files = _files(corpus, syntax)
    benchmark.pedantic(
        _run_cli,
        args=(lambda s, d: ["gdcmconv", "--raw", str(s), str(d)], files, tmp_path, procs),
        rounds=ROUNDS,
    )
    _record(benchmark, syntax, f"gdcmconv-{'1' if procs == 1 else 'N'}", _decoded_bytes(files))


@pytest.mark.parametrize("procs", [1, CORES], ids=["1", "N"])
@pytest.mark.parametrize("syntax", list(SYNTAXES))
def test_pool(benchmark, corpus, tmp_path, syntax: str, procs: int) -> None:
    files = _files(corpus, syntax)
    items = [(f, tmp_path / f.name) for f in files]
    with DecodePool(procs) as pool:
        list(pool.map(items[:procs], ExplicitVRLittleEndian))  # workers up, plugins loaded

        def run() -> None:
            results = list(pool.map(items, ExplicitVRLittleEndian))
            assert all(r.ok for r in results), [r.detail for r in results if not r.ok]

        benchmark.pedantic(run, rounds=ROUNDS)
    _record(benchmark, syntax, f"pool-{'1' if procs == 1 else 'N'}", _decoded_bytes(files))
    benchmark.extra_info["plugin"] = decoder_for(dcmread(files[0]).file_meta.TransferSyntaxUID)


@pytest.mark.parametrize("plugin", ["pylibjpeg", "gdcm", "pyjpegls", "pillow", "pydicom"])
@pytest.mark.parametrize("syntax", list(SYNTAXES))
def test_plugin(benchmark, corpus, syntax: str, plugin: str) -> None:
    """Pixel decode only, one core: the measurement behind DECODER_PREFERENCE."""
    files = _files(corpus, syntax)
    datasets = [dcmread(f) for f in files]
    ts = datasets[0].file_meta.TransferSyntaxUID
    if plugin not in get_decoder(ts).available_plugins:
        pytest.skip(f"{plugin} cannot decode {ts.name}")

    def run() -> None:
        for ds in datasets:
            ds.pixel_array_options(decoding_plugin=plugin)
            ds._pixel_array = None  # force a fresh decode each round
            ds._pixel_id = {}
            _ = ds.pixel_array

    benchmark.pedantic(run, rounds=ROUNDS)
    _record(benchmark, syntax, f"plugin:{plugin}", _decoded_bytes(files))


# ------------------------------------------------------------ numba candidates
def _numba_rle():
    """A numba RLE decoder (PS3.5 Annex G), the candidate against pylibjpeg-rle."""
    numba = pytest.importorskip("numba")

    @numba.njit(cache=True, nogil=True)
    def segment(src, start, end, out, offset, stride, count):  # PackBits, G.3.1
        pos, n = start, 0
        while pos < end and n < count:
            header = np.int8(src[pos])
            pos += 1
            if header >= 0:
                run = header + 1
                for k in range(run):
                    if n < count and pos + k < end:
                        out[offset + n * stride] = src[pos + k]
                        n += 1
                pos += run
            elif header != -128:
                run = 1 - header
                value = src[pos]
                pos += 1
                for _ in range(run):
                    if n < count:
                        out[offset + n * stride] = value
                        n += 1
        return n

    def decode(frame: bytes, rows: int, cols: int, nbytes: int) -> np.ndarray:
        src = np.frombuffer(frame, np.uint8)
        header = np.frombuffer(frame[:64], "<u4")
        count = rows * cols
        out = np.empty(count * nbytes, np.uint8)
        for seg in range(int(header[0])):
            start = int(header[1 + seg])
            end = int(header[2 + seg]) if seg + 1 < header[0] else len(frame)
            # Segment 0 holds the most significant byte; little endian output.
            segment(src, start, end, out, nbytes - 1 - seg, nbytes, count)
        return out.view(f"<u{nbytes}").reshape(rows, cols)

    return decode


@pytest.mark.parametrize("impl", ["numba", "pylibjpeg-rle", "pydicom-numpy"])
def test_rle_kernel(benchmark, corpus, impl: str) -> None:
    from pydicom.encaps import generate_frames

    files = _files(corpus, "rle")
    frames = [next(generate_frames(dcmread(f).PixelData, number_of_frames=1)) for f in files]
    if impl == "numba":
        decode = _numba_rle()
        run = lambda: [decode(f, 512, 512, 2) for f in frames]
    elif impl == "pylibjpeg-rle":
        rle = pytest.importorskip("rle.rle")
        run = lambda: [rle.decode_frame(f, 512 * 512, 16, "<") for f in frames]
    else:
        from pydicom.pixels.decoders.rle import _rle_decode_frame

        run = lambda: [_rle_decode_frame(f, 512, 512, 1, 16) for f in frames]
    run()  # compile / warm up
    if impl == "numba":  # same pixels as the reference decoder, or it does not count
        ref = dcmread(files[0]).pixel_array
        assert np.array_equal(_numba_rle()(frames[0], 512, 512, 2), ref)
    benchmark.pedantic(run, rounds=ROUNDS)
    _record(benchmark, "rle-kernel", impl, _decoded_bytes(files))


@pytest.mark.parametrize("impl", ["numba", "pydicom-numpy"])
def test_ybr_to_rgb_kernel(benchmark, impl: str) -> None:
    """YBR_FULL -> RGB of 24 512x512 colour frames (PS3.3 C.7.6.3.1.2)."""
    from pydicom.pixels.processing import convert_color_space

    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(FILES)]
    if impl == "numba":
        numba = pytest.importorskip("numba")

        @numba.njit(cache=True, nogil=True)
        def ybr(arr):
            out = np.empty_like(arr)
            for i in range(arr.shape[0]):
                for j in range(arr.shape[1]):
                    y = arr[i, j, 0] * 1.0
                    cb = arr[i, j, 1] - 128.0
                    cr = arr[i, j, 2] - 128.0
                    for k, v in enumerate(
                        (y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb)
                    ):
                        out[i, j, k] = min(max(round(v), 0), 255)
            return out

        run = lambda: [ybr(f) for f in frames]
        ref = convert_color_space(frames[0], "YBR_FULL", "RGB")
        diff = np.abs(ybr(frames[0]).astype(int) - ref.astype(int)).max()
        benchmark.extra_info["max_abs_diff_vs_pydicom"] = int(diff)
    else:
        run = lambda: [convert_color_space(f, "YBR_FULL", "RGB") for f in frames]
    run()
    benchmark.pedantic(run, rounds=ROUNDS)
    _record(benchmark, "ybr->rgb-kernel", impl, FILES * 512 * 512 * 3)


def table() -> str:
    """Markdown: MB/s and ratio to dcmtk one-process (or the first peer)."""
    lines = [
        "| syntax | peer | median s | MB/s | x dcmtk 1 proc (or first row) | rounds |",
        "|---|---|---:|---:|---:|---:|",
    ]
    first: dict[str, float] = {}
    for (syntax, peer), (seconds, nbytes) in sorted(RESULTS.items()):
        med = statistics.median(seconds)
        first.setdefault(syntax, med)
        ref = RESULTS.get((syntax, "dcmtk-1"))
        base = statistics.median(ref[0]) if ref else first[syntax]
        lines.append(
            f"| {syntax} | {peer} | {med:.3f} | {nbytes / med / 1e6:.1f} | "
            f"{base / med:.2f} | {len(seconds)} |"
        )
    return "\n".join(lines)
