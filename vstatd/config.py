"""The [vstatd] table of vcd.conf: declared, validated and documented here.

vcd keeps the table raw (`Config.sections["vstatd"]`); vstatd and the vx.stats /
vx.graph methods both read it through `settings()`, so the two always agree on
where the RRD files are.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol

from vcd.configkeys import (Key, abspath, check_keys, choice, example_lines, int_range, loglevel,
                            optional_abspath, parse_keys)

ON_REMOVE = ("keep", "delete")


KEYS: tuple[Key, ...] = (
    Key("rrddir", "/var/lib/vcd/rrd", abspath,
        "Round Robin Databases, one directory per vserver: <rrddir>/<name>/<db>.rrd."),
    # RRD timestamps are whole seconds; above a minute the 1-minute archive would be empty
    Key("step", 5, int_range(1, 60),
        "Seconds between two samples (1-60). Files keep the step they were created with."),
    Key("flush_interval", 60, int_range(0, 3600),
        "Seconds samples may wait in memory before they are written, many per file in one "
        "update (0 = write every step). Spread over the interval; flushed on exit."),
    Key("logfile", "", optional_abspath,
        "Log file of vstatd; empty means standard error.", example='"/var/log/vstatd.log"'),
    Key("loglevel", "info", loglevel, "debug, info, warning or error."),
    Key("pidfile", "/run/vcd/vstatd.pid", abspath, "Pidfile of the detached vstatd."),
    Key("on_remove", "keep", choice(ON_REMOVE),
        "What vx.remove does to the RRD files of the vserver it removes: keep (moved into "
        "<rrddir>/.removed/, out of the way of a later vserver) or delete."),
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


WHERE = " in [vstatd]"


class HasSections(Protocol):
    """A loaded vcd config (`vcd.config.Config`): its raw tables by name."""
    sections: Mapping[str, dict[str, Any]]


def check(table: dict[str, Any]) -> list[str]:
    """Every problem of a raw [vstatd] table, one line per bad key (vcd.config's load
    reports them beside its own)."""
    return check_keys(KEYS, table, WHERE)[1]


def parse(table: dict[str, Any]) -> Settings:
    """Validate a raw [vstatd] table; ConfigError names every offending key."""
    return Settings(**parse_keys(KEYS, table, WHERE))


def settings(config: HasSections) -> Settings:
    return parse(config.sections.get("vstatd", {}))


def example_text() -> str:
    """The commented [vstatd] table for vcd.conf.example."""
    lines = ["# vstatd, the statistics daemon (vstatd -c this-file), reads this table.",
             "# [vstatd]"]
    return "\n".join(lines + [line for line in example_lines(KEYS, commented=True) if line]) + "\n"
