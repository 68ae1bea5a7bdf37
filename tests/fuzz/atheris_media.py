"""Coverage-guided fuzzing of the medium readers and the DICOMDIR walker
with atheris, for runs longer than the test suite's (tests/fuzz/test_fuzz_media.py
runs the same targets on seeded mutations in CI).

    pip install atheris
    mkdir -p /tmp/corpus-zip && python tests/fuzz/atheris_media.py --seeds zip /tmp/corpus-zip
    python tests/fuzz/atheris_media.py zip /tmp/corpus-zip -max_total_time=3600

The first argument is the target (iso, udf, zip or dicomdir); the rest goes
to libFuzzer. ``--seeds TARGET DIR`` writes the real seed medium of that
target into DIR to start the corpus from. A finding is any exception other
than the coded ones (MediumOpenError, MediumReadError) or a path escaping
the medium: libFuzzer saves the input as crash-*.
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

TARGETS = ("iso", "udf", "zip", "dicomdir")


def _seeds() -> dict:
    import test_fuzz_media as t

    class _Factory:
        def mktemp(self, name: str) -> Path:
            return Path(tempfile.mkdtemp(prefix=f"{name}-"))

    return t.seeds.__wrapped__(_Factory())


def main() -> None:
    if sys.argv[1:2] == ["--seeds"]:
        target, out = sys.argv[2], Path(sys.argv[3])
        data, regions = _seeds()[target]
        out.mkdir(parents=True, exist_ok=True)
        (out / f"seed-{target}").write_bytes(data)
        import test_fuzz_media as t

        rnd = random.Random(0)
        for i in range(20):
            (out / f"seed-{target}-{i}").write_bytes(t.mutate(data, regions, rnd))
        return
    import atheris

    target = sys.argv.pop(1)
    if target not in TARGETS:
        raise SystemExit(f"target must be one of {TARGETS}")
    with atheris.instrument_imports():
        import test_fuzz_media as t

        from pdimport.scan.dicomdir import read_dicomdir
        from pdimport.settings import defaults
    settings = defaults()
    work = Path(tempfile.mkdtemp(prefix="atheris-"))
    path = work / ("DICOMDIR" if target == "dicomdir" else f"medium.{target}")

    def one_input(data: bytes) -> None:
        path.write_bytes(data)
        if target == "dicomdir":
            read_dicomdir(path, settings)
        else:
            t.read_medium(path, settings)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
