"""Delivery: parse destination URLs and send instances to them.

``deliver`` makes one attempt per call and reports one
:class:`~pdimport.model.SendOutcome` per item through ``on_outcome`` as soon
as it is known; retries and back-off belong to the caller (pipeline).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pdimport.model import SendItem, SendOutcome
from pdimport.send.dest import Destination, DicomDest, FileDest, WebDest, parse_dest
from pdimport.send.files import send_files

__all__ = ["Destination", "DicomDest", "FileDest", "WebDest", "deliver", "parse_dest"]


def deliver(
    dest: Destination,
    items: list[SendItem],
    settings: Any,
    on_outcome: Callable[[SendOutcome], None],
    workdir: Path,
) -> None:
    """Send `items` to `dest`, dispatching on the destination type.

    Parameters
    ----------
    dest : DicomDest, FileDest or WebDest
        From :func:`parse_dest`.
    items : list of SendItem
        Spooled Part 10 files to deliver.
    settings : pdimport.settings.Settings
        Network timeouts, calling AE title, ``web.*``.
    on_outcome : callable
        Receives each item's outcome the moment it is known (journal it).
    workdir : pathlib.Path
        Scratch folder for converted copies.
    """
    if isinstance(dest, DicomDest):
        # the C-STORE path (our association, the send workers) only when a
        # DICOM destination is used, not for every CLI command that imports us
        from pdimport.send.scu import send_dicom

        send_dicom(dest, items, settings, on_outcome, workdir)
    elif isinstance(dest, FileDest):
        send_files(dest, items, settings, on_outcome, workdir)
    elif isinstance(dest, WebDest):
        # httpx and the decode pool: as lazily as for dicom://
        from pdimport.web.stow import send_stow

        send_stow(dest, items, settings, on_outcome, workdir)
    else:
        raise TypeError(f"unknown destination {dest!r}")
