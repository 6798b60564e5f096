"""How a config table is declared and checked: `Key`s with a check each, and one pass
over a table that reports every bad key at once.

Shared by vcd's own keys (`vcd.config`) and the tables other programs own in the same
file (`vstatd.config`), so both validate, default and document their keys alike. It
imports nothing of the project: both sides depend on it, not on each other.
"""
from __future__ import annotations

import difflib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable


class ConfigError(Exception):
    """A config that cannot be used. `problems` holds one line per bad key (all of
    them, not only the first); str() is those lines."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def prefixed(self, prefix: str) -> "ConfigError":
        """The same problems, each line starting with `prefix` (a file name)."""
        return ConfigError([f"{prefix}{p}" for p in self.problems])


def host(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    if value != "localhost":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4/IPv6 address or 'localhost'") from None
    return value


def int_range(lo: int, hi: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value
    return check


def number_range(lo: float, hi: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return float(value)
    return check


def int_list(lo: int, hi: int) -> Callable[[Any], tuple[int, ...]]:
    def check(value: Any) -> tuple[int, ...]:
        if not isinstance(value, list):
            raise ValueError(f"must be a list of integers between {lo} and {hi}, e.g. [0]")
        item = int_range(lo, hi)
        try:
            return tuple(item(v) for v in value)
        except ValueError as exc:
            raise ValueError(f"each entry {exc}") from None
    return check


def abspath(value: Any) -> Path:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return Path(os.path.normpath(value))


def optional_abspath(value: Any) -> Path | None:
    if value == "":
        return None
    return abspath(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def choice(values: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return value
    return check


def loglevel(value: Any) -> str:
    return choice(("debug", "info", "warning", "error"))(value)


def octal_mode(value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            raise ValueError("must be an octal mode like \"0660\"") from None
    return int_range(0, 0o777)(value)


def optional_str(value: Any) -> str | None:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value or None


def name_like(value: Any) -> str:
    if not isinstance(value, str) or not value or "/" in value or value in (".", ".."):
        raise ValueError("must be a plain name without '/'")
    return value


@dataclass(frozen=True)
class Key:
    name: str
    default: Any
    check: Callable[[Any], Any]
    doc: str
    example: str | None = None  # literal TOML for the example file, when not the default
    example_active: bool = False  # the example is set (not commented out) in the example file


def suggestion(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'port'?)' for a near miss of a known name, else ''."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_keys(keys: tuple[Key, ...], data: dict[str, Any], where: str = "",
               also_known: tuple[str, ...] = ()) -> tuple[dict[str, Any], list[str]]:
    """Check a table against its declared keys: (values converted with defaults filled
    in, one problem line per bad key naming it and the table `where`). `also_known`
    are names that are valid here but checked elsewhere (tables), offered as suggestions."""
    known = {k.name: k for k in keys}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, raw in data.items():
        key = known.get(name)
        if key is None:
            problems.append(f"unknown key '{name}'{where}"
                            f"{suggestion(name, [*known, *also_known])}")
            continue
        try:
            values[name] = key.check(raw)
        except ValueError as exc:
            problems.append(f"bad value for '{name}'{where}: {exc}")
    for key in keys:
        if key.name not in values:
            values[key.name] = key.check(key.default) if key.default != "" else None
    return values, problems


def parse_keys(keys: tuple[Key, ...], data: dict[str, Any], where: str = "") -> dict[str, Any]:
    """`check_keys`, raising a ConfigError with every problem when there is one."""
    values, problems = check_keys(keys, data, where)
    if problems:
        raise ConfigError(problems)
    return values


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def example_lines(keys: tuple[Key, ...], commented: bool = False) -> list[str]:
    """Each key's doc and its default (or example) for an example config."""
    lines = []
    for key in keys:
        lines.append(f"# {key.doc}")
        shown = key.example if key.example is not None else toml_value(key.default)
        prefix = "# " if commented or (key.example is not None and not key.example_active) else ""
        if key.default == "" and key.example is None:
            prefix, shown = "# ", '""'
        lines.append(f"{prefix}{key.name} = {shown}")
        lines.append("")
    return lines
