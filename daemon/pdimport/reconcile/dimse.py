"""Identity sources asked over DICOM: a Modality Worklist (``mwl://``) and
a Patient Root registry (``pdq://``), by C-FIND (PS3.4 Annex C and K, PS3.7 9.1.2).

One association per question, released when the answers are in. Every
timeout pynetdicom has is set from the source's ``timeout``; whatever
keeps an answer from coming (refused, no A-ASSOCIATE answer, rejected,
aborted, a DIMSE timeout, a failure status, an answer that cannot be
decoded) raises :class:`~pdimport.reconcile.model.SourceDown` with a
one-line detail. A partial answer is never returned: a candidate missing
from it could turn an ambiguous match into a wrong one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ
from pynetdicom.status import code_to_category

from pdimport.reconcile.model import Candidate, Demographics, SourceDown
from pdimport.send import compat

LOGGER = logging.getLogger(__name__)

#: Modality Worklist Information Model - FIND (PS3.4 K.6.1.2).
MWL_FIND = "1.2.840.10008.5.1.4.31"
#: Patient Root Query/Retrieve Information Model - FIND (PS3.4 C.6.1.2).
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"

#: What we tell the SCP our query is written in, and so what we would like
#: the answers in (PS3.4 C.4.1.1.3.1 / K.4.1.1.3.1): UTF-8 holds every name.
#: An SCP may still answer in its own character set (dcmtk's wlmscpfs
#: returns the file's): each answer is decoded per its own.
QUERY_CHARSET = "ISO_IR 192"

_PENDING = (0xFF00, 0xFF01)


@dataclass
class DimseSource:
    """A C-FIND SCP asked for local patients (base of the two kinds below).

    Parameters
    ----------
    url : str
        As configured, e.g. ``mwl://RIS@10.0.0.5:104``; every candidate
        carries it as its ``source``.
    aet, host, port : str, str, int
        The called AE title and its TCP address.
    calling_aet : str
        Our AE title.
    timeout : float
        Seconds: TCP connect, A-ASSOCIATE answer, each C-FIND response,
        and any silence on the socket.
    """

    url: str
    aet: str
    host: str
    port: int
    calling_aet: str
    timeout: float

    model: ClassVar[str] = ""
    model_name: ClassVar[str] = ""

    # ------------------------------------------------------------ protocol
    def candidates(self, who: Demographics) -> list[Candidate]:
        """Local patients born on ``who.birth_date`` (and of ``who.sex``
        when known). No birth date, no question: a query for everyone
        would list the whole registry."""
        if not who.birth_date:
            return []
        query = self.query()
        query.PatientBirthDate = who.birth_date
        if who.sex:
            query.PatientSex = who.sex
        found = self.candidates_from(self.find(query))
        return [
            c
            for c in found
            if c.birth_date == who.birth_date and (not who.sex or not c.sex or c.sex == who.sex)
        ]

    def lookup(self, local_id: str) -> list[Candidate]:
        """The patient (one candidate per worklist entry) with PatientID
        `local_id`; exact matches only (a ``*`` in an ID is no wildcard here)."""
        if not local_id.strip():
            return []
        query = self.query()
        query.PatientID = local_id
        return [c for c in self.candidates_from(self.find(query)) if c.local_id == local_id]

    # ------------------------------------------------------- per kind
    def query(self) -> Dataset:
        """The identifier with every return key, all empty (universal)."""
        ds = Dataset()
        ds.SpecificCharacterSet = QUERY_CHARSET
        ds.PatientName = ""
        ds.PatientID = ""
        ds.IssuerOfPatientID = ""
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        return ds

    def candidate(self, ds: Dataset) -> Candidate:
        return Candidate(
            local_id=_text(ds, "PatientID"),
            name=_person_name(ds),
            birth_date=_text(ds, "PatientBirthDate"),
            sex=_text(ds, "PatientSex").upper(),
            source=self.url,
            issuer=_text(ds, "IssuerOfPatientID"),
            accession_number=_text(ds, "AccessionNumber"),
        )

    def candidates_from(self, answers: list[Dataset]) -> list[Candidate]:
        """One candidate per distinct (PatientID, issuer, accession), in
        the order the SCP answered; answers without a PatientID are no one."""
        seen: dict[tuple[str, str, str], Candidate] = {}
        for ds in answers:
            c = self.candidate(ds)
            if c.local_id:
                seen.setdefault((c.local_id, c.issuer, c.accession_number), c)
        return list(seen.values())

    # ------------------------------------------------------------ the wire
    def find(self, query: Dataset) -> list[Dataset]:
        """Every identifier the SCP answers to `query`, or SourceDown."""
        trace = _Trace(time.monotonic())
        assoc = self._ae().associate(
            self.host, self.port, ae_title=self.aet, evt_handlers=trace.handlers()
        )
        if not assoc.is_established:
            raise self._down(self._no_association(assoc, trace))
        try:
            answers = self._answers(assoc, query)
        except SourceDown:
            if assoc.is_established:
                assoc.abort()  # mid-answer: a release would wait on the rest
            raise
        assoc.release()
        return answers

    def _ae(self) -> compat.StoreAE:
        # StoreAE for its requestor socket: it closes a socket that never
        # connected (pynetdicom 3.0.4 leaks one per refused attempt), and a
        # source that is down is asked again and again.
        ae = compat.StoreAE(ae_title=self.calling_aet)
        ae.add_requested_context(self.model, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.connection_timeout = self.timeout
        ae.acse_timeout = self.timeout
        ae.dimse_timeout = self.timeout
        ae.network_timeout = self.timeout
        return ae

    def _answers(self, assoc: Association, query: Dataset) -> list[Dataset]:
        answers: list[Dataset] = []
        try:
            started = time.monotonic()
            for status, identifier in assoc.send_c_find(query, self.model):
                self._check(status, identifier, answers, time.monotonic() - started)
        except (OSError, RuntimeError, ValueError) as exc:
            raise self._down(f"C-FIND failed: {type(exc).__name__}: {exc}") from None
        return answers

    def _check(
        self, status: Dataset, identifier: Any, answers: list[Dataset], elapsed: float
    ) -> None:
        if "Status" not in status:
            # pynetdicom yields an empty status for both a DIMSE timeout and
            # an abort; the clock tells which.
            if elapsed >= 0.9 * self.timeout:
                raise self._down(f"no C-FIND response within {self.timeout:g} s")
            raise self._down(
                f"association aborted during C-FIND (does {self.aet} allow C-FIND "
                f"from {self.calling_aet}?)"
            )
        code = int(status.Status)
        if code in _PENDING:
            if identifier is None:
                raise self._down("a C-FIND answer could not be decoded")
            answers.append(identifier)
            return
        if code == 0x0000:
            return
        comment = status.get("ErrorComment")
        detail = f"C-FIND status 0x{code:04X} ({code_to_category(code).lower()})"
        raise self._down(f"{detail}: {comment}" if comment else detail)

    def _no_association(self, assoc: Association, trace: _Trace) -> str:
        timed_out = time.monotonic() - trace.started >= 0.9 * self.timeout
        where = f"{self.host}:{self.port}"
        if assoc.is_rejected or trace.rejected:
            return (
                f"association rejected by {self.aet} (our AE title {self.calling_aet}): "
                f"{trace.rejected or 'no reason known'}"
            )
        if not trace.connected:
            if timed_out:
                return f"no TCP connection to {where} within {self.timeout:g} s"
            return f"cannot connect to {where} (connection refused or unreachable)"
        if trace.accepted:
            # pynetdicom aborts an association with no accepted context
            return f"{self.aet} accepted no presentation context for {self.model_name}"
        if trace.peer_aborted:
            return f"association aborted by {self.aet}"
        if timed_out:
            return f"no answer to the association request within {self.timeout:g} s"
        return "association aborted"

    def _down(self, detail: str) -> SourceDown:
        LOGGER.info("%s: %s", self.url, detail)
        return SourceDown(self.url, detail)


@dataclass
class _Trace:
    """What happened while associating, from pynetdicom's public events,
    so that a failure's one line says what it was.

    The PDUs are watched, not the ACSE's verdict: a peer that sends an
    A-ASSOCIATE-RJ and closes at once (dcmtk's ``--refuse``) often has
    pynetdicom handle the closed connection first and report an abort.
    """

    started: float
    connected: bool = False
    accepted: bool = False
    peer_aborted: bool = False
    rejected: str = ""  # result, source, reason of an A-ASSOCIATE-RJ

    def handlers(self) -> list[evt.EventHandlerType]:
        return [
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_PDU_RECV, self._on_pdu),
        ]

    def _on_open(self, _event: Any) -> None:
        self.connected = True

    def _on_accepted(self, _event: Any) -> None:
        self.accepted = True

    def _on_pdu(self, event: Any) -> None:
        pdu = event.pdu
        if isinstance(pdu, A_ABORT_RQ):
            self.peer_aborted = True
        elif isinstance(pdu, A_ASSOCIATE_RJ):
            self.rejected = ", ".join(
                text.lower() for text in (pdu.result_str, pdu.source_str, pdu.reason_str)
            )


def _person_name(ds: Dataset) -> str:
    """PatientName as text, all three component groups (PS3.5 6.2.1).

    pydicom decodes a received PN per the answer's own Specific Character
    Set, the whole value at once (``values.convert_PN``), which keeps ISO
    2022 IR 87 intact. (Not ``PersonName(raw_bytes, encodings)``: in pydicom
    3.0.2 that splits the bytes at every 0x3D first, and そ is ``$=``, 宗 is
    ``=!`` in JIS X 0208.) Empty trailing components and groups, which
    PS3.5 6.2.1.1 lets a writer leave out or put in, go: Orthanc answering
    in Latin-1 sends ``Tanaka^Hiroshi=^=^``.
    """
    value = ds.get("PatientName")
    if value is None:
        return ""
    return "=".join(group.rstrip("^ ") for group in str(value).split("=")).rstrip("=")


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


@dataclass
class WorklistSource(DimseSource):
    """``mwl://AET@host:port``: Modality Worklist C-FIND (PS3.4 K.6.1).

    The query carries an empty Scheduled Procedure Step item (universal
    matching on the station, date and modality: every scheduled step), as a
    worklist SCP requires one (PS3.4 K.6.1.2.2); one candidate per
    (PatientID, issuer, accession): a patient with two procedures appears
    twice, with their two accession numbers.
    """

    model: ClassVar[str] = MWL_FIND
    model_name: ClassVar[str] = "Modality Worklist Information Model - FIND"

    def query(self) -> Dataset:
        ds = super().query()
        ds.AccessionNumber = ""
        sps = Dataset()
        sps.ScheduledStationAETitle = ""
        sps.ScheduledProcedureStepStartDate = ""
        sps.ScheduledProcedureStepStartTime = ""
        sps.Modality = ""
        sps.ScheduledProcedureStepID = ""
        ds.ScheduledProcedureStepSequence = [sps]
        return ds


@dataclass
class RegistrySource(DimseSource):
    """``pdq://AET@host:port``: Patient Root Query/Retrieve - FIND at the
    PATIENT level (PS3.4 C.6.1.1.2), e.g. a PACS or a patient registry."""

    model: ClassVar[str] = PATIENT_ROOT_FIND
    model_name: ClassVar[str] = "Patient Root Query/Retrieve Information Model - FIND"

    def query(self) -> Dataset:
        ds = super().query()
        ds.QueryRetrieveLevel = "PATIENT"
        return ds
