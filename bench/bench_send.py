"""C-STORE throughput: pdimport against dcmtk's storescu, side by side.

Same run, same receiver, same corpus; rounds interleaved (reference sender,
then pdimport, per round: the reference runs in pytest-benchmark's untimed
``setup``), medians compared. Scenarios (issue 7, performance.md §3):

1. ``nagle``: dcmtk storescp as Debian ships it (Nagle on). Target ≥ 4×.
2. ``nodelay``: the same storescp with ``TCP_NODELAY=1`` in its environment.
   Target ≥ 1.0× storescu with one association (pdimport x1 and default).
3. ``orthanc``: Debian's Orthanc (Nagle on, 16 KiB PDUs), emptied before
   every send. Target ≥ four storescu processes.

storescp runs with ``--fork`` (one child per association, so parallel
associations are served in parallel, as a PACS would) and ``--ignore``
(receive and answer, store nothing: the senders are measured, not the disk).

Run: ``python -m pytest bench/bench_send.py --benchmark-only``
(``BENCH_IMAGES=N`` changes the corpus size; default 1000).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from corpus import make_ct_series
from report import ROWS, Row

from pdimport import settings as settings_mod
from pdimport.model import SendItem, SendOutcome
from pdimport.send import deliver, parse_dest
from pdimport.send.scu import DEFAULT_ASSOCIATIONS

pytestmark = pytest.mark.bench

STORESCU = "/usr/bin/storescu"
IMAGES = int(os.environ.get("BENCH_IMAGES", "1000"))
#: Nagle-bound senders run at ~20 images/s: a smaller slice keeps rounds short.
NAGLE_IMAGES = min(IMAGES, 200)
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[SendItem]:
    return make_ct_series(tmp_path_factory.mktemp("ct"), IMAGES)


@pytest.fixture
def cfg(tmp_path: Path) -> settings_mod.Settings:
    return settings_mod.defaults().replace(state_dir=str(tmp_path / "state"))


# ----------------------------------------------------------------- senders
def storescu(url_host_port: tuple[str, str, int], items: list[SendItem], processes: int) -> None:
    """dcmtk storescu, the file list split over `processes` processes."""
    aet, host, port = url_host_port
    procs = [
        subprocess.Popen(
            [STORESCU, "-aec", aet, host, str(port)] + [str(i.path) for i in items[n::processes]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for n in range(processes)
    ]
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, err.decode(errors="replace")


def pdimport_send(
    url: str, items: list[SendItem], cfg: settings_mod.Settings, workdir: Path
) -> None:
    outcomes: list[SendOutcome] = []
    deliver(parse_dest(url), items, cfg, outcomes.append, workdir)
    assert {o.state for o in outcomes} == {"sent"} and len(outcomes) == len(items)


def compare(
    benchmark,
    scenario: str,
    items: list[SendItem],
    reference: tuple[str, object],
    senders: dict[str, object],
    reset=lambda: None,
) -> None:
    """Interleave reference and pdimport rounds; record rows; time the last sender."""
    megabytes = sum(i.size for i in items) / 1e6
    rows = {name: Row(scenario, name, len(items), megabytes) for name in [reference[0], *senders]}
    ROWS.extend(rows.values())
    *others, (timed_name, timed) = senders.items()

    def timed_call(name, fn):
        reset()
        start = time.perf_counter()
        fn()
        rows[name].seconds.append(time.perf_counter() - start)

    def setup():
        timed_call(*reference)
        for name, fn in others:
            timed_call(name, fn)
        reset()

    def run():
        start = time.perf_counter()
        timed()
        rows[timed_name].seconds.append(time.perf_counter() - start)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    ref = rows[reference[0]].rate
    benchmark.extra_info.update(
        {
            "images": len(items),
            **{f"{name} images/s": round(row.rate, 1) for name, row in rows.items()},
            **{f"{name} ratio": round(row.rate / ref, 2) for name, row in rows.items()},
        }
    )


def _fixed_counts(
    url: str, items: list[SendItem], cfg: settings_mod.Settings, workdir: Path
) -> dict[str, object]:
    """pdimport with 1 and 4 associations, to show where the default sits."""
    return {
        f"pdimport x{n}": (
            lambda n=n: pdimport_send(f"{url}?associations={n}", items, cfg, workdir)
        )
        for n in (1, 4)
        if n != DEFAULT_ASSOCIATIONS
    }


# ---------------------------------------------------------------- scenarios
@pytest.mark.parametrize("scenario, nodelay", [("nagle", False), ("nodelay", True)])
def test_storescp(benchmark, storescp, corpus, cfg, tmp_path, scenario, nodelay) -> None:
    scp = storescp(nodelay=nodelay, ignore=True, fork=True)
    items = corpus[:NAGLE_IMAGES] if scenario == "nagle" else corpus
    target = (scp.aet, "127.0.0.1", scp.port)
    pdimport_send(scp.url, items[:64], cfg, tmp_path)  # warm: forkserver, page cache
    senders = {
        **_fixed_counts(scp.url, items, cfg, tmp_path),
        f"pdimport x{DEFAULT_ASSOCIATIONS} (default)": lambda: pdimport_send(
            scp.url, items, cfg, tmp_path
        ),
    }
    compare(
        benchmark,
        f"storescp {'TCP_NODELAY=1' if nodelay else 'Debian (Nagle)'}",
        items,
        ("storescu x1", lambda: storescu(target, items, 1)),
        senders,
    )


def test_orthanc(benchmark, orthanc, corpus, cfg, tmp_path) -> None:
    items = corpus[: min(IMAGES, 500)]
    target = (orthanc.aet, "127.0.0.1", orthanc.port)

    def reset() -> None:
        # An instance Orthanc already holds is not stored again (cheaper):
        # every send starts from an empty Orthanc.
        for patient in orthanc.get("/patients"):
            req = urllib.request.Request(
                f"http://127.0.0.1:{orthanc.http_port}/patients/{patient}", method="DELETE"
            )
            with urllib.request.urlopen(req, timeout=60) as rsp:
                json.load(rsp)

    pdimport_send(orthanc.url, items[:64], cfg, tmp_path)
    compare(
        benchmark,
        "Orthanc (Debian)",
        items,
        ("storescu x4", lambda: storescu(target, items, 4)),
        {
            **_fixed_counts(orthanc.url, items, cfg, tmp_path),
            f"pdimport x{DEFAULT_ASSOCIATIONS} (default)": lambda: pdimport_send(
                orthanc.url, items, cfg, tmp_path
            ),
        },
        reset=reset,
    )
