"""The audit trail: an append-only, hash-chained JSON-lines log in
``STATE_DIR/audit/``.

One record per event (medium inserted, read completed, instances delivered,
conversion, coercion, hold, release, discard, label printed, medium ejected,
job finished). Every record carries the same core fields — time, actor,
facility of origin, medium identity, source and destination AE titles,
original and local patient IDs, consent, counts — so an auditor can answer
"where did this object come from, where did it go, when, on whose behalf"
from any single line (PS3.15 A.5 asks the same of an audit message).

The records are chained and sealed by :mod:`pdimport.record.auditchain`
(tamper evidence, :func:`~pdimport.record.auditchain.verify`); the
``pdimport audit`` commands are in :mod:`pdimport.record.auditcli`.

Durability: a record is written with one ``write`` on an ``O_APPEND``
descriptor and ``fsync``'ed before :meth:`AuditLog.append` returns, so the
step it records may be reported done afterwards. Writers in several threads
and processes (daemon, ``pdimport label`` reprints) serialise on a lock file.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pdimport.record import auditsyslog
from pdimport.record.auditchain import (
    GENESIS,
    last_line,
    log_files,
    seal,
    sha256_hex,
    write_durably,
)
from pdimport.record.auditsyslog import Node, SyslogSender
from pdimport.store.journal import open_journal

log = logging.getLogger(__name__)

#: Name of the appliance's trail in the journal's ``audit_head`` table.
TRAIL = "audit"

#: Events the appliance records (others are accepted, for forward compatibility).
EVENTS = (
    "medium_inserted",
    "read_completed",
    "instances_delivered",
    "conversion",
    "coercion",
    "hold",
    "release",
    "discard",
    "job_finished",
    "label_printed",
    "medium_ejected",
)

#: Fields every record has, with their value when nothing is known.
CORE_FIELDS: dict[str, Any] = {
    "actor": "system",
    "job": None,
    "facility": "",
    "medium": None,
    "source_aet": "",
    "dest_aet": "",
    "patients": [],
    "consent": "unknown",
    "counts": {},
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def manifest_digest(files: list[tuple[str, str | None]]) -> str:
    """SHA-256 over a medium's per-file manifest.

    The manifest is ``sha256sum`` text — ``"<sha256>  <path>\\n"`` per file
    in on-medium order — so an auditor can recompute the digest from the
    spool with standard tools. Unread files count with 64 dashes.
    """
    text = "".join(f"{h or '-' * 64}  {p}\n" for p, h in files)
    return sha256_hex(text.encode("utf-8"))


def aet_of(dest: str) -> tuple[str, str]:
    """(who, host) of a destination: the AE title of ``dicom://AET@host:port``,
    the URL itself of a DICOMweb one (``dicomweb+https://host/path``: its
    audit participant is named by URI), else ("", "")."""
    parts = urlsplit(dest or "")
    if parts.scheme == "dicom":
        return parts.username or "", parts.hostname or ""
    if parts.scheme.startswith("dicomweb+"):
        return dest, parts.hostname or ""
    return "", ""


class AuditLog:
    """Append-only, hash-chained audit log in one directory.

    Parameters
    ----------
    directory : Path
        ``STATE_DIR/audit``; created if missing.
    consent : str
        Default ``consent`` of every record ("unknown" unless configured).
    facility : str
        Default facility of origin when an event does not name one.
    calling_aet : str
        Our AE title: the source AE of every delivery.
    journal : Journal, optional
        Lets :meth:`on_event` add manifest digests, patients and counts.
    syslog : SyslogSender, optional
        Also send PS3.15 Import / Instances Transferred messages.
    node : auditsyslog.Node, optional
        Our identity in those messages.
    trail : str
        Name of this trail's chain head in the journal.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        consent: str = "unknown",
        facility: str = "",
        calling_aet: str = "",
        journal: Any = None,
        syslog: Any = None,
        node: Any = None,
        trail: str = TRAIL,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.consent = consent or "unknown"
        self.facility = facility
        self.calling_aet = calling_aet
        self.journal = journal
        self.syslog = syslog
        self.node = node
        self.trail = trail
        self._lock = threading.Lock()
        self._jobs: dict[str, dict[str, Any]] = {}  # per-job context for on_event

    @classmethod
    def from_settings(
        cls, state_dir: Path | str, settings: Any = None, journal: Any = None
    ) -> AuditLog:
        """Build from the settings table (``audit.*``, ``calling_aet``).

        Without ``journal``, opens the journal of ``settings``
        (``state_dir/journal.sqlite`` by default): every writer
        of the appliance's trail must keep its chain head, or
        :func:`~pdimport.record.auditchain.verify` reports the records it
        wrote as unknown to the journal.
        """

        def opt(name: str, default: Any) -> Any:
            try:
                value = settings.get(name) if settings is not None else None
            except KeyError:
                value = None
            return default if value is None else value

        syslog = node = None
        if opt("audit.syslog", ""):
            syslog = SyslogSender(opt("audit.syslog", ""))
            node = Node(aet=opt("calling_aet", "PDIMPORT"), site_id=opt("audit.site_id", ""))
        if journal is None:
            journal = open_journal(settings, state_dir)
        return cls(
            Path(state_dir) / "audit",
            consent=opt("audit.consent", "unknown"),
            calling_aet=opt("calling_aet", ""),
            journal=journal,
            syslog=syslog,
            node=node,
        )

    # ------------------------------------------------------------------ append
    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one record, fsync it, and return it (with ``prev`` and ``hash``).

        Keyword arguments become record fields; the core fields missing from
        them take their defaults (``consent`` from the log's setting).
        Raises OSError when the record could not be made durable: the caller
        must then not report the step as done.
        """
        with self._lock, self._file_lock():
            path, last = self._tail()
            lead = b""
            if last is not None and not last.endswith(b"\n"):
                # A torn write from a crash: close that line (verify will name
                # it) rather than merge this record into it.
                lead, last = b"\n", last + b"\n"
            record = self._record(event, fields, last)
            line = seal(record)
            write_durably(path, lead + line)
            record["hash"] = json.loads(line)["hash"]
            # After the record is durable, and still under the file lock: a
            # crash in between leaves the head exactly one record behind,
            # which verify() tells apart from records cut off the end.
            self._advance_head(record)
        return record

    def _advance_head(self, record: dict[str, Any]) -> None:
        if self.journal is None:
            return
        try:
            count = int(record["seq"])
            if count <= 0:  # the previous line was damaged: count on from the head
                head = self.journal.audit_head(self.trail)
                count = (head[0] if head else 0) + 1
            self.journal.set_audit_head(self.trail, count, record["hash"])
        except sqlite3.Error as exc:
            # The record itself is durable; verify() will show the lagging head.
            log.warning(
                "audit record %s written but the journal's chain head not updated: %s",
                record.get("seq"),
                exc,
            )

    def _record(self, event: str, fields: dict[str, Any], last: bytes | None) -> dict[str, Any]:
        seq = 1
        if last:
            try:
                seq = int(json.loads(last).get("seq", 0)) + 1
            except (ValueError, AttributeError):
                seq = 0  # the previous line is damaged; verify() will say so
        record: dict[str, Any] = {"seq": seq, "time": _now(), "event": event}
        defaults = dict(CORE_FIELDS, consent=self.consent, facility=self.facility)
        for key, default in defaults.items():
            record[key] = fields.pop(key, default)
        record.update(fields)
        record.pop("hash", None)
        record["prev"] = sha256_hex(last) if last else GENESIS
        return record

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        # flock on a separate file: the log files themselves change by month.
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _tail(self) -> tuple[Path, bytes | None]:
        """The file to append to and the last record's line bytes (None if none)."""
        files = log_files(self.dir)
        month = self.dir / datetime.now(UTC).strftime("audit-%Y-%m.jsonl")
        # A clock set back must not fork the chain into an earlier month's file.
        target = max([month, *files[-1:]], key=lambda p: p.name)
        for path in reversed(files):
            last = last_line(path)
            if last is not None:
                return target, last
        return target, None

    # ------------------------------------------------------------ observer
    def on_event(self, name: str, fields: dict[str, Any]) -> None:
        """Pipeline observer (``on_event(name, fields)``): record the event.

        Enriches the record with what earlier events of the same job told us
        (the medium, the facility, the patients) and, with a journal, the
        manifest digest and the report. Sends the PS3.15 messages when syslog
        is configured.
        """
        fields = dict(fields)
        job = fields.get("job")
        ctx = self._jobs.setdefault(job, {}) if job else {}
        handler = getattr(self, f"_on_{name}", None)
        extra = handler(ctx, fields) if handler else {}
        record = {k: v for k, v in ctx.items() if k in CORE_FIELDS}
        record.update(fields)
        record.update(extra)
        self.append(name, **record)
        if name == "job_finished":
            self._send_syslog(ctx, record)
            if job is not None:
                self._jobs.pop(job, None)

    def _on_medium_inserted(self, ctx: dict[str, Any], f: dict[str, Any]) -> dict[str, Any]:
        ctx["medium"] = {
            "label": f.pop("label", "") or "",
            "id": f.pop("volume_id", "") or "",
            "type": f.pop("kind", "") or "",
            "drive": f.pop("drive", "") or "",
            "source": f.get("source", ""),
        }
        if f.get("facility"):
            ctx["facility"] = f["facility"]
        if f.get("consent"):  # a Cloud PDI token says it: every record of the job carries it
            ctx["consent"] = f["consent"]
        return {"medium": ctx["medium"]}

    def _on_read_completed(self, ctx: dict[str, Any], f: dict[str, Any]) -> dict[str, Any]:
        extra: dict[str, Any] = {"counts": {"files": f.pop("files", 0)}}
        if "manifest" in f:
            extra["manifest_sha256"] = manifest_digest(f.pop("manifest"))
        elif self.journal is not None and f.get("job"):
            files = [(r.path, r.sha256) for r in self.journal.files(f["job"])]
            extra["manifest_sha256"] = manifest_digest(files)
            extra["counts"]["read_errors"] = sum(
                1 for r in self.journal.files(f["job"]) if r.state != "read"
            )
        return extra

    def _on_instances_delivered(self, ctx: dict[str, Any], f: dict[str, Any]) -> dict[str, Any]:
        dest = f.get("dest", "")
        aet, host = aet_of(dest)
        ctx.setdefault("deliveries", []).append(
            (dest, aet, host, f.get("sent", 0), f.get("failed", 0))
        )
        counts = {k: f.pop(k) for k in ("sent", "failed") if k in f}
        return {"dest_aet": aet, "source_aet": self.calling_aet, "counts": counts}

    def _on_job_finished(self, ctx: dict[str, Any], f: dict[str, Any]) -> dict[str, Any]:
        report = f.pop("report", None)
        if report is None and self.journal is not None and f.get("job"):
            report = self.journal.report(f["job"])
        if not report:
            return {}
        ctx["report"] = report
        ctx["patients"] = patient_ids(report)
        facility = (report.get("source") or {}).get("facility")
        if facility:
            ctx["facility"] = facility
        return {
            "patients": ctx["patients"],
            "facility": ctx.get("facility", self.facility),
            "counts": report.get("counts", {}),
            "hold_reasons": report.get("hold_reasons", []),
        }

    def _send_syslog(self, ctx: dict[str, Any], record: dict[str, Any]) -> None:
        if self.syslog is None or self.node is None:
            return
        report = ctx.get("report") or {}
        patients = report.get("patients") or []
        medium = dict(ctx.get("medium") or {}, facility=record.get("facility", ""))
        self.syslog.send(
            auditsyslog.import_message(
                self.node, medium, patients, str(record.get("status", "failed"))
            )
        )
        for _dest, aet, host, sent, failed in ctx.get("deliveries", []):
            self.syslog.send(
                auditsyslog.instances_transferred_message(
                    self.node, aet, host, patients, ok=not failed and sent > 0
                )
            )


def patient_ids(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Original and local patient IDs of a report (IHE IRWF keeps both)."""
    return [
        {"original": p.get("id"), "issuer": p.get("issuer") or "", "local": p.get("local_id")}
        for p in report.get("patients") or []
    ]


def operator_name() -> str:
    """Who runs a CLI command: the sudo user if any, else the login name."""
    return os.environ.get("SUDO_USER") or getpass.getuser()
