"""DICOM audit messages (PS3.15 A.5) sent to an audit record repository as
RFC 5424 syslog (PS3.15 A.6), over UDP (RFC 5426) or TCP with octet-counting
framing (RFC 6587 §3.4.1).

Two messages are built here:

* **Import** (EventID 110107, PS3.15 A.5.3.x "Import"): data were imported
  from media. Active participants: the importing process (Destination Role
  ID 110152) and the source media (Source Media 110155) with its
  ``MediaIdentifier``/``MediaType`` (CID 405); participant objects: each
  patient and each study.
* **DICOM Instances Transferred** (EventID 110104, PS3.15 A.5.3.7): instances
  were sent. We are the source (Source Role ID 110153, EventActionCode ``R``),
  the PACS the destination (110152); participant objects: the studies with
  their SOP classes and counts, and the patient.

The XML follows the element/attribute names of the DICOM audit message schema
(PS3.15 A.5.1): coded values as ``csd-code``/``codeSystemName``/
``originalText`` attributes. The local JSON-lines log (:mod:`pdimport.record.audit`)
stays the record of truth; a repository that is down costs a logged warning,
never an import.
"""

from __future__ import annotations

import logging
import os
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

#: PS3.15 A.6 / IHE ATNA: facility 10 (security/authorization), severity 5
#: (notice): PRI = 10 * 8 + 5.
SYSLOG_PRI = 85
#: PS3.15 A.6: the MSGID of a DICOM audit message.
MSGID = "DICOM+RFC3881"
#: A.6 asks receivers to accept at least 32 KiB; keep UDP datagrams below the
#: IPv4 maximum and warn when truncation would be needed.
MAX_UDP = 65_000

# Coded values: (code, scheme, meaning).
EV_IMPORT = ("110107", "DCM", "Import")
EV_TRANSFERRED = ("110104", "DCM", "DICOM Instances Transferred")
ROLE_SOURCE = ("110153", "DCM", "Source Role ID")
ROLE_DESTINATION = ("110152", "DCM", "Destination Role ID")
ROLE_SOURCE_MEDIA = ("110155", "DCM", "Source Media")
USER_AE_TITLE = ("110119", "DCM", "Station AE Title")
ID_PATIENT = ("2", "RFC-3881", "Patient Number")
ID_STUDY = ("110180", "DCM", "Study Instance UID")
AUDIT_SOURCE_APP_SERVER = ("4", "DCM", "Application Server Process or Thread")

#: Medium kind -> Media Type Code (CID 405).
MEDIA_TYPES: dict[str, tuple[str, str, str]] = {
    "cd": ("110032", "DCM", "CD"),
    "dvd": ("110033", "DCM", "DVD"),
    "usb": ("110030", "DCM", "USB Disk Emulation"),
    "email": ("110031", "DCM", "Email"),
    "uri": ("110037", "DCM", "URI"),
    "film": ("110010", "DCM", "Film"),
}

#: Outcome indicator (PS3.15 A.5.1): 0 success, 4 minor failure, 8 serious
#: failure, 12 major failure. Truthful: a held or partial job is not "0".
OUTCOME = {"imported": "0", "held": "4", "partial": "4", "failed": "8"}


@dataclass(frozen=True)
class Node:
    """Who we are in every message (AuditSourceIdentification + our participant)."""

    aet: str = "PDIMPORT"
    source_id: str = field(default_factory=socket.gethostname)
    site_id: str = ""
    hostname: str = field(default_factory=socket.gethostname)


#: Our medium kinds (``report.source.kind`` and drive types) -> CID 405 key.
#: CID 405 has no Blu-ray code, so BD counts as DVD; folders and zip packages
#: arrived through the watch folder, i.e. by URI.
KIND_ALIASES = {
    "iso": "cd",
    "device": "cd",
    "optical": "cd",
    "bd": "dvd",
    "bluray": "dvd",
    "block": "usb",
    "dir": "uri",
    "zip": "uri",
    "folder": "uri",
    "dicomweb": "uri",  # a study retrieved from a DICOMweb server
}


def media_type(kind: str) -> tuple[str, str, str]:
    """Media Type Code (CID 405) for a medium kind."""
    k = (kind or "").lower()
    return MEDIA_TYPES.get(KIND_ALIASES.get(k, k), MEDIA_TYPES["cd"])


# --------------------------------------------------------------------------- XML
def _code(parent: ET.Element, tag: str, code: tuple[str, str, str]) -> ET.Element:
    return ET.SubElement(
        parent, tag, {"csd-code": code[0], "codeSystemName": code[1], "originalText": code[2]}
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _event(
    root: ET.Element, event: tuple[str, str, str], action: str, outcome: str, when: str | None
) -> None:
    ev = ET.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": action,
            "EventDateTime": when or _now(),
            "EventOutcomeIndicator": outcome,
        },
    )
    _code(ev, "EventID", event)


def _participant(
    root: ET.Element,
    user_id: str,
    role: tuple[str, str, str],
    requestor: bool,
    host: str = "",
    alt: str = "",
    name: str = "",
    user_type: tuple[str, str, str] | None = None,
) -> ET.Element:
    attrs = {"UserID": user_id or "-", "UserIsRequestor": "true" if requestor else "false"}
    if alt:
        attrs["AlternativeUserID"] = alt
    if name:
        attrs["UserName"] = name
    if host:
        attrs["NetworkAccessPointID"] = host
        # 2 = IP address, 1 = machine name (PS3.15 A.5.1).
        attrs["NetworkAccessPointTypeCode"] = "2" if _is_ip(host) else "1"
    ap = ET.SubElement(root, "ActiveParticipant", attrs)
    _code(ap, "RoleIDCode", role)
    if user_type:
        _code(ap, "UserIDTypeCode", user_type)
    return ap


def _is_ip(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except OSError:
            continue
    return False


def _source_id(root: ET.Element, node: Node) -> None:
    attrs = {"AuditSourceID": node.source_id}
    if node.site_id:
        attrs["AuditEnterpriseSiteID"] = node.site_id
    src = ET.SubElement(root, "AuditSourceIdentification", attrs)
    _code(src, "AuditSourceTypeCode", AUDIT_SOURCE_APP_SERVER)


def _patients(root: ET.Element, patients: Iterable[dict[str, Any]]) -> None:
    for p in patients:
        pid = str(p.get("id") or "")
        if p.get("issuer"):
            pid += f"^^^{p['issuer']}"  # CX form, as IHE ATNA profiles expect
        po = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": pid or "-",
                "ParticipantObjectTypeCode": "1",
                "ParticipantObjectTypeCodeRole": "1",
            },
        )
        _code(po, "ParticipantObjectIDTypeCode", ID_PATIENT)
        if p.get("name"):
            ET.SubElement(po, "ParticipantObjectName").text = str(p["name"])


def _studies(root: ET.Element, studies: Iterable[dict[str, Any]]) -> None:
    for st in studies:
        po = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": str(st.get("uid") or "-"),
                "ParticipantObjectTypeCode": "2",
                "ParticipantObjectTypeCodeRole": "3",
            },
        )
        _code(po, "ParticipantObjectIDTypeCode", ID_STUDY)
        desc = ET.SubElement(po, "ParticipantObjectDescription")
        if st.get("accession"):
            ET.SubElement(desc, "Accession", {"Number": str(st["accession"])})
        for uid, n in sorted((st.get("sop_classes") or {}).items()):
            ET.SubElement(desc, "SOPClass", {"UID": uid, "NumberOfInstances": str(n)})


def _xml(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def import_message(
    node: Node,
    medium: dict[str, Any],
    patients: list[dict[str, Any]],
    status: str = "imported",
    when: str | None = None,
    operator: str = "",
) -> bytes:
    """The "Import" audit message (EventID 110107) for one medium.

    Parameters
    ----------
    node : Node
        Our identity.
    medium : dict
        ``label`` (volume label), ``id`` (volume/serial ID), ``type`` (medium
        kind), ``drive``, ``facility`` (InstitutionName of the source).
    patients : list of dict
        Report patients (``id``, ``issuer``, ``name``, ``studies``).
    status : str
        Job status; gives EventOutcomeIndicator.

    Returns
    -------
    bytes
        UTF-8 XML.
    """
    root = ET.Element("AuditMessage")
    _event(root, EV_IMPORT, "C", OUTCOME.get(status, "8"), when)
    _participant(
        root,
        node.aet,
        ROLE_DESTINATION,
        requestor=not operator,
        host=node.hostname,
        alt=str(os.getpid()),
        user_type=USER_AE_TITLE,
    )
    if operator:
        _participant(root, operator, ROLE_DESTINATION, requestor=True)
    # The medium itself is a participant (PS3.15 A.5.3: Source Media), named
    # by its volume identity; the facility it came from goes in UserName.
    media_id = str(medium.get("id") or medium.get("label") or "unlabelled")
    ap = _participant(
        root,
        media_id,
        ROLE_SOURCE_MEDIA,
        requestor=False,
        alt=str(medium.get("drive") or ""),
        name=str(medium.get("facility") or ""),
    )
    mi = ET.SubElement(ap, "MediaIdentifier")
    _code(mi, "MediaType", media_type(str(medium.get("type") or "")))
    _source_id(root, node)
    _studies(root, [st for p in patients for st in p.get("studies") or []])
    _patients(root, patients)
    return _xml(root)


def instances_transferred_message(
    node: Node,
    dest_aet: str,
    dest_host: str,
    patients: list[dict[str, Any]],
    ok: bool = True,
    when: str | None = None,
) -> bytes:
    """The "DICOM Instances Transferred" message (EventID 110104, PS3.15
    A.5.3.7) for one delivery to one destination, from the sender's side
    (EventActionCode ``R``)."""
    root = ET.Element("AuditMessage")
    _event(root, EV_TRANSFERRED, "R", "0" if ok else "4", when)
    _participant(
        root,
        node.aet,
        ROLE_SOURCE,
        requestor=True,
        host=node.hostname,
        alt=f"AETITLES={node.aet}",
        user_type=USER_AE_TITLE,
    )
    by_uri = "://" in dest_aet  # a DICOMweb destination: its URL, no AE title
    _participant(
        root,
        dest_aet,
        ROLE_DESTINATION,
        requestor=False,
        host=dest_host,
        alt="" if by_uri else f"AETITLES={dest_aet}",
        user_type=None if by_uri else USER_AE_TITLE,
    )
    _source_id(root, node)
    _studies(root, [st for p in patients for st in p.get("studies") or []])
    _patients(root, patients)
    return _xml(root)


# --------------------------------------------------------------------------- syslog
def rfc5424(msg: bytes, hostname: str, app: str = "pdimport", when: str | None = None) -> bytes:
    """One RFC 5424 syslog message: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID - BOM MSG``.

    The UTF-8 BOM marks the MSG as UTF-8 (RFC 5424 §6.4); patient names are
    often Japanese.
    """
    header = (
        f"<{SYSLOG_PRI}>1 {when or _now()} {_field(hostname, 255)} {_field(app, 48)} "
        f"{os.getpid()} {MSGID} - "
    )
    return header.encode("ascii", "replace") + b"\xef\xbb\xbf" + msg


def _field(value: str, limit: int) -> str:
    # PRINTUSASCII without spaces (RFC 5424 §6), "-" when empty.
    clean = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 §3.4.1 octet counting: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


class SyslogSender:
    """Sends audit messages to ``udp://host:port`` or ``tcp://host:port``.

    :meth:`send` never raises: an unreachable repository is logged and
    reported as False (the local audit log already holds the event).
    """

    def __init__(self, url: str, hostname: str | None = None, timeout: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("udp", "tcp") or not parts.hostname:
            raise ValueError(
                f"audit.syslog must be udp://host:port or tcp://host:port, not {url!r}"
            )
        self.scheme = parts.scheme
        self.address = (parts.hostname, parts.port or (514 if parts.scheme == "udp" else 601))
        self.hostname = hostname or socket.gethostname()
        self.timeout = timeout

    def send(self, xml: bytes) -> bool:
        message = rfc5424(xml, self.hostname)
        try:
            if self.scheme == "udp":
                self._send_udp(message)
            else:
                self._send_tcp(octet_frame(message))
        except OSError as exc:
            log.warning("audit repository %s://%s:%d: %s", self.scheme, *self.address, exc)
            return False
        return True

    def _send_udp(self, message: bytes) -> None:
        if len(message) > MAX_UDP:
            log.warning("audit message of %d bytes is too large for UDP; not sent", len(message))
            raise OSError("message too large for UDP")
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.sendto(message, self.address)

    def _send_tcp(self, frame: bytes) -> None:
        with socket.create_connection(self.address, timeout=self.timeout) as sock:
            sock.sendall(frame)
