"""The [vshelper] table of vcd.conf: declared, validated and documented here.

vshelper (vshelper.main) reads the raw table from `Config.sections["vshelper"]`;
vcd's config loader checks it with `check()` so a typo (`urll`) is reported by
`vcd --check-config` instead of being ignored until the kernel helper runs.
"""
from __future__ import annotations

from typing import Any

from vcd.configkeys import Key, check_keys, example_lines, name_like, optional_abspath


def _url(value: Any) -> str | None:
    if value == "":
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://", "unix://")):
        raise ValueError("must be an http://, https:// or unix:// URL")
    return value


KEYS: tuple[Key, ...] = (
    Key("url", "", _url,
        "Where vshelper calls vcd back; empty: vcd's unix_socket if set, else its host and port.",
        example='"unix:///run/vcd/vcd.sock"'),
    Key("cacert", "", optional_abspath,
        "CA certificate for an https:// url; empty: vcd's own tls_cert (self-signed).",
        example='"/etc/vcd/vcd.crt"'),
    Key("username", "vshelper", name_like, "The user vshelper logs in as (capability HELPER)."),
    Key("password_file", "", optional_abspath,
        "Its password; empty: <datadir>/vshelper.password, written by the first start.",
        example='"/var/lib/vcd/vshelper.password"'),
)

WHERE = " in [vshelper]"


def check(table: dict[str, Any]) -> list[str]:
    """Every problem of a raw [vshelper] table, one line per bad key naming it."""
    return check_keys(KEYS, table, WHERE)[1]


def example_text() -> str:
    """The commented [vshelper] table for vcd.conf.example."""
    lines = ["# vshelper, the kernel helper (vshelper ACTION XID), reads this table.",
             "# [vshelper]"]
    return "\n".join(lines + [line for line in example_lines(KEYS, commented=True) if line]) + "\n"
