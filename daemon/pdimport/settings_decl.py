"""What a setting is (:class:`Setting`) and the errors of settings; the table
itself is :mod:`pdimport.settings_table`, the loader :mod:`pdimport.settings`."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
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
    "user",
    "keys",
    "token",
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
