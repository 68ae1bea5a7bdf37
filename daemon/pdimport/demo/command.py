"""``pdimport demo``: the appliance on embedded defaults, for a first look."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def demo_main(args: argparse.Namespace, cfg: Any) -> int:
    """Embedded defaults: a local storage SCP stands in for the PACS, the
    appliance watches a folder, and a generated sample PDI disc image is
    dropped into it. The appliance then runs on (Ctrl-C or SIGTERM to stop)
    unless ``--once``."""
    import shutil
    import threading

    from pdimport.appliance.daemon import Daemon
    from pdimport.appliance.watchfolder import RESTING_STATES
    from pdimport.demo.receiver import Receiver
    from pdimport.demo.sample import make_sample_disc

    demo = cfg.state_path / "demo"
    watch = demo / "watch"
    watch.mkdir(parents=True, exist_ok=True)
    iso = make_sample_disc(demo / "sample-pdi.iso")
    pacs_dir = demo / "pacs"
    receiver = Receiver(pacs_dir, aet="DEMOPACS")
    receiver.start()
    cfg = cfg.replace(
        dest=[f"dicom://DEMOPACS@127.0.0.1:{receiver.port}"], watch=str(watch), watch_settle=1.0
    )
    appliance = Daemon(cfg)
    result: dict[str, Any] = {}

    def feed() -> None:
        # Copy under a temporary name, then rename: the watch folder only
        # takes complete packages, as an operator's copy tool would deliver.
        name = f"sample-{int(time.time())}.iso"
        shutil.copy(iso, watch / f".{name}.part")
        (watch / f".{name}.part").rename(watch / name)
        # The package rests in the folder named for its job's state.
        results = [watch / state / f"{name}.json" for state in RESTING_STATES]
        while not appliance.stop.is_set():
            for f in results:
                if f.exists():
                    try:
                        result["report"] = json.loads(f.read_text(encoding="utf-8"))
                    except ValueError:
                        continue  # being written
                    _demo_summary(result["report"], iso, watch, pacs_dir, cfg)
                    if args.once:
                        appliance.request_stop()
                    return
            time.sleep(0.2)

    threading.Thread(target=feed, name="demo-feed", daemon=True).start()
    print(
        f"pdimport appliance running: watch folder {watch}, stand-in PACS "
        f"DEMOPACS@127.0.0.1:{receiver.port}" + ("" if args.once else "  (Ctrl-C stops it)"),
        flush=True,
    )
    try:
        rc = appliance.run()
    finally:
        receiver.stop()
    if args.once:
        rep = result.get("report")
        from pdimport.job import report as report_mod

        return report_mod.exit_code(rep["status"]) if rep else 2
    return rc


def _demo_summary(rep: dict[str, Any], iso: Path, watch: Path, pacs_dir: Path, cfg: Any) -> None:
    from pdimport.job import report as report_mod

    print(report_mod.summary(rep))
    stored = sorted(p for p in Path(pacs_dir).glob("*") if p.is_file())
    print(f"\nsample disc:   {iso} (dropped into {watch})")
    print(f"stand-in PACS: {pacs_dir} ({len(stored)} files received)")
    print(f"report:        {cfg.state_path / 'reports' / (str(rep.get('job')) + '.json')}")
    print(f"journal:       {cfg.state_path / 'journal.sqlite'}", flush=True)
