"""Fuzzing of the codec header checks (issue 17): JPEG 2000, JPEG, JPEG-LS, RLE.

Real codestreams (encoded in fixtures_codestream) are mutated in memory:
truncated, bytes flipped, zeroed, inserted, deleted, duplicated, length and
size fields set to boundary values, and checked against datasets that agree
or disagree with them. The checks must answer every mutant with a header or
a :class:`~pdimport.transcode.codestream.CodestreamError` (``decode_refused``
or ``decode_failed``), never another exception, and they decode nothing, so
10,000 cases take seconds. ``PDIMPORT_FUZZ_EXAMPLES`` sets the number;
``atheris_codestream.py`` beside this file runs the same checks under
coverage-guided fuzzing for longer.
"""

from __future__ import annotations

import os
import random
import struct
from collections import Counter

import pytest
from fixtures_codestream import SYNTAXES, encode_frame, pixels_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdimport.transcode import codestream as cs

EXAMPLES = int(os.environ.get("PDIMPORT_FUZZ_EXAMPLES", "10000"))
_BOUNDARY = (0, 1, 2, 7, 8, 63, 64, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to three random mutations of `data`."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        n = len(out)
        if n < 4:
            out += rng.randbytes(rng.randint(1, 16))
            continue
        at = rng.randrange(n)
        kind = rng.randrange(8)
        if kind == 0:
            del out[rng.randrange(n) :]  # truncation
        elif kind == 1:
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 2:
            out[at : at + rng.randint(1, 64)] = bytes(min(64, n - at))  # zeroed run
        elif kind == 3:
            out[at:at] = rng.randbytes(rng.randint(1, 32))
        elif kind == 4:
            del out[at : at + rng.randint(1, 32)]
        elif kind == 5 and at + 4 <= n:
            struct.pack_into(rng.choice((">I", "<I")), out, at, rng.choice(_BOUNDARY))
        elif kind == 6 and at + 2 <= n:
            struct.pack_into(">H", out, at, rng.choice(_BOUNDARY) & 0xFFFF)
        else:
            out[at:at] = out[at : at + rng.randint(1, 64)]  # a repeated run
    return bytes(out)


def expected_for(rng: random.Random, base: cs.Expected) -> cs.Expected:
    """Mostly the dataset the codestream came from, sometimes another."""
    if rng.random() < 0.8:
        return base
    return cs.Expected(
        rows=rng.choice((1, 63, base.rows, 30000)),
        columns=rng.choice((1, 65, base.columns, 65535)),
        samples=rng.choice((1, 3, 4)),
        bits_allocated=(ba := rng.choice((8, 16, 32))),
        bits_stored=rng.randint(1, ba),
        frames=1,
    )


@pytest.fixture(scope="module")
def originals() -> dict[str, tuple[bytes, cs.Expected]]:
    from fixtures_codestream import image_dataset

    out = {}
    for name in SYNTAXES:
        pixels = pixels_for(name, size=32)
        out[name] = (encode_frame(name, pixels), cs.Expected.of(image_dataset(pixels)))
    return out


def test_mutants_get_a_header_or_a_refusal(originals) -> None:
    outcomes: Counter[tuple[str, str]] = Counter()
    per_syntax = max(EXAMPLES // len(SYNTAXES), 1)
    for name, (frame, expected) in originals.items():
        rng = random.Random(f"codestream-{name}")
        ts = SYNTAXES[name]
        for _ in range(per_syntax):
            mutant = mutate(rng, frame)
            try:
                cs.check_frame(ts, mutant, expected_for(rng, expected))
                outcomes[name, "accepted"] += 1
            except cs.CodestreamError as exc:
                assert exc.code in ("decode_refused", "decode_failed")
                outcomes[name, exc.code] += 1
    assert sum(outcomes.values()) >= EXAMPLES - len(SYNTAXES)
    for name in SYNTAXES:  # the mutations reach every outcome, for every syntax
        assert outcomes[name, "decode_failed"], outcomes
        assert outcomes[name, "decode_refused"], outcomes
        assert outcomes[name, "accepted"], outcomes


@settings(
    max_examples=max(EXAMPLES // 10, 100),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.sampled_from(sorted(SYNTAXES.values())),
    st.binary(max_size=512),
    st.integers(1, 0xFFFF),
    st.integers(1, 0xFFFF),
    st.sampled_from((1, 3)),
    st.sampled_from((8, 16)),
)
def test_arbitrary_bytes_get_a_header_or_a_refusal(ts, data, rows, columns, samples, bits) -> None:
    prefix = {
        "1.2.840.10008.1.2.5": b"",
        "1.2.840.10008.1.2.4.90": b"\xff\x4f\xff\x51",
    }.get(ts, b"\xff\xd8")
    expected = cs.Expected(rows, columns, samples, bits, bits, 1)
    try:
        cs.check_frame(ts, prefix + data, expected)
    except cs.CodestreamError as exc:
        assert exc.code in ("decode_refused", "decode_failed")


def test_the_atheris_target_runs_its_seeds(tmp_path, originals) -> None:
    """The long-run target (atheris_codestream.py) stays runnable without atheris."""
    import atheris_codestream

    atheris_codestream.write_seeds(tmp_path)
    seeds = sorted(tmp_path.iterdir())
    assert len(seeds) == len(SYNTAXES)
    rng = random.Random("atheris-seeds")
    for seed in seeds:
        atheris_codestream.one_input(seed.read_bytes())
        for _ in range(100):
            atheris_codestream.one_input(mutate(rng, seed.read_bytes()))
