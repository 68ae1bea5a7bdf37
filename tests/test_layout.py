"""The package's shape holds: no import cycles, no module over 600 lines.

Both are checked from the source (``ast``), so a cycle hidden in an import
inside a function counts as much as one at the top of a module. Imports
under ``if TYPE_CHECKING:`` are for the type checker only and never run.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "daemon" / "pdimport"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:``."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                skip.update(id(n) for n in ast.walk(sub))
    return skip


def import_graph() -> dict[str, set[str]]:
    """``module -> pdimport modules it imports`` (anywhere in its code)."""
    mods = _modules()
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # ``from a import b`` imports a.b when b is a module, else a
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base
                    for alias in node.names
                ]
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_over_600_lines(name: str) -> None:
    lines = _modules()[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name}: {lines} lines"


def test_a_plain_import_loads_no_network_client_or_database_driver() -> None:
    """``pdimport import FOLDER`` on the embedded SQLite journal starts
    without httpx, psycopg or cryptography (60 ms and more of start-up;
    issue 13's 1.0 s budget): only the channels that talk HTTP, PostgreSQL
    or Cloud PDI import them. Nor pydicom and pynetdicom (0.3-0.4 s): the
    fast scanner, our own association and the spool need neither; they load
    for what does (a coercion, a conversion, a file the fast path gives back)."""
    modules = (
        "pdimport.cli",
        "pdimport.job.importer",
        "pdimport.job.deliver",
        "pdimport.job.overlap",
        "pdimport.media",
        "pdimport.send.scu",
        "pdimport.send.pool",
        "pdimport.scan.numba_scanner",
    )
    heavy = ("httpx", "psycopg", "cryptography", "pydicom", "pynetdicom")
    code = (
        f"import sys, {', '.join(modules)};print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_numba_and_numpy_start_no_blas_threads() -> None:
    """The scanner's numpy starts no OpenBLAS threads in a pdimport process
    (pdimport/__init__.py): each would take CPU from the reader, the sender
    and the PACS on a two-core appliance, and nothing here uses BLAS."""
    code = "import os, pdimport.scan.numba_scanner; print(len(os.listdir('/proc/self/task')))"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.strip() == "1", f"{out.strip()} threads after importing the scanner"
