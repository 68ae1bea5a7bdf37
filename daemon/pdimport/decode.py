"""Decode compressed objects for destinations that refuse their transfer syntax,
on every core, with bounded memory.

A destination that only accepts uncompressed little endian (PS3.4 B.5) makes
us decompress; JPEG 2000 at about 15 MB/s of pixels per core is then the CPU
bottleneck of a whole import (performance notes §2, §5). So:

* one worker process per core, each decoding one file at a time;
* instances stream through: at most ``lookahead`` files are in flight or
  waiting to be handed back, whatever the series size;
* results come back in submission order;
* a worker that dies (a segfault in a C codec, the OOM killer) fails only the
  file it was decoding, as ``decode_failed``; a fresh worker takes its place.

The decoder is chosen per transfer syntax from :data:`DECODER_PREFERENCE`,
which records what ``bench/bench_decode.py`` measured here, first available
plugin wins. Lossless results are pixel-identical to dcmtk's (tests/test_decode.py).
Lossy sources keep Lossy Image Compression "01" with method and ratio
(PS3.3 C.7.6.1.1.5).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Self

log = logging.getLogger(__name__)

#: Transfer syntax UID -> pydicom decoding plugins, fastest first, as measured
#: by ``bench/bench_decode.py`` here (24 CT slices 512x512x16 bit, one core,
#: MB/s of decoded pixels; 2026-11-27). Plugins not installed are skipped.
DECODER_PREFERENCE: dict[str, tuple[str, ...]] = {
    # RLE: pylibjpeg-rle 777 vs pydicom numpy 152. A numba decoder reached
    # 0.81x pylibjpeg-rle (kernel only), so it is not used.
    "1.2.840.10008.1.2.5": ("pylibjpeg", "gdcm", "pydicom"),
    # JPEG lossless (Process 14, SV1): GDCM 147 vs pylibjpeg-libjpeg 60.
    "1.2.840.10008.1.2.4.57": ("gdcm", "pylibjpeg"),
    "1.2.840.10008.1.2.4.70": ("gdcm", "pylibjpeg"),
    # JPEG-LS: CharLS (pyjpegls) 125, GDCM 101, pylibjpeg-libjpeg 28.
    "1.2.840.10008.1.2.4.80": ("pyjpegls", "gdcm", "pylibjpeg"),
    "1.2.840.10008.1.2.4.81": ("pyjpegls", "gdcm", "pylibjpeg"),
    # JPEG 2000: GDCM shows 35 vs 20 in one process, but with 1.7 cores busy
    # (threaded OpenJPEG); per core pylibjpeg is cheaper, and the pool
    # already uses every core (pool-N 34 MB/s).
    "1.2.840.10008.1.2.4.90": ("pylibjpeg", "gdcm", "pillow"),
    "1.2.840.10008.1.2.4.91": ("pylibjpeg", "gdcm", "pillow"),
    # JPEG baseline 8-bit: Pillow (libjpeg-turbo) 297, GDCM 198, pylibjpeg 86.
    "1.2.840.10008.1.2.4.50": ("pillow", "gdcm", "pylibjpeg"),
    # JPEG extended 12-bit: pydicom refuses Pillow/GDCM for 12-bit samples
    # (performance notes §2); pylibjpeg-libjpeg first.
    "1.2.840.10008.1.2.4.51": ("pylibjpeg", "gdcm", "pillow"),
}

#: What the pool can write (uncompressed little endian).
TARGETS = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")

#: Transfer syntaxes whose pixel data are always lossy -> Lossy Image
#: Compression Method (0028,2114) defined terms (PS3.3 C.7.6.1.1.5.1).
_ALWAYS_LOSSY = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
}
#: JPEG 2000: lossy or lossless depending on the wavelet of the codestream.
_J2K = {"1.2.840.10008.1.2.4.91": "ISO_15444_1", "1.2.840.10008.1.2.4.93": "ISO_15444_2",
        "1.2.840.10008.1.2.4.203": "ISO_15444_15"}
_NATIVE_PHOTOMETRIC = {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL",
                       "YBR_FULL_422", "ARGB", "CMYK", "HSV"}
_ENCAPSULATED_ONLY = (0x7FE00001, 0x7FE00002)  # Extended Offset Table (+ lengths)


class DecodeError(Exception):
    """One object could not be decoded; maps to problem ``decode_failed``."""

    code = "decode_failed"


@dataclass(frozen=True)
class DecodeResult:
    """Outcome of one item. ``detail`` is the transfer syntax written when
    ``ok``, else why it failed."""

    item: Any
    ok: bool
    detail: str


# ------------------------------------------------------------ one file
def decoder_for(ts: str) -> str:
    """The pydicom decoding plugin used for ``ts`` here ("" = pydicom's choice)."""
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(ts).available_plugins
    except NotImplementedError:
        return ""
    for plugin in DECODER_PREFERENCE.get(ts, ()):
        if plugin in available:
            return plugin
    return ""


def decode_file(src: str | os.PathLike, dst: str | os.PathLike, target_ts: str) -> str:
    """Write ``src`` decoded to uncompressed ``target_ts`` at ``dst``.

    The SOP Instance UID is kept: a transfer syntax change is not a new
    instance (PS3.5 §10; dcmtk's dcmdjpeg keeps it too).

    Returns
    -------
    str
        The transfer syntax written.

    Raises
    ------
    DecodeError
        Unsupported target, undecodable pixel data, or the write failed.
    """
    import pydicom
    from pydicom.uid import UID

    if target_ts not in TARGETS:
        raise DecodeError(f"cannot decode to {target_ts}: only uncompressed little endian")
    try:
        ds = pydicom.dcmread(src)
        source = UID(ds.file_meta.TransferSyntaxUID)
        if source.is_encapsulated:
            _decompress(ds, source)
        elif source == "1.2.840.10008.1.2.2":
            raise DecodeError("explicit VR big endian: use send.transcode.convert")
        ds.file_meta.TransferSyntaxUID = UID(target_ts)
        _write_atomic(ds, Path(dst))
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any codec/parser error is this file's failure
        raise DecodeError(f"{type(exc).__name__}: {exc}") from exc
    return target_ts


def _decompress(ds: Any, source: str) -> None:
    lossy = _lossy_method(ds, source)
    compressed = len(ds.PixelData) if lossy is not None else 0
    ds.decompress(decoding_plugin=decoder_for(source), as_rgb=True,
                  generate_instance_uid=False)
    for tag in _ENCAPSULATED_ONLY:  # they described frames that are gone
        if tag in ds:
            del ds[tag]
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric and photometric not in _NATIVE_PHOTOMETRIC:
        raise DecodeError(f"decoded image still declares {photometric}")
    if lossy is not None:
        mark_lossy(ds, lossy, len(ds.PixelData) / compressed if compressed else 0.0)


def _lossy_method(ds: Any, source: str) -> str | None:
    """The Lossy Image Compression Method to record, None when lossless."""
    if source in _ALWAYS_LOSSY:
        return _ALWAYS_LOSSY[source]
    if source in _J2K and _j2k_irreversible(ds):
        return _J2K[source]
    if ds.get("LossyImageCompression") == "01":
        return ""  # marked by the source already; keep what it says
    return None


def _j2k_irreversible(ds: Any) -> bool:
    """True if the first frame uses the 9-7 irreversible wavelet (ISO 15444-1 A.6.1)."""
    from pydicom.encaps import generate_frames

    try:
        frame = next(generate_frames(ds.PixelData,
                                     number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
    except Exception:  # noqa: BLE001 - unknown: the source's own flag decides
        return False
    cod = frame.find(b"\xff\x52")
    # COD: marker(2) Lcod(2) Scod(1) SGcod(4), then SPcod: levels, cbw, cbh,
    # cbstyle, transformation (0 = 9-7 irreversible).
    offset = cod + 2 + 2 + 1 + 4 + 4
    return cod >= 0 and len(frame) > offset and frame[offset] == 0


def mark_lossy(ds: Any, method: str, ratio: float) -> None:
    """Record that the pixels went through lossy compression (PS3.3 C.7.6.1.1.5).

    Once lossy, always "01". Method (0028,2114) and ratio (0028,2112) describe
    the original compression: kept when the source has them, added when not.
    """
    ds.LossyImageCompression = "01"
    if method and "LossyImageCompressionMethod" not in ds:
        ds.LossyImageCompressionMethod = method
    if ratio > 0 and "LossyImageCompressionRatio" not in ds:
        ds.LossyImageCompressionRatio = f"{ratio:.2f}"[:16]


def _write_atomic(ds: Any, dst: Path) -> None:
    import pydicom

    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".dec-", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as fp:
            pydicom.dcmwrite(fp, ds, enforce_file_format=True)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------ the pool
def _worker_main(conn: Connection) -> None:
    """Worker process: decode one task at a time until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        seq, src, dst, target_ts, decode = task
        try:
            conn.send((seq, True, decode(src, dst, target_ts)))
        except DecodeError as exc:
            conn.send((seq, False, str(exc)))
        except Exception as exc:  # noqa: BLE001 - failure is a value per file
            conn.send((seq, False, f"{type(exc).__name__}: {exc}"))


class _Worker:
    """One worker process and the task it is working on (None = idle)."""

    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), name="pdimport-decode",
                                daemon=True)
        self.proc.start()
        child.close()
        self.task: int | None = None

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class DecodePool:
    """Decode many files on every core, streaming, in submission order.

    Parameters
    ----------
    workers : int, optional
        Worker processes (default: ``os.cpu_count()``).
    lookahead : int, optional
        Most items submitted but not yet handed back (default ``2 * workers``):
        memory stays bounded by that many decodes whatever the series size.
    start_method : str
        ``forkserver`` by default: the daemon has threads, and forking a
        threaded process can copy a held lock into the child.
    decode : callable
        ``decode(src, dst, target_ts) -> str`` run in the workers; a
        module-level function (it is pickled). :func:`decode_file` by default.

    Examples
    --------
    >>> with DecodePool(2) as pool:                      # doctest: +SKIP
    ...     for res in pool.map([(src, dst)], ExplicitVRLittleEndian):
    ...         print(res.item, res.ok, res.detail)
    """

    def __init__(self, workers: int | None = None, lookahead: int | None = None,
                 start_method: str = "forkserver", decode: Any = None) -> None:
        self._decode = decode or decode_file
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.lookahead = max(self.workers, lookahead or 2 * self.workers)
        self._ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # Workers fork from a server that has pydicom and numpy loaded
            # already: a replacement after a crash starts in milliseconds.
            self._ctx.set_forkserver_preload(["pdimport.decode", "pydicom", "numpy"])
        self._pool: list[_Worker] = []
        #: Largest number of items ever in flight or waiting (tests check the bound).
        self.peak_outstanding = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._pool:
            worker.stop()
        self._pool.clear()

    def map(self, items: Iterable[tuple[Any, ...]], target_ts: str) -> Iterator[DecodeResult]:
        """Decode items; one :class:`DecodeResult` per item, in order.

        An item is a ``(src, dst, ...)`` tuple: anything after ``dst`` (a
        SendItem, a key) rides along untouched. ``items`` is consumed lazily: at most ``lookahead`` pairs are taken
        ahead of the one being handed back.
        """
        self._ensure_workers()
        source = iter(items)
        taken: dict[int, tuple[Any, Any]] = {}
        done: dict[int, DecodeResult] = {}
        queued: list[int] = []  # taken, not yet given to a worker
        next_seq = next_out = 0
        exhausted = False
        while not exhausted or next_out < next_seq:
            while not exhausted and next_seq - next_out < self.lookahead:
                try:
                    taken[next_seq] = next(source)
                except StopIteration:
                    exhausted = True
                    break
                queued.append(next_seq)
                next_seq += 1
            self.peak_outstanding = max(self.peak_outstanding, next_seq - next_out)
            self._dispatch(queued, taken, target_ts)
            while next_out in done:
                taken.pop(next_out)
                yield done.pop(next_out)
                next_out += 1
            if next_out < next_seq and next_out not in done:
                self._collect(taken, done)

    def _ensure_workers(self) -> None:
        while len(self._pool) < self.workers:
            self._pool.append(_Worker(self._ctx))

    def _dispatch(self, queued: list[int], taken: dict[int, tuple[Any, Any]],
                  target_ts: str) -> None:
        for worker in self._pool:
            if not queued:
                return
            if worker.task is None:
                seq = queued.pop(0)
                src, dst = taken[seq][0], taken[seq][1]
                worker.task = seq
                worker.conn.send((seq, os.fspath(src), os.fspath(dst), target_ts, self._decode))

    def _collect(self, taken: dict[int, tuple[Any, Any]], done: dict[int, DecodeResult]) -> None:
        """Wait for at least one worker to answer or die."""
        busy = [w for w in self._pool if w.task is not None]
        by_handle: dict[Any, _Worker] = {}
        for w in busy:
            by_handle[w.conn] = w
            by_handle[w.proc.sentinel] = w
        for handle in wait(list(by_handle)):
            worker = by_handle[handle]
            if worker.task is None:
                continue  # its answer and its death both fired
            if handle is worker.conn:
                self._answer(worker, taken, done)
            else:
                self._replace_dead(worker, taken, done)

    def _answer(self, worker: _Worker, taken: dict[int, tuple[Any, Any]],
                done: dict[int, DecodeResult]) -> None:
        try:
            seq, ok, detail = worker.conn.recv()
        except (EOFError, OSError):
            self._replace_dead(worker, taken, done)
            return
        worker.task = None
        done[seq] = DecodeResult(taken[seq], ok, detail)

    def _replace_dead(self, worker: _Worker, taken: dict[int, tuple[Any, Any]],
                      done: dict[int, DecodeResult]) -> None:
        """The worker died mid-file: that file fails, a new worker takes over."""
        seq, worker.task = worker.task, None
        assert seq is not None
        worker.proc.join()
        code = worker.proc.exitcode
        why = (f"signal {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exit status {code}")
        log.warning("decode worker died (%s) on %s", why, taken[seq][0])
        done[seq] = DecodeResult(taken[seq], False, f"decoder crashed ({why})")
        worker.conn.close()
        self._pool[self._pool.index(worker)] = _Worker(self._ctx)


def decode_many(items: Iterable[tuple[Any, ...]], target_ts: str,
                workers: int | None = None,
                lookahead: int | None = None) -> Iterator[tuple[Any, bool, str]]:
    """Decode ``(src, dst, ...)`` items on every core; ``(item, ok, detail)`` in order.

    ``detail`` is the transfer syntax written when ``ok``, else the reason
    (report it as problem ``decode_failed``). The pool lives as long as the
    iterator: exhaust or close it.
    """
    with DecodePool(workers, lookahead) as pool:
        for res in pool.map(items, target_ts):
            yield res.item, res.ok, res.detail


__all__ = ["DECODER_PREFERENCE", "DecodeError", "DecodePool", "DecodeResult", "decode_file",
           "decode_many", "decoder_for", "mark_lossy"]
