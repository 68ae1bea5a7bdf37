"""STOW-RS throughput into Orthanc+DICOMweb, beside C-STORE into the same
Orthanc: dcmtk storescu (4 processes) is the named peer, then pdimport by
C-STORE (default associations), then pdimport by STOW-RS with 1 and with
``web.connections`` (4) requests in parallel. Orthanc is emptied before
every send (an instance it holds already is cheaper to store again).

Run: ``python -m pytest bench/bench_stow.py --benchmark-only``
(``BENCH_IMAGES=N``; at most 500 images of 528 kB here).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_send import IMAGES, compare, corpus, pdimport_send, storescu  # noqa: F401 - corpus fixture
from fixtures_peers import ORTHANC_USER

from pdimport import settings as settings_mod
from pdimport.model import SendItem

pytestmark = pytest.mark.bench


@pytest.fixture
def web_cfg(tmp_path: Path, cfg: settings_mod.Settings) -> settings_mod.Settings:
    password = tmp_path / "password"
    password.write_text(ORTHANC_USER[1])
    return cfg.replace(
        web__auth="basic", web__username=ORTHANC_USER[0], web__password_file=str(password)
    )


def test_stow_orthanc(
    benchmark,
    orthanc_web,
    corpus: list[SendItem],  # noqa: F811 - the fixture imported above
    web_cfg,
    tmp_path,
) -> None:
    peer = orthanc_web()
    items = corpus[: min(IMAGES, 500)]
    target = (peer.aet, "127.0.0.1", peer.port)

    def reset() -> None:
        for patient in peer.get("/patients"):
            peer.request("DELETE", f"/patients/{patient}")

    pdimport_send(peer.web_url, items[:64], web_cfg, tmp_path)  # warm
    reset()
    compare(
        benchmark,
        "Orthanc+DICOMweb (Debian)",
        items,
        ("storescu x4", lambda: storescu(target, items, 4)),
        {
            "pdimport C-STORE": lambda: pdimport_send(peer.url, items, web_cfg, tmp_path),
            "pdimport STOW-RS x1": lambda: pdimport_send(
                peer.web_url + "?connections=1", items, web_cfg, tmp_path
            ),
            "pdimport STOW-RS x4 (default)": lambda: pdimport_send(
                peer.web_url, items, web_cfg, tmp_path
            ),
        },
        reset=reset,
    )
