"""What the send path knows of conversion without loading the codecs: its
error and its time limit (pydicom and the decoders load only to convert)."""

from __future__ import annotations

#: Seconds one file may take in a worker. A 1,000-frame 512×512 JPEG 2000
#: multi-frame (524 MB of pixels) at the 18 MB/s a worker decodes here
#: (bench/bench_decode.py) takes about 30 s: a codec still busy after 5
#: minutes is looping on its input.
DEFAULT_TIMEOUT = 300.0


class TranscodeError(Exception):
    """The object could not be re-encoded; ``code`` is its problem code:
    ``decode_failed``, or ``decode_refused`` when the codestream's header
    disagrees with the dataset (:mod:`pdimport.transcode.codestream`)."""

    code = "decode_failed"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
