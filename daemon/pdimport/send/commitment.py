"""Storage Commitment Push Model, as the SCU (PS3.4 Annex J; IHE RAD-10).

After a delivery, pdimport may ask the destination to take responsibility
for what it acknowledged: an N-ACTION (Action Type 1) names every instance
under a new Transaction UID, and the destination answers later with an
N-EVENT-REPORT: Event Type 1 when every instance is committed, 2 when some
failed, each failure with its reason (PS3.3 C.14.1.1). Most image managers
(Orthanc among them) send that report on an association of their own, to the
AE title that asked (which they must know, with our host and port); some
send it on the asking association. Both are listened to.

Nothing here knows the journal: :func:`request_commitment` returns what the
destination said, and the caller decides what a job is.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from pdimport.problems import CodedError
from pdimport.send.dest import DicomDest

LOGGER = logging.getLogger(__name__)

#: PS3.4 J.3: the SOP Class and its well-known SOP Instance.
PUSH_MODEL = "1.2.840.10008.1.20.1"
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
#: Failure Reason (0008,1197) values, PS3.3 C.14.1.1.
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0213: "resource limitation",
    0x0122: "referenced SOP Class not supported",
    0x0119: "class / instance conflict",
    0x0131: "duplicate transaction UID",
}


class CommitmentError(CodedError):
    """The commitment could not be asked or was not answered in time."""


@dataclass
class CommitmentResult:
    """What the destination said about one transaction."""

    transaction_uid: str
    committed: set[str] = field(default_factory=set)  # SOP Instance UIDs
    failed: dict[str, int] = field(default_factory=dict)  # SOP Instance UID -> reason

    def reason(self, uid: str) -> str:
        code = self.failed[uid]
        return f"{FAILURE_REASONS.get(code, 'failure')} (0x{code:04X})"


class _Waiter:
    """Collects the N-EVENT-REPORT of one transaction, on whichever association it comes."""

    def __init__(self, transaction_uid: str) -> None:
        self.transaction_uid = transaction_uid
        self.result: CommitmentResult | None = None
        self.done = threading.Event()

    def on_report(self, event: Any) -> tuple[int, None]:
        ds = event.event_information
        uid = str(getattr(ds, "TransactionUID", ""))
        if uid != self.transaction_uid:
            LOGGER.info("storage commitment report for another transaction ignored")
            return 0x0000, None
        result = CommitmentResult(uid)
        for item in getattr(ds, "ReferencedSOPSequence", []):
            result.committed.add(str(item.ReferencedSOPInstanceUID))
        for item in getattr(ds, "FailedSOPSequence", []):
            result.failed[str(item.ReferencedSOPInstanceUID)] = int(
                getattr(item, "FailureReason", 0x0110)
            )
        self.result = result
        self.done.set()
        return 0x0000, None


def request_commitment(
    dest: DicomDest,
    instances: list[tuple[str, str]],
    *,
    calling_aet: str,
    listen: tuple[str, int],
    timeout: float,
    network_timeout: float = 30.0,
) -> CommitmentResult:
    """Ask `dest` to commit `instances` and wait for its answer.

    Parameters
    ----------
    dest : DicomDest
        The destination that stored the instances.
    instances : list of (SOP Class UID, SOP Instance UID)
        What it acknowledged.
    calling_aet : str
        Our AE title: the destination sends its report to it.
    listen : (host, port)
        Where we accept the destination's own association for the report.
    timeout : float
        Seconds to wait for the report after the N-ACTION was accepted.

    Raises
    ------
    CommitmentError
        ``commitment_unanswered`` when the request cannot be sent, is refused,
        or no report comes within `timeout`.
    """
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid
    from pynetdicom import AE, evt

    waiter = _Waiter(generate_uid())
    handlers: list[Any] = [(evt.EVT_N_EVENT_REPORT, waiter.on_report)]
    listener = AE(ae_title=calling_aet)
    # The image manager calls us as the SCP of the push model (role selection).
    listener.add_supported_context(PUSH_MODEL, scu_role=False, scp_role=True)
    listener.network_timeout = network_timeout
    server = listener.start_server(listen, block=False, evt_handlers=handlers)
    assert server is not None  # block=False returns the server
    try:
        ae = AE(ae_title=calling_aet)
        ae.add_requested_context(PUSH_MODEL)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = network_timeout
        assoc = ae.associate(dest.connect_host, dest.port, ae_title=dest.aet, evt_handlers=handlers)
        if not assoc.is_established:
            raise CommitmentError(
                "commitment_unanswered", f"{dest.key}: no association for storage commitment"
            )
        try:
            ds = Dataset()
            ds.TransactionUID = waiter.transaction_uid
            ds.ReferencedSOPSequence = [_reference(cls, uid) for cls, uid in instances]
            status, _reply = assoc.send_n_action(ds, 1, PUSH_MODEL, PUSH_MODEL_INSTANCE)
            code = int(getattr(status, "Status", -1)) if status else -1
            if code != 0x0000:
                raise CommitmentError(
                    "commitment_unanswered",
                    f"{dest.key}: N-ACTION refused (status 0x{code & 0xFFFF:04X})"
                    if code >= 0
                    else f"{dest.key}: no N-ACTION response",
                )
            # A report on this association arrives while we wait on it.
            if not waiter.done.wait(timeout):
                raise CommitmentError(
                    "commitment_unanswered",
                    f"{dest.key}: no storage commitment report within {timeout:g} s",
                )
        finally:
            assoc.release()
    finally:
        server.shutdown()
    assert waiter.result is not None
    return waiter.result


def _reference(sop_class: str, sop_instance: str) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


__all__ = [
    "FAILURE_REASONS",
    "PUSH_MODEL",
    "CommitmentError",
    "CommitmentResult",
    "request_commitment",
]
