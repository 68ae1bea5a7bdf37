"""Mutation fuzzing of the numba header scanner (notes/reliability.md §7 H.70).

Real files are mutated in memory (truncation, flipped length fields, random
byte flips, inserts and deletes) and walked through
:meth:`NumbaScanner.scan_bytes`. Whenever the fast path answers (Header or
Problem) the mutant is written once to a temporary file and the reference
path must give the same answer; when it declines, it must say why. No
mutant may crash the walker or take long.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

import pytest
from fixtures_dicom import (
    make_ct,
    make_deflated,
    make_japanese_pn,
    make_nested,
    make_raw,
    pydicom_test_file,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdimport.model import Header
from pdimport.problems import Problem
from pdimport.scan.encoding import detect_encoding
from pdimport.scan.numba_scanner import NumbaScanner
from pdimport.scan.pydicom_scanner import PydicomScanner

pytest.importorskip("numba")

EXAMPLES = int(os.environ.get("PDIMPORT_FUZZ_EXAMPLES", "10000"))
_LENGTHS = (0, 1, 2, 3, 4, 7, 8, 0x7F, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFF0, 0xFFFFFFFF)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[bytes, str]]:
    """Small real files of every encoding the fast path walks."""
    d = tmp_path_factory.mktemp("seeds")
    paths = [
        make_ct(d / "ct", rows=8, cols=8),
        make_japanese_pn(d / "jp"),
        make_nested(d / "nested", 5),
        make_raw(d / "raw_impl", "implicit_le"),
        make_raw(d / "raw_be", "explicit_be"),
    ]
    for name in (
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "rtplan.dcm",
        "JPEG2000.dcm",
        "chrH31.dcm",
        "test-SR.dcm",
        "rtstruct.dcm",
    ):
        paths.append(pydicom_test_file(name))
    out = []
    for p in paths:
        data = p.read_bytes()
        out.append((data, detect_encoding(data[:65536]) or "part10"))
    return out


def _mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, value in ops:
        if not buf:
            break
        at = where % len(buf)
        if kind == 0:  # truncate
            del buf[at:]
        elif kind == 1:  # flip one byte
            buf[at] = value & 0xFF
        elif kind == 2:  # insert bytes
            buf[at:at] = bytes([value & 0xFF]) * (1 + (value >> 8) % 16)
        elif kind == 3:  # delete bytes
            del buf[at : at + 1 + (value >> 8) % 16]
        elif kind == 4:  # a 16-bit length field (short explicit VR header: offset 6)
            start = _header_near(buf, at)
            buf[start + 6 : start + 8] = struct.pack("<H", _LENGTHS[value % len(_LENGTHS)] & 0xFFFF)
        else:  # a 32-bit length field (long VR: offset 8; implicit/items: offset 4)
            start = _header_near(buf, at)
            off = 8 if value & 1 else 4
            buf[start + off : start + off + 4] = struct.pack("<I", _LENGTHS[value % len(_LENGTHS)])
    return bytes(buf)


def _header_near(buf: bytearray, at: int) -> int:
    """An offset that is likely an element start: a tag group we know."""
    for group in (b"\x08\x00", b"\x10\x00", b"\x20\x00", b"\x28\x00", b"\xfe\xff", b"\xe0\x7f"):
        hit = buf.find(group, at)
        if hit >= 0:
            return hit
    return at


_OPS = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 1 << 20), st.integers(0, 1 << 16)),
    min_size=1,
    max_size=4,
)


@pytest.fixture(scope="module")
def scanners() -> tuple[NumbaScanner, PydicomScanner]:
    fast = NumbaScanner()
    assert fast.is_available()
    return fast, PydicomScanner()


def _hold_to_oracle(
    result,
    reason: str,
    mutant: bytes,
    enc: str,
    ref: PydicomScanner,
    target: Path,
    stats: dict[str, int],
    ops,
) -> None:
    """A fast answer must be the oracle's answer (the same Header, or a
    Problem with the same code); a declined file must say why."""
    if result is None:
        assert reason
        stats["declined"] += 1
        return
    stats["fast"] += 1
    target.write_bytes(mutant)
    oracle = ref.scan_one(target, enc)
    if isinstance(oracle, Header):
        assert result == oracle, (ops, result, oracle)
    else:
        assert isinstance(result, Problem) and result.code == oracle.code, (ops, result, oracle)


def test_mutants_never_give_a_wrong_value(seeds, scanners, tmp_path: Path):
    fast, ref = scanners
    target = tmp_path / "mutant"
    stats = {"fast": 0, "declined": 0}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(seed=st.integers(0, len(seeds) - 1), ops=_OPS)
    def check(seed: int, ops: list[tuple[int, int, int]]) -> None:
        data, enc = seeds[seed]
        mutant = _mutate(data, ops)
        start = time.monotonic()
        result, reason = fast.scan_bytes(mutant, enc)
        assert time.monotonic() - start < 2, "the walk took too long"
        _hold_to_oracle(result, reason, mutant, enc, ref, target, stats, ops)

    check()
    # the mutants must exercise both outcomes, or the test proves little
    assert stats["fast"] > EXAMPLES // 20 and stats["declined"] > EXAMPLES // 20, stats


def test_deflated_mutants_never_give_a_wrong_value(scanners, tmp_path: Path):
    """The inflate-then-walk path: mutate the inflated body of a deflated
    file, deflate it again, and hold the fast result to the oracle's."""
    fast, ref = scanners
    path = make_deflated(tmp_path / "seed")
    data = path.read_bytes()
    ds = _dataset_offset(data)
    body = zlib.decompress(data[ds:], -zlib.MAX_WBITS)
    target = tmp_path / "mutant"
    stats = {"fast": 0, "declined": 0}

    @settings(
        max_examples=max(EXAMPLES // 5, 100),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(ops=_OPS)
    def check(ops: list[tuple[int, int, int]]) -> None:
        z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        mutant = data[:ds] + z.compress(_mutate(body, ops)) + z.flush()
        result, reason = fast.scan_bytes(mutant, "part10")
        _hold_to_oracle(result, reason, mutant, "part10", ref, target, stats, ops)

    check()
    n = max(EXAMPLES // 5, 100)
    assert stats["fast"] > n // 20 and stats["declined"] > n // 20, stats


def _dataset_offset(data: bytes) -> int:
    """End of the File Meta group of a Part 10 file (its group length)."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    (length,) = struct.unpack("<I", data[140:144])
    return 144 + length
