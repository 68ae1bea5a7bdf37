"""Mutation fuzzing of the medium readers and the DICOMDIR walker (issue 17).

Real ISO 9660 (Joliet, Rock Ridge), UDF and zip media and a real DICOMDIR are
mastered once by the real tools, then mutated in memory where their
structures live (volume descriptors, path tables and directory records;
UDF descriptors; zip local headers and central directory; DICOMDIR records):
byte flips, extreme 16/32-bit values, truncation, copied blocks. Each mutant
is opened as a medium, listed and read to the end.

What must hold for every mutant: the only exceptions are the coded ones
(MediumOpenError, MediumReadError: a problem code for the operator); every
listed path stays inside the medium (no '..', no absolute path); nothing
reads more than the limits allow. The scanner has its own fuzz test
(tests/scan/test_scan_fuzz.py); the codec header checks theirs.

``PDIMPORT_FUZZ_EXAMPLES`` scales the number of cases (the CI default gives
over 10,000 here); tests/fuzz/atheris_media.py runs the same targets under
atheris, coverage-guided, for longer runs.
"""

from __future__ import annotations

import os
import random
import struct
import zipfile
from pathlib import Path

import pytest
from fixtures_dicom import make_ct, make_dicomdir
from fixtures_media import make_iso

from pdimport.media import open_medium
from pdimport.media.udf import UdfMedium
from pdimport.model import MediumReadError
from pdimport.problems import PROBLEM_CODES, CodedError
from pdimport.scan.dicomdir import read_dicomdir
from pdimport.settings import defaults

EXAMPLES = int(os.environ.get("PDIMPORT_FUZZ_EXAMPLES", "10000"))
#: Share of the examples per target (the scanner's own fuzz test has its 10,000).
SHARE = {"iso": 0.35, "udf": 0.15, "zip": 0.3, "dicomdir": 0.2}
_EXTREMES = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 2048, 4096)


# ------------------------------------------------------------------ seeds
def _tree(root: Path) -> Path:
    for i in range(3):
        make_ct(root / "DICOM" / f"S{i}" / f"IM{i}", rows=8, cols=8, number=i + 1)
    (root / "README.TXT").write_bytes(b"fuzz seed\r\n")
    return root


@pytest.fixture(scope="module")
def seeds(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[bytes, list[tuple[int, int]]]]:
    """Each seed medium's bytes and the byte ranges where its structures are."""
    d = tmp_path_factory.mktemp("fuzzseeds")
    src = _tree(d / "src")
    iso = make_iso(src, d / "disc.iso").read_bytes()
    udf = bytearray(make_iso(src, d / "udf.iso", udf=True).read_bytes())
    for sector in range(16, 32):  # hide the ISO 9660 side: a UDF-only disc, read by libudfread
        if udf[sector * 2048 + 1 : sector * 2048 + 6] == b"CD001":
            udf[sector * 2048 + 1 : sector * 2048 + 6] = b"XX001"
    zpath = d / "pkg.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(src).as_posix())
    zdata = zpath.read_bytes()
    dicomdir = make_dicomdir(d / "dd", n=3).read_bytes()
    cd = zdata.rfind(b"PK\x01\x02")
    first_cd = zdata.find(b"PK\x01\x02")
    return {
        # sectors 16..(end of the directory records), where ISO 9660 keeps its structures
        "iso": (iso, [(16 * 2048, min(len(iso), 40 * 2048))]),
        # UDF: the anchor at 256 and the descriptors before the file data
        "udf": (bytes(udf), [(16 * 2048, min(len(udf), 300 * 2048))]),
        "zip": (zdata, [(0, 30 + 64), (first_cd, len(zdata)), (max(0, cd - 64), len(zdata))]),
        "dicomdir": (dicomdir, [(128, len(dicomdir))]),
    }


def mutate(data: bytes, regions: list[tuple[int, int]], rnd: random.Random) -> bytes:
    out = bytearray(data)
    lo, hi = rnd.choice(regions)
    hi = min(hi, len(out))
    if hi - lo < 8:
        return bytes(out)
    for _ in range(rnd.randint(1, 4)):
        pos = rnd.randrange(lo, hi - 4)
        kind = rnd.random()
        if kind < 0.4:
            out[pos] ^= 1 << rnd.randrange(8)
        elif kind < 0.7:
            fmt = rnd.choice(("<H", ">H", "<I", ">I"))
            value = rnd.choice(_EXTREMES) & (0xFFFF if fmt[1] == "H" else 0xFFFFFFFF)
            struct.pack_into(fmt, out, pos, value)
        elif kind < 0.9:
            src = rnd.randrange(lo, hi - 4)
            n = min(rnd.randint(1, 64), hi - pos, hi - src)
            out[pos : pos + n] = out[src : src + n]
        else:
            out[pos : pos + 8] = bytes(rnd.randrange(256) for _ in range(8))
    if rnd.random() < 0.05:
        del out[rnd.randrange(lo, len(out)) :]  # truncated
    return bytes(out)


# ---------------------------------------------------------------- targets
def read_medium(path: Path, settings) -> None:
    """Open, list and read a medium; only coded errors may come out."""
    try:
        medium = (
            open_medium(str(path), settings)
            if path.suffix != ".udf"
            else UdfMedium(str(path), settings)
        )
    except CodedError as exc:
        assert exc.code in PROBLEM_CODES
        return
    try:
        for p in medium.problems:
            assert p.code in PROBLEM_CODES
        for entry in medium.entries():
            parts = entry.path.split("/")
            assert not entry.path.startswith("/") and ".." not in parts, entry.path
            assert entry.size <= settings.get("limits.max_file_size")
            try:
                with medium.open(entry) as fp:
                    got = 0
                    while chunk := fp.read(1 << 20):
                        got += len(chunk)
                        assert got <= entry.size, (entry.path, got, entry.size)
            except MediumReadError as exc:
                assert exc.code in PROBLEM_CODES
    finally:
        medium.close()


@pytest.mark.parametrize("target", ["iso", "udf", "zip"])
def test_mutated_media_only_give_coded_errors(seeds, target, tmp_path: Path):
    media_settings = defaults()
    data, regions = seeds[target]
    rnd = random.Random(f"pdimport-{target}")
    path = tmp_path / f"medium.{target}"
    for _ in range(int(EXAMPLES * SHARE[target])):
        path.write_bytes(mutate(data, regions, rnd))
        read_medium(path, media_settings)


def test_mutated_dicomdirs_never_raise(seeds, tmp_path: Path):
    media_settings = defaults()
    data, regions = seeds["dicomdir"]
    rnd = random.Random("pdimport-dicomdir")
    path = tmp_path / "DICOMDIR"
    for _ in range(int(EXAMPLES * SHARE["dicomdir"])):
        path.write_bytes(mutate(data, regions, rnd))
        index = read_dicomdir(path, media_settings)
        for p in index.problems:
            assert p.code in PROBLEM_CODES
        for ref in index.files:
            assert ".." not in ref.path.split("/") and not ref.path.startswith("/"), ref.path
