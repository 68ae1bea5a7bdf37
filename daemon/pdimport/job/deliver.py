"""Phase 2's last step: send a job's instances to each destination.

Each instance's outcome is journaled as it arrives, in commit groups
(:class:`~pdimport.store.groupcommit.DeliveryRecorder`), so an acknowledged
one is never sent again by a retry, and after a crash at most what was in
flight and one commit group is sent again. A destination that is
not there is retried a few times within the delivery, on the same back-off
schedule the daemon's retry worker uses for whole jobs (:func:`backoff`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pdimport.job.commit import commit_delivered, uncommitted
from pdimport.job.inventory import Inventory
from pdimport.job.lifecycle import Interrupted
from pdimport.job.progress import ProgressMeter, ProgressSink
from pdimport.model import SendItem, SendOutcome
from pdimport.policy import rules as policy
from pdimport.policy.group import Instance
from pdimport.problems import Problem
from pdimport.send import deliver as send_to
from pdimport.send import parse_dest
from pdimport.send.link import remove_converted
from pdimport.settings import Settings
from pdimport.store.fsutil import DiskFull
from pdimport.store.groupcommit import DeliveryRecorder
from pdimport.store.journal import Job, Journal
from pdimport.store.spool import Spool

log = logging.getLogger(__name__)

Event = Callable[..., None]


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds before retry number ``attempt`` (0-based): base·2^n, capped."""
    return min(cap, max(base, 0.1) * (2 ** min(attempt, 30)))


class Deliverer:
    """Delivers jobs of one journal and spool.

    Parameters
    ----------
    event : callable
        ``event(name, **fields)``: an audit/observer event.
    stop : threading.Event
        Set when the process stops: a back-off wait ends at once and the
        delivery raises :class:`~pdimport.job.lifecycle.Interrupted`.
    """

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        spool: Spool,
        event: Event,
        stop: threading.Event,
        progress: ProgressSink | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.spool = spool
        self._event = event
        self.stop = stop
        self._progress = progress

    def routes(self, destinations: list[Any]) -> list[tuple[Any, Callable[[Instance], bool]]]:
        """Default destinations take everything; each route adds a
        destination for one kind (and optionally one modality)."""
        plan: list[tuple[Any, Callable[[Instance], bool]]] = [
            (d, lambda i: True) for d in destinations
        ]
        defaults = {d.key for d in destinations}
        by_dest: dict[str, list[policy.Route]] = {}
        dests: dict[str, Any] = {}
        for route in policy.parse_routes(list(self.settings.get("route")), parse_dest):
            if route.dest.key in defaults:
                continue
            by_dest.setdefault(route.dest.key, []).append(route)
            dests[route.dest.key] = route.dest
        for key, routes in by_dest.items():
            plan.append((dests[key], _matches_any(routes)))
        return plan

    def deliver(
        self,
        job: Job,
        dest: Any,
        inv: Inventory,
        select: Callable[[Instance], bool] = lambda i: True,
        early: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        """Send every pending instance ``select`` picks to one destination,
        with retries; the outcome of each is journaled as it arrives.

        ``early`` holds the (UID, sha256) pairs this destination acknowledged
        while the medium was read (:mod:`pdimport.job.overlap`): sent by this
        job, not before it.

        An instance with several encodings on the medium
        (:attr:`Instance.copies`) is sent once, in the first copy the
        destination takes: the preferred one, else the next when the
        destination could not take it (no context for it, or it did not
        decode for a destination that wanted it uncompressed).
        """
        # a C-STORE acknowledged but then not committed is sent again
        sent = self.journal.sent_set(dest.key) - uncommitted(self.journal, dest)
        todo: dict[str, Instance] = {}
        spare: dict[str, list[Instance]] = {}  # key -> the copies not tried yet
        for copies in self._units(inv, select):
            inst = copies[0]
            done = next((c for c in copies if (c.uid, c.sha256) in sent), None)
            if done is not None:
                done.previously_sent = (done.uid, done.sha256) not in early
                done.dest_states[dest.key] = "sent"
                continue
            if self._historic_conflict(dest.key, inst, {c.sha256 for c in copies}):
                inst.dest_states[dest.key] = "conflict"
                inv.problems.append(
                    Problem(
                        "uid_conflict",
                        inst.path,
                        f"{dest.key} already holds SOP Instance UID {inst.uid} with other content",
                    )
                )
                continue
            todo[inst.sha256 + inst.uid] = inst
            spare[inst.sha256 + inst.uid] = copies[1:]
        outcomes: dict[str, SendOutcome] = {}
        sizes = {key: self._size(inst) for key, inst in todo.items()}
        meter = ProgressMeter(job.id, "delivering", len(todo), sum(sizes.values()), self._progress)

        recorder = DeliveryRecorder(self.journal)

        def on_outcome(out: SendOutcome) -> None:
            inst = todo[out.key]
            recorder.add(
                dest.key, inst.uid, inst.sha256, out.state, out.status, out.code, out.detail, job.id
            )
            if out.key in sizes and out.key not in outcomes:  # a later copy counts no more
                meter.add(files=1, nbytes=sizes[out.key])
            outcomes[out.key] = out

        workdir = self.settings.state_path / "work"
        workdir.mkdir(exist_ok=True)
        final = dict(todo)
        try:
            batch = dict(todo)
            while batch:
                self._attempts(dest, batch, outcomes, on_outcome, workdir, recorder.flush)
                batch = self._next_copies(dest, final, spare, outcomes)
                todo.update(batch)
        finally:
            recorder.flush()
            # converted copies live as long as the delivery: a resend within
            # it sends the same bytes, a later one converts again
            remove_converted(workdir, todo)
        meter.finish()
        self._apply_outcomes(dest, final, outcomes, inv)
        self._event(
            "instances_delivered",
            job=job.id,
            dest=dest.key,
            dest_aet=getattr(dest, "aet", ""),
            sent=sum(1 for k in final if k in outcomes and outcomes[k].state == "sent")
            + sum(
                1
                for i in inv.instances
                if i.state == "pending" and (i.uid, i.sha256) in early and select(i)
            ),
            failed=sum(1 for k in final if k not in outcomes or outcomes[k].state != "sent"),
            already_sent=sum(
                1
                for i in inv.instances
                if i.dest_states.get(dest.key) == "sent" and i.previously_sent
            ),
        )
        commit_delivered(self.settings, self.journal, job, dest, inv, self._event)

    @staticmethod
    def _units(inv: Inventory, select: Callable[[Instance], bool]) -> list[list[Instance]]:
        """What to deliver, in medium order: each instance as the list of its
        pending copies ``select`` picks, preferred first."""
        units: list[list[Instance]] = []
        seen: set[int] = set()
        for inst in inv.instances:
            if inst.state != "pending" or not select(inst) or id(inst) in seen:
                continue
            copies = [c for c in inst.copies if c.state == "pending" and select(c)] or [inst]
            seen.update(id(c) for c in copies)
            units.append(copies)
        return units

    @staticmethod
    def _next_copies(
        dest: Any,
        final: dict[str, Instance],
        spare: dict[str, list[Instance]],
        outcomes: dict[str, SendOutcome],
    ) -> dict[str, Instance]:
        """The next copy of each instance whose copy the destination could
        not take, in place of that one (which is then left out of the report:
        the instance is not lost while another copy can go)."""
        batch: dict[str, Instance] = {}
        for key in list(final):
            out = outcomes.get(key)
            if out is None or out.code not in _ANOTHER_COPY_MAY_GO or not spare.get(key):
                continue
            tried = final.pop(key)
            nxt, *rest = spare.pop(key)
            tried.detail = f"{dest.key} could not take this copy ({out.code}); another went"
            new = nxt.sha256 + nxt.uid
            final[new] = batch[new] = nxt
            spare[new] = rest
        return batch

    def _attempts(
        self,
        dest: Any,
        todo: dict[str, Instance],
        outcomes: dict[str, SendOutcome],
        on_outcome: Callable[[SendOutcome], None],
        workdir: Path,
        flush: Callable[[], None] = lambda: None,
    ) -> None:
        """Up to ``network.retries`` attempts, with growing pauses, until
        every instance has an outcome that is not worth retrying; the
        outcomes of each attempt are committed (``flush``) before a pause."""
        attempts = int(self.settings.get("network.retries"))
        delay = float(self.settings.get("network.retry_delay"))
        cap = float(self.settings.get("retry_max_delay"))
        pending = list(todo)
        for attempt in range(attempts):
            items = [self.item(key, todo[key]) for key in pending]
            if not items:
                break
            try:
                send_to(dest, items, self.settings, on_outcome, workdir)
            except DiskFull:
                raise  # a journal that cannot record must not be retried against
            except Exception as exc:
                log.exception("delivery to %s failed", dest.key)
                for key in pending:
                    outcomes.setdefault(
                        key, SendOutcome(key, "retry", code="internal_error", detail=str(exc))
                    )
            flush()
            pending = [
                k for k in pending if k not in outcomes or outcomes[k].state in ("retry", "unknown")
            ]
            if not pending or attempt == attempts - 1:
                break
            for key in pending:
                outcomes.pop(key, None)
            if self.stop.wait(backoff(attempt, delay, cap)):
                # Stopping: the acknowledged instances are journaled; the job
                # stays ``delivering`` and resumes at the next start.
                raise Interrupted()

    def _size(self, inst: Instance) -> int:
        try:
            return self.spool.path(inst.send_sha256).stat().st_size
        except (OSError, ValueError):
            return 0

    def _historic_conflict(self, dest_key: str, inst: Instance, shas: set[str]) -> bool:
        """The destination holds this UID in content none of its copies has."""
        return any(
            d.state == "sent" and d.sha256 not in shas
            for d in self.journal.deliveries_for_uid(dest_key, inst.uid)
        )

    def item(self, key: str, inst: Instance) -> SendItem:
        """What the send layer takes for one instance: its spooled file to send."""
        path = self.spool.path(inst.send_sha256)
        return SendItem(
            key=key,
            path=path,
            sop_class_uid=inst.header.sop_class_uid,
            sop_instance_uid=inst.uid,
            transfer_syntax=inst.header.transfer_syntax,
            size=path.stat().st_size,
        )

    @staticmethod
    def _apply_outcomes(
        dest: Any, todo: dict[str, Instance], outcomes: dict[str, SendOutcome], inv: Inventory
    ) -> None:
        for key, inst in todo.items():
            out = outcomes.get(key)
            if out is None:
                inst.dest_states[dest.key] = "failed"
                inv.problems.append(
                    Problem("association_failed", inst.path, f"{dest.key}: not attempted")
                )
                continue
            if out.state == "sent":
                inst.dest_states[dest.key] = "sent"
                if out.code:
                    inv.problems.append(Problem(out.code, inst.path, f"{dest.key}: {out.detail}"))
                continue
            inst.dest_states[dest.key] = "failed"
            if out.state in ("retry", "unknown") or _out_of_resources(out.status):
                inv.transient.add(inst.path)
            code = out.code or (
                "outcome_unknown"
                if out.state == "unknown"
                else "association_failed"
                if out.state == "retry"
                else "store_failed"
            )
            inv.problems.append(Problem(code, inst.path, f"{dest.key}: {out.detail}".rstrip(": ")))


#: Failures for which another encoding of the instance may still go.
_ANOTHER_COPY_MAY_GO = frozenset({"decode_failed", "decode_refused", "no_presentation_context"})


def _out_of_resources(status: int | None) -> bool:
    """C-STORE "Refused: Out of Resources" (PS3.4 Annex B.2.3: 0xA7xx): transient."""
    return status is not None and status & 0xFF00 == 0xA700


def _matches_any(routes: list[Any]) -> Callable[[Instance], bool]:
    """A filter that admits an instance any of ``routes`` matches."""
    return lambda inst: any(r.matches(inst) for r in routes)


def settle(instances: list[Instance]) -> None:
    """An instance is sent when every destination it was meant for has it.

    A copy no destination was given, because another encoding of the same
    instance went in its place, is skipped.
    """
    for inst in instances:
        if inst.state != "pending":
            continue
        if not inst.dest_states:
            went = [c for c in inst.copies if c.dest_states]
            if went:
                inst.state = "skipped"
                inst.detail = inst.detail or (
                    f"another encoding of this instance was delivered: {went[0].path}"
                )
            continue
        states = set(inst.dest_states.values())
        inst.state = (
            "sent" if states == {"sent"} else "conflict" if "conflict" in states else "failed"
        )
