"""Delivery while the medium is still read: survey in place, decide, then copy and send.

Phase 2 waits for phase 1 because a second patient found in the last file
holds the whole medium. That is only so when the medium can be read once:
a folder on a local disk can be read twice cheaply, so its headers are
surveyed where they lie first (:class:`~pdimport.job.survey.InPlace`, the
inventory of ``pdimport scan``), and the decisions that need the whole
medium (the one-patient rule, the hold rules, reconciliation) are taken
before the copy. When they say "deliver it as it is", :class:`EarlyDelivery`
sends each instance while the rest is still copied:

* from its spooled copy only, once that copy is durable and journaled and
  the scan worker has scanned it (never from the source), in medium order;
* only if the spooled copy's header is the surveyed one. A copy that
  disagrees (another patient, another UID: the source changed under us)
  stops the early delivery, and the job is held with ``source_changed``
  (:func:`hold_changed`) until a person decides; what was acknowledged is
  journaled and never sent again.

Phase 2 then runs as always, from the journal and the spool: its inventory,
its decisions, its report, and its delivery, which finds the instances sent
here journaled (:attr:`EarlyDelivery.sent`) and sends only the rest, with
its retries. Anything unusual the survey finds (a hold, a coercion to a
local identity, AI results, copies of one UID, a destination that does not
take an instance) is left to phase 2 alone, as before.

Media read once in on-disc order (optical drives, a USB stick, remote
intake) keep the single read: :func:`start` returns None for them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

from pdimport.job import report as report_mod
from pdimport.job.inventory import Inventory, scanned_instance
from pdimport.job.reconcile import DELIVER
from pdimport.job.survey import InPlace, nameable
from pdimport.model import Header, Identity, SendOutcome
from pdimport.policy import rules as policy
from pdimport.policy.group import Instance, group_patients
from pdimport.problems import Problem
from pdimport.send import DicomDest
from pdimport.send import deliver as send_to
from pdimport.send.link import remove_converted
from pdimport.send.scu import StoreSession
from pdimport.store.groupcommit import DeliveryRecorder

log = logging.getLogger(__name__)

#: Instances the first early delivery waits for (fewer when the medium has
#: fewer): an association per handful of files would cost more than it hides.
FIRST_CHUNK = 32
#: Most instances one early delivery call takes, so that a stop or a
#: disagreement of the source ends the early delivery within one chunk.
MAX_CHUNK = 256
#: Mean seconds a C-STORE on the open association waits for its response
#: (StoreSession.response_wait: the receiver's own time and the network's)
#: above which a full chunk (a backlog: the read is ahead) goes to the send
#: workers, ``network.associations`` of them, instead. A receiver that waits
#: on its database or disk for each instance gains from parallel
#: associations; one that answers at once does not, and starting the
#: workers costs more. Measured here (300-500 CT images), one association
#: against the workers: a receiver taking 5 ms a C-STORE 2.88 s against
#: 2.17 s, 20 ms 7.46 s against 3.29 s; storescp 0.4 s against 1.1-1.4 s;
#: Orthanc 2.2-2.7 s against 2.4-2.5 s.
SLOW_RESPONSE = 0.005

#: Media surveyed before they are read: folders, where the files lie, and
#: disc images on a local disk, whose files' headers are copied out first
#: (:class:`_Prefixes`, as for a package on a folder or a path past PATH_MAX).
#: A drive or a stick (``device``) is read once.
SURVEYED_KINDS = frozenset({"dir", "iso"})
#: Bytes of each file of a disc image copied out for the survey (CT headers
#: are about 4.7 kB, MR about 10 kB); a file whose header runs past them
#: leaves the medium to the single read.
SURVEY_PREFIX = 64 << 10
#: A DICOMDIR is read whole (it names the files), up to this size.
_DICOMDIR_MAX = 32 << 20

#: Header fields a survey and the spooled copy must agree on: all of them but
#: the scanner's bookkeeping.
_COMPARED = tuple(f.name for f in dataclasses.fields(Header) if f.name not in ("extra", "warnings"))


def _fields(header: Header) -> tuple[Any, ...]:
    return tuple(getattr(header, name) for name in _COMPARED)


def start(
    importer: Any, job: Any, medium: Any, entries: list[Any], destinations: list[Any]
) -> EarlyDelivery | None:
    """The early delivery of a job, started, or None when the medium or the
    survey's decisions do not allow one (the job is then read, then
    delivered, as before)."""
    if not destinations or medium.kind not in SURVEYED_KINDS:
        return None
    try:
        if medium.kind == "dir" and _by_name(medium):
            plan = survey(importer, job, medium, entries)
        else:
            with tempfile.TemporaryDirectory(prefix="pdimport-survey-") as tmp:
                plan = survey(importer, job, _Prefixes(medium, entries, Path(tmp)), entries)
    except Exception:  # the survey is an optimisation: the import goes on without it
        log.exception("job %s: survey in place failed; delivering after the read", job.id)
        return None
    if plan is None:
        return None
    early = EarlyDelivery(importer, job, *plan, importer._deliverer.routes(destinations))
    early.start()
    return early


def _by_name(medium: Any) -> bool:
    """Whether every file of a folder can be read where it lies, by its name
    (not one path past PATH_MAX, nor inside a package on the folder)."""
    try:
        return nameable(medium)
    except (KeyError, OSError):  # an entry of a nested package has no path
        return False


def survey(
    importer: Any, job: Any, medium: Any, entries: list[Any]
) -> tuple[dict[str, tuple[Any, ...]], set[str]] | None:
    """What the spooled copies must show and what may go before the read
    ends: the header fields of every instance the survey found, by medium
    path, and the paths of those that may be sent early. None when the
    survey's decisions hold, coerce, mark or skip anything, or when it
    could not see every header."""
    settings = importer.settings
    inv = InPlace(settings, medium).take(entries)
    if isinstance(medium, _Prefixes) and not medium.complete(inv):
        return None
    pending = [i for i in inv.instances if i.state == "pending"]
    policy.detect_ai(pending, inv.locate, policy.ai_patterns(settings))
    if not pending or any(i.kind == "ai" for i in pending):
        return None  # AI results are marked, skipped or held: phase 2 alone
    patients = group_patients(pending)
    if any(p.unidentified for p in patients):
        return None
    if settings.get("reconcile.sources") and not _settled_before(importer, job, patients):
        # Asking the identity sources is phase 2's: what they answer (a
        # match, ``no_match``) goes into its report.
        return None
    # Settling records each delivered patient's identity in the journal, so
    # phase 2 settles them the same way (a patient never goes under two).
    settled = importer.reconciler.settle(job.id, patients, report_mod.facility(inv), [])
    if any(s.action != DELIVER or s.identity is not None for s in settled):
        return None  # held, discarded or coerced: decided again after the read
    surveyed = {i.path: _fields(i.header) for i in inv.instances}
    uids: dict[str, int] = {}
    for inst in inv.instances:
        uids[inst.uid] = uids.get(inst.uid, 0) + 1
    # copies of one UID are sorted by their bytes: phase 2's alone
    return surveyed, {i.path for i in pending if uids[i.uid] == 1}


class _Prefixes:
    """A disc image's files for :class:`~pdimport.job.survey.InPlace`: each
    file's first :data:`SURVEY_PREFIX` bytes in a sparse file of its size
    (the rest a hole), so the scanners see the headers and the sizes; a
    DICOMDIR whole."""

    def __init__(self, medium: Any, entries: list[Any], folder: Path) -> None:
        self.path = str(folder)
        self.problems = medium.problems
        self._real: dict[str, bytes] = {}
        self._sizes: dict[str, int] = {}
        for n, entry in enumerate(entries):
            name = folder / str(n)
            whole = entry.path.rsplit("/", 1)[-1].upper() == "DICOMDIR"
            with medium.open(entry) as src, open(name, "wb") as dst:
                left = min(entry.size, _DICOMDIR_MAX if whole else SURVEY_PREFIX)
                # the raw stream: a buffered one would read a whole 1 MiB buffer
                raw = getattr(src, "raw", src)
                while left > 0 and (chunk := raw.read(left)):
                    dst.write(chunk)
                    left -= len(chunk)
                dst.truncate(entry.size)
            self._real[entry.path] = os.fsencode(name)
            self._sizes[entry.path] = 0 if whole and entry.size <= _DICOMDIR_MAX else entry.size

    def real_path(self, entry: Any) -> bytes:
        return self._real[entry.path]

    def _whole(self, path: str) -> bool:
        return self._sizes.get(path, 0) <= SURVEY_PREFIX

    def complete(self, inv: Inventory) -> bool:
        """Whether the survey saw every header: each instance's data set up
        to its Pixel Data lies in its prefix, and no file larger than a
        prefix became a problem (it might be one only in the survey)."""
        for inst in inv.instances:
            offset = inst.header.pixel_data_offset
            if not self._whole(inst.path) and not 0 < offset <= SURVEY_PREFIX:
                return False
        return all(self._whole(p.path) for p in inv.problems if p.path in self._sizes)


def _settled_before(importer: Any, job: Any, patients: list[Any]) -> bool:
    """Whether every patient has a person's decision or an earlier run's
    settlement, so that settling them asks no identity source."""
    journal = importer.journal
    known = {d.patient for d in journal.decisions(job.id)} | set(journal.settlements(job.id))
    return all(p.id in known for p in patients)


class EarlyDelivery(threading.Thread):
    """Sends a job's instances from the spool while its medium is read.

    Fed by the scan worker (:meth:`offer`, in medium order) with each spooled
    file's scan result; checks it against the survey, prepares the file to
    send as phase 2 would (the same derived copies), and delivers chunks of
    instances, one attempt each, to every route that selects them.
    Outcomes are journaled as phase 2 journals them, in commit groups.

    Attributes
    ----------
    sent : dict
        Destination key -> the (SOP Instance UID, sha256) pairs it acknowledged here.
    problems : list of Problem
        ``source_changed`` when a spooled copy disagreed with the survey.
    """

    def __init__(
        self,
        importer: Any,
        job: Any,
        surveyed: dict[str, tuple[Any, ...]],
        sendable: set[str],
        routes: list[Any],
    ) -> None:
        super().__init__(name=f"early-delivery-{job.id}", daemon=True)
        self._importer = importer
        self._job = job
        self._surveyed = surveyed
        self._sendable = sendable
        self._routes = routes
        self._journal = importer.journal
        self._cond = threading.Condition()
        self._queue: deque[tuple[str, str, Header]] = deque()
        self._closed = False
        self._cancel = threading.Event()
        self._first = min(FIRST_CHUNK, len(sendable))
        self.sent: dict[str, set[tuple[str, str]]] = {d.key: set() for d, _ in routes}
        self.problems: list[Problem] = []
        #: routes that stopped early (a failure): phase 2 sends their rest
        self._stopped: set[str] = set()
        #: UIDs each destination already has a delivery row for (a resend or
        #: a conflict is phase 2's to judge)
        self._known = {d.key: {uid for uid, _ in self._journal.sent_set(d.key)} for d, _ in routes}
        #: DICOM destination key -> the association kept open between chunks
        self._sessions: dict[str, StoreSession] = {}

    # -- the scan worker's side
    def offer(self, path: str, sha: str, result: Any) -> None:
        """One spooled file's scan result (its Header or Problem), or the
        Identity of a file that is not DICOM."""
        with self._cond:
            if self._closed:
                return
            was = self._surveyed.get(path)
            if isinstance(result, Header):
                if was is None:
                    self._changed(path, "the spooled copy is an instance the survey did not see")
                elif _fields(result) != was:
                    diff = ", ".join(n for n, v in zip(_COMPARED, was) if getattr(result, n) != v)
                    self._changed(path, f"the spooled copy differs from the survey in {diff}")
                elif path in self._sendable:
                    self._queue.append((path, sha, result))
                    self._cond.notify()
            elif was is not None:
                what = result.kind if isinstance(result, Identity) else result.code
                self._changed(path, f"the spooled copy is no longer an instance ({what})")

    def _changed(self, path: str, detail: str) -> None:
        """The source changed under us: no more early delivery (the lock is held)."""
        log.warning(
            "job %s: %s changed during the read; early delivery stopped", self._job.id, path
        )
        self.problems.append(Problem("source_changed", path, detail))
        self._closed = True
        self._queue.clear()
        self._cond.notify()

    def close(self, cancel: bool = False) -> None:
        """No more offers: send what is queued (or, with ``cancel``, stop
        after the chunk on the wire) and wait for it."""
        with self._cond:
            self._closed = True
            if cancel:
                self._cancel.set()
                self._queue.clear()
            self._cond.notify()
        self.join()

    # -- the sending side
    def _next_chunk(self) -> list[tuple[str, str, Header]]:
        with self._cond:
            while not self._closed and len(self._queue) < self._first:
                self._cond.wait()
            self._first = 1
            n = min(len(self._queue), MAX_CHUNK)
            return [self._queue.popleft() for _ in range(n)]

    def run(self) -> None:
        try:
            while (chunk := self._next_chunk()) and not self._cancel.is_set():
                if self._importer.stop.is_set():
                    return
                instances = self._prepare(chunk)
                for dest, select in self._routes:
                    if dest.key not in self._stopped:
                        self._send(dest, [i for i in instances if select(i)], len(chunk))
        except Exception:  # phase 2 delivers whatever did not go here
            log.exception("job %s: early delivery failed", self._job.id)
        finally:
            for session in self._sessions.values():
                try:
                    session.close()
                except Exception:  # noqa: BLE001 - everything sent was journaled
                    log.warning("job %s: releasing an association failed", self._job.id)

    def _prepare(self, chunk: list[tuple[str, str, Header]]) -> list[Instance]:
        """The chunk as phase 2 would send it (the same derived copies),
        AI evidence looked for again in the spooled copies; what was
        prepared is kept with the scan results for phase 2."""
        inv = Inventory()
        taker = self._importer._inventory
        table = self._importer.prescans.job(self._job.id)
        for path, sha, header in chunk:
            inst = scanned_instance(path, sha, header, inv)
            if inst is None:
                continue
            try:
                inst.send_sha256, repairs = taker.prepare(path, sha, header)
            except Exception:  # phase 2 prepares it again and records why not
                log.exception("job %s: could not prepare %s", self._job.id, path)
                continue
            inv.instances.append(inst)
            if (path, sha) in table:  # phase 2 need not walk the file again
                table[path, sha] = dataclasses.replace(
                    table[path, sha], prepared=(inst.send_sha256, tuple(repairs))
                )
        spool = self._importer.spool
        policy.detect_ai(inv.instances, spool.path, policy.ai_patterns(self._importer.settings))
        for inst in inv.instances:
            if inst.kind == "ai":  # the survey saw none
                with self._cond:
                    self._changed(inst.path, "the spooled copy carries AI evidence")
                return []
        return inv.instances

    def _send(self, dest: Any, instances: list[Instance], taken: int) -> None:
        deliverer = self._importer._deliverer
        known = self._known[dest.key]
        todo = {i.sha256 + i.uid: i for i in instances if i.uid not in known}
        if not todo:
            return
        recorder = DeliveryRecorder(self._journal)
        failed: list[str] = []

        def on_outcome(out: SendOutcome) -> None:
            inst = todo[out.key]
            recorder.add(
                dest.key, inst.uid, inst.sha256, out.state, out.status, out.code, out.detail,
                self._job.id,
            )  # fmt: skip
            if out.state == "sent" and not out.code:
                self.sent[dest.key].add((inst.uid, inst.sha256))
            else:
                failed.append(out.key)

        workdir = self._importer.settings.state_path / "work"
        workdir.mkdir(exist_ok=True)
        items = [deliverer.item(key, inst) for key, inst in todo.items()]
        session = self._sessions.get(dest.key)
        slow = session is not None and (session.response_wait or 0.0) > SLOW_RESPONSE
        try:
            if isinstance(dest, DicomDest) and not (slow and taken >= MAX_CHUNK):
                self._session(dest, workdir).send(items, on_outcome)
            else:  # a slow receiver behind the read, or not DICOM: every association
                if session is not None:  # released first: a receiver that serves one
                    session.close()  # association at a time would keep the workers waiting
                send_to(dest, items, self._importer.settings, on_outcome, workdir)
        finally:
            recorder.flush()
            remove_converted(workdir, todo)  # as phase 2 does after its delivery
        if failed:  # a refusal, a conversion, a link down: phase 2 and its retries
            log.info("job %s: %s: early delivery stopped", self._job.id, dest.key)
            self._stopped.add(dest.key)

    def _session(self, dest: Any, workdir: Path) -> StoreSession:
        """The association kept open to ``dest`` for the whole read, a
        backlog included unless the receiver is slow (:data:`SLOW_RESPONSE`);
        closed meanwhile, its next send opens another with the same contexts
        and it keeps its last :attr:`StoreSession.response_wait`."""
        if dest.key not in self._sessions:
            self._sessions[dest.key] = StoreSession(dest, self._importer.settings, workdir)
        return self._sessions[dest.key]


def hold_changed(inv: Inventory, pending: list[Instance], decided: bool) -> bool:
    """Whether the job holds because its source changed during the read
    (``source_changed``), and if so every pending instance with it; a
    person's decision on the job (a release) lets it go on."""
    if decided or not any(p.code == "source_changed" for p in inv.problems):
        return False
    for inst in pending:
        if inst.state == "pending":
            inst.state = "held"
    return True


def mark_sent(instances: list[Instance], sent: dict[str, set[tuple[str, str]]]) -> None:
    """Instances acknowledged by the early delivery, shown as sent in the
    report of a job that then held."""
    for inst in instances:
        got = [key for key, pairs in sent.items() if (inst.uid, inst.sha256) in pairs]
        if inst.state == "held" and got and len(got) == len(sent):
            inst.state = "sent"
            inst.dest_states.update((key, "sent") for key in got)
