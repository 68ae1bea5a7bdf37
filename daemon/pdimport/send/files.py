"""File destination: a folder of Part 10 files (``file:///path``).

Each spooled file is copied as it is (the original bytes, like C-STORE with a
streamed dataset) to ``<dir>/<name>.dcm``. ``name`` is the SOP Instance UID
when it is a syntactically valid UID (PS3.5 9.1: digits and dots only, so it
cannot traverse or hide), otherwise a SHA-256 of the journal key; never a name
from the medium. Each copy is written to a temporary file in the same folder,
fsynced and renamed, so a crash leaves either no file or a complete one.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pdimport.model import SendItem, SendOutcome, iter_chunks
from pdimport.send.dest import FileDest
from pdimport.store.fsutil import atomic_write

LOGGER = logging.getLogger(__name__)

#: PS3.5 9.1: components of digits without leading zeros, 64 characters at most.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(value: str) -> bool:
    """True if `value` is a syntactically valid UID (PS3.5 9.1)."""
    return 0 < len(value) <= 64 and bool(_UID.match(value))


def safe_name(sop_instance_uid: str, fallback: str) -> str:
    """A file name (without suffix) from a UID, or a hash of `fallback`."""
    if is_valid_uid(sop_instance_uid):
        return sop_instance_uid
    return hashlib.sha256(fallback.encode()).hexdigest()


def send_files(
    dest: FileDest,
    items: list[SendItem],
    settings: Any,
    on_outcome: Callable[[SendOutcome], None],
    workdir: Path,
) -> None:
    """Copy each item to `dest`; one outcome per item, reported at once.

    An existing file with the same name and the same bytes counts as sent
    (an idempotent resend after a crash); with other bytes it is a
    ``uid_conflict`` and the existing file is kept.
    """
    try:
        dest.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        for item in items:
            on_outcome(
                SendOutcome(
                    item.key, "failed", None, "write_failed", f"{dest.key}: {exc.strerror or exc}"
                )
            )
        return
    for item in items:
        on_outcome(_copy_one(dest, item))


def _copy_one(dest: FileDest, item: SendItem) -> SendOutcome:
    target = dest.path / f"{safe_name(item.sop_instance_uid, item.key)}.dcm"
    try:
        if target.exists():
            if _sha256(target) == _sha256(item.path):
                return SendOutcome(item.key, "sent", None, "", "", item.transfer_syntax)
            return SendOutcome(
                item.key,
                "failed",
                None,
                "uid_conflict",
                f"{target.name} already exists with other content",
            )
        _copy_atomic(item.path, target)
    except OSError as exc:
        LOGGER.error("%s: writing %s failed: %s", dest.key, target.name, exc)
        return SendOutcome(
            item.key, "failed", None, "write_failed", f"{target.name}: {exc.strerror or exc}"
        )
    return SendOutcome(item.key, "sent", None, "", "", item.transfer_syntax)


def _copy_atomic(src: Path, target: Path) -> None:
    with atomic_write(target, mode=0o644) as out, open(src, "rb") as fp:
        for chunk in iter_chunks(fp):
            out.write(chunk)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for chunk in iter_chunks(fp):
            digest.update(chunk)
    return digest.hexdigest()
