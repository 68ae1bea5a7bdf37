"""The kernels compiled ahead of time: found only for this very code, loaded
only from a folder nobody else may write, chosen by PDIMPORT_SCAN_KERNELS,
and a scan with them runs without numba (the scanner's values are held to
pydicom's by test_scan_numba.py, which runs with both builds)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_dicom import make_ct_series
from kernels import aot_kernels

from pdimport.scan import aot, cachedir

pytest.importorskip("numba")


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of this code's build under a NUMBA_CACHE_DIR of the test."""
    source = Path(aot_kernels().__file__ or "")
    cache = tmp_path / "cache"
    folder = cache / "pdimport-aot" / aot.key()
    folder.mkdir(parents=True)
    shutil.copy2(source, folder / source.name)
    for p in (cache, cache / "pdimport-aot", folder):
        p.chmod(0o755)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(cache))
    return folder / source.name


def test_the_build_of_this_code_is_found(built: Path):
    assert aot.find() == built
    assert cachedir.roots()[0] == built.parent.parent


def test_a_build_of_other_code_is_not_used(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    other = built.parent.parent / ("0" * 20)
    shutil.copytree(built.parent, other)
    assert aot.find("0" * 20) == other / built.name
    built.unlink()
    monkeypatch.setattr(cachedir, "_HERE", tmp_path)  # no package cache to answer either
    assert aot.find() is None


def test_the_key_follows_the_kernel_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    copy = tmp_path / "scan"
    copy.mkdir()
    for src in aot.sources():
        shutil.copy2(src, copy / src.name)
    before = aot.key()
    monkeypatch.setattr(aot, "_HERE", copy)
    assert aot.key() == before
    walk = copy / "_nbwalk.py"
    walk.write_text(walk.read_text() + "\n# changed\n")
    assert aot.key() != before


@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_build_others_may_write_is_refused(built: Path, where: str):
    target = built if where == "file" else built.parent
    target.chmod(target.stat().st_mode | 0o022)
    assert aot.find() != built


def test_the_choice_is_read_from_the_environment(
    built: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv(aot.ENV, "jit")
    assert aot.load() is None
    monkeypatch.setenv(aot.ENV, "aot")
    assert aot.load() is not None
    monkeypatch.setenv(aot.ENV, "sometimes")
    with pytest.raises(ValueError, match="auto, aot or jit"):
        aot.load()
    monkeypatch.setenv(aot.ENV, "aot")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(cachedir, "_HERE", tmp_path)  # no package cache either
    with pytest.raises(aot.AotUnavailable):
        aot.load()


def _scan_modules(folder: Path, state: Path, env: dict[str, str]) -> dict[str, object]:
    """Run ``pdimport scan`` in a fresh interpreter; its report and which of
    numba and pydicom it imported."""
    code = (
        "import sys, io, contextlib, json\n"
        "from pdimport.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        main(['scan', {str(folder)!r}, '--json', '--state-dir', {str(state)!r}])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps({'report': json.loads(out.getvalue()),\n"
        "                  'numba': 'numba' in sys.modules,\n"
        "                  'pydicom': 'pydicom' in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout)


def test_a_scan_with_the_build_imports_neither_numba_nor_pydicom(built: Path, tmp_path: Path):
    folder = tmp_path / "disc"
    make_ct_series(folder, 12)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(built.parent.parent.parent), aot.ENV: "aot"}
    _scan_modules(folder, tmp_path / "s0", env)  # makes the dictionary tables if need be
    with_build = _scan_modules(folder, tmp_path / "s1", env)
    assert with_build["pydicom"] is False
    # numba's own cache where the other tests keep it (a new one compiles for a minute)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    with_jit = _scan_modules(folder, tmp_path / "s2", {**env, aot.ENV: "jit"})
    assert with_build["numba"] is False
    assert with_jit["numba"] is True
    a, b = with_build["report"], with_jit["report"]
    assert isinstance(a, dict) and isinstance(b, dict)
    assert a["counts"] == b["counts"] and a["counts"]["dicom"] == 12
    assert a["patients"] == b["patients"]
    assert a["instances"] == b["instances"]


def test_tables_are_made_once_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import numpy as np

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    source = tmp_path / "input.txt"
    source.write_text("one")
    made: list[int] = []

    def make() -> tuple[np.ndarray, ...]:
        made.append(1)
        return np.arange(5, dtype=np.int64), np.ones((2, 3), dtype=np.uint8)

    first = cachedir.cached_arrays("t", [source], make)
    again = cachedir.cached_arrays("t", [source], make)
    assert len(made) == 1
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(first, again))
    [kept] = (tmp_path / "pdimport-aot").glob("t-*.npz")
    kept.chmod(0o666)  # writable by others: made again, not loaded
    cachedir.cached_arrays("t", [source], make)
    assert len(made) == 2
    source.write_text("two")  # another input: another key
    cachedir.cached_arrays("t", [source], make)
    assert len(made) == 3


def test_the_dictionary_tables_equal_pydicoms():
    from pdimport.scan import _nbcodes

    kept = _nbcodes.dictionary_tables()
    made = _nbcodes._dictionary_tables()
    assert len(kept) == len(made) == 5
    for a, b in zip(kept, made):
        assert a.dtype == b.dtype and (a == b).all()


def test_keyword_tags_are_pydicoms():
    from pydicom.datadict import tag_for_keyword

    from pdimport.scan.numba_columns import KEYWORD_TAGS

    assert {kw: tag_for_keyword(kw) for kw in KEYWORD_TAGS} == KEYWORD_TAGS
