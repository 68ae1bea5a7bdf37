"""A CT-like corpus for the delivery benchmarks.

512x512, 16 bit (12 stored), Explicit VR Little Endian, about 525 kB each,
like the 2,000-file thin-slice series of performance.md §3; pixel values
are a noisy phantom so nothing downstream can shortcut on zeros.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fixtures_dicom import new_dataset
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pdimport.model import SendItem


def make_ct_series(folder: Path, count: int, size: int = 512) -> list[SendItem]:
    """Write `count` CT instances of one series; their SendItems in order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2
    study, series = generate_uid(), generate_uid()
    items = []
    for n in range(count):
        pixels = np.where(body, 1040, 24) + rng.normal(0, 12, (size, size))
        ds = _ct(study, series, n + 1, pixels.clip(0, 4095).astype(np.uint16), size)
        path = folder / f"IM{n + 1:06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        items.append(
            SendItem(
                f"bench-{ds.SOPInstanceUID}",
                path,
                CTImageStorage,
                ds.SOPInstanceUID,
                ExplicitVRLittleEndian,
                path.stat().st_size,
            )
        )
    return items


def _ct(study: str, series: str, number: int, pixels: np.ndarray, size: int) -> Dataset:
    ds = new_dataset()
    ds.PatientName, ds.PatientID, ds.Modality = "Bench^Send", "BENCH1", "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, number
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = pixels.tobytes()
    return ds
