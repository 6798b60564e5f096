"""Typed method parameters: conversion and validation of what arrives over XML-RPC.

Every type turns a wire value into a Python value or raises MEINVAL with a message
naming the parameter. A parameter that is omitted or sent as "" is *absent*.
"""
from __future__ import annotations

import ipaddress
import os
import re
import signal as _signal
from dataclasses import dataclass, field
from typing import Any

from vcd import vocab
from vcd.errors import invalid
from vcd.marshal import sent_text

ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT", "__bool__": lambda self: False})()

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CPULIST_RE = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


class ParamType:
    """Base of the parameter types; `wire` is the XML-RPC type for methodSignature."""
    wire = "string"
    description = "string"

    def convert(self, name: str, value: Any) -> Any:
        raise TypeError("ParamType.convert must be overridden")  # every subclass does

    @staticmethod
    def _string(name: str, value: Any) -> str:
        if isinstance(value, bytes):
            raise invalid(f"'{name}' must be a string, not base64")
        if not isinstance(value, str) and sent_text(value) is not None:
            # Perl's XML-RPC clients send a number-like string (a vserver named 123, the
            # password 00123456, a value 1.10) as <int> or <double>: its characters are meant
            value = sent_text(value)
        if not isinstance(value, str):
            raise invalid(f"'{name}' must be a string, got {_wire_name(value)}")
        if "\x00" in value:
            raise invalid(f"'{name}' must not contain NUL characters")
        return value


def _wire_name(value: Any) -> str:
    for kind, wire in ((bool, "boolean"), (int, "int"), (float, "double"), (str, "string"),
                       (dict, "struct"), (list, "array"), (bytes, "base64")):
        if isinstance(value, kind):
            return wire
    return type(value).__name__


@dataclass(frozen=True)
class Text(ParamType):
    max_len: int = 4096
    description: str = "string"

    def convert(self, name: str, value: Any) -> str:
        value = self._string(name, value)
        if len(value) > self.max_len:
            raise invalid(f"'{name}' is longer than {self.max_len} characters")
        return value


@dataclass(frozen=True)
class Pattern(ParamType):
    """A string the whole of which matches `regex` (fullmatch: a trailing newline or
    anything after a match is refused)."""
    regex: re.Pattern = _NAME_RE
    what: str = "a name"
    description: str = "string"

    def convert(self, name: str, value: Any) -> str:
        value = self._string(name, value)
        if not self.regex.fullmatch(value):
            raise invalid(f"'{name}' is not {self.what}: {value!r}")
        return value


# vservers, groups and templates: 1-64 of [A-Za-z0-9_.-], not starting with '.' or '-'
VServerName = Pattern(_NAME_RE, "a valid name (1-64 of A-Z a-z 0-9 _ . -, not starting "
                                "with '.' or '-')")
UserName = Pattern(_USER_RE, "a valid username (1-64 of A-Z a-z 0-9 _ . -, starting "
                             "alphanumeric)")


@dataclass(frozen=True)
class AbsPath(ParamType):
    max_len: int = 1024
    description: str = "absolute path"

    def convert(self, name: str, value: Any) -> str:
        value = self._string(name, value)
        if not value.startswith("/"):
            raise invalid(f"'{name}' must be an absolute path: {value!r}")
        if len(value) > self.max_len:
            raise invalid(f"'{name}' is longer than {self.max_len} characters")
        if any(part == ".." for part in value.split("/")):
            raise invalid(f"'{name}' must not contain '..': {value!r}")
        if any(ord(c) < 32 for c in value):
            raise invalid(f"'{name}' must not contain control characters")
        normalised = os.path.normpath(value)
        return "/" + normalised.lstrip("/")


@dataclass(frozen=True)
class Bool(ParamType):
    wire = "boolean"
    description: str = "boolean"

    def convert(self, name: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.lower() in ("0", "1", "true", "false"):
            return value.lower() in ("1", "true")
        raise invalid(f"'{name}' must be a boolean, got {value!r}")


@dataclass(frozen=True)
class Int(ParamType):
    lo: int = -(2**31)
    hi: int = 2**31 - 1
    wire = "int"
    description: str = "int"

    def convert(self, name: str, value: Any) -> int:
        if isinstance(value, bool):
            raise invalid(f"'{name}' must be an integer, got a boolean")
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,20}\s*", value):
            value = int(value)
        if not isinstance(value, int):
            raise invalid(f"'{name}' must be an integer, got {_wire_name(value)}")
        if not self.lo <= value <= self.hi:
            raise invalid(f"'{name}' must be between {self.lo} and {self.hi}, got {value}")
        return value


@dataclass(frozen=True)
class Number(ParamType):
    """A number of seconds and the like: int, double or decimal string, in [lo, hi]."""
    lo: float = 0.0
    hi: float = float(2**31 - 1)
    wire = "double"
    description: str = "number"

    def convert(self, name: str, value: Any) -> float:
        if isinstance(value, bool):
            raise invalid(f"'{name}' must be a number, got a boolean")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise invalid(f"'{name}' must be a number, got {value!r}") from None
        if not isinstance(value, (int, float)) or value != value:
            raise invalid(f"'{name}' must be a number, got {_wire_name(value)}")
        if not self.lo <= value <= self.hi:
            raise invalid(f"'{name}' must be between {self.lo:g} and {self.hi:g}, got {value:g}")
        return float(value)


@dataclass(frozen=True)
class UInt64(ParamType):
    """64-bit unsigned: int or decimal string, kept as canonical decimal text (XML-RPC
    ints stop at 2^31-1 and SQLite's at 2^63-1).

    Where unlimited is allowed (`allow_inf`) it is accepted as "inf", "-1", the int -1
    and 2^64-1 (int or string), and always comes back as "inf".
    """
    allow_inf: bool = True
    max: int = vocab.UINT64_MAX
    description: str = ('uint64 as decimal string; unlimited = "inf" ("-1", -1 and '
                        '18446744073709551615 mean the same and read back as "inf")')

    def convert(self, name: str, value: Any) -> str:
        if isinstance(value, bool):
            raise invalid(f"'{name}' must be an unsigned integer, got a boolean")
        if isinstance(value, int):
            number = value
        elif isinstance(value, str):
            text = value.strip()
            if text.lower() in ("inf", "infinity", "unlimited"):
                if self.allow_inf:
                    return "inf"
                raise invalid(f"'{name}' has no unlimited form here: give 0..{self.max}")
            if not re.fullmatch(r"-?\d{1,20}", text):
                raise invalid(f"'{name}' must be an unsigned decimal integer, got {value!r}")
            number = int(text)
        else:
            raise invalid(f"'{name}' must be an integer or decimal string, "
                          f"got {_wire_name(value)}")
        if self.allow_inf and number in (-1, vocab.UINT64_MAX):
            return "inf"
        if number < 0 or number > self.max:
            raise invalid(f"'{name}' must be between 0 and {self.max}"
                          + (' or "inf"' if self.allow_inf else "") + f", got {number}")
        return str(number)


@dataclass(frozen=True)
class Choice(ParamType):
    values: tuple[str, ...] = ()
    what: str = "value"
    description: str = "string"

    def convert(self, name: str, value: Any) -> str:
        value = self._string(name, value)
        if value not in self.values:
            raise invalid(f"'{name}' is not a known {self.what}: {value!r} "
                          f"(one of {', '.join(self.values)})")
        return value


@dataclass(frozen=True)
class IPv4(ParamType):
    description: str = "IPv4 address, dot-decimal"

    def convert(self, name: str, value: Any) -> str:
        value = self._string(name, value).strip()
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise invalid(f"'{name}' is not an IPv4 address in dot-decimal form: {value!r}") from None


@dataclass(frozen=True)
class Netmask(ParamType):
    description: str = "IPv4 netmask, dot-decimal (contiguous)"

    def convert(self, name: str, value: Any) -> str:
        value = self._string(name, value).strip()
        try:
            mask = int(ipaddress.IPv4Address(value))
        except ValueError:
            raise invalid(f"'{name}' is not a netmask in dot-decimal form: {value!r}") from None
        inverted = (~mask) & 0xFFFFFFFF
        if inverted & (inverted + 1):
            raise invalid(f"'{name}' is not a contiguous netmask: {value!r}")
        return value


@dataclass(frozen=True)
class CpuList(ParamType):
    description: str = "cpu list like 0-3,5"

    def convert(self, name: str, value: Any) -> str:
        value = self._string(name, value).replace(" ", "")
        if not _CPULIST_RE.fullmatch(value):
            raise invalid(f"'{name}' is not a list like '0-3,5': {value!r}")
        for part in value.split(","):
            lo, _, hi = part.partition("-")
            if hi and int(hi) < int(lo):
                raise invalid(f"'{name}' has a descending range: {part!r}")
        return value


@dataclass(frozen=True)
class Signal(ParamType):
    wire = "int"
    description: str = "signal number"

    def convert(self, name: str, value: Any) -> int:
        number = Int(0, 64).convert(name, value)
        if number != 0 and number not in {s.value for s in _signal.Signals} \
                and not _signal.SIGRTMIN <= number <= _signal.SIGRTMAX:
            raise invalid(f"'{name}' is not a valid signal number: {number}")
        return number


@dataclass(frozen=True)
class SignalName(ParamType):
    """A signal by name (vocab.signal_number), kept as given: "SIGRTMIN+3", "SIGPWR"."""
    description: str = "signal name"

    def convert(self, name: str, value: Any) -> str:
        value = self._string(name, value)
        # "" on the wire means "absent" (a set keeps the current value): "none" clears it
        if value.lower() == "none":
            return ""
        try:
            vocab.signal_number(value)
        except ValueError:
            raise invalid(f"'{name}' is not a signal name: {value!r}; expected "
                          f"{vocab.SIGNAL_FORMS}, or \"none\" to run the command") from None
        return value


@dataclass(frozen=True)
class Param:
    """One named method parameter.

    required: absent -> MEINVAL. Otherwise absent -> `default`.
    aliases: other names clients use for it (the manual and the reference
    implementation disagree in places: limit/type, uname/type, rebuild/force).
    """
    name: str
    type: ParamType
    required: bool = True
    default: Any = None
    aliases: tuple[str, ...] = ()
    doc: str = ""
    empty_is_value: bool = False  # "" is a real value, not "absent"
    secret: bool = False          # never logged or audited

    def take(self, given: dict[str, Any]) -> Any:
        for key in (self.name, *self.aliases):
            if key in given:
                value = given[key]
                break
        else:
            value = ABSENT
        if value is None or (value == "" and not self.empty_is_value):
            value = ABSENT
        if value is ABSENT:
            if self.required:
                raise invalid(f"missing parameter '{self.name}'")
            return self.default
        return self.type.convert(self.name, value)


def signature_of(params: tuple[Param, ...]) -> str:
    return "{" + ", ".join(f"{p.type.wire} {p.name}" for p in params) + "}"


@dataclass
class Params:
    """Converted parameters of one call, by name."""
    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]
