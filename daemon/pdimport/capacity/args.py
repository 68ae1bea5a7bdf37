"""The ``pdimport bench`` command line, apart from the bench itself so that
building the parser imports nothing heavy (the CLI's start-up time).

``--dest`` is the ``dest`` setting (its flag comes from the settings table):
the bench delivers to the first destination instead of its own receiver."""

from __future__ import annotations

import argparse

#: The drive profiles of :mod:`pdimport.capacity.drivemodel`, by name.
PROFILE_NAMES = ("bd", "cd", "dvd", "usb")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--drives",
        default="1",
        metavar="N|A-B|N,M",
        help="drive count, or counts measured in turn (1-8, or 1,4)",
    )
    p.add_argument("--profile", choices=PROFILE_NAMES, default="cd", help="drive type")
    p.add_argument(
        "--mix", metavar="FILE", help="TOML mix of disc kinds (default: the shipped mix)"
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--minutes", type=float, metavar="M", help="feed discs for M minutes per run (default 2)"
    )
    group.add_argument("--discs", type=int, metavar="K", help="feed K discs per run")
    p.add_argument(
        "--real", action="store_true", help="measure this PC's drives and use their rates"
    )
    p.add_argument("--out", metavar="DIR", help="report folder (default ./pdimport-bench-DATE/)")
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="run the drive model this many times faster than real time (tests; "
        "the figures are then not a capacity)",
    )
    p.add_argument(
        "--cache", metavar="DIR", help="where made discs are kept (default ~/.cache/pdimport/bench)"
    )
    p.add_argument(
        "--receiver",
        choices=("auto", "storescp", "embedded"),
        default="auto",
        help="the stand-in PACS without --dest (auto: storescp when installed)",
    )
