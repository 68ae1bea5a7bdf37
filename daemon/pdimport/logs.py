"""Logging, configured once, at the entry point (:func:`pdimport.cli.main`).

Every module logs through ``logging.getLogger(__name__)`` and configures
nothing. Here the levels are set so that, under the shipped systemd unit,
pdimport's own INFO lines (ready, each job's start and outcome, destination
down and up) reach journald, while pynetdicom's per-image lines only appear at
DEBUG. Under journald (``$JOURNAL_STREAM`` set) lines carry no timestamp,
journald adds its own; elsewhere the daemon's lines are timestamped.
"""

from __future__ import annotations

import logging
import os
import sys

#: Commands that run for long and report as they go: INFO by default.
CHATTY_COMMANDS = frozenset({"daemon", "demo"})
#: Libraries whose INFO lines are per image or per PDU.
QUIET_LIBRARIES = ("pynetdicom",)

_HANDLER_MARK = "_pdimport_handler"


def level_for(command: str, verbose: int = 0) -> int:
    """pdimport's log level: INFO for the appliance, WARNING otherwise, and
    one step lower per ``-v``."""
    base = logging.INFO if command in CHATTY_COMMANDS else logging.WARNING
    return max(logging.DEBUG, base - 10 * verbose)


def configure(command: str, verbose: int = 0) -> int:
    """Install one stderr handler on the root logger and set the levels.

    Idempotent: calling it again (tests call :func:`pdimport.cli.main` many
    times in one process) adjusts the levels and never adds a second handler.
    Returns pdimport's level.
    """
    level = level_for(command, verbose)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, _HANDLER_MARK, False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        setattr(handler, _HANDLER_MARK, True)
        root.addHandler(handler)
    timestamped = command in CHATTY_COMMANDS and not os.environ.get("JOURNAL_STREAM")
    fmt = "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter("%(asctime)s " + fmt if timestamped else fmt))
    root.setLevel(level)
    logging.getLogger("pdimport").setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level <= logging.DEBUG else logging.WARNING
        )
    return level
