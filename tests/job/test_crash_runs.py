"""Kill -9 at random moments (issue 17): a real `pdimport import` into
dcmtk storescp with ``+uf`` (every reception its own file, so anything sent
twice shows) is killed at a moment drawn uniformly over a whole run, start-up,
read, scan and delivery alike; the same command is then run to the end.

For every run: nothing is missing at the receiver, `pdimport jobs --verify`
proves every file read ended delivered, and what arrived twice is at most
what may be in flight plus one commit group of acknowledgements
(:data:`DEPTH` per association + :data:`DELIVERY_GROUP_ROWS`).
``PDIMPORT_CRASH_RUNS`` sets the number of runs (200 by default).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures_dicom import make_ct_series
from pydicom import dcmread

from pdimport.send.pool import DEPTH
from pdimport.store.groupcommit import DELIVERY_GROUP_ROWS

RUNS = int(os.environ.get("PDIMPORT_CRASH_RUNS", "200"))
FILES = 100  # one association (fewer than 2 x 64 instances): the bound is below the medium
#: CT images of 512 x 512 (52 MB in all): delivery must be a fair share of a
#: run for random kills to land in it (of 64 x 64 images, 40 ms of 1.9 s).
ROWS = 512
BOUND = 1 * DEPTH + DELIVERY_GROUP_ROWS


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


@pytest.mark.timeout(3600)
def test_kill_9_at_random_moments_loses_nothing_and_resends_within_the_bound(
    tmp_path: Path, storescp
):
    disc = tmp_path / "disc"
    want = sorted(
        uid_of(p) for p in make_ct_series(disc, FILES, patient_id="CRASH", rows=ROWS, cols=ROWS)
    )
    rnd = random.Random(17)

    def command(state: Path, scp) -> list[str]:
        return [sys.executable, "-m", "pdimport", "import", str(disc), "--dest", scp.url,
                "--state-dir", str(state)]  # fmt: skip

    started = time.monotonic()  # one whole run, to draw the moments from
    scp = storescp(unique=True)
    subprocess.run(command(tmp_path / "calibrate", scp), check=True, capture_output=True)
    whole = time.monotonic() - started
    worst = 0
    killed_with_files = 0
    for run in range(RUNS):
        scp = storescp(unique=True)
        state = tmp_path / f"state-{run}"
        proc = subprocess.Popen(
            command(state, scp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rnd.uniform(0, whole))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = len(scp.files())
        killed_with_files += 0 < before < FILES
        done = subprocess.run(
            [*command(state, scp), "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, (run, done.stderr[-2000:])
        report = json.loads(done.stdout)
        got = [uid_of(f) for f in scp.files()]
        assert sorted(set(got)) == want, f"run {run}: missing {set(want) - set(got)}"
        twice = len(got) - FILES
        assert twice <= BOUND, f"run {run}: {twice} instances arrived twice (bound {BOUND})"
        worst = max(worst, twice)
        verified = subprocess.run(
            [sys.executable, "-m", "pdimport", "jobs", "--verify", report["job"],
             "--state-dir", str(state)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert verified.returncode == 0, (run, verified.stdout, verified.stderr)
        scp.proc.terminate()
        shutil.rmtree(state)  # 200 spools and receptions of 52 MB would not fit
        shutil.rmtree(scp.out_dir, ignore_errors=True)
    print(f"{RUNS} kill -9 runs: {killed_with_files} killed mid-delivery, "
          f"at most {worst} instances received twice (bound {BOUND})")  # fmt: skip
    assert killed_with_files >= RUNS // 20, "the kills never landed in a delivery"
