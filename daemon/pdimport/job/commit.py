"""After delivery: storage commitment for destinations that ask for it.

A destination given ``?commitment=1`` is asked, once its delivery is done, to
commit every instance it acknowledged for the job that it has not committed
yet (:mod:`pdimport.send.commitment`). The job is imported only when every
instance is committed:

* committed: journaled, never asked again;
* failed (the destination names the instance and a reason): the instance is
  ``failed`` for that destination with ``commitment_failed``; the next
  delivery of the job sends it again (a "sent" C-STORE it did not keep is not
  sent), and asks again;
* no answer (``commitment_unanswered``): the instances wait with the job,
  which asks again when it is retried, without sending anything again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pdimport.job.inventory import Inventory
from pdimport.policy.group import Instance
from pdimport.problems import Problem
from pdimport.send.commitment import CommitmentError, request_commitment
from pdimport.settings import Settings
from pdimport.store.journal import Job, Journal

log = logging.getLogger(__name__)

#: Failure Reason "Resource Limitation" (PS3.3 C.14.1.1): worth asking again later.
_TRANSIENT_REASONS = frozenset({0x0213})


def uncommitted(journal: Journal, dest: Any) -> set[tuple[str, str]]:
    """(uid, sha256) acknowledged by ``dest`` whose commitment it refused:
    to be sent again."""
    if not getattr(dest, "commitment", False):
        return set()
    return {key for key, state in journal.commitments(dest.key).items() if state == "failed"}


def commit_delivered(
    settings: Settings,
    journal: Journal,
    job: Job,
    dest: Any,
    inv: Inventory,
    event: Callable[..., None],
) -> None:
    """Ask ``dest`` to commit what it holds of ``inv``; mark what it did not."""
    if not getattr(dest, "commitment", False):
        return
    known = journal.commitments(dest.key)
    ask = [
        i
        for i in inv.instances
        if i.dest_states.get(dest.key) == "sent" and known.get((i.uid, i.sha256)) != "committed"
    ]
    if not ask:
        return
    host, _, port = str(settings.get("network.commitment_listen")).rpartition(":")
    try:
        result = request_commitment(
            dest,
            [(i.header.sop_class_uid, i.uid) for i in ask],
            calling_aet=str(settings.get("calling_aet")),
            listen=(host.strip("[]"), int(port)),
            timeout=float(settings.get("network.commitment_timeout")),
            network_timeout=float(settings.get("network.network_timeout")),
        )
    except CommitmentError as exc:
        log.warning("storage commitment of job %s: %s", job.id, exc.detail)
        for inst in ask:
            inst.dest_states[dest.key] = "failed"
            inv.transient.add(inst.path)
        inv.problems.append(Problem(exc.code, "", exc.detail))
        return
    committed = failed = 0
    for inst in ask:
        if inst.uid in result.committed:
            journal.record_commitment(
                dest.key, inst.uid, inst.sha256, "committed", "", result.transaction_uid
            )
            committed += 1
            continue
        failed += 1
        _not_committed(journal, dest, inst, inv, result)
    event(
        "instances_committed",
        job=job.id,
        dest=dest.key,
        transaction=result.transaction_uid,
        committed=committed,
        failed=failed,
    )


def _not_committed(
    journal: Journal, dest: Any, inst: Instance, inv: Inventory, result: Any
) -> None:
    inst.dest_states[dest.key] = "failed"
    if inst.uid in result.failed:
        reason = result.failed[inst.uid]
        detail = f"{dest.key}: {result.reason(inst.uid)}"
        journal.record_commitment(
            dest.key, inst.uid, inst.sha256, "failed", detail, result.transaction_uid
        )
        inv.problems.append(Problem("commitment_failed", inst.path, detail))
        if reason in _TRANSIENT_REASONS:
            inv.transient.add(inst.path)
        return
    # neither committed nor failed in the report: ask again later
    inv.transient.add(inst.path)
    inv.problems.append(
        Problem("commitment_unanswered", inst.path, f"{dest.key}: not named in the report")
    )


__all__ = ["commit_delivered", "uncommitted"]
