"""The three plug-points of the Cloud PDI channel and the profile file that
chooses them.

A profile is a TOML file with one ``[profile]`` table::

    [profile]
    name = "reference"
    token_decoder = "pdimport.cloudpdi.token:ReferenceTokenDecoder"
    repository_client = "pdimport.cloudpdi.fhir:FhirRepository"
    package_decryptor = "pdimport.cloudpdi.package:ChunkDecryptor"

Each value is a dotted ``module:callable``; the callable is called with the
:class:`~pdimport.settings.Settings` and returns an object of the matching
Protocol below. Every failure they report is a
:class:`~pdimport.problems.CodedError` with one of the Cloud PDI problem
codes, never a bare exception: a refused token delivers nothing and says why.
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from pdimport.settings import Settings

PLUG_POINTS = ("token_decoder", "repository_client", "package_decryptor")


@dataclass(frozen=True)
class Token:
    """What a decrypted HI-TOKEN says (ISO/TS 22691 as HS043 uses it).

    ``password`` never appears in :meth:`metadata`, the report, the audit
    trail, the label or a log line.
    """

    community_id: str
    document_id: str
    password: str = field(repr=False)
    sending_facility: str = ""
    sender: str = ""
    receiver: str = ""
    issued: str = ""
    expires: str = ""
    consent: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        """The token's facts for the report, the audit trail and the label."""
        facts = asdict(self)
        facts.pop("password")
        if not facts.pop("extra"):
            return facts
        return {**facts, "extra": dict(self.extra)}

    @property
    def source_key(self) -> str:
        """The job's identity: a token added twice imports once."""
        return f"cloudpdi:{self.community_id}:{self.document_id}"


class TokenDecoder(Protocol):
    """Turns what arrived (a file, the text a QR scanner typed) into a Token.

    Raises CodedError ``token_malformed``, ``token_undecryptable`` or
    ``token_expired``.
    """

    def decode(self, data: bytes) -> Token: ...


class RepositoryClient(Protocol):
    """Finds a token's document and streams its parts.

    Raises CodedError ``repository_unreachable``, ``document_not_found`` or
    ``manifest_invalid``.
    """

    def manifest(self, token: Token) -> dict[str, Any]:
        """The document's manifest: which chunks make the package."""
        ...

    def fetch(self, ref: str, sink: BinaryIO, limit: int) -> int:
        """Stream the part ``ref`` (as the manifest names it) into ``sink``;
        more than ``limit`` bytes is ``chunk_tampered``. Returns the size."""
        ...

    def close(self) -> None: ...


class PackageDecryptor(Protocol):
    """Fetches, checks and decrypts every chunk into one package file.

    Returns the package's path (a zip or ISO image under ``workdir``).
    Raises CodedError ``chunk_tampered`` or ``manifest_invalid``; nothing
    half-checked is ever handed on.
    """

    def decrypt(
        self, token: Token, manifest: dict[str, Any], repository: RepositoryClient, workdir: Path
    ) -> Path: ...


@dataclass(frozen=True)
class Profile:
    """A loaded profile: its name and the three plug-point factories."""

    name: str
    path: str
    factories: dict[str, Any]

    def token_decoder(self, settings: Settings) -> TokenDecoder:
        return self.factories["token_decoder"](settings)

    def repository_client(self, settings: Settings) -> RepositoryClient:
        return self.factories["repository_client"](settings)

    def package_decryptor(self, settings: Settings) -> PackageDecryptor:
        return self.factories["package_decryptor"](settings)


class ProfileError(ValueError):
    """A profile file that cannot be used (a usage error, exit 64)."""


def resolve(dotted: str) -> Any:
    """``"package.module:callable"`` -> the callable."""
    module, sep, name = dotted.partition(":")
    if not sep or not module or not name:
        raise ProfileError(f"{dotted!r}: expected 'module:callable'")
    try:
        obj = importlib.import_module(module)
    except ImportError as exc:
        raise ProfileError(f"{dotted!r}: {exc}") from None
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ProfileError(f"{dotted!r}: {module} has no {name}") from None
    if not callable(obj):
        raise ProfileError(f"{dotted!r} is not callable")
    return obj


def load_profile(settings: Settings) -> Profile:
    """The profile of ``cloudpdi.profile``, or the packaged reference one."""
    path = settings.get("cloudpdi.profile")
    try:
        if path:
            text = Path(path).read_text(encoding="utf-8")
        else:
            path = "reference.toml (packaged)"
            text = resources.files("pdimport.cloudpdi").joinpath("reference.toml").read_text()
        table = tomllib.loads(text).get("profile")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"cloudpdi.profile {path}: {exc}") from None
    if not isinstance(table, dict):
        raise ProfileError(f"cloudpdi.profile {path}: no [profile] table")
    missing = [k for k in PLUG_POINTS if not isinstance(table.get(k), str)]
    if missing:
        raise ProfileError(f"cloudpdi.profile {path}: missing {', '.join(missing)}")
    return Profile(
        str(table.get("name", "")), str(path), {k: resolve(table[k]) for k in PLUG_POINTS}
    )
