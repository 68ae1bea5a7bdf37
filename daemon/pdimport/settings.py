"""One settings table (after gunicorn's ``config.py``).

Each setting is declared once: name, type, default, command-line flag, doc.
The TOML loader, the CLI flags and the documentation all come from
:data:`SETTINGS`. :func:`load` builds one frozen :class:`Settings` object at
start-up; it is passed in, never stored globally.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping


class SettingsError(ValueError):
    """A bad config file or flag value (exit status 64)."""


@dataclass(frozen=True)
class Setting:
    name: str  # TOML key; dots for tables ("limits.max_nesting")
    type: type
    default: Any
    doc: str
    flag: str | None = None  # command-line flag, if the setting has one
    validate: Callable[[Any], bool] | None = None
    multiple: bool = False  # a list of values (flag may repeat)


def _positive(v: Any) -> bool:
    return v > 0


SETTINGS: tuple[Setting, ...] = (
    Setting("state_dir", str, "/var/lib/pdimport", "journal, spool, reports and audit trail",
            flag="--state-dir"),
    Setting("dest", str, [], "default destinations: dicom://AET@host:port or file:///path",
            flag="--dest", multiple=True),
    Setting("calling_aet", str, "PDIMPORT", "our AE title when we call a destination",
            flag="--calling-aet", validate=lambda v: 0 < len(v.strip()) <= 16),
    # the appliance (pdimport daemon)
    Setting("devices", str, ["sr*", "sd*"], "kernel names of block devices watched; sd* only "
            "ever matches USB (ID_BUS=usb)", flag="--devices", multiple=True),
    Setting("watch", str, "", "watch folder for ISO/zip/folder packages (empty = off)",
            flag="--watch"),
    Setting("eject_after", str, "delivered", "when the disc comes out: read | delivered",
            flag="--eject-after", validate=lambda v: v in ("read", "delivered")),
    Setting("debounce", float, 1.5, "seconds with no newer udev event before a disc is read",
            validate=_positive),
    Setting("watch_settle", float, 5.0, "seconds a dropped package must stay unchanged",
            validate=_positive),
    Setting("retry_max_delay", float, 300.0, "longest back-off while a destination is down",
            validate=_positive),
    Setting("stop_timeout", float, 15.0, "grace period on SIGTERM, seconds", validate=_positive),
    Setting("eject_retries", int, 5, "attempts to eject an optical tray", validate=_positive),
    # policy: AI results, Other Content, routes (issue 5)
    Setting("ai.policy", str, "mark", "AI results: mark (prefix and send) | hold | skip",
            flag="--ai", validate=lambda v: v in ("mark", "hold", "skip")),
    Setting("ai.prefix", str, "[AI]", "prefix put on SeriesDescription of AI results",
            validate=lambda v: 0 < len(v.strip()) <= 16),
    Setting("ai.patterns", str, [], "regular expressions naming AI products/keywords "
            "(empty = the built-in list)", multiple=True),
    Setting("convert_other_content", bool, True, "turn PDF/JPEG/PNG/TIFF/BMP/text into DICOM"),
    Setting("route", str, [], "KIND[:MODALITY]=URL: also send KIND (image, rt, ai, document, sr, "
            "other) there", flag="--route", multiple=True),
    # label printer
    Setting("printer.backend", str, "none", "label printer: none | zpl | cups | file",
            validate=lambda v: v in ("none", "zpl", "cups", "file")),
    Setting("printer.target", str, "", "zpl: tcp://host:9100 or /dev/usb/lp0; cups: queue name; "
            "file: folder"),
    Setting("printer.size", str, "62mm", "label stock: 62mm (continuous) | 4x2",
            validate=lambda v: v in ("62mm", "4x2")),
    Setting("printer.dpi", int, 203, "ZPL print-head resolution", validate=lambda v: v in (203, 300, 600)),
    Setting("printer.format", str, "pdf", "file back-end output: pdf | png",
            validate=lambda v: v in ("pdf", "png")),
    Setting("printer.timeout", float, 10.0, "printer connection / lp timeout, seconds",
            validate=_positive),
    Setting("printer.cups_options", str, "", "extra lp -o options, space-separated"),
    # audit trail
    Setting("audit.consent", str, "unknown", "the consent field written into every audit record"),
    Setting("audit.syslog", str, "", "PS3.15 audit repository: udp://host:514 or tcp://host:601"),
    Setting("audit.site_id", str, "", "AuditEnterpriseSiteID in PS3.15 messages"),
    Setting("audit.facility", str, "", "this site's name, recorded as the importing facility"),
    # network
    Setting("network.connection_timeout", float, 10.0, "TCP connect timeout, seconds",
            validate=_positive),
    Setting("network.acse_timeout", float, 30.0, "association negotiation timeout, seconds",
            validate=_positive),
    Setting("network.dimse_timeout", float, 60.0, "wait for one C-STORE response, seconds",
            validate=_positive),
    Setting("network.network_timeout", float, 60.0, "idle network timeout, seconds",
            validate=_positive),
    Setting("network.max_pdu", int, 0, "maximum PDU we receive (0 = unlimited)",
            validate=lambda v: v >= 0),
    Setting("network.associations", int, 4, "parallel associations (one worker process each) "
            "per destination, for deliveries of at least 64 instances or 64 MB; a "
            "destination's ?associations=N overrides", validate=lambda v: 1 <= v <= 32),
    Setting("network.retries", int, 3, "attempts per delivery run before the job waits",
            validate=_positive),
    Setting("network.retry_delay", float, 2.0, "first back-off between attempts, seconds",
            validate=lambda v: v >= 0),
    # reading limits (hostile media)
    Setting("limits.max_file_size", int, 8 << 30, "largest single file accepted, bytes",
            validate=_positive),
    Setting("limits.max_medium_size", int, 128 << 30, "largest total a medium may expand to",
            validate=_positive),
    Setting("limits.max_files", int, 500_000, "most entries a medium may hold", validate=_positive),
    Setting("limits.max_zip_ratio", int, 200, "largest compression ratio of a zip entry",
            validate=_positive),
    Setting("limits.max_nesting", int, 64, "deepest sequence nesting accepted (dcmtk: 64)",
            validate=_positive),
    Setting("limits.max_inflate", int, 2 << 30, "largest inflated deflate dataset, bytes",
            validate=_positive),
    Setting("limits.max_dicomdir_records", int, 1_000_000, "most DICOMDIR records walked",
            validate=_positive),
    # scanning
    Setting("scanner", str, "auto", "header scanner: auto | pydicom | numba", flag="--scanner",
            validate=lambda v: v in ("auto", "pydicom", "numba")),
)

_BY_NAME = {s.name: s for s in SETTINGS}


class Settings:
    """Frozen, typed view of the resolved settings: ``cfg.state_dir``,
    ``cfg.get("network.dimse_timeout")``."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def get(self, name: str) -> Any:
        return self._values[name]

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Settings are frozen")

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some values changed (dots written as '__' in keywords)."""
        values = dict(self._values)
        for key, value in changes.items():
            name = key.replace("__", ".")
            values[name] = _coerce(_BY_NAME[name], value)
        return Settings(values)

    @property
    def state_path(self) -> Path:
        return Path(self._values["state_dir"])


def _coerce(setting: Setting, value: Any) -> Any:
    def one(v: Any) -> Any:
        if setting.type is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if setting.type is int and isinstance(v, str):
            v = int(v, 0)
        if setting.type is float and isinstance(v, str):
            v = float(v)
        if setting.type is bool and isinstance(v, str):
            v = v.lower() in ("1", "true", "yes", "on")
        if not isinstance(v, setting.type) or (setting.type is int and isinstance(v, bool)):
            raise SettingsError(f"{setting.name}: expected {setting.type.__name__}, got {v!r}")
        if setting.validate and not setting.validate(v):
            raise SettingsError(f"{setting.name}: invalid value {v!r}")
        return v

    if setting.multiple:
        if isinstance(value, (str, int, float)):
            value = [value]
        return [one(v) for v in value]
    return one(value)


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in _BY_NAME:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def load(config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Defaults, then the TOML file, then command-line overrides (None = unset)."""
    values = {s.name: (list(s.default) if s.multiple else s.default) for s in SETTINGS}
    if config_file is not None:
        try:
            with open(config_file, "rb") as fp:
                doc = tomllib.load(fp)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"config {config_file}: {exc}") from exc
        for name, value in _flatten(doc).items():
            if name not in _BY_NAME:
                raise SettingsError(f"config {config_file}: unknown key {name!r}")
            values[name] = _coerce(_BY_NAME[name], value)
    for name, value in (overrides or {}).items():
        if value is None or (isinstance(value, list) and not value):
            continue
        values[name] = _coerce(_BY_NAME[name], value)
    return Settings(values)


def defaults() -> Settings:
    return load()


def describe() -> str:
    """The settings table as text, for ``pdimport config --help`` and the README."""
    rows = [f"{s.name:32} {s.type.__name__:6} {s.default!r:>20}  {s.doc}" for s in SETTINGS]
    return "\n".join(rows)
