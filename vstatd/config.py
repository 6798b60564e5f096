"""The [vstatd] table of vcd.conf: declared, validated and documented here.

vcd keeps the table raw (`Config.sections["vstatd"]`); vstatd and the vx.stats /
vx.graph methods both read it through `settings()`, so the two always agree on
where the RRD files are.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vcd.config import Config, ConfigError, _toml_value

ON_REMOVE = ("keep", "delete")


def _abspath(value: Any) -> Path:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return Path(os.path.normpath(value))


def _optional_abspath(value: Any) -> Path | None:
    return None if value == "" else _abspath(value)


def _step(value: Any) -> int:
    # RRD timestamps are whole seconds; above 5 min the 1-minute archive would be empty
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 60:
        raise ValueError("must be an integer number of seconds between 1 and 60")
    return value


def _flush(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3600:
        raise ValueError("must be an integer number of seconds between 0 and 3600")
    return value


def _choice(values: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in values:
            raise ValueError(f"must be one of {', '.join(values)}")
        return value
    return check


def _loglevel(value: Any) -> str:
    return _choice(("debug", "info", "warning", "error"))(value)


@dataclass(frozen=True)
class Key:
    name: str
    default: Any
    check: Callable[[Any], Any]
    doc: str
    example: str | None = None


KEYS: tuple[Key, ...] = (
    Key("rrddir", "/var/lib/vcd/rrd", _abspath,
        "Round Robin Databases, one directory per vserver: <rrddir>/<name>/<db>.rrd."),
    Key("step", 5, _step,
        "Seconds between two samples (1-60). Files keep the step they were created with."),
    Key("flush_interval", 60, _flush,
        "Seconds samples may wait in memory before they are written, many per file in one "
        "update (0 = write every step). Spread over the interval; flushed on exit."),
    Key("logfile", "", _optional_abspath,
        "Log file of vstatd; empty means standard error.", example='"/var/log/vstatd.log"'),
    Key("loglevel", "info", _loglevel, "debug, info, warning or error."),
    Key("pidfile", "/run/vcd/vstatd.pid", _abspath, "Pidfile of the detached vstatd."),
    Key("on_remove", "keep", _choice(ON_REMOVE),
        "What happens to the RRD files of a removed vserver: keep (moved aside when a new "
        "vserver takes the name) or delete."),
)


@dataclass(frozen=True)
class Settings:
    rrddir: Path = Path("/var/lib/vcd/rrd")
    step: int = 5
    flush_interval: int = 60
    logfile: Path | None = None
    loglevel: str = "info"
    pidfile: Path = Path("/run/vcd/vstatd.pid")
    on_remove: str = "keep"


def parse(table: dict[str, Any]) -> Settings:
    """Validate a raw [vstatd] table; ConfigError names the offending key."""
    known = {k.name: k for k in KEYS}
    values: dict[str, Any] = {}
    for name, raw in table.items():
        key = known.get(name)
        if key is None:
            raise ConfigError(f"unknown key '{name}' in [vstatd]")
        try:
            values[name] = key.check(raw)
        except ValueError as exc:
            raise ConfigError(f"bad value for '{name}' in [vstatd]: {exc}") from None
    for key in KEYS:
        if key.name not in values:
            values[key.name] = key.check(key.default) if key.default != "" else None
    return Settings(**values)


def settings(config: Config) -> Settings:
    return parse(config.sections.get("vstatd", {}))


def example_text() -> str:
    """The commented [vstatd] table for vcd.conf.example."""
    lines = ["# vstatd, the statistics daemon (vstatd -c this-file), reads this table.",
             "# [vstatd]"]
    for key in KEYS:
        lines.append(f"# {key.doc}")
        shown = key.example if key.example is not None else (
            '""' if key.default == "" else _toml_value(key.default))
        lines.append(f"# {key.name} = {shown}")
    return "\n".join(lines) + "\n"
