"""Real identity sources on 127.0.0.1 for the reconciliation tests.

* ``wlmscpfs``: dcmtk's Modality Worklist SCP (``/usr/bin/wlmscpfs``) over a
  worklist folder built here with ``dump2dcm`` from text dumps: one AE-title
  folder with ``.wl`` files and the ``lockfile`` wlmscpfs insists on. It
  answers in each file's own Specific Character Set (``-csk``), so ISO 2022
  IR 87 entries reach us as ISO 2022 bytes. Like dcmtk's storescp it has no
  bind-address option and listens on all interfaces for the seconds a test runs.
* ``orthanc_registry``: the ``orthanc`` peer of fixtures_peers loaded with
  :data:`REGISTRY` patients by REST, asked as a Patient Root registry.
* ``find_scp``: a pynetdicom C-FIND SCP (worklist and Patient Root) that
  answers a status the test chooses (0xA700, 0xC000 ...) and keeps the
  queries it was sent.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fixtures_peers import OrthancPeer, _stop, free_port, wait_for_port
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import PersonName

WLMSCPFS = "/usr/bin/wlmscpfs"
DUMP2DCM = "/usr/bin/dump2dcm"
JAPANESE = "\\ISO 2022 IR 87"

__all__ = [
    "JAPANESE",
    "REGISTRY",
    "WORKLIST",
    "FindSCP",
    "RegistryPatient",
    "WorklistEntry",
    "WorklistPeer",
    "find_scp",
    "orthanc_registry",
    "wlmscpfs",
]


@dataclass(frozen=True)
class WorklistEntry:
    """One worklist file: a scheduled procedure for a patient."""

    PatientID: str
    PatientName: str
    PatientBirthDate: str
    PatientSex: str
    AccessionNumber: str
    IssuerOfPatientID: str = "HOSP"
    SpecificCharacterSet: str = JAPANESE  # as written in the dump: values joined by "\"
    StepID: str = "SPS1"


#: The worklist every ``wlmscpfs()`` serves unless told otherwise. 宗 (0x3D21)
#: and そ (0x243D) carry a 0x3D byte, the ``=`` that pydicom's PN split trips on.
#: A worklist answers once per Scheduled Procedure Step (wlmscpfs ignores a
#: file with more than one item), so L1005's two steps of one requested
#: procedure are two files with one accession number.
WORKLIST = (
    WorklistEntry("L1001", "Yamada^Tarou=山田^太郎=やまだ^たろう", "19700101", "M", "A1001"),
    WorklistEntry("L1001", "Yamada^Tarou=山田^太郎=やまだ^たろう", "19700101", "M", "A1004"),
    WorklistEntry("L1002", "Suzuki^Souta=鈴木^宗太=すずき^そうた", "19700101", "M", "A1002"),
    WorklistEntry("L1003", "Yamada^Hanako=山田^花子=やまだ^はなこ", "19700101", "F", "A1003"),
    WorklistEntry("L1005", "Sato^Ichiro=佐藤^一郎=さとう^いちろう", "19800505", "M", "A1005"),
    WorklistEntry(
        "L1005", "Sato^Ichiro=佐藤^一郎=さとう^いちろう", "19800505", "M", "A1005", StepID="SPS2"
    ),
    WorklistEntry("L2001", "Müller^Hans", "19700101", "M", "A2001", "", "ISO_IR 100"),
)


def _encoded(text: str, charset: str) -> bytes:
    """`text` as pydicom encodes a PN under `charset` (per component group,
    ESC sequences and back to ASCII before each delimiter, PS3.5 6.2.1.2)."""
    return PersonName(text).encode(convert_encodings(charset.split("\\")))


def worklist_dump(entry: WorklistEntry) -> bytes:
    """A dcmtk text dump of `entry` (bytes: the PN is already encoded).

    dump2dcm copies the bytes between ``[`` and ``]`` as they are, so an
    ISO 2022 value with its ESC sequences goes through intact; only a value
    whose encoding holds ``]`` (ends the value) or ``\\`` (splits it) could
    not be written this way.
    """
    name = _encoded(entry.PatientName, entry.SpecificCharacterSet)
    if b"]" in name or b"\\" in name:
        raise ValueError(f"{entry.PatientName!r} encodes with ] or \\: dump2dcm cannot carry it")
    step = (
        "(fffe,e000) -\n"
        "(0008,0060) CS [CT]\n"
        "(0040,0001) AE [CT1]\n"
        "(0040,0002) DA [20260105]\n"
        "(0040,0003) TM [0900]\n"
        "(0040,0006) PN [Doctor^Who]\n"
        "(0040,0007) LO [CT head]\n"
        f"(0040,0009) SH [{entry.StepID}]\n"
        "(fffe,e00d) -\n"
    )
    head = (
        f"(0008,0005) CS [{entry.SpecificCharacterSet}]\n(0008,0050) SH [{entry.AccessionNumber}]\n"
    ).encode("ascii")
    tail = (
        f"(0010,0020) LO [{entry.PatientID}]\n"
        f"(0010,0021) LO [{entry.IssuerOfPatientID}]\n"
        f"(0010,0030) DA [{entry.PatientBirthDate}]\n"
        f"(0010,0040) CS [{entry.PatientSex}]\n"
        f"(0020,000d) UI [{generate_uid()}]\n"
        "(0032,1060) LO [CT head]\n"
        f"(0040,0100) SQ\n{step}(fffe,e0dd) -\n"
        f"(0040,1001) SH [RP{entry.AccessionNumber}]\n"
    ).encode("ascii")
    return head + b"(0010,0010) PN [" + name + b"]\n" + tail


@dataclass
class WorklistPeer:
    """A running wlmscpfs and its worklist folder."""

    aet: str
    port: int
    folder: Path  # the AE-title folder with the .wl files
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"mwl://{self.aet}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        _stop(self.proc)


def write_worklist(folder: Path, entries: tuple[WorklistEntry, ...] | list[WorklistEntry]) -> None:
    """``folder/NNN.wl`` for each entry, made by dump2dcm, and the lockfile."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lockfile").touch()  # wlmscpfs refuses a folder without it
    for n, entry in enumerate(entries):
        dump = folder / f"{n:03d}.dump"
        dump.write_bytes(worklist_dump(entry))
        subprocess.run(
            [DUMP2DCM, "+te", str(dump), str(folder / f"{n:03d}.wl")],
            check=True,
            capture_output=True,
        )
        dump.unlink()


@pytest.fixture
def wlmscpfs(tmp_path: Path) -> Iterator[Callable[..., WorklistPeer]]:
    """Factory: ``wlmscpfs(entries=WORKLIST, aet="WLM", args=())``.

    `args` go to wlmscpfs as they are: ``["--refuse"]`` rejects every
    association, ``["--sleep-during", "5"]`` makes it slow to answer.
    Single-process (``-s``), so stopping it stops everything it runs.
    """
    for tool in (WLMSCPFS, DUMP2DCM):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"dcmtk {tool} not installed")
    peers: list[WorklistPeer] = []

    def start(
        entries: tuple[WorklistEntry, ...] | list[WorklistEntry] = WORKLIST,
        aet: str = "WLM",
        args: tuple[str, ...] | list[str] = (),
    ) -> WorklistPeer:
        port = free_port()
        root = tmp_path / f"wlm-{port}"
        write_worklist(root / aet, entries)
        cmd = [WLMSCPFS, "-s", "-csk", "-dfp", str(root), *args, str(port)]
        with open(tmp_path / f"wlm-{port}.log", "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        peer = WorklistPeer(aet, port, root / aet, proc)
        peers.append(peer)
        wait_for_port(port, proc)
        return peer

    yield start
    for peer in peers:
        peer.stop()


# ------------------------------------------------------------ Orthanc registry
@dataclass(frozen=True)
class RegistryPatient:
    PatientID: str
    PatientName: str
    PatientBirthDate: str
    PatientSex: str
    IssuerOfPatientID: str = "HOSP"


#: The patients ``orthanc_registry`` holds (one instance each).
REGISTRY = (
    RegistryPatient("R5001", "Tanaka^Hiroshi=田中^博=たなか^ひろし", "19650303", "M"),
    RegistryPatient("R5002", "Tanaka^Yoko=田中^洋子=たなか^ようこ", "19650303", "F"),
    RegistryPatient("R5003", "Suzuki^Souta=鈴木^宗太=すずき^そうた", "19650303", "M"),
    RegistryPatient("R5004", "Doe^John", "19900909", "M"),
)


def registry_instance(patient: RegistryPatient) -> bytes:
    """A minimal Secondary Capture instance of `patient` (UTF-8), as a file."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.PatientName = patient.PatientName
    ds.PatientID = patient.PatientID
    ds.IssuerOfPatientID = patient.IssuerOfPatientID
    ds.PatientBirthDate = patient.PatientBirthDate
    ds.PatientSex = patient.PatientSex
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = DicomBytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def post_instance(peer: OrthancPeer, data: bytes) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{peer.http_port}/instances",
        data=data,
        headers={"Content-Type": "application/dicom"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as rsp:
        assert rsp.status == 200, rsp.status


def set_default_encoding(peer: OrthancPeer, encoding: str) -> None:
    """Orthanc's ``DefaultEncoding``, changed at run time (REST)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{peer.http_port}/tools/default-encoding",
        data=encoding.encode(),
        method="PUT",
    )
    with urllib.request.urlopen(req, timeout=10) as rsp:
        assert rsp.status == 200, rsp.status


@pytest.fixture
def orthanc_registry(orthanc: OrthancPeer) -> OrthancPeer:
    """The ``orthanc`` peer holding :data:`REGISTRY`; ask it at
    ``pdq://ORTHANC@127.0.0.1:<orthanc.port>``.

    Orthanc 1.10 answers C-FIND in its ``DefaultEncoding`` whatever the
    query's Specific Character Set; the default, Latin1, would drop every
    kanji, so the registry is set to UTF-8 as a Japanese site sets it.
    """
    set_default_encoding(orthanc, "Utf8")
    for patient in REGISTRY:
        post_instance(orthanc, registry_instance(patient))
    return orthanc


# ------------------------------------------------------------ scripted C-FIND
@dataclass
class FindSCP:
    """A pynetdicom C-FIND SCP for both information models: yields
    `answers` as pending results, then `status`; keeps every query."""

    status: int = 0x0000
    answers: list[Dataset] = field(default_factory=list)
    aet: str = "FINDSCP"
    port: int = 0
    queries: list[Dataset] = field(default_factory=list)
    _server: Any = None

    def url(self, scheme: str = "mwl") -> str:
        return f"{scheme}://{self.aet}@127.0.0.1:{self.port}"

    def start(self) -> FindSCP:
        from pynetdicom import AE, evt

        ae = AE(ae_title=self.aet)
        ae.add_supported_context("1.2.840.10008.5.1.4.31")
        ae.add_supported_context("1.2.840.10008.5.1.4.1.2.1.1")
        self._server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, self._on_find)]
        )
        self.port = self._server.server_address[1]
        return self

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        self.queries.append(event.identifier)
        for ds in self.answers:
            yield 0xFF00, ds
        yield self.status, None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


@pytest.fixture
def find_scp() -> Iterator[Callable[..., FindSCP]]:
    """Factory: ``find_scp(status=0xA700, answers=[ds, ...])``."""
    peers: list[FindSCP] = []

    def start(status: int = 0x0000, answers: list[Dataset] | None = None) -> FindSCP:
        peer = FindSCP(status=status, answers=list(answers or []))
        peers.append(peer)
        return peer.start()

    yield start
    for peer in peers:
        peer.stop()
