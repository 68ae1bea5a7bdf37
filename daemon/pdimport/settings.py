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
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pdimport.settings_decl import ALL, Setting, SettingsError, UndeclaredSetting
from pdimport.settings_table import SETTINGS

__all__ = [
    "ALL",
    "SETTINGS",
    "Setting",
    "Settings",
    "SettingsError",
    "UndeclaredSetting",
    "as_records",
    "check",
    "declared",
    "defaults",
    "describe",
    "load",
    "read_file",
]

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
