"""Small previews of one image per series for the job page.

A preview is rendered from the spooled original in a worker process (the
decode pool of :mod:`pdimport.transcode.decode`, one worker, low priority,
with a timeout and a memory cap): a hostile file that loops or crashes a
codec costs that worker, never the console or the daemon. The PNG is cached
in ``STATE_DIR/console/previews`` by the original's SHA-256; a file that does
not render leaves a marker there, so it is tried once, and the page shows a
placeholder for it, never an error.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Longest side of a preview in pixels.
SIZE = 160
#: Seconds one preview may take in its worker before the worker is killed.
TIMEOUT = 20.0
#: Address space of the preview worker (a file asking for more fails alone).
MEMORY = 1 << 30

#: Shown for a series with no image (RT Plan, SR, a document) or one that failed.
PLACEHOLDER = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="160" height="160" viewBox="0 0 160 160">'
    b'<rect width="160" height="160" fill="#e5e7eb"/>'
    b'<path d="M40 112l28-36 20 24 14-16 18 28z" fill="#9ca3af"/>'
    b'<circle cx="104" cy="56" r="10" fill="#9ca3af"/></svg>'
)


def render_preview(src: str, dst: str, _target_ts: str = "") -> str:
    """Worker side: the first frame of ``src`` as a PNG of at most
    :data:`SIZE` pixels at ``dst`` (modality and VOI LUT applied,
    MONOCHROME1 inverted). Raises on anything that does not render."""
    import numpy as np
    from PIL import Image
    from pydicom import dcmread
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    os.setpriority(os.PRIO_PROCESS, 0, 15)  # a preview never competes with a read
    ds = dcmread(src, force=True)
    arr = pixel_array(ds, index=0 if int(ds.get("NumberOfFrames") or 1) > 1 else None)
    samples = int(ds.get("SamplesPerPixel") or 1)
    if samples == 1:
        arr = apply_voi_lut(apply_modality_lut(arr, ds), ds).astype(np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            arr = 255.0 - arr
        image = Image.fromarray(arr.astype(np.uint8), "L")
    else:
        if arr.dtype != np.uint8:
            arr = (arr.astype(np.float64) * (255.0 / max(float(arr.max()), 1.0))).astype(np.uint8)
        image = Image.fromarray(arr[..., :3], "RGB")
    image.thumbnail((SIZE, SIZE))
    image.save(dst, "PNG")
    return "png"


class Previews:
    """The cache and its renderer (started at the first preview asked for).

    Parameters
    ----------
    cache_dir : Path
        ``STATE_DIR/console/previews``.
    spool_path : callable
        ``spool_path(sha256) -> Path`` of a spooled original.
    """

    def __init__(self, cache_dir: Path, spool_path: Any, timeout: float = TIMEOUT) -> None:
        self.cache_dir = cache_dir
        self.spool_path = spool_path
        self.timeout = timeout
        self._lock = threading.Lock()  # one render at a time; a pool's map is not shared
        self._pool: Any = None

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def png(self, sha256: str) -> bytes | None:
        """The preview of the spooled file ``sha256``; None when it has none
        (not an image, undecodable, gone from the spool, too slow)."""
        try:
            src = Path(self.spool_path(sha256))
        except ValueError:
            return None  # not a digest: never a path
        out = self.cache_dir / f"{sha256}.png"
        failed = self.cache_dir / f"{sha256}.none"
        with self._lock:
            if not out.is_file() and not failed.exists() and src.is_file():
                self._render(src, out, failed)
        try:
            return out.read_bytes()
        except OSError:
            return None

    def _render(self, src: Path, out: Path, failed: Path) -> None:
        from pdimport.transcode.decode import DecodePool

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        if self._pool is None:
            self._pool = DecodePool(1, decode=render_preview, timeout=self.timeout, memory=MEMORY)
        [result] = list(self._pool.map([(src, tmp)], ""))
        if result.ok and tmp.is_file():
            os.replace(tmp, out)
            return
        log.info("no preview of %s: %s", src.name, result.detail)
        tmp.unlink(missing_ok=True)
        failed.write_text(result.detail + "\n", encoding="utf-8")


#: RT objects without pixel data (PS3.3 A.18-A.21, A.29, A.50-A.51): plan,
#: structure set, treatment records, ion plan and record.
_RT_WITHOUT_PIXELS = frozenset(f"1.2.840.10008.5.1.4.1.1.481.{n}" for n in (3, 4, 5, 6, 7, 8, 9))


def series_previews(report: dict[str, Any]) -> dict[str, str]:
    """``series_uid -> sha256`` of the instance each series is previewed by:
    the middle one of its instances that may have pixel data (not documents,
    structured reports or RT plans), in report order."""
    by_series: dict[str, list[str]] = {}
    for inst in report.get("instances") or []:
        if (
            inst.get("kind") in ("document", "sr", "other")
            or inst.get("sop_class_uid") in _RT_WITHOUT_PIXELS
            or not inst.get("sha256")
        ):
            continue
        by_series.setdefault(str(inst.get("series_uid", "")), []).append(str(inst["sha256"]))
    return {uid: shas[len(shas) // 2] for uid, shas in by_series.items() if uid}
