"""The mix file: which kinds of referral disc the bench feeds, in which shares.

A TOML file (the default, ``default-mix.toml``, ships in this package and
documents every key). Strict when building: an unknown key, modality or
transfer syntax is a :class:`MixError` naming it, before any disc is made.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

#: The transfer syntaxes a series may be written in, by mix-file name.
SYNTAXES = {
    "explicit": "1.2.840.10008.1.2.1",
    "implicit": "1.2.840.10008.1.2",
    "jpeg_lossless": "1.2.840.10008.1.2.4.70",
    "j2k": "1.2.840.10008.1.2.4.90",
    "rle": "1.2.840.10008.1.2.5",
    "jpegls": "1.2.840.10008.1.2.4.80",
}
MODALITIES = ("CT", "MR", "CR", "US", "RT")
OTHER_CONTENT = ("pdf", "jpeg", "txt")
#: Which drives read which media: a CD drive reads CDs only, and so on.
MEDIA_ORDER = {"cd": 0, "dvd": 1, "bd": 2}
READS = {"cd": 0, "dvd": 1, "bd": 2, "usb": 2}

_KIND_KEYS = {
    "name",
    "description",
    "share",
    "media",
    "studies",
    "series",
    "other",
    "viewer_mb",
    "broken",
    "bad_sectors",
}
_SERIES_KEYS = {"modality", "images", "size", "syntax"}


class MixError(ValueError):
    """A mix file that cannot be used (a usage error)."""


@dataclass(frozen=True)
class SeriesSpec:
    modality: str
    images: int
    size: int
    syntax: str = "explicit"


@dataclass(frozen=True)
class DiscKind:
    name: str
    share: float
    media: str
    series: tuple[SeriesSpec, ...]
    studies: int = 1
    description: str = ""
    other: tuple[str, ...] = ()
    viewer_mb: float = 0.0
    broken: int = 0
    bad_sectors: int = 0


@dataclass(frozen=True)
class Mix:
    kinds: tuple[DiscKind, ...]
    seed: int = 1
    source: str = "default"
    extra: dict[str, Any] = field(default_factory=dict)

    def for_profile(self, profile: str) -> Mix:
        """The kinds a drive of ``profile`` can read (shares renormalised later)."""
        level = READS.get(profile, 2)
        kinds = tuple(k for k in self.kinds if MEDIA_ORDER[k.media] <= level)
        if not kinds:
            raise MixError(f"no kind of the mix fits a {profile} drive")
        return Mix(kinds, self.seed, self.source, self.extra)

    def shares(self) -> dict[str, float]:
        total = sum(k.share for k in self.kinds)
        return {k.name: k.share / total for k in self.kinds}

    def digest(self) -> str:
        """Names the discs this mix makes (the disc cache is keyed by it)."""
        blob = json.dumps([asdict(k) for k in self.kinds] + [self.seed], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def plan(self, count: int) -> list[DiscKind]:
        """``count`` discs in a fixed interleaved order that follows the shares:
        the k-th disc is the kind furthest behind its share (largest remainder),
        so any prefix of the plan is as close to the mix as it can be."""
        shares = self.shares()
        made = dict.fromkeys(shares, 0)
        by_name = {k.name: k for k in self.kinds}
        out: list[DiscKind] = []
        for n in range(1, count + 1):
            name = max(shares, key=lambda k: (shares[k] * n - made[k], shares[k]))
            made[name] += 1
            out.append(by_name[name])
        return out


def default_text() -> str:
    return resources.files("pdimport.capacity").joinpath("default-mix.toml").read_text("utf-8")


def load(path: str | Path | None = None) -> Mix:
    """The mix of ``path``, or the default mix."""
    if path is None:
        return parse(default_text(), "default")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MixError(f"cannot read the mix file {path}: {exc.strerror}") from None
    return parse(text, str(path))


def parse(text: str, source: str = "") -> Mix:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MixError(f"{source}: not TOML: {exc}") from None
    unknown = set(doc) - {"seed", "kind"}
    if unknown:
        raise MixError(f"{source}: unknown key(s) {sorted(unknown)} (expected seed, kind)")
    raw = doc.get("kind")
    if not isinstance(raw, list) or not raw:
        raise MixError(f"{source}: no [[kind]] tables")
    kinds = tuple(_kind(k, f"{source}: kind {i + 1}") for i, k in enumerate(raw))
    names = [k.name for k in kinds]
    if len(set(names)) != len(names):
        raise MixError(f"{source}: kind names repeat: {names}")
    seed = doc.get("seed", 1)
    if not isinstance(seed, int):
        raise MixError(f"{source}: seed must be an integer")
    return Mix(kinds, seed, source)


def _kind(raw: Any, where: str) -> DiscKind:
    if not isinstance(raw, dict):
        raise MixError(f"{where}: not a table")
    unknown = set(raw) - _KIND_KEYS
    if unknown:
        raise MixError(f"{where}: unknown key(s) {sorted(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise MixError(f"{where}: name must be a word (letters, digits, _)")
    where = f"{where} ({name})"
    share = raw.get("share", 1)
    if not isinstance(share, int | float) or share <= 0:
        raise MixError(f"{where}: share must be a positive number")
    media = raw.get("media", "cd")
    if media not in MEDIA_ORDER:
        raise MixError(f"{where}: media must be one of {sorted(MEDIA_ORDER)}")
    series = raw.get("series")
    if not isinstance(series, list) or not series:
        raise MixError(f"{where}: needs a series list")
    specs = tuple(_series(s, where) for s in series)
    if not any(s.modality != "RT" for s in specs):
        raise MixError(f"{where}: an RT set needs an image series beside it")
    other = tuple(raw.get("other", ()))
    bad = [o for o in other if o not in OTHER_CONTENT]
    if bad:
        raise MixError(f"{where}: other content {bad}: one of {list(OTHER_CONTENT)}")
    ints = {k: raw.get(k, d) for k, d in (("studies", 1), ("broken", 0), ("bad_sectors", 0))}
    for key, value in ints.items():
        if not isinstance(value, int) or value < (1 if key == "studies" else 0):
            raise MixError(f"{where}: {key} must be an integer >= {1 if key == 'studies' else 0}")
    viewer = raw.get("viewer_mb", 0)
    if not isinstance(viewer, int | float) or viewer < 0:
        raise MixError(f"{where}: viewer_mb must be >= 0")
    return DiscKind(
        name=name,
        share=float(share),
        media=media,
        series=specs,
        description=str(raw.get("description", "")),
        other=other,
        viewer_mb=float(viewer),
        **ints,
    )


def _series(raw: Any, where: str) -> SeriesSpec:
    if not isinstance(raw, dict):
        raise MixError(f"{where}: a series is a table")
    unknown = set(raw) - _SERIES_KEYS
    if unknown:
        raise MixError(f"{where}: unknown series key(s) {sorted(unknown)}")
    modality = raw.get("modality")
    if modality not in MODALITIES:
        raise MixError(f"{where}: modality {modality!r}: one of {list(MODALITIES)}")
    syntax = raw.get("syntax", "explicit")
    if syntax not in SYNTAXES:
        raise MixError(f"{where}: syntax {syntax!r}: one of {list(SYNTAXES)}")
    if modality == "US" and syntax in ("j2k", "jpegls"):
        # The US Image IOD takes RGB only uncompressed, in RLE or JPEG lossless
        # (PS3.3 C.8.5.6.1.2); JPEG 2000 and JPEG-LS would need YBR_RCT / lossy.
        raise MixError(f"{where}: US in {syntax}: use explicit, implicit, rle or jpeg_lossless")
    images, size = raw.get("images", 1), raw.get("size", 512)
    if not isinstance(images, int) or images < 1:
        raise MixError(f"{where}: images must be a positive integer")
    if not isinstance(size, int) or not 16 <= size <= 4096:
        raise MixError(f"{where}: size must be an integer in 16..4096")
    return SeriesSpec(modality, images, size, syntax)
