"""DICOMweb intake side by side: what a remote study costs beside a disc.

* ``multipart``: the streaming multipart/related reader over a 256 MiB body
  in 64 KiB chunks (what httpx's ``iter_bytes`` hands over) vs copying the
  same chunks (the floor any reader pays);
* ``intake``: ``pdimport import dicomweb+http://…/studies/UID`` of a CT
  study stored in Orthanc+DICOMweb (Basic auth) into dcmtk ``storescp``, vs
  ``pdimport import FOLDER`` of the same files into the same receiver (the
  disc path), vs the bare WADO-RS retrieves of every instance by httpx on
  one keep-alive client, bytes thrown away (what the server and the
  network give).

Sizes: ``BENCH_WEB_FILES`` (default 200 CT images 512×512, about 105 MB),
``BENCH_WEB_ROUNDS`` (default 3).

Run: ``python -m pytest bench/bench_dicomweb.py --benchmark-only -q``
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from bench_e2e import _env, timed
from corpus import make_ct_series
from fixtures_peers import ORTHANC_USER

from pdimport.web.dicomweb import WADO_ACCEPT
from pdimport.web.multipart_reader import MultipartReader

pytestmark = pytest.mark.bench

FILES = int(os.environ.get("BENCH_WEB_FILES", "200"))
ROUNDS = int(os.environ.get("BENCH_WEB_ROUNDS", "3"))


@dataclass
class Row:
    scenario: str
    peer: str
    seconds: list[float] = field(default_factory=list)
    nbytes: int = 0
    #: peak RSS (MB) of a child process row, 0 for in-process rows
    rss: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


RESULTS: dict[tuple[str, str], Row] = {}
#: scenario -> the row every other row of it is compared with
REFERENCE = {"multipart": "copy-chunks", "intake": "pdimport-folder"}


def table() -> str:
    """The summary printed by bench/conftest.py."""
    lines = [
        "| scenario | peer | median s | MB/s | peak RSS MB | reference ÷ this (speed) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (scenario, peer), row in RESULTS.items():
        if not row.seconds:
            continue  # the test failed before a round ended
        ref = RESULTS.get((scenario, REFERENCE[scenario]))
        ratio = ref.median / row.median if ref is not None and ref.seconds else float("nan")
        rate = row.nbytes / row.median / 1e6
        rss = f"{row.rss:.0f}" if row.rss else ""
        lines.append(
            f"| {scenario} | {peer} | {row.median:.3f} | {rate:.0f} | {rss} | {ratio:.2f} |"
        )
    return "\n".join(lines)


def _measure(benchmark, scenario: str, peer: str, once, nbytes: int) -> None:
    row = RESULTS.setdefault((scenario, peer), Row(scenario, peer, nbytes=nbytes))

    def go() -> None:
        start = time.perf_counter()
        once()
        row.seconds.append(time.perf_counter() - start)

    once()  # warm-up
    benchmark.group = f"dicomweb {scenario}"
    benchmark.pedantic(go, rounds=ROUNDS, iterations=1)


# ---------------------------------------------------------------- multipart
BOUNDARY = b"bench-boundary-0123456789"
CHUNK = 64 << 10


def _chunks(total: int = 256 << 20, parts: int = 512) -> list[bytes]:
    size = total // parts
    part = b"\r\n--" + BOUNDARY + b"\r\nContent-Type: application/dicom\r\n\r\n" + b"\x5a" * size
    body = b"".join([part] * parts)[2:] + b"\r\n--" + BOUNDARY + b"--\r\n"
    return [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]


@pytest.mark.parametrize("peer", ["copy-chunks", "multipart-reader"])
def test_multipart(benchmark, peer):
    chunks = _chunks()
    nbytes = sum(map(len, chunks))

    def copy() -> None:
        n = 0
        for chunk in chunks:
            n += len(bytes(bytearray(chunk)))
        assert n == nbytes

    def parse() -> None:
        reader = MultipartReader(iter(chunks), BOUNDARY, 1 << 30)
        n = 0
        while reader.next_part() is not None:
            while data := reader.read(1 << 20):
                n += len(data)
        assert n == (256 << 20) // 512 * 512

    _measure(benchmark, "multipart", peer, copy if peer == "copy-chunks" else parse, nbytes)


# ---------------------------------------------------------------- intake
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-study")
    items = make_ct_series(root / "files", FILES)
    return root, items


@pytest.mark.parametrize("peer", ["pdimport-folder", "wado-retrieves", "pdimport-dicomweb"])
def test_intake(benchmark, tmp_path, orthanc_web, storescp, study, peer):
    root, items = study
    paths = [Path(i.path) for i in items]
    nbytes = sum(p.stat().st_size for p in paths)
    scp = storescp(nodelay=True, ignore=True)
    server = orthanc_web()
    for p in paths:
        server.upload(p.read_bytes())
    [study_uid] = server.get("/studies")
    uid = server.get(f"/studies/{study_uid}")["MainDicomTags"]["StudyInstanceUID"]
    secret = tmp_path / "pw"
    secret.write_text(ORTHANC_USER[1])
    cfg = tmp_path / "pdimport.toml"
    cfg.write_text(
        f'[web]\nauth = "basic"\nusername = "{ORTHANC_USER[0]}"\npassword_file = "{secret}"\n'
    )
    rounds = iter(range(1000))

    def pdimport(source: str) -> None:
        state = tmp_path / f"state-{next(rounds)}"  # a fresh journal: everything is sent
        cmd = [sys.executable, "-m", "pdimport", "import", source, "--dest", scp.url]
        run = timed([*cmd, "--config", str(cfg), "--state-dir", str(state)], env=_env(nodelay=True))
        row = RESULTS.get(("intake", peer))
        if row is not None:
            row.rss = max(row.rss, run.rss_mb)

    base = f"http://127.0.0.1:{server.http_port}/dicom-web"
    sops = [s["00080018"]["Value"][0] for s in server.get(f"/dicom-web/studies/{uid}/instances")]
    series = server.get(f"/dicom-web/studies/{uid}/series")[0]["0020000E"]["Value"][0]

    def retrieves() -> None:
        with httpx.Client(base_url=base, auth=ORTHANC_USER) as client:
            for sop in sops:
                path = f"studies/{uid}/series/{series}/instances/{sop}"
                with client.stream("GET", path, headers={"Accept": WADO_ACCEPT}) as rsp:
                    for _chunk in rsp.iter_bytes():
                        pass

    once = {
        "pdimport-folder": lambda: pdimport(str(root / "files")),
        "wado-retrieves": retrieves,
        "pdimport-dicomweb": lambda: pdimport(f"dicomweb+{base}/studies/{uid}"),
    }[peer]
    _measure(benchmark, "intake", peer, once, nbytes)
