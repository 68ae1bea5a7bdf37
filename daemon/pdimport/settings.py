"""One settings table (after gunicorn's ``config.py``).

Each setting is declared once: name, type, default, allowed values (choices,
bounds or a custom check), command-line flag and the subcommands that take it,
and its doc. The TOML loader, the CLI flags (:func:`pdimport.cli.build_parser`)
and the documentation (:func:`describe`) all come from :data:`SETTINGS`.
:func:`load` builds one frozen :class:`Settings` object at start-up; it is
passed in, never stored globally.
"""

from __future__ import annotations

import difflib
import json
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any


class SettingsError(ValueError):
    """A bad config file or flag value (exit status 64)."""


class UndeclaredSetting(LookupError):
    """A setting name that :data:`SETTINGS` does not declare (a programming error)."""


#: Subcommands that take the flag of a setting with ``commands=ALL``.
ALL = (
    "import",
    "scan",
    "jobs",
    "report",
    "daemon",
    "status",
    "label",
    "audit",
    "settings",
    "demo",
    "release",
    "discard",
    "expect",
)


@dataclass(frozen=True)
class Setting:
    """One setting: everything the loader, the parser and the docs need.

    Attributes
    ----------
    name : str
        TOML key; dots for tables (``"limits.max_nesting"``).
    type : type
        ``str``, ``int``, ``float`` or ``bool`` (of each item if `multiple`).
    default : Any
        Value when neither the config file nor a flag sets it.
    doc : str
        One line of help (CLI ``--help`` and :func:`describe`).
    flag : str or None
        Command-line flag, if the setting has one.
    commands : tuple of str
        Subcommands whose parser gets `flag`.
    choices : tuple or None
        The allowed values.
    min, max : float or None
        Inclusive bounds (of the length, for strings); see `min_open`.
    min_open : bool
        `min` is exclusive (``> min``).
    validate : callable or None
        Extra check on a typed value; `allowed` then says what it accepts.
    allowed : str
        What `validate` accepts, for messages and docs.
    multiple : bool
        A list of values (the flag may repeat, or takes several with `nargs`).
    nargs : str or None
        ``"+"``: one flag takes several values instead of repeating.
    metavar : str or None
        Placeholder shown in ``--help``.
    """

    name: str
    type: type
    default: Any
    doc: str
    flag: str | None = None
    commands: tuple[str, ...] = ()
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    validate: Callable[[Any], bool] | None = None
    allowed: str = ""
    multiple: bool = False
    nargs: str | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """The argparse attribute of `flag` (``--calling-aet`` -> ``calling_aet``)."""
        return (self.flag or "").lstrip("-").replace("-", "_")

    def expected(self) -> str:
        """What a valid value looks like, e.g. ``'a number > 0'``."""
        if self.choices is not None:
            text = "one of " + ", ".join(json.dumps(c) for c in self.choices)
        else:
            text = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[
                self.type
            ]
            lo = _fmt(self.min) if self.min is not None else None
            hi = _fmt(self.max) if self.max is not None else None
            if self.type is str:
                text = "a non-empty string" if lo and lo != "0" else text
            elif lo is not None and hi is not None and not self.min_open:
                text += f" from {lo} to {hi}"
            elif lo is not None:
                text += f" {'>' if self.min_open else '>='} {lo}"
                if hi is not None:
                    text += f" and <= {hi}"
            elif hi is not None:
                text += f" <= {hi}"
            if self.allowed:
                text += f" ({self.allowed})"
        if self.multiple:
            text = f"a list whose items are each {text}"
        return text


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_IMPORT = ("import",)
_SEND = ("import", "daemon")
_DAEMON = ("daemon",)

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "state_dir",
        str,
        "/var/lib/pdimport",
        "journal, spool, reports and audit trail",
        flag="--state-dir",
        commands=ALL,
        metavar="DIR",
        min=1,
    ),
    Setting(
        "dest",
        str,
        [],
        "default destinations: dicom://AET@host:port or file:///path (flag repeatable)",
        flag="--dest",
        commands=_SEND,
        multiple=True,
        metavar="URL",
    ),
    Setting(
        "calling_aet",
        str,
        "PDIMPORT",
        "our AE title when we call a destination",
        flag="--calling-aet",
        commands=_SEND,
        metavar="AET",
        validate=lambda v: 0 < len(v.strip()) <= 16,
        allowed="1 to 16 characters",
    ),
    # the appliance (pdimport daemon)
    Setting(
        "devices",
        str,
        ["sr*", "sd*"],
        "kernel names of block devices watched, e.g. "
        "'sr*' 'loop*'; sd* only ever matches USB (ID_BUS=usb)",
        flag="--devices",
        commands=_DAEMON,
        multiple=True,
        nargs="+",
        metavar="GLOB",
        min=1,
    ),
    Setting(
        "watch",
        str,
        "",
        "watch folder for ISO/zip/folder packages (empty = off)",
        flag="--watch",
        commands=_DAEMON,
        metavar="DIR",
    ),
    Setting(
        "eject_after",
        str,
        "delivered",
        "when the disc comes out: read | delivered",
        flag="--eject-after",
        commands=_DAEMON,
        choices=("read", "delivered"),
    ),
    Setting(
        "debounce",
        float,
        1.5,
        "seconds with no newer udev event before a disc is read",
        min=0,
        min_open=True,
    ),
    Setting(
        "watch_settle",
        float,
        5.0,
        "seconds a dropped package must stay unchanged",
        min=0,
        min_open=True,
    ),
    Setting(
        "retry_max_delay",
        float,
        300.0,
        "longest back-off while a destination is down",
        min=0,
        min_open=True,
    ),
    Setting("stop_timeout", float, 15.0, "grace period on SIGTERM, seconds", min=0, min_open=True),
    Setting("eject_retries", int, 5, "attempts to eject an optical tray", min=1),
    # policy: AI results, Other Content, routes (issue 5)
    Setting(
        "ai.policy",
        str,
        "mark",
        "AI results: mark (prefix and send), hold the job, or skip them",
        flag="--ai",
        commands=_IMPORT,
        choices=("mark", "hold", "skip"),
    ),
    Setting(
        "ai.prefix",
        str,
        "[AI]",
        "prefix put on SeriesDescription of AI results",
        validate=lambda v: 0 < len(v.strip()) <= 16,
        allowed="1 to 16 characters",
    ),
    Setting(
        "ai.patterns",
        str,
        [],
        "regular expressions naming AI products/keywords (empty = the built-in list)",
        multiple=True,
    ),
    Setting("convert_other_content", bool, True, "turn PDF/JPEG/PNG/TIFF/BMP/text into DICOM"),
    Setting(
        "route",
        str,
        [],
        "KIND[:MODALITY]=URL: also send KIND (image, rt, ai, document, "
        "sr, other) there, e.g. rt=dicom://TPS@host:104 (flag repeatable)",
        flag="--route",
        commands=_IMPORT,
        multiple=True,
        metavar="KIND=URL",
    ),
    # patient reconciliation (IHE Import Reconciliation Workflow)
    Setting(
        "reconcile.sources",
        str,
        [],
        "where local patients are looked up, tried in order: mwl://AET@host:port, "
        "pdq://AET@host:port, csv:///path, sqlite:///path, expect: (flag repeatable; "
        "empty = no reconciliation)",
        flag="--identity",
        commands=("import", "daemon", "release"),
        multiple=True,
        metavar="URL",
    ),
    Setting(
        "reconcile.timeout",
        float,
        10.0,
        "seconds an identity source may take to answer",
        min=0,
        min_open=True,
    ),
    Setting(
        "reconcile.unmatched",
        str,
        "hold",
        "when no local patient matches: hold (a person decides), keep (foreign ID, "
        "issuer = the sending institution) or prefix (reconcile.prefix + foreign ID)",
        choices=("hold", "keep", "prefix"),
    ),
    Setting(
        "reconcile.prefix",
        str,
        "EXT-",
        "prefix put on a foreign Patient ID under reconcile.unmatched = prefix",
        validate=lambda v: 0 < len(v) <= 16 and "\\" not in v,
        allowed="1 to 16 characters, no backslash",
    ),
    Setting(
        "reconcile.accession",
        str,
        "keep",
        "AccessionNumber on reconciled instances: keep, clear, or worklist "
        "(the matched worklist entry's)",
        choices=("keep", "clear", "worklist"),
    ),
    Setting(
        "reconcile.issuer",
        str,
        "",
        "IssuerOfPatientID of local IDs when the identity source names none",
    ),
    Setting(
        "policy.multi_patient",
        str,
        "hold",
        "a medium with several patients: hold (a person releases each) or split "
        "(each reconciled and delivered on its own, never merged)",
        choices=("hold", "split"),
    ),
    # label printer
    Setting(
        "printer.backend",
        str,
        "none",
        "label printer back-end",
        choices=("none", "zpl", "cups", "file"),
    ),
    Setting(
        "printer.target",
        str,
        "",
        "zpl: tcp://host:9100 or /dev/usb/lp0; cups: queue name; file: folder",
    ),
    Setting(
        "printer.size",
        str,
        "62mm",
        "label stock: 62mm (continuous) or 4x2 inches",
        choices=("62mm", "4x2"),
    ),
    Setting("printer.dpi", int, 203, "ZPL print-head resolution", choices=(203, 300, 600)),
    Setting("printer.format", str, "pdf", "file back-end output", choices=("pdf", "png")),
    Setting(
        "printer.timeout",
        float,
        10.0,
        "printer connection / lp timeout, seconds",
        min=0,
        min_open=True,
    ),
    Setting("printer.cups_options", str, "", "extra lp -o options, space-separated"),
    # audit trail
    Setting("audit.consent", str, "unknown", "the consent field written into every audit record"),
    Setting("audit.syslog", str, "", "PS3.15 audit repository: udp://host:514 or tcp://host:601"),
    Setting("audit.site_id", str, "", "AuditEnterpriseSiteID in PS3.15 messages"),
    Setting("audit.facility", str, "", "this site's name, recorded as the importing facility"),
    # network
    Setting(
        "network.connection_timeout",
        float,
        10.0,
        "TCP connect timeout, seconds",
        min=0,
        min_open=True,
    ),
    Setting(
        "network.acse_timeout",
        float,
        30.0,
        "association negotiation timeout, seconds",
        min=0,
        min_open=True,
    ),
    Setting(
        "network.dimse_timeout",
        float,
        60.0,
        "wait for one C-STORE response, seconds",
        min=0,
        min_open=True,
    ),
    Setting(
        "network.network_timeout",
        float,
        60.0,
        "idle network timeout, seconds",
        min=0,
        min_open=True,
    ),
    Setting("network.max_pdu", int, 0, "maximum PDU we receive (0 = unlimited)", min=0),
    Setting(
        "network.associations",
        int,
        4,
        "parallel associations (one worker process each) "
        "per destination, for deliveries of at least 64 instances or 64 MB; a "
        "destination's ?associations=N overrides",
        min=1,
        max=32,
    ),
    Setting("network.retries", int, 3, "attempts per delivery run before the job waits", min=1),
    Setting("network.retry_delay", float, 2.0, "first back-off between attempts, seconds", min=0),
    # reading limits (hostile media)
    Setting("limits.max_file_size", int, 8 << 30, "largest single file accepted, bytes", min=1),
    Setting(
        "limits.max_medium_size",
        int,
        128 << 30,
        "largest total a medium may expand to, bytes",
        min=1,
    ),
    Setting("limits.max_files", int, 500_000, "most entries a medium may hold", min=1),
    Setting("limits.max_zip_ratio", int, 200, "largest compression ratio of a zip entry", min=1),
    Setting("limits.max_nesting", int, 64, "deepest sequence nesting accepted (dcmtk: 64)", min=1),
    Setting("limits.max_inflate", int, 2 << 30, "largest inflated deflate dataset, bytes", min=1),
    Setting("limits.max_dicomdir_records", int, 1_000_000, "most DICOMDIR records walked", min=1),
    # scanning
    Setting(
        "scanner",
        str,
        "auto",
        "header scanner",
        flag="--scanner",
        commands=("import", "scan"),
        choices=("auto", "pydicom", "numba"),
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


class Settings:
    """Frozen, typed view of the resolved settings: ``cfg.state_dir``,
    ``cfg.get("network.dimse_timeout")``.

    Reading a name that :data:`SETTINGS` does not declare raises
    (:class:`UndeclaredSetting` from :meth:`get`, ``AttributeError`` from
    attribute access): there are no silent defaults.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def get(self, name: str) -> Any:
        """The value of a declared setting (dotted name)."""
        try:
            return self._values[name]
        except KeyError:
            raise UndeclaredSetting(f"undeclared setting {name!r}") from None

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"undeclared setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Settings are frozen")

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed (dots written as '__' in keywords)."""
        values = dict(self._values)
        for key, value in changes.items():
            name = key.replace("__", ".")
            if name not in _BY_NAME:
                raise UndeclaredSetting(f"undeclared setting {name!r}")
            values[name] = check(_BY_NAME[name], value, text_ok=True)
        return Settings(values)

    @property
    def state_path(self) -> Path:
        return Path(self._values["state_dir"])


def _show(value: Any) -> str:
    """A value as it would be written in TOML (near enough: JSON)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _one(setting: Setting, v: Any, text_ok: bool) -> Any:
    """Type and check one item; raises ``ValueError`` (message: what is expected)."""
    t = setting.type
    if text_ok and isinstance(v, str) and t is not str:
        text = v.strip()
        try:
            if t is bool:
                low = text.lower()
                if low not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError(text)
                v = low in ("1", "true", "yes", "on")
            else:
                v = int(text, 0) if t is int else float(text)
        except ValueError:
            raise ValueError(setting.expected()) from None
    if t is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, t) or (t is not bool and isinstance(v, bool)):
        raise ValueError(setting.expected())
    size: Any = len(v) if isinstance(v, str) else v
    ok = (
        (setting.choices is None or v in setting.choices)
        and (
            setting.min is None or (size > setting.min if setting.min_open else size >= setting.min)
        )
        and (setting.max is None or size <= setting.max)
        and (setting.validate is None or setting.validate(v))
    )
    if not ok or (t is float and math.isnan(size)):  # NaN
        raise ValueError(setting.expected())
    return v


def check(setting: Setting, value: Any, text_ok: bool = False) -> Any:
    """`value` typed and checked against the table entry of `setting`.

    Parameters
    ----------
    setting : Setting
        The declaration (type, choices, bounds, validate).
    value : Any
        A TOML value, a flag's text or a Python value.
    text_ok : bool
        Accept text for numbers and booleans (flags, environment), which a
        config file must write as TOML numbers and booleans.

    Returns
    -------
    Any
        The typed value (a list if `setting.multiple`).

    Raises
    ------
    ValueError
        With what is allowed (:meth:`Setting.expected`) as the message.
    """
    if setting.multiple:
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError(setting.expected())
        return [_one(setting, v, text_ok) for v in value]
    return _one(setting, value, text_ok)


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in _BY_NAME:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _unknown(name: str) -> str:
    close = difflib.get_close_matches(name, list(_BY_NAME), n=1, cutoff=0.6)
    if not close:  # a misspelt table: match the last part alone
        leaf = name.rsplit(".", 1)[-1]
        close = [n for n in _BY_NAME if n.rsplit(".", 1)[-1] == leaf][:1]
    hint = f" (did you mean {close[0]!r}?)" if close else "; see 'pdimport settings'"
    return f"unknown setting {name!r}{hint}"


def read_file(config_file: str | Path) -> dict[str, Any]:
    """The typed values a TOML config file sets; :class:`SettingsError` names
    the file, the key, the value and what is allowed."""
    try:
        with open(config_file, "rb") as fp:
            doc = tomllib.load(fp)
    except OSError as exc:
        raise SettingsError(f"{config_file}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        where = str(exc)
        line = getattr(exc, "lineno", None)  # Python >= 3.14
        if line and "line" not in where:
            where += f" (line {line})"
        raise SettingsError(f"{config_file}: TOML syntax error: {where}") from None
    values: dict[str, Any] = {}
    for name, value in _flatten(doc).items():
        if name not in _BY_NAME:
            raise SettingsError(f"{config_file}: {_unknown(name)}")
        try:
            values[name] = check(_BY_NAME[name], value)
        except ValueError as exc:
            raise SettingsError(f"{config_file}: {name} = {_show(value)}: expected {exc}") from None
    return values


def load(
    config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Defaults, then the TOML file, then command-line overrides (None or [] = unset).

    Raises
    ------
    SettingsError
        A bad file, key or value; the message names them.
    """
    values = {s.name: (list(s.default) if s.multiple else s.default) for s in SETTINGS}
    if config_file is not None:
        values.update(read_file(config_file))
    for name, value in (overrides or {}).items():
        if value is None or (isinstance(value, list) and not value):
            continue
        setting = _BY_NAME.get(name)
        if setting is None:
            raise UndeclaredSetting(f"undeclared setting {name!r}")
        try:
            values[name] = check(setting, value, text_ok=True)
        except ValueError as exc:
            where = setting.flag or name
            raise SettingsError(f"{where} {_show(value)}: expected {exc}") from None
    return Settings(values)


def defaults() -> Settings:
    return load()


def declared(name: str) -> Setting:
    """The table entry of `name`; :class:`UndeclaredSetting` if there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UndeclaredSetting(f"undeclared setting {name!r}") from None


def describe() -> str:
    """Every setting from the table: name, flag, type, default, allowed values, doc."""
    blocks = []
    for s in SETTINGS:
        kind = f"list of {s.type.__name__}" if s.multiple else s.type.__name__
        head = f"{s.name}  ({kind}, default {_show(s.default)})"
        lines = [head, f"    {s.doc}", f"    allowed: {s.expected()}"]
        if s.flag:
            lines.append(f"    flag: {s.flag} ({', '.join(s.commands)})")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def as_records(cfg: Settings | None = None) -> list[dict[str, Any]]:
    """The table as JSON-ready records (``pdimport settings --json``)."""
    return [
        {
            "name": s.name,
            "type": s.type.__name__,
            "multiple": s.multiple,
            "default": s.default,
            "flag": s.flag,
            "commands": list(s.commands),
            "choices": list(s.choices) if s.choices is not None else None,
            "min": s.min,
            "max": s.max,
            "allowed": s.expected(),
            "doc": s.doc,
            **({"value": cfg.get(s.name)} if cfg is not None else {}),
        }
        for s in SETTINGS
    ]
