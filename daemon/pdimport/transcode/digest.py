"""What a copy's pixels are once decoded: a digest, computed in worker processes.

Two files of one SOP Instance UID with different bytes may be one instance
in two encodings (PS3.5 10: a transfer syntax change is not a new instance)
or two instances that clash. The decoded pixel values tell: equal values are
the same image. Decoding runs in the :class:`~pdimport.transcode.decode.DecodePool`
workers, never in the daemon's process, for the same reason the sender's
conversions do: a codec that crashes on a hostile file fails that file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from pdimport.transcode.codestream import CodestreamError, check_dataset
from pdimport.transcode.decode import DecodePool
from pdimport.transcode.reencode import TranscodeError, decoder_for

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: PS3.5 A.2 Explicit VR Little Endian (pydicom.uid's constant would import pydicom).
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"


def pixel_digest(src: str | os.PathLike, dst: str | os.PathLike, target_ts: str) -> str:
    """SHA-256 of `src`'s decoded pixel array (shape and sample type included).

    The pool's decode contract (``decode(src, dst, target_ts) -> str``); `dst`
    and `target_ts` are not used: nothing is written. Colour is compared as
    RGB, as :func:`~pdimport.transcode.reencode.convert` delivers it.

    Raises
    ------
    TranscodeError
        No pixel data, or they do not decode.
    """
    import numpy as np
    import pydicom

    try:
        ds = pydicom.dcmread(src)
        if not any(k in ds for k in _PIXEL_KEYWORDS):
            raise TranscodeError("no pixel data to compare")
        ts = str(ds.file_meta.TransferSyntaxUID)
        check_dataset(ds)  # compressed: its header first, as before a conversion
        ds.pixel_array_options(decoding_plugin=decoder_for(ts), as_rgb=True)
        arr = np.ascontiguousarray(ds.pixel_array)
    except TranscodeError:
        raise
    except CodestreamError as exc:
        raise TranscodeError(str(exc), exc.code) from None
    except Exception as exc:  # any codec or parser error is this copy's failure
        raise TranscodeError(f"{type(exc).__name__}: {exc}") from exc
    digest = hashlib.sha256(f"{arr.shape}|{arr.dtype.newbyteorder('<').str}|".encode())
    digest.update(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()


def pixel_digests(paths: Iterable[Path], workers: int | None = None) -> list[tuple[str, str]]:
    """:func:`pixel_digest` of each file, in order: ``(digest, "")``, or
    ``("", why)`` where there are no pixels or they do not decode."""
    todo = [Path(p) for p in paths]
    if not todo:
        return []
    workers = min(len(todo), workers or os.cpu_count() or 1)
    with DecodePool(workers, decode=pixel_digest) as pool:
        # dst is part of the pool's item shape only: the digest writes nothing
        return [
            (res.detail, "") if res.ok else ("", res.detail)
            for res in pool.map(((p, p) for p in todo), EXPLICIT_VR_LE)
        ]


__all__ = ["pixel_digest", "pixel_digests"]
