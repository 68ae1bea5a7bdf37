"""Media for the benchmarks: a CT disc image in IHE PDI layout, served by the
throttled drive model of ``hardware/drive_emulation.py``.

The image is mastered by the real tools (dcmtk ``dcmmkdir``, ``genisoimage
-J -r``), as the research notes did (performance notes §4), from the same
512x512 CT generator the delivery benchmark uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, BinaryIO

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hardware"))

import drive_emulation as de
from corpus import make_ct_series

#: Files on the benchmark disc (about 525 kB each); ``BENCH_ISO_FILES`` overrides.
ISO_FILES = int(os.environ.get("BENCH_ISO_FILES", "400"))


def make_ct_iso(work: Path, count: int = ISO_FILES) -> Path:
    """A PDI disc image: ``DICOMDIR`` + ``DICOM/ST1/SE1/IM*`` of one CT series."""
    for tool in ("genisoimage", "dcmmkdir"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    stage = work / "stage"
    make_ct_series(stage / "DICOM" / "ST1" / "SE1", count)
    for path in (stage / "DICOM" / "ST1" / "SE1").iterdir():
        path.rename(path.with_suffix(""))  # PS3.10 File IDs: no extension
    subprocess.run(["dcmmkdir", "+r", "+I", "DICOM"], cwd=stage, check=True, capture_output=True)
    image = work / "ct_pdi.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-V", "CT_PDI", "-J", "-r", "-o", str(image), str(stage)],
        check=True,
        capture_output=True,
    )
    return image


class ThrottledMedium:
    """A medium whose file reads go through a drive model.

    :meth:`pdimport.job.importer.Importer.read` calls ``medium.open(entry)``;
    this passes the throttled ``pread`` that ``IsoMedium.open`` accepts.
    The directory was parsed when the medium was opened (not throttled: a
    few sectors at the start of the disc).
    """

    def __init__(self, medium: Any, pread: de.ThrottledPread) -> None:
        self._medium = medium
        self._pread = pread

    def open(self, entry: Any) -> BinaryIO:
        return self._medium.open(entry, pread=self._pread)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._medium, name)


def read_sequentially(image: Path, pread: de.ThrottledPread, chunk: int = 1 << 20) -> int:
    """Read the whole image from LBA 0 in ``chunk`` reads: the reference."""
    size, offset = image.stat().st_size, 0
    while offset < size:
        offset += len(pread(-1, min(chunk, size - offset), offset))
    return offset


@pytest.fixture(scope="session")
def ct_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark disc image (built once per session)."""
    return make_ct_iso(tmp_path_factory.mktemp("iso"))
