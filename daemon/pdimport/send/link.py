"""One association slot to a C-STORE destination (PS3.7 9.1.1, PS3.8 7).

A :class:`Link` sends items one after another on one association, in the
order it is given them, and turns each into one
:class:`~pdimport.model.SendOutcome`. It opens the association lazily, and
it is where "outcome unknown" is handled:

* no C-STORE-RSP within ``dimse_timeout`` (the association is then
  aborted) after the peer has answered earlier stores on this association:
  the instance is resent **once** on a fresh association and the answer to
  the resend is the outcome (detail says so). A missing answer in the middle
  of a stream is a glitch (a dropped response, reliability.md §0.6,
  performance.md §3b);
* no answer to the resend, or a peer that never answered anything on this
  association: ``unknown``, and the link goes down. A peer that hangs from
  its first store is not hammered; the caller's back-off retries later.

Either way the object may be stored twice; PS3.4 B.2.2 lets an SCP accept a
repeated SOP Instance UID, and the spool bytes are the same.

The association itself is :mod:`pdimport.send.association`: our own, over
a blocking socket in this thread (no pynetdicom on the C-STORE path).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdimport.model import SendItem, SendOutcome
from pdimport.send.association import (
    ConnectFailed,
    Lost,
    Rejected,
    StoreAssociation,
    Timeouts,
    open_association,
)
from pdimport.send.dest import DicomDest
from pdimport.send.dicom import FALLBACK_TS, Context, outcome_from_status, uid_name
from pdimport.send.peer import Unresolvable, describe_connect_error, rejection_detail, resolve
from pdimport.send.wire import encode_store_rq, meta_end
from pdimport.transcode.errors import TranscodeError

LOGGER = logging.getLogger(__name__)

RESENT = "resent once on a fresh association after no C-STORE response"


class LinkDown(Exception):
    """The link cannot take more items; ``code`` is a problem code.

    ``association_rejected`` / ``association_failed``: the items not yet
    sent go back to the caller as ``state``: ``retry`` (the peer may take
    them later), or ``failed`` when asking again cannot help — an
    A-ASSOCIATE-RJ "rejected-permanent" (PS3.8 9.3.4, result 1) or a
    destination host name that does not exist.
    """

    def __init__(self, code: str, detail: str, state: str = "retry") -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.state = state

    def __reduce__(self) -> tuple[Any, tuple[str, str, str]]:
        # Crosses the pipe from send workers (pool.py) intact.
        return LinkDown, (self.code, self.detail, self.state)


@dataclass
class Link:
    """One association slot: ``send(item)`` until done, then ``close()``.

    Parameters
    ----------
    dest : DicomDest
        Called AE title, address and socket options.
    contexts : list of Context
        What every association of this link proposes (context IDs 1, 3, 5 …
        in this order, as pynetdicom numbers them).
    workdir : pathlib.Path
        Where converted copies are written.
    calling_aet : str
        Our AE title (``calling_aet``).
    timeouts : Timeouts
        ``network.connection_timeout``, ``acse_timeout``, ``dimse_timeout``.
    max_pdu : int
        The maximum PDU we announce (``network.max_pdu``, 0 = unlimited).
    """

    dest: DicomDest
    contexts: list[Context]
    workdir: Path
    calling_aet: str
    timeouts: Timeouts
    max_pdu: int = 0
    answered: int = 0
    sent: int = 0
    #: Seconds the C-STORE requests written on this link waited for their
    #: responses, and how many did (:attr:`StoreAssociation.last_wait`).
    waited: float = 0.0
    waits: int = 0
    _assoc: StoreAssociation | None = field(default=None, repr=False)
    #: ``answered`` at the last abort by the peer (see :meth:`_aborted`)
    _answered_at_abort: int | None = None
    _accepted: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _cx_ids: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)
    _no_context: bool = False
    _down: LinkDown | None = None
    #: Checked right before each C-STORE; False takes the link down unsent
    #: (a worker whose parent died must not send what nobody will journal).
    guard: Any = None

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Release the association (abort it if it cannot be released)."""
        assoc, self._assoc = self._assoc, None
        if assoc is not None:
            assoc.release()

    def abort(self) -> None:
        """Abort at once (an exception in the caller)."""
        assoc, self._assoc = self._assoc, None
        if assoc is not None:
            assoc.abort()

    def _open(self) -> None:
        """Establish a fresh association, or raise :class:`LinkDown`."""
        host, port = self.dest.connect_host, self.dest.port
        try:
            resolve(host, port)
        except Unresolvable as exc:
            raise LinkDown(
                "association_failed", exc.detail, "retry" if exc.transient else "failed"
            ) from None
        proposed = [
            (2 * n + 1, str(cx.abstract_syntax), [str(ts) for ts in cx.transfer_syntax])
            for n, cx in enumerate(self.contexts)
        ]
        try:
            assoc = open_association(
                (host, port),
                self.calling_aet,
                self.dest.aet,
                proposed,
                self.max_pdu,
                self.timeouts,
                nodelay=self.dest.nodelay,
                quick=self.dest.quickack,
            )
        except Rejected as rj:
            permanent = rj.rejection.result == 0x01
            raise LinkDown(
                "association_rejected",
                rejection_detail(self.dest, [rj.rejection]),
                "failed" if permanent else "retry",
            ) from None
        except ConnectFailed as exc:
            raise LinkDown(
                "association_failed",
                describe_connect_error(host, port, exc.error, self.timeouts.connect),
            ) from None
        except Lost as lost:
            LOGGER.warning("%s: association failed: %s", self.dest.key, lost.cause)
            raise LinkDown(
                "association_failed",
                f"{self.dest.key}: association aborted or timed out by the peer",
            ) from None
        if not assoc.accepted:
            # No context at all: nothing can go on this association (as
            # pynetdicom did, abort it); every item is no_presentation_context.
            assoc.abort()
            self._no_context = True
            return
        self._assoc = assoc
        self._accepted, self._cx_ids = _accepted(assoc)
        self.sent = 0

    def connect(self) -> None:
        """Establish the association now (else the first :meth:`send` does).

        Raises
        ------
        LinkDown
            Rejected, refused or timed out.
        """
        if self._assoc is None and not self._no_context:
            self._go_down_on_failure(self._open)

    def conversion_target(self, item: SendItem) -> str | None:
        """The syntax `item` must be converted to on this association.

        None when it goes as it is, or cannot go at all (no context). Call
        after :meth:`connect`: the answer depends on what the peer accepted.
        """
        if self._no_context:
            return None
        return conversion_target(item, self._accepted)

    # -------------------------------------------------------------- sending
    def send(self, item: SendItem) -> SendOutcome:
        """Send one item; its outcome, or :class:`LinkDown` (not sent).

        Raises
        ------
        LinkDown
            The association could not be (re-)established or was lost
            before this item went out; the item was not sent.
        """
        if self._down is not None:
            raise self._down
        if self._assoc is not None and (why := self._assoc.ended_by_peer()):
            LOGGER.info(
                "%s ended the idle association (%s): opening a fresh one", self.dest.key, why
            )
            self._assoc = None
        self.connect()
        if self._no_context:
            return _no_context(item, self.dest)
        if self.guard is not None and not self.guard():
            self._down = LinkDown("association_failed", "the delivering process is gone")
            raise self._down
        assoc = self._assoc
        if assoc is None or not assoc.established:
            self._down = LinkDown(
                "association_failed",
                f"{self.dest.key}: association lost after {self.answered} answered stores",
            )
            raise self._down
        outcome = self._send_one(item)
        if outcome.state != "unknown":
            self.answered += outcome.status is not None
            return outcome
        return self._resend_once(item, outcome)

    def _go_down_on_failure(self, action: Any) -> None:
        try:
            action()
        except LinkDown as down:
            self._down = down
            raise

    def _resend_once(self, item: SendItem, first: SendOutcome) -> SendOutcome:
        """No answer: resend on a fresh association, or give up (see module doc)."""
        answered_before = self.answered > 0
        self._drop_association()
        down = LinkDown(
            "association_failed", f"{self.dest.key}: no C-STORE response; association aborted"
        )
        if not answered_before:
            self._down = down
            return first
        LOGGER.warning(
            "%s: no response to %s; resending once on a fresh association",
            self.dest.key,
            item.sop_instance_uid,
        )
        try:
            self._open()
        except LinkDown as exc:
            self._down = exc
            return _with_detail(first, f"{first.detail}; resend impossible: {exc.detail}")
        if self._assoc is None:  # no context accepted any more
            self._down = down
            return first
        again = self._send_one(item)
        if again.state == "unknown":
            self._drop_association()
            self._down = down
            return _with_detail(again, f"{again.detail}; {RESENT}, no response either")
        self.answered += 1
        return _with_detail(again, f"{again.detail}; {RESENT}".lstrip("; "))

    def _drop_association(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is not None:
            assoc.abort()

    def _send_one(self, item: SendItem) -> SendOutcome:
        assoc = self._assoc
        assert assoc is not None
        prepared = _prepare(item, self._accepted, self.dest, self.workdir)
        if isinstance(prepared, SendOutcome):
            return prepared
        path, ts, converted = prepared
        self.sent += 1
        msg_id = (self.sent - 1) % 0xFFFF + 1  # PS3.7 9.3.1.1: unique among outstanding
        try:
            # The command and the context come from the data set (the scan),
            # never from the File Meta, which a vendor may have left out.
            cx_id = self._cx_ids[(item.sop_class_uid, ts)]
            command = encode_store_rq(item.sop_class_uid, item.sop_instance_uid, msg_id)
            with open(path, "rb", buffering=0) as fp:  # large reads: no buffer, no isatty
                fp.seek(dataset_offset(fp, path))
                try:
                    rsp = assoc.store(cx_id, command, fp, msg_id, item.sop_instance_uid)
                finally:
                    self.waited += assoc.last_wait
                    self.waits += 1
        except Lost as lost:
            self._assoc = None  # closed or aborted by now
            if lost.by_peer:
                return self._aborted(item, lost.cause, ts, converted)
            return SendOutcome(
                item.key,
                "unknown",
                None,
                "outcome_unknown",
                f"no C-STORE response: {lost.cause}",
                ts,
                converted,
            )
        except (OSError, ValueError, KeyError) as exc:
            # The spooled file is not what the header scan said (no context
            # for its real SOP class / syntax, no Part 10 framing, unreadable).
            if not assoc.established:
                self._assoc = None  # broken mid-message: the next item opens anew
            return SendOutcome(
                item.key,
                "failed",
                None,
                "internal_error",
                f"cannot send {path.name}: {exc}",
                ts,
                converted,
            )
        if rsp is None:
            self._assoc = None  # aborted after dimse_timeout
            return outcome_from_status(item, None, "", ts, converted)
        return outcome_from_status(item, rsp.status, _comment(rsp), ts, converted)

    def _aborted(self, item: SendItem, cause: str, ts: str, converted: Path | None) -> SendOutcome:
        """The peer aborted the association (or closed it) during this store.

        Reported as ``association_aborted`` with the peer's reason, state
        ``retry``: an abort ends the operation in progress (PS3.8 7.3), and
        its cause may be passing (a restarting PACS, a full disc) or this
        file (a malformed object a receiver refuses by aborting: the repairs
        of :mod:`pdimport.send.repair` leave few of those). The caller's
        back-off decides when to try again; within this delivery the link
        opens a fresh association for the next item, so one instance a peer
        refuses does not hold back the others, unless the peer aborted the
        previous store too (then the link goes down, not hammering a peer
        that aborts everything).
        """
        detail = f"{self.dest.key} aborted the association during this C-STORE: {cause}"
        LOGGER.warning("%s (%s)", detail, item.sop_instance_uid)
        if self._answered_at_abort == self.answered:
            self._down = LinkDown(
                "association_failed",
                f"not sent: {self.dest.key} aborted two associations in a row ({cause})",
            )
        self._answered_at_abort = self.answered
        return SendOutcome(item.key, "retry", None, "association_aborted", detail, ts, converted)


# ----------------------------------------------------------- per item
def new_link(dest: DicomDest, batch_contexts: list, settings: Any, workdir: Path) -> Link:
    """A :class:`Link` to `dest` with the calling AE title and timeouts of `settings`."""
    timeouts = Timeouts(
        float(settings.get("network.connection_timeout")),
        float(settings.get("network.acse_timeout")),
        float(settings.get("network.dimse_timeout")),
    )
    return Link(
        dest,
        batch_contexts,
        workdir,
        str(settings.get("calling_aet")).strip(),
        timeouts,
        max_pdu=int(settings.get("network.max_pdu")),
    )


def _prepare(
    item: SendItem, accepted: dict[str, list[str]], dest: DicomDest, workdir: Path
) -> tuple[Path, str, Path | None] | SendOutcome:
    """The file and syntax to send, converting when the own syntax was refused.

    A converted file already at :func:`converted_path` is sent as it is: the
    same bytes on a resend, or what the decode pool made ahead of the send.
    """
    if item.transfer_syntax in accepted.get(item.sop_class_uid, []):
        return item.path, item.transfer_syntax, None
    target = conversion_target(item, accepted)
    if target is None:
        return _no_context(item, dest)
    converted = converted_path(workdir, item, target)
    try:
        if not converted.exists():
            from pdimport.transcode.reencode import convert  # pydicom: only to convert

            convert(item.path, converted, target)
    except TranscodeError as exc:
        return decode_failed(item, target, str(exc), exc.code)
    return converted, target, converted


def conversion_target(item: SendItem, accepted: dict[str, list[str]]) -> str | None:
    """The uncompressed syntax to convert `item` to, None if none is needed or possible."""
    syntaxes = accepted.get(item.sop_class_uid, [])
    if item.transfer_syntax in syntaxes:
        return None
    return next((t for t in FALLBACK_TS if t in syntaxes), None)


def decode_failed(
    item: SendItem, target: str, detail: str, code: str = TranscodeError.code
) -> SendOutcome:
    """The outcome of an item whose conversion to `target` failed (permanent):
    `code` is ``decode_failed``, or ``decode_refused`` for a codestream whose
    header disagrees with the dataset."""
    return SendOutcome(
        item.key,
        "failed",
        None,
        code or TranscodeError.code,
        f"{uid_name(item.transfer_syntax)} -> {uid_name(target)}: {detail}",
    )


#: Bytes read to find the end of the File Meta; more only for a rare long one.
META_HEAD = 4096


def dataset_offset(fp: Any, path: Path) -> int:
    """Where the data set of the Part 10 file `fp` starts (after its File Meta).

    :func:`~pdimport.send.wire.meta_end` on the first bytes (~2 µs), pydicom
    (~0.2 ms) only for what that cannot tell: a meta longer than
    :data:`META_HEAD`, or no standard framing.

    Raises
    ------
    ValueError
        No Part 10 framing.
    """
    offset = meta_end(fp.read(META_HEAD))
    if offset is None:
        from pynetdicom.dsutils import split_dataset

        _meta, offset = split_dataset(path)
    return int(offset)


def _comment(rsp: Any) -> str:
    """Error Comment and Offending Element(s) of a response, for the detail."""
    tags = ", ".join(f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in rsp.offending)
    return " ".join(x for x in (rsp.comment, f"offending {tags}" if tags else "") if x)


def _accepted(
    assoc: StoreAssociation,
) -> tuple[dict[str, list[str]], dict[tuple[str, str], int]]:
    """SOP class -> accepted syntaxes, and (class, syntax) -> context ID (PS3.8 9.3.3.2)."""
    by_class: dict[str, list[str]] = {}
    ids: dict[tuple[str, str], int] = {}
    for cx_id, sop_class, ts in assoc.accepted:
        by_class.setdefault(sop_class, []).append(ts)
        ids.setdefault((sop_class, ts), cx_id)
    return by_class, ids


def converted_path(workdir: Path, item: SendItem, target: str) -> Path:
    """Where the copy of `item` converted to `target` lives (one per item and syntax)."""
    return workdir / f"{_key_digest(item.key)}-{target}.dcm"


def _key_digest(key: str) -> str:
    # Never from media names or dataset values: a hash of the journal key.
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def remove_converted(workdir: Path, keys: Iterable[str]) -> int:
    """Delete the converted copies of the items with these journal keys, in
    every syntax (and a pool's unfinished temporary files of them); returns
    how many. Called once a delivery is over: an uncompressed copy of a
    compressed series is as large as the series decoded, and the work
    folder would otherwise grow with every import."""
    digests = {_key_digest(k) for k in keys}
    partial = {d[:32] for d in digests}  # fsutil.atomic_write's ".<name[:32]>.*.tmp"
    removed = 0
    try:
        names = os.listdir(workdir)
    except FileNotFoundError:
        return 0
    for name in names:
        if (name[:40] in digests and name[40:41] == "-") or (
            name.startswith(".") and name.endswith(".tmp") and name[1:33] in partial
        ):
            try:
                os.unlink(workdir / name)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def _no_context(item: SendItem, dest: DicomDest) -> SendOutcome:
    return SendOutcome(
        item.key,
        "failed",
        None,
        "no_presentation_context",
        f"{dest.key} accepts neither {uid_name(item.sop_class_uid)} in "
        f"{uid_name(item.transfer_syntax)} nor in an uncompressed syntax",
    )


def _with_detail(outcome: SendOutcome, detail: str) -> SendOutcome:
    return SendOutcome(
        outcome.key,
        outcome.state,
        outcome.status,
        outcome.code,
        detail,
        outcome.transfer_syntax,
        outcome.converted_path,
    )


__all__ = [
    "RESENT",
    "Link",
    "LinkDown",
    "conversion_target",
    "converted_path",
    "decode_failed",
    "remove_converted",
]
