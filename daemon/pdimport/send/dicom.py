"""C-STORE delivery: planning and outcomes (PS3.4 Annex B, PS3.7 9.1.1, PS3.8).

:func:`pdimport.send.scu.send_dicom` makes one delivery attempt for a list
of instances; this module holds what it plans and decides without a
socket: the presentation contexts of each association
(:func:`plan_batches`), the outcome of a response status
(:func:`outcome_from_status`), and the settings snapshot workers get. Every
instance gets exactly one :class:`~pdimport.model.SendOutcome`, reported
through ``on_outcome`` the moment it is known, so that the caller can
journal it before the next C-STORE goes out. Retrying (``retry`` and
``unknown`` states) is the caller's job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pdimport.model import SendItem, SendOutcome

LOGGER = logging.getLogger(__name__)

#: PS3.8 9.3.2.2: presentation context IDs are odd integers 1..255.
MAX_CONTEXTS = 128
#: Fallback transfer syntaxes offered for every SOP class, in preference
#: order: Explicit VR Little Endian, Implicit VR Little Endian.
FALLBACK_TS = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")

OutcomeCallback = Callable[[SendOutcome], None]

#: Settings the sender reads; snapshotted for worker processes.
NET_SETTINGS = (
    "calling_aet",
    "network.connection_timeout",
    "network.acse_timeout",
    "network.dimse_timeout",
    "network.network_timeout",
    "network.max_pdu",
    "decode.memory_budget_mb",
)


@dataclass(frozen=True)
class NetSettings:
    """A picklable snapshot of the settings a sender needs.

    :class:`pdimport.settings.Settings` is deliberately frozen and not
    picklable; worker processes get this instead (same ``get`` interface).
    """

    values: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, settings: Any) -> NetSettings:
        return cls(tuple((name, settings.get(name)) for name in NET_SETTINGS))

    def get(self, name: str) -> Any:
        return dict(self.values)[name]

    @property
    def calling_aet(self) -> str:
        return str(self.get("calling_aet"))


# ======================================================================
# planning: presentation contexts and associations
# ======================================================================
@dataclass(frozen=True)
class Context:
    """A presentation context to propose: one abstract syntax, its transfer
    syntaxes (the fields of pynetdicom's ``PresentationContext`` our own
    association reads; pynetdicom itself is not loaded to send)."""

    abstract_syntax: str
    transfer_syntax: tuple[str, ...]


def build_context(abstract_syntax: str, transfer_syntax: str | Iterable[str]) -> Context:
    """A :class:`Context` for one SOP class and one or several syntaxes."""
    if isinstance(transfer_syntax, str):
        transfer_syntax = (transfer_syntax,)
    return Context(str(abstract_syntax), tuple(str(t) for t in transfer_syntax))


def uid_name(uid: str) -> str:
    """The name of a UID for a message (``JPEG 2000``), else the UID itself."""
    from pydicom.uid import UID  # its dictionary only when a message names one

    return str(UID(uid).name)


@dataclass
class Batch:
    """The items sent on one association and the contexts it proposes."""

    contexts: list[Context]
    items: list[SendItem]


def _syntaxes(items: Iterable[SendItem]) -> dict[str, list[str]]:
    """SOP class -> transfer syntaxes to propose, in first-seen order.

    The syntaxes actually present come first (exact matches, so the original
    bytes can be streamed), then the uncompressed fallbacks that a refused
    syntax can be converted to.
    """
    by_class: dict[str, list[str]] = {}
    for item in items:
        wanted = by_class.setdefault(item.sop_class_uid, [])
        if item.transfer_syntax not in wanted:
            wanted.append(item.transfer_syntax)
    for wanted in by_class.values():
        wanted.extend(ts for ts in FALLBACK_TS if ts not in wanted)
    return by_class


def plan_batches(items: list[SendItem]) -> list[Batch]:
    """Split `items` into associations of at most :data:`MAX_CONTEXTS` contexts.

    One context per (SOP class, transfer syntax) pair: a context holding
    several syntaxes gets only one of them accepted (PS3.8 9.3.3.2), which
    would hide whether the object's own syntax is acceptable. SOP classes are
    never split across associations; items keep their order within a batch.
    """
    by_class = _syntaxes(items)
    groups: list[list[str]] = []
    count = 0
    for sop_class, syntaxes in by_class.items():
        if not groups or count + len(syntaxes) > MAX_CONTEXTS:
            groups.append([])
            count = 0
        groups[-1].append(sop_class)
        count += len(syntaxes)
    batches = []
    for classes in groups:
        members = set(classes)
        contexts = [build_context(c, ts) for c in classes for ts in by_class[c]]
        batches.append(Batch(contexts, [i for i in items if i.sop_class_uid in members]))
    return batches


# ======================================================================
# status -> outcome (PS3.4 B.2.3, PS3.7 C)
# ======================================================================
def classify_status(status: int) -> tuple[str, str]:
    """Map a C-STORE response status to (state, problem code).

    PS3.4 Table B.2-1 and PS3.7 Annex C; actions from reliability.md §3.1.
    """
    if status == 0x0000:
        return "sent", ""
    # 0001 and Bxxx are C-STORE warnings; 0107/0116 are PS3.7 C.4 general
    # warnings ("attribute list error", "value out of range"): stored anyway.
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return "sent", "store_warning"
    # Out of resources, duplicate invocation, resource limitation: transient.
    if 0xA700 <= status <= 0xA7FF or status in (0x0210, 0x0213):
        return "retry", "store_failed"
    return "failed", "store_failed"


def outcome_from_status(
    item: SendItem, status: int | None, comment: str, ts: str, converted: Path | None
) -> SendOutcome:
    """The outcome of one C-STORE from its response's Status and Error Comment.

    No status (no response within ``dimse_timeout``, abort, invalid
    response) is ``unknown``: the SCP may well have stored the object
    (reliability.md §0.6), so it is neither sent nor failed.
    """
    if status is None:
        return SendOutcome(
            item.key,
            "unknown",
            None,
            "outcome_unknown",
            "no C-STORE response (DIMSE timeout or association lost)",
            ts,
            converted,
        )
    state, code = classify_status(status)
    detail = "" if status == 0 else f"0x{status:04X}"
    if detail and comment:
        detail += f" {comment}"
    return SendOutcome(item.key, state, status, code, detail, ts, converted)


def give_back(
    items: list[SendItem], code: str, detail: str, on_outcome: OutcomeCallback, state: str = "retry"
) -> None:
    """Report `items` as not sent: ``retry`` (or ``failed``, when the peer
    refused us for good) with `code`."""
    for item in items:
        on_outcome(SendOutcome(item.key, state, None, code, detail))
