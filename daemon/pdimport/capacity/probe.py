"""Measurements the run itself cannot make:

* which transfer syntaxes the destination accepts (an association that
  proposes each), so the bench knows what the pipeline must decode;
* what decoding costs here, per transfer syntax (the pipeline's own
  conversion, :func:`pdimport.transcode.reencode.convert`, on one core);
* what the import PC and the link do without a drive in the way
  (``pdimport import`` of a disc image from the local disk);
* ``--real``: the sequential rate and access time of this PC's own drives.
"""

from __future__ import annotations

import logging
import mmap
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pdimport.capacity.mix import SYNTAXES

log = logging.getLogger(__name__)

NATIVE = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


def accepted_syntaxes(dest: str, sop_class: str = "1.2.840.10008.5.1.4.1.1.2") -> set[str]:
    """Transfer syntaxes ``dest`` accepts for ``sop_class`` (CT by default);
    a folder destination takes every one."""
    if not dest.startswith("dicom://"):
        return set(SYNTAXES.values())
    from pynetdicom import AE

    from pdimport.send import parse_dest

    d = parse_dest(dest)
    ae = AE(ae_title="PDIMPORTBENCH")
    for ts in SYNTAXES.values():
        ae.add_requested_context(sop_class, [ts])
    assoc = ae.associate(d.host, d.port, ae_title=d.aet)  # type: ignore[union-attr]  # a DicomDest
    if not assoc.is_established:
        raise ConnectionError(f"{dest} refused the association")
    try:
        return {str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    finally:
        assoc.release()


def decode_seconds_per_byte(syntaxes: set[str], size: int = 512) -> dict[str, float]:
    """Core-seconds per native pixel byte to decode each compressed syntax
    in ``syntaxes``, measured on a CT frame of the bench's generator."""
    from pydicom.uid import generate_uid

    from pdimport.capacity.generator import FrameCache
    from pdimport.capacity.mix import SeriesSpec
    from pdimport.demo.sample import SampleStudy
    from pdimport.transcode.reencode import convert

    names = {v: k for k, v in SYNTAXES.items()}
    frames = FrameCache(7)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="pdimport-decode-") as tmp:
        for ts in sorted(syntaxes - set(NATIVE)):
            from pdimport.capacity.generator import series_datasets

            spec = SeriesSpec("CT", 4, size, names[ts])
            study = SampleStudy(PatientID="DECODE", PatientName="BENCH^DECODE")
            took, native = 0.0, 0
            for i, ds in enumerate(series_datasets(spec, study, generate_uid(), frames, [])):
                src, dst = Path(tmp) / f"{i}.dcm", Path(tmp) / f"{i}.out.dcm"
                ds.save_as(src, enforce_file_format=True)
                started = time.process_time()
                convert(src, dst, NATIVE[0])
                took += time.process_time() - started
                native += int(ds.Rows) * int(ds.Columns) * 2
            out[ts] = took / native
    return out


def decode_core_seconds(
    pixel_bytes: dict[str, int], accepted: set[str], cost: dict[str, float]
) -> float:
    """Core-seconds of decoding a disc needs for a destination that accepts
    ``accepted``: every compressed syntax it does not take is decoded."""
    return sum(n * cost.get(ts, 0.0) for ts, n in pixel_bytes.items() if ts not in accepted)


@dataclass(frozen=True)
class PipelineProbe:
    """``pdimport import`` of one image from the local disk."""

    disc: str
    seconds: float  # wall time of the whole import
    read_scan: float  # start_read → deliver
    deliver: float  # deliver → final
    bytes_sent: int
    cpu_seconds: float  # the import process and its workers

    @property
    def send_rate(self) -> float:
        """Bytes per second the destination took, decode included."""
        return self.bytes_sent / self.deliver if self.deliver > 0 else 0.0


def pipeline_probe(image: Path, dest: str, workdir: Path) -> PipelineProbe:
    """Import ``image`` with no drive in the way: what the PC and the link do."""
    from pdimport.capacity.runner import child_env
    from pdimport.capacity.sampler import journal_counts
    from pdimport.capacity.timing import job_records

    state = workdir / f"probe-{image.stem}"
    cmd = [sys.executable, "-P", "-m", "pdimport", "import", str(image), "--dest", dest]
    cmd += ["--state-dir", str(state)]
    started = time.monotonic()
    before = os.times()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), check=False)
    after = os.times()
    seconds = time.monotonic() - started
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"pdimport import {image.name}: {proc.stderr.strip()[-300:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    jobs = job_records(state / "journal.sqlite")
    events = {e: t for job in jobs.values() for t, e in job["events"]}
    start = events.get("start_read", 0.0)
    deliver = events.get("deliver", start)
    final = max(t for job in jobs.values() for t, _ in job["events"])
    _, sent, _ = journal_counts(state / "journal.sqlite")
    return PipelineProbe(image.name, seconds, deliver - start, final - deliver, sent, cpu)


def disk_write_rate(folder: Path, size: int = 128 << 20) -> float:
    """Bytes per second written and made durable (fsync) in ``folder``, as
    the spool writes: what the disk gives pdimport, whatever else uses it."""
    folder.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)
    target = folder / "disk-probe.tmp"
    started = time.monotonic()
    try:
        with open(target, "wb") as fp:
            fp.writelines(block for _ in range(size >> 20))
            fp.flush()
            os.fsync(fp.fileno())
        took = time.monotonic() - started
    finally:
        target.unlink(missing_ok=True)
    return size / took if took > 0 else 0.0


# ------------------------------------------------------------ --real
@dataclass(frozen=True)
class RealDrive:
    devnode: str
    inner_rate: float  # bytes/s at the start of the disc
    outer_rate: float  # bytes/s near the end of the data
    access_time: float  # seconds, mean of random single-sector reads
    size: int


def optical_drives() -> list[str]:
    """``/dev/sr*`` drives that hold a readable disc (a size above zero)."""
    out = []
    for block in sorted(Path("/sys/block").glob("sr*")):
        try:
            if int((block / "size").read_text()) > 0:
                out.append(f"/dev/{block.name}")
        except (OSError, ValueError):
            continue
    return out


def measure_drive(devnode: str, span: int = 64 << 20, seeks: int = 20) -> RealDrive:
    """Sequential rate at the start and near the end of the disc, and the
    mean access time of random single-sector reads, all with ``O_DIRECT``
    (the page cache would measure memory, not the drive)."""
    fd = os.open(devnode, os.O_RDONLY | os.O_DIRECT)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        buf = mmap.mmap(-1, 1 << 20)
        one = mmap.mmap(-1, 2048)

        def sequential(start: int) -> float:
            length = min(span, max(size - start, 0))
            os.preadv(fd, [one], start)  # spin up and position first
            began, done = time.monotonic(), 0
            while done < length:
                n = os.preadv(fd, [buf], start + done)
                if n <= 0:
                    break
                done += n
            took = time.monotonic() - began
            return done / took if took > 0 else 0.0

        inner = sequential(0)
        outer = sequential(max(size - span - (8 << 20), 0) // 2048 * 2048)
        rng = random.Random(1)
        began = time.monotonic()
        for _ in range(seeks):
            os.preadv(fd, [one], rng.randrange(0, max(size // 2048, 1)) * 2048)
        access = (time.monotonic() - began) / seeks
    finally:
        os.close(fd)
    return RealDrive(devnode, inner, max(outer, inner), access, size)
