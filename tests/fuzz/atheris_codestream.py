"""Coverage-guided fuzzing of the codec header checks with atheris (libFuzzer).

The normal test run fuzzes the same checks by mutation
(``test_codestream_fuzz.py``, 10,000 cases); this target is for long runs
that search for inputs raising anything but a
:class:`~pdimport.transcode.codestream.CodestreamError`. atheris is not a
dependency and CI does not run it. To run it::

    pip install atheris                       # in a venv with pdimport's dependencies
    mkdir -p /tmp/cs-corpus
    PYTHONPATH=daemon:tests/transcode:tests python tests/fuzz/atheris_codestream.py \
        --seeds /tmp/cs-corpus                # write the encoder outputs as seeds
    PYTHONPATH=daemon:tests/transcode:tests python tests/fuzz/atheris_codestream.py \
        /tmp/cs-corpus -max_len=16384 -atheris_runs=10000000

libFuzzer writes any crashing input to ``crash-*`` in the working directory;
replay it with the same command and the file name instead of the corpus.

Input layout: byte 0 picks the syntax, bytes 1-6 the dataset's Rows,
Columns, Samples per Pixel and Bits Allocated, the rest is the frame.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

_SYNTAXES = (
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.5",  # RLE
)


def one_input(data: bytes) -> None:
    """The target: any exception but a CodestreamError is a finding."""
    from pdimport.transcode import codestream as cs

    if len(data) < 7:
        return
    ts = _SYNTAXES[data[0] % len(_SYNTAXES)]
    rows, columns = struct.unpack_from(">HH", data, 1)
    samples = 3 if data[5] & 1 else 1
    bits = (8, 16, 32)[data[6] % 3]
    expected = cs.Expected(max(rows, 1), max(columns, 1), samples, bits, bits, 1)
    try:
        cs.check_frame(ts, data[7:], expected)
    except cs.CodestreamError:
        pass


def write_seeds(folder: Path) -> None:
    """The encoders' output for each syntax, in the input layout, as seeds."""
    from fixtures_codestream import SYNTAXES, encode_frame, pixels_for

    folder.mkdir(parents=True, exist_ok=True)
    for name, ts in SYNTAXES.items():
        pixels = pixels_for(name, size=32)
        bits = 8 if name == "jpeg" else 16
        head = bytes([_SYNTAXES.index(ts)]) + struct.pack(">HHBB", 32, 32, 0, bits // 8 - 1)
        (folder / f"seed-{name}").write_bytes(head + encode_frame(name, pixels))


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--seeds":
        write_seeds(Path(argv[2]))
        return
    import atheris

    with atheris.instrument_imports():
        import pdimport.transcode.codestream  # noqa: F401 - instrumented for coverage
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
