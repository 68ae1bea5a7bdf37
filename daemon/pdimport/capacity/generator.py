"""Synthetic media that look like referral discs, as ISO images.

Each disc is one patient's IHE PDI disc (DICOMDIR, ``DICOM/`` folder, README,
Other Content, a viewer) made of the kind's studies and series
(:mod:`pdimport.capacity.mix`). The CT and MR instances start from the sample
disc's builders (:func:`pdimport.demo.sample.make_sample_datasets`), CR, US
and RT from :mod:`pdimport.capacity.builders`; every disc has fresh UIDs, so
one run never sends the same instance twice.

Pixels are phantoms with noise, so that lossless codecs compress them about
as much as real images (2-3:1) and decoding costs what it costs on real
discs. Encoding is the slow part of making a disc: a series reuses a small
pool of encoded frames (:class:`FrameCache`), only the UIDs and positions
differ from slice to slice. Made discs are kept in a cache folder keyed by
the mix (:func:`ensure_discs`), so a second run starts at once.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from pydicom.uid import UID, generate_uid

from pdimport.capacity import builders
from pdimport.capacity.mix import SYNTAXES, DiscKind, Mix, SeriesSpec
from pdimport.demo.sample import (
    SampleStudy,
    _phantom_ct,
    _phantom_mr,
    _write_pdi_dicomdir,
    make_sample_datasets,
    make_sample_pdf,
    write_iso,
)
from pdimport.store.fsutil import write_bytes

log = logging.getLogger(__name__)

#: Distinct encoded frames per series pool: enough that no codec sees one
#: frame over and over, few enough that a disc is made in seconds.
POOL = 8
#: Bumped when the discs made for a mix change: the cache keeps them apart.
VERSION = 2
SECTOR = 2048
_WHEN = _dt.datetime(2024, 3, 15, 10, 15, 0)


@dataclass(frozen=True)
class DiscInfo:
    """One made disc: where it is and what it holds (``NAME.iso.json`` beside it)."""

    path: str
    kind: str
    label: str
    bytes: int
    files: int
    dicom: int
    instances: dict[str, int]  # by transfer syntax UID
    pixel_bytes: dict[str, int]  # native pixel bytes, by transfer syntax UID
    broken: int
    bad_lbas: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return Path(self.path).name


# ------------------------------------------------------------- pixels
class FrameCache:
    """Encoded pixel data per (modality, size, syntax, slot): made once."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._frames: dict[tuple[str, int, str, int], tuple[DataElement, dict]] = {}

    def pixels(self, modality: str, size: int, slot: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, size, slot, ord(modality[0])])
        z = (slot - POOL / 2) * 10.0
        if modality == "CT":
            return np.clip(_phantom_ct(size, z) + 1024.0 + rng.normal(0, 12, (size, size)), 0, 4095)
        if modality == "MR":
            return np.clip(_phantom_mr(size, z) + rng.normal(0, 25, (size, size)), 0, 4095)
        if modality == "CR":
            return builders.cr_pixels(size, rng)
        if modality == "US":
            return builders.us_pixels(size, rng)
        raise ValueError(modality)

    def apply(self, ds: Dataset, modality: str, size: int, syntax: str, slot: int) -> None:
        """Give ``ds`` the pool frame ``slot``, encoded in ``syntax``."""
        key = (modality, size, syntax, slot % POOL)
        if key not in self._frames:
            proto = copy.deepcopy(ds)
            encode(proto, SYNTAXES[syntax])
            changed = {
                k: proto.get(k)
                for k in ("PhotometricInterpretation", "PlanarConfiguration")
                if k in proto
            }
            self._frames[key] = (proto["PixelData"], changed)
        element, changed = self._frames[key]
        ds["PixelData"] = copy.copy(element)
        for keyword, value in changed.items():
            setattr(ds, keyword, value)
        ds.file_meta.TransferSyntaxUID = UID(SYNTAXES[syntax])
        if SYNTAXES[syntax] == "1.2.840.10008.1.2":
            ds["PixelData"].VR = "OW"


def encode(ds: Dataset, ts: str) -> None:
    """Re-encode ``ds``'s native pixels in transfer syntax ``ts``, in place.

    pydicom's encoders make RLE, JPEG-LS and JPEG 2000; JPEG Lossless
    (process 14, the most common compressed syntax on discs) is made with GDCM.
    """
    if ts in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):
        ds.file_meta.TransferSyntaxUID = UID(ts)
        return
    if ts == "1.2.840.10008.1.2.4.70":
        _gdcm_jpeg_lossless(ds)
        return
    ds.compress(UID(ts), encoding_plugin="pylibjpeg" if ts.endswith(".4.90") else "")


def _gdcm_jpeg_lossless(ds: Dataset) -> None:
    import gdcm
    from pydicom import dcmread

    with tempfile.TemporaryDirectory(prefix="pdimport-gen-") as tmp:
        src, dst = Path(tmp) / "in.dcm", Path(tmp) / "out.dcm"
        ds.save_as(src, enforce_file_format=True)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(src))
        if not reader.Read():
            raise RuntimeError("gdcm could not read the frame to encode")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        if not change.Change():
            raise RuntimeError("gdcm could not encode JPEG lossless")
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(dst))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise RuntimeError("gdcm could not write the JPEG lossless frame")
        out = dcmread(dst)
    ds["PixelData"] = out["PixelData"]
    ds.file_meta.TransferSyntaxUID = out.file_meta.TransferSyntaxUID


# ------------------------------------------------------------- series
def series_datasets(
    spec: SeriesSpec,
    study: SampleStudy,
    StudyInstanceUID: str,
    frames: FrameCache,
    ct: list[Dataset],
) -> Iterator[Dataset]:
    """The instances of one series, one at a time (memory stays bounded
    whatever the series size). An RT set needs the study's CT in ``ct``."""
    if spec.modality == "RT":
        if not ct:
            raise ValueError("an RT set needs a CT series before it in the study")
        yield from builders.rt_set(study, StudyInstanceUID, ct, _WHEN, dose_size=spec.size)
        return
    if spec.modality in ("CT", "MR"):
        yield from _cross_sectional(spec, study, StudyInstanceUID, frames)
        return
    SeriesInstanceUID = generate_uid()
    make = builders.cr_image if spec.modality == "CR" else builders.us_image
    for i in range(spec.images):
        pixels = frames.pixels(spec.modality, spec.size, i % POOL)
        ds = make(study, StudyInstanceUID, SeriesInstanceUID, i + 1, pixels, _WHEN)
        frames.apply(ds, spec.modality, spec.size, spec.syntax, i)
        yield ds


def _cross_sectional(
    spec: SeriesSpec, study: SampleStudy, StudyInstanceUID: str, frames: FrameCache
) -> Iterator[Dataset]:
    """CT or MR slices from the sample disc's template instance."""
    n_ct, n_mr = (1, 0) if spec.modality == "CT" else (1, 1)
    template = make_sample_datasets(
        study.PatientID, n_ct, n_mr, size=spec.size, patient_name=study.PatientName
    )[-1]
    thin = spec.images > 400  # thin-slice CT: 1 mm apart
    step = 1.0 if thin else 5.0
    SeriesInstanceUID = generate_uid()
    FrameOfReferenceUID = generate_uid()
    if spec.images >= POOL:
        del template.PixelData  # each slice gets a pool frame
    for i in range(spec.images):
        ds = copy.deepcopy(template)
        # The template knows only the patient's ID and name: the rest of the
        # disc's patient and study must agree, or it is two patients.
        for keyword in ("IssuerOfPatientID", "StudyDescription", "AccessionNumber"):
            setattr(ds, keyword, getattr(study, keyword))
        ds.StudyInstanceUID = StudyInstanceUID
        ds.SeriesInstanceUID = SeriesInstanceUID
        ds.FrameOfReferenceUID = FrameOfReferenceUID
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        z = (i - (spec.images - 1) / 2.0) * step
        ds.ImagePositionPatient = [*template.ImagePositionPatient[:2], f"{z:.3f}"]
        ds.SliceLocation = f"{z:.3f}"
        ds.SliceThickness = f"{step:.1f}"
        if thin:
            ds.SeriesDescription = "CHEST 1mm"
        if i < POOL:
            ds.PixelData = frames.pixels(spec.modality, spec.size, i).astype("<u2").tobytes()
        frames.apply(ds, spec.modality, spec.size, spec.syntax, i)
        yield ds


# ------------------------------------------------------------- discs
def make_disc(kind: DiscKind, index: int, out_dir: Path, seed: int, frames: FrameCache) -> DiscInfo:
    """Make disc number ``index`` of ``kind`` as ``out_dir/NAME.iso`` (+ ``.json``)."""
    label = f"PDB{index:05d}"
    name = f"{label.lower()}-{kind.name}.iso"
    study = SampleStudy(
        PatientID=f"EXT{seed % 1000:03d}{index:05d}",
        PatientName=f"BENCH^DISC{index:05d}",
        IssuerOfPatientID="REFERRING_HOSPITAL",
        StudyDescription=kind.description[:64] or kind.name,
        AccessionNumber=f"B{index:07d}",
    )
    instances: dict[str, int] = {}
    pixel_bytes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="pdimport-disc-", dir=out_dir) as tmp:
        root = Path(tmp) / "disc"
        root.mkdir()
        fs = FileSet()
        fs.ID = label
        for _ in range(kind.studies):
            StudyInstanceUID = generate_uid()
            ct: list[Dataset] = []
            for spec in kind.series:
                for ds in series_datasets(spec, study, StudyInstanceUID, frames, ct):
                    ts = str(ds.file_meta.TransferSyntaxUID)
                    instances[ts] = instances.get(ts, 0) + 1
                    if "Rows" in ds:
                        native = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
                        native *= int(ds.get("SamplesPerPixel", 1)) * int(
                            ds.get("NumberOfFrames", 1)
                        )
                        pixel_bytes[ts] = pixel_bytes.get(ts, 0) + native
                    fs.add(ds)  # written to the file-set's staging folder at once
                    if spec.modality == "CT":
                        del ds.PixelData  # the RT set only refers to the slice
                        ct.append(ds)
        fs.write(root)
        _write_pdi_dicomdir(fs, root)
        dicom = len(fs)
        broken = _broken_files(root, kind.broken, seed + index)
        _other_content(root, kind, study, dicom, seed + index)
        iso = write_iso(root, out_dir / name, label)
        files = sum(len(f) for _, _, f in os.walk(root))
    size = iso.stat().st_size
    bad = _bad_lbas(kind.bad_sectors, size, seed + index)
    if bad:
        (out_dir / (name + ".bad-lbas")).write_text(",".join(str(b) for b in bad))
    info = DiscInfo(
        str(iso), kind.name, label, size, files, dicom, instances, pixel_bytes, broken, bad
    )
    write_bytes(out_dir / (name + ".json"), json.dumps(asdict(info)).encode())
    return info


def _broken_files(root: Path, count: int, seed: int) -> int:
    """Files in ``DICOM/BROKEN``, none in the DICOMDIR: a truncated DICOM
    file, one that is not DICOM at all, an empty one, in turn."""
    if count == 0:
        return 0
    folder = root / "DICOM" / "BROKEN"
    folder.mkdir(parents=True)
    first = next(p for p in sorted((root / "DICOM").rglob("IM*")) if p.is_file())
    whole = first.read_bytes()
    rng = np.random.default_rng(seed)
    for i in range(count):
        target = folder / f"IM{i:06d}"
        if i % 3 == 0:
            target.write_bytes(whole[: len(whole) // 2])
        elif i % 3 == 1:
            target.write_bytes(rng.bytes(64 << 10))
        else:
            target.write_bytes(b"")
    return count


def _other_content(root: Path, kind: DiscKind, study: SampleStudy, dicom: int, seed: int) -> None:
    (root / "README.TXT").write_text(
        f"REFERRAL DISC (IHE PDI)\r\nPatient ID: {study.PatientID}\r\n"
        f"DICOM files: {dicom} (see DICOMDIR)\r\nSynthetic data made by pdimport bench.\r\n",
        encoding="ascii",
    )
    if "pdf" in kind.other:
        (root / "REPORTS").mkdir()
        pdf = make_sample_pdf(["Radiology report", f"Patient ID {study.PatientID}", kind.name])
        (root / "REPORTS" / "REPORT01.PDF").write_bytes(pdf)
    if "jpeg" in kind.other:
        from PIL import Image

        (root / "PHOTOS").mkdir()
        rng = np.random.default_rng(seed)
        photo = (rng.random((480, 640, 3)) * 64 + 96).astype(np.uint8)
        Image.fromarray(photo).save(root / "PHOTOS" / "PHOTO01.JPG", quality=85)
    if "txt" in kind.other:
        (root / "NOTES.TXT").write_text("Clinical notes: synthetic.\r\n", encoding="ascii")
    if kind.viewer_mb > 0:
        (root / "VIEWER").mkdir()
        rng = np.random.default_rng(seed)
        with open(root / "VIEWER" / "VIEWER.EXE", "wb") as fp:
            left = int(kind.viewer_mb * (1 << 20))
            while left > 0:
                chunk = min(left, 4 << 20)
                fp.write(rng.bytes(chunk))
                left -= chunk


def _bad_lbas(count: int, size: int, seed: int) -> tuple[int, ...]:
    """Scratches in the middle half of the data."""
    if count == 0:
        return ()
    rng = np.random.default_rng(seed)
    sectors = size // SECTOR
    return tuple(sorted(int(x) for x in rng.integers(sectors // 4, 3 * sectors // 4, count)))


def ensure_discs(
    mix: Mix,
    count: int,
    cache: Path,
    progress: Callable[[int, int, DiscInfo], None] | None = None,
) -> list[DiscInfo]:
    """The first ``count`` discs of ``mix``'s plan, made where missing.

    ``cache/<mix digest>/`` keeps them between runs (each run has its own
    journal and receiver, so the same discs may be imported again).
    """
    folder = cache / f"{mix.digest()}-v{VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    frames = FrameCache(mix.seed)
    out = []
    for index, kind in enumerate(mix.plan(count), start=1):
        info = _cached(folder, index, kind.name)
        if info is None:
            info = make_disc(kind, index, folder, mix.seed, frames)
        out.append(info)
        if progress is not None:
            progress(index, count, info)
    return out


def _cached(folder: Path, index: int, kind: str) -> DiscInfo | None:
    meta = folder / f"pdb{index:05d}-{kind}.iso.json"
    try:
        raw = json.loads(meta.read_text())
        raw["bad_lbas"] = tuple(raw.get("bad_lbas", ()))
        info = DiscInfo(**raw)
    except (OSError, ValueError, TypeError):
        return None
    if not Path(info.path).is_file() or Path(info.path).stat().st_size != info.bytes:
        return None
    return info
