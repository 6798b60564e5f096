"""Printing results: aligned tables and human units for people, JSON for scripts."""
from __future__ import annotations

import base64
import datetime
import json
import sys
from typing import Any, Callable, Iterable, Sequence, TextIO

Formatter = Callable[[Any], str]


def human_bytes(value: Any, unit: int = 1) -> str:
    """'1536' -> '1.5K'; `unit` = 1024 for values counted in KiB. Non-numbers pass through."""
    if value in ("", None):
        return "-"
    try:
        number = float(value) * unit
    except (TypeError, ValueError):
        return str(value)
    for suffix in ("", "K", "M", "G", "T", "P"):
        if abs(number) < 1024 or suffix == "P":
            return f"{number:.0f}{suffix}" if suffix == "" else f"{number:.1f}{suffix}"
        number /= 1024
    return str(value)


def human_kib(value: Any) -> str:
    return human_bytes(value, 1024)


def human_duration(value: Any) -> str:
    """Seconds as '3d 4h', '2h 5m', '5m 3s', '42s'."""
    try:
        seconds = int(float(value))
    except (TypeError, ValueError):
        return str(value)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def yes_no(value: Any) -> str:
    return "yes" if value else "no"


# Fields whose unit is known from the method reference; anything else prints as is.
HUMAN: dict[str, Formatter] = {
    "uptime": human_duration, "running": yes_no, "admin": yes_no, "virtualize": yes_no,
    "memtotal": human_kib, "memavailable": human_kib, "space": human_kib,
    "recvb": human_bytes, "sendb": human_bytes, "failb": human_bytes,
}


def cell(key: str, value: Any, human: dict[str, Formatter] | None = None) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if value is None or value == "":
        return "-"
    fmt = (human or HUMAN).get(key)
    if fmt is not None:
        return fmt(value)
    if isinstance(value, bool):
        return yes_no(value)
    return str(value)


def table(rows: Sequence[Sequence[str]], header: Sequence[str] | None, out: TextIO) -> None:
    """Columns padded to their widest cell; the last column is not padded."""
    every = ([list(header)] if header else []) + [list(r) for r in rows]
    if not every:
        return
    widths = [max(len(r[i]) for r in every) for i in range(len(every[0]))]
    for r in every:
        padded = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1])] + [r[-1]]
        out.write("  ".join(padded).rstrip() + "\n")


def to_json(value: Any) -> Any:
    """What json.dumps can take: bytes (XML-RPC base64) become base64 text."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


class Output:
    """Where and how a command's result goes: `--json`, `-q` or tables for people."""

    def __init__(self, json_mode: bool = False, quiet: bool = False,
                 out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.json = json_mode
        self.quiet = quiet
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def done(self, line: str) -> None:
        """The one-line confirmation of a successful change (not with -q or --json)."""
        if not self.quiet and not self.json:
            self.out.write(line + "\n")

    def nothing(self) -> None:
        """An empty answer says so, on standard error: standard output stays what a
        script reading it expects (nothing), a person sees why there is no output."""
        if not self.quiet and not self.json:
            self.err.write("(none)\n")

    def json_value(self, value: Any) -> None:
        json.dump(to_json(value), self.out, indent=2, sort_keys=False)
        self.out.write("\n")

    def rows(self, records: Iterable[dict[str, Any]], columns: Sequence[str] | None = None,
             human: dict[str, Formatter] | None = None) -> None:
        records = list(records)
        if self.json:
            return self.json_value(records)
        if not records:
            return self.nothing()
        columns = list(columns or records[0].keys())
        cells = [[cell(c, r.get(c), human) for c in columns] for r in records]
        if self.quiet:
            for row in cells:
                self.out.write(row[0] + "\n")
            return
        table(cells, [c.upper() for c in columns], self.out)

    def mapping(self, record: dict[str, Any], human: dict[str, Formatter] | None = None) -> None:
        if self.json:
            return self.json_value(record)
        cells = [[f"{k}:", cell(k, v, human)] for k, v in record.items()]
        if self.quiet:
            for _, value in cells:
                self.out.write(value + "\n")
            return
        table(cells, None, self.out)

    def text(self, value: str) -> None:
        if self.json:
            return self.json_value(value)
        if value:
            self.out.write(value if value.endswith("\n") else value + "\n")

    def result(self, value: Any) -> None:
        """Any result by its shape: nil prints nothing (or null with --json)."""
        if self.json:
            return self.json_value(value)
        if value is None:
            return
        if isinstance(value, dict):
            return self.mapping(value)
        if isinstance(value, list):
            if not value:
                return self.nothing()
            if all(isinstance(v, dict) for v in value):
                return self.rows(value)
            for item in value:
                self.out.write(cell("", item) + "\n")
            return
        if isinstance(value, bytes):
            self.out.write(f"({len(value)} bytes of binary data)\n")
            return
        self.text(cell("", value) if not isinstance(value, str) else value)
