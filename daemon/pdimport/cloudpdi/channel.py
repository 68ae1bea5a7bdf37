"""One token in, one Net PDI job out: decode → find → fetch, check, decrypt
→ import through :class:`~pdimport.job.importer.Importer`, the one
orchestration of a job.

The job's identity is the token's community and document ID, not the path
of the reassembled package: a token added twice imports once. The token's
metadata (never its password) goes into the report (``source.cloudpdi``),
the audit trail (the ``medium_inserted`` record, with the consent and the
sending facility carried to the job's later records) and the label.

A refused token is a failed job with its problem code, and nothing is
delivered: the package is only handed on once every chunk has verified.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pdimport.cloudpdi.profile import Profile, Token, load_profile
from pdimport.job.importer import Importer, JobResult
from pdimport.job.lifecycle import JobState
from pdimport.problems import CodedError
from pdimport.settings import Settings
from pdimport.store.journal import Job

log = logging.getLogger(__name__)

SOURCE_KIND = "netpdi"
#: A document whose job ended so is not fetched again; after ``partial`` or
#: ``failed`` it is (what was acknowledged is not sent again, as for a disc
#: imported twice), and an unfinished job is resumed.
_DONE = frozenset({JobState.IMPORTED, JobState.HELD, JobState.DISCARDED})


class NetPdiImporter(Importer):
    """An importer whose medium is a token's reassembled package."""

    def __init__(self, settings: Settings, token: Token | None = None, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.token = token

    def start_job(self, medium: Any, source: str, mode: str) -> Job:
        if self.token is None:
            return super().start_job(medium, source, mode)
        key = self.token.source_key
        job = self.journal.find_unfinished(key, mode)
        if job is not None:
            log.info("resuming job %s for Cloud PDI document %s", job.id, self.token.document_id)
            return job
        where = display(self.token)
        job = self.journal.create_job(key, SOURCE_KIND, where, self.token.document_id, mode)
        meta = self.token.metadata()
        self.audit_event(
            "medium_inserted",
            job=job.id,
            source=where,
            kind=SOURCE_KIND,
            label=self.token.document_id,
            facility=self.token.sending_facility,
            consent=self.token.consent or "unknown",
            cloudpdi=meta,
        )
        return job

    def _finished(self, job_id: str, report: dict[str, Any]) -> JobResult:
        if self.token is not None:
            report["source"]["cloudpdi"] = self.token.metadata()
            if not report["source"].get("facility"):
                report["source"]["facility"] = self.token.sending_facility
            self.journal.save_report(job_id, report)
        return super()._finished(job_id, report)


def display(token: Token) -> str:
    """How the source reads in ``pdimport jobs`` and the report."""
    return f"cloudpdi:{token.community_id}/{token.document_id}"


class Channel:
    """The Cloud PDI channel of one state directory."""

    def __init__(self, settings: Settings, profile: Profile | None = None) -> None:
        self.settings = settings
        self.profile = profile or load_profile(settings)

    def add(self, data: bytes, dests: list[str], origin: str = "token") -> JobResult:
        """Import the document a token names (or refuse the token)."""
        try:
            token = self.profile.token_decoder(self.settings).decode(data)
        except CodedError as exc:
            return self.refuse(origin, exc)
        log.info(
            "Cloud PDI token for document %s from %s",
            token.document_id,
            token.sending_facility or "?",
        )
        done = self._earlier(token)
        if done is not None:
            return done
        workdir = Path(tempfile.mkdtemp(prefix="cloudpdi-", dir=self._tmp()))
        try:
            try:
                package = self._download(token, workdir)
            except CodedError as exc:
                return self.refuse(display(token), exc, token)
            importer = NetPdiImporter(self.settings, token)
            try:
                return importer.run(str(package), dests)
            finally:
                importer.close()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _tmp(self) -> Path:
        tmp = self.settings.state_path / "cloudpdi" / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def _download(self, token: Token, workdir: Path) -> Path:
        repository = self.profile.repository_client(self.settings)
        try:
            manifest = repository.manifest(token)
            decryptor = self.profile.package_decryptor(self.settings)
            return decryptor.decrypt(token, manifest, repository, workdir)
        finally:
            repository.close()

    def _earlier(self, token: Token) -> JobResult | None:
        """The job of this document already done (:data:`_DONE`), if any: a
        second token add delivers nothing new and says which job it was.
        An unfinished one is resumed by :meth:`NetPdiImporter.start_job`
        (the spool keeps what it read)."""
        importer = NetPdiImporter(self.settings, token)
        try:
            for job in importer.journal.jobs(limit=1_000_000):
                if job.source_key != token.source_key or job.mode != "import":
                    continue
                if job.state in _DONE:
                    report = importer.journal.report(job.id)
                    if report is not None:
                        log.info("document %s was imported as job %s", token.document_id, job.id)
                        return JobResult(job.id, report)
            return None
        finally:
            importer.close()

    def refuse(self, origin: str, exc: CodedError, token: Token | None = None) -> JobResult:
        """A failed job that says why the token was refused; nothing delivered."""
        log.warning("Cloud PDI token refused: %s", exc)
        importer = NetPdiImporter(self.settings, token)
        try:
            return importer.unusable(origin, exc.code, exc.detail)
        finally:
            importer.close()
