"""Problem codes: every way a file, a medium or a delivery can go wrong.

One table, one place. A problem is a value recorded against a job, never an
exception that escapes the unit of work (a file, a medium, an instance).
The codes are part of the JSON report contract: short snake_case words that
scripts may match on. Add new codes here, never inline elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

#: code -> (severity, meaning). Severity "error" means the file/instance is not
#: delivered; "warning" means it is delivered but a person may want to know;
#: "info" means nothing that should have been delivered was lost (a file that
#: was never DICOM): recorded, and the medium can still end ``imported``.
PROBLEM_CODES: dict[str, tuple[str, str]] = {
    # --- the medium and its entries -------------------------------------
    "unreadable_medium": ("error", "the medium could not be opened or parsed at all"),
    "blank_medium": ("error", "a blank disc: nothing to import"),
    "audio_cd": ("error", "an audio CD: nothing to import"),
    "unreadable_sector": ("error", "a read error (EIO or short read) inside the file's data"),
    "read_abandoned": (
        "error",
        "the medium used up its read-error budget (bad sectors, minutes): file not read",
    ),
    "truncated_extent": ("error", "the file's extent runs past the end of the medium"),
    "unsafe_path": ("error", "an entry name escapes the medium root (.., absolute, drive letter)"),
    "link_ignored": (
        "warning",
        "a symbolic/hard link or special file on the medium was not followed",
    ),
    "too_large": ("error", "an entry or the whole medium exceeds the configured size cap"),
    "zip_bomb": ("error", "an archive entry's expansion ratio or total size exceeds the cap"),
    "archive_encrypted": ("error", "an archive entry is encrypted"),
    "archive_corrupt": (
        "error",
        "an archive entry is corrupt (CRC error, bad header, unsupported method)",
    ),
    "unreadable_directory": (
        "error",
        "a directory on the medium could not be listed; the files below it are missing",
    ),
    "nesting_limit": (
        "error",
        "an archive or image nested deeper than the nesting limit is not opened",
    ),
    "directory_loop": (
        "error",
        "a directory leads back to itself or has a bad extent: the entries below it are missing",
    ),
    # --- DICOMweb intake (QIDO-RS / WADO-RS) ------------------------------
    "remote_unreachable": (
        "error",
        "the DICOMweb server could not be reached or the connection broke; imported again later",
    ),
    "remote_refused": ("error", "the DICOMweb server answered an HTTP error status"),
    "remote_answer_invalid": (
        "error",
        "the DICOMweb server's search answer is not valid DICOM JSON (or lacks UIDs)",
    ),
    "multipart_malformed": (
        "error",
        "a WADO-RS answer is not a well-formed multipart/related body (boundary, headers, end)",
    ),
    # --- DICOMDIR ---------------------------------------------------------
    "dicomdir_invalid": (
        "warning",
        "the DICOMDIR is unreadable or loops; the files were found by a directory walk",
    ),
    "dicomdir_unsafe_path": ("error", "a DICOMDIR File ID escapes the medium root and was refused"),
    "missing_file": ("error", "a file named in the DICOMDIR is absent from the medium"),
    "unindexed_file": ("warning", "a DICOM file not named in the DICOMDIR (still imported)"),
    # --- single files -----------------------------------------------------
    "empty_file": ("error", "the file is empty"),
    "not_dicom": (
        "info",
        (
            "the file is not DICOM (no positive evidence of a dataset) although its name or "
            "place says it should be; kept in the spool, not sent"
        ),
    ),
    "truncated": (
        "error",
        "the file ends inside an element (declared length exceeds the bytes left)",
    ),
    "length_exceeds_file": ("error", "an element declares a length larger than the whole file"),
    "bad_vr": ("error", "an element has a value representation that is not two upper-case letters"),
    "undefined_length_misuse": (
        "error",
        "an undefined length on an element that cannot have one, or no delimiter",
    ),
    "nesting_too_deep": ("error", "sequences nested deeper than the configured limit"),
    "tag_order": ("error", "data elements are not in ascending tag order"),
    "ts_mismatch": (
        "error",
        "the body is not encoded in the transfer syntax its file meta declares",
    ),
    "bad_file_meta": ("error", "the file meta information is malformed or incomplete"),
    "deflate_bomb": ("error", "a deflated dataset inflates beyond the cap"),
    "missing_attribute": (
        "error",
        (
            "the SOP Class or SOP Instance UID is absent or unusable (empty, multi-valued, "
            "control or non-ASCII characters); the file is not sent"
        ),
    ),
    "invalid_uid": (
        "warning",
        (
            "a UID breaks PS3.5 9.1 (letters, empty component, over 64 characters) but is "
            "unambiguous; delivered as it is, as a PACS would store it (the detail names the UID)"
        ),
    ),
    "uid_mismatch": (
        "warning",
        (
            "File Meta Media Storage SOP Instance (or Class) UID differs from the dataset's; "
            "delivered, the dataset is authoritative"
        ),
    ),
    "pixel_length_mismatch": (
        "error",
        "native Pixel Data length disagrees with Rows x Columns x Frames",
    ),
    "unparsable": ("error", "the reference parser refused the file"),
    "trailing_data": ("warning", "bytes after the last element were ignored"),
    "charset_suspect": ("warning", "text values do not decode in the declared character set"),
    "bad_structure": (
        "error",
        "an item or delimiter where the encoding forbids it, or an element overrunning its item",
    ),
    "tag_unsorted": (
        "warning",
        "top-level data elements are unique but not in ascending order; forwarded unchanged",
    ),
    "pixel_length_excess": (
        "warning",
        "native Pixel Data is longer than its geometry needs (extra bytes kept)",
    ),
    # --- content classification -------------------------------------------
    "unsupported_content": ("warning", "a file of a kind pdimport does not import"),
    # --- grouping and policy -----------------------------------------------
    "multi_patient": ("error", "more than one patient on one medium"),
    "unidentified_patient": (
        "error",
        "a file names no patient and no study links it to one; the medium is held",
    ),
    "source_changed": (
        "error",
        (
            "a file changed between the survey of the medium and its copy (another patient, "
            "another UID): delivery stopped and the medium is held; what was sent stays sent"
        ),
    ),
    # --- reconciliation (IHE Import Reconciliation Workflow) ---------------
    "identity_source_down": (
        "error",
        "an identity source (worklist, registry, table) did not answer; the job is held",
    ),
    "coercion_failed": (
        "error",
        "the instance could not be rewritten to the local patient identity; it is not sent",
    ),
    "no_match": ("warning", "no local patient matches the patient on the medium"),
    "ambiguous_match": (
        "warning",
        "more than one local patient matches the patient on the medium; a person decides",
    ),
    "copy_undecodable": (
        "warning",
        (
            "a copy of an instance whose pixel data do not decode; another copy of the same "
            "instance, equal once decoded, is imported in its place (the detail says why)"
        ),
    ),
    "uid_conflict": (
        "error",
        "the same SOP Instance UID with different content; the later copy is kept, not sent",
    ),
    # --- delivery ---------------------------------------------------------
    "meta_repaired": (
        "warning",
        "the file meta was missing or disagreed with the dataset; rebuilt from the dataset",
    ),
    "vr_form_mismatch": (
        "warning",
        "explicit VR declared over an implicit VR body: read as implicit VR, sent re-encoded",
    ),
    "length_repaired": (
        "warning",
        "an odd element or fragment length was padded to even, as PS3.5 requires of a sender",
    ),
    "association_aborted": (
        "error",
        "the destination aborted the association (its reason, where it gave one, is in the detail)",
    ),
    "association_rejected": ("error", "the destination rejected the association"),
    "association_failed": (
        "error",
        "the destination could not be reached or aborted the association",
    ),
    "no_presentation_context": (
        "error",
        "the destination accepts neither this SOP class nor any usable transfer syntax",
    ),
    "commitment_failed": (
        "error",
        "the destination did not commit an instance it had acknowledged (storage commitment)",
    ),
    "commitment_unanswered": (
        "error",
        "the destination did not answer the storage commitment request; the job waits",
    ),
    "decode_refused": (
        "error",
        "the codestream's own header disagrees with rows, columns, samples, bits or frames",
    ),
    "decode_failed": (
        "error",
        "the object had to be decompressed for the destination and could not be",
    ),
    "store_failed": (
        "error",
        "the destination answered a C-STORE (or STOW-RS) with a failure status",
    ),
    "store_warning": ("warning", "the destination stored the object with a warning status"),
    "outcome_unknown": (
        "warning",
        "no C-STORE response (or STOW-RS answer for it) arrived; the object will be sent again",
    ),
    "write_failed": ("error", "writing to a file destination failed"),
    "tls_failed": (
        "error",
        "the HTTPS peer's certificate did not verify against the CA bundle, or it refused ours",
    ),
    "auth_refused": (
        "error",
        "the HTTP peer or its OAuth 2.0 token endpoint refused our credentials",
    ),
    "disk_full": (
        "error",
        "the appliance's disk or journal could not take more; intake paused, nothing lost",
    ),
    "journal_unavailable": (
        "error",
        "the shared journal's database cannot be reached; intake paused until it is back",
    ),
    "internal_error": (
        "error",
        "an unexpected error in pdimport itself; the rest of the medium went on",
    ),
    # --- Cloud PDI (pdimport.cloudpdi): a refused token delivers nothing ---
    "token_malformed": ("error", "the Cloud PDI token is not a token (bad encoding or fields)"),
    "token_undecryptable": (
        "error",
        "the Cloud PDI token is not encrypted to this appliance's key (or is damaged)",
    ),
    "token_expired": ("error", "the Cloud PDI token's expiry has passed"),
    "repository_unreachable": (
        "error",
        "the Cloud PDI repository could not be reached or refused us (network, TLS, OAuth)",
    ),
    "document_not_found": ("error", "the Cloud PDI repository has no document with that ID"),
    "manifest_invalid": (
        "error",
        "the Cloud PDI manifest is unusable (not JSON, unknown cipher, a part elsewhere)",
    ),
    "chunk_tampered": (
        "error",
        "a Cloud PDI chunk does not match its manifest hash or its AES-GCM tag",
    ),
}


@dataclass(frozen=True)
class Problem:
    """One recorded problem, as it appears in the JSON report."""

    code: str
    path: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.code not in PROBLEM_CODES:
            raise ValueError(f"unknown problem code {self.code!r}: add it to PROBLEM_CODES")

    @property
    def severity(self) -> str:
        return PROBLEM_CODES[self.code][0]

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "detail": self.detail}


class CodedError(Exception):
    """An exception that carries a problem code (checked against
    :data:`PROBLEM_CODES`) and a human-readable detail."""

    def __init__(self, code: str, detail: str = "") -> None:
        if code not in PROBLEM_CODES:
            raise ValueError(f"unknown problem code {code!r}")
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


class FileProblem(CodedError):
    """Raised inside the per-file units (scanner, identifier) and turned into a
    :class:`Problem` at the unit's boundary. Never escapes a job."""
