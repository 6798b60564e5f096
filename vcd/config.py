"""The daemon's configuration: one TOML file, every key declared once here.

The declaration drives loading, validation, defaults and the documentation in
`vcd.conf.example`, so a key can't exist in one place and be missing in another.
"""
from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

DEFAULT_CONFIG = Path("/etc/vcd/vcd.conf")


class ConfigError(Exception):
    """A config file that cannot be used; the message names the key."""


def _host(value: Any) -> str:
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


def _number_range(lo: float, hi: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return float(value)
    return check


def abspath(value: Any) -> Path:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("must be an absolute path")
    return Path(os.path.normpath(value))


def optional_abspath(value: Any) -> Path | None:
    if value == "":
        return None
    return abspath(value)


def _bool(value: Any) -> bool:
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


def _octal_mode(value: Any) -> int:
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            raise ValueError("must be an octal mode like \"0660\"") from None
    return int_range(0, 0o777)(value)


def _optional_str(value: Any) -> str | None:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value or None


@dataclass(frozen=True)
class Key:
    name: str
    default: Any
    check: Callable[[Any], Any]
    doc: str
    example: str | None = None  # literal TOML for the example file, when not the default


# Every key of the [vcd] settings (top level of the file). Order = order in vcd.conf.example.
KEYS: tuple[Key, ...] = (
    Key("host", "127.0.0.1", _host,
        "Address to listen on (IPv4 or IPv6). Never expose it on an untrusted network."),
    Key("port", 13386, int_range(1, 65535), "TCP port of the XML-RPC server."),
    Key("timeout", 30.0, _number_range(0.1, 3600),
        "Socket timeout in seconds for one client connection (a slow client is dropped)."),
    Key("workers", 0, int_range(0, 256),
        "Pre-forked worker processes; 0 means 2 x the number of CPUs."),
    Key("max_requests", 10000, int_range(0, 10**9),
        "A worker is recycled after serving this many requests (0 = never)."),
    Key("max_request_size", 1048576, int_range(1024, 64 * 1048576),
        "Largest request body in bytes; larger ones are refused."),
    Key("datadir", "/var/lib/vcd", abspath,
        "Where VXDB (the SQLite file 'vxdb') and the first-start password files live."),
    Key("templatedir", "/var/lib/vcd/templates", abspath,
        "Template caches: <name>.tar[.gz|.bz2|.xz|.zst] or a directory <name>/, "
        "with optional metadata <name>.conf."),
    Key("vbasedir", "/vservers", abspath, "Default parent of vserver root directories."),
    Key("rundir", "/run/vcd", abspath, "Runtime state: locks, supervisor socket, pidfiles."),
    Key("logfile", "", optional_abspath,
        "Log file; empty means standard error (foreground) or syslog-less stderr of the daemon.",
        example='"/var/log/vcd.log"'),
    Key("loglevel", "info", loglevel, "debug, info, warning or error."),
    Key("pidfile", "/run/vcd/vcd.pid", abspath, "Pidfile of the detached daemon."),
    Key("exec_timeout", 60.0, _number_range(0.1, 86400),
        "Seconds a vx.exec command may run before it is killed."),
    Key("exec_output_cap", 1048576, int_range(1024, 64 * 1048576),
        "Bytes of combined stdout+stderr vx.exec returns at most."),
    Key("boot", False, _bool, "Start every member of the group 'onboot' when the daemon starts."),
    Key("cgroup_parent", "vcd", lambda v: _name_like(v, "cgroup_parent"),
        "Parent cgroup (in each controller) of every vserver's cgroup."),
    Key("unix_socket", "", optional_abspath,
        "Also serve XML-RPC on this Unix socket (empty = off)."),
    Key("unix_socket_mode", "0660", _octal_mode, "Permissions of the Unix socket."),
    Key("unix_socket_group", "", _optional_str, "Group owning the Unix socket (empty = root)."),
    Key("tls_cert", "", optional_abspath, "PEM certificate: serve HTTPS instead of HTTP."),
    Key("tls_key", "", optional_abspath, "PEM private key for tls_cert."),
    Key("tls_client_ca", "", optional_abspath,
        "When set, clients must present a certificate signed by this CA."),
    Key("audit_log", "", optional_abspath,
        "Append one JSON line per mutating call (who, from where, method, params "
        "without secrets, result) to this file (empty = off)."),
)


def _name_like(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or value in (".", ".."):
        raise ValueError("must be a plain name without '/'")
    return value


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 13386
    timeout: float = 30.0
    workers: int = 0
    max_requests: int = 10000
    max_request_size: int = 1048576
    datadir: Path = Path("/var/lib/vcd")
    templatedir: Path = Path("/var/lib/vcd/templates")
    vbasedir: Path = Path("/vservers")
    rundir: Path = Path("/run/vcd")
    logfile: Path | None = None
    loglevel: str = "info"
    pidfile: Path = Path("/run/vcd/vcd.pid")
    exec_timeout: float = 60.0
    exec_output_cap: int = 1048576
    boot: bool = False
    cgroup_parent: str = "vcd"
    unix_socket: Path | None = None
    unix_socket_mode: int = 0o660
    unix_socket_group: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    audit_log: Path | None = None
    # Tables for the other programs sharing the file ([vstatd], ...) are kept raw
    # and validated by their owners.
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: Path | None = None

    @property
    def vxdb_path(self) -> Path:
        return self.datadir / "vxdb"

    @property
    def worker_count(self) -> int:
        return self.workers or 2 * (os.cpu_count() or 1)

    @property
    def supervisor_dir(self) -> Path:
        """libvserver's state directory: the supervisor's socket, lock, log, records."""
        return self.rundir / "libvserver"

    def password_file(self, username: str) -> Path:
        return self.datadir / f"{username}.password"


# Tables other programs own; their keys are checked by them, not here.
SECTIONS = ("vstatd", "vshelper")

assert [k.name for k in KEYS] == [f.name for f in fields(Config)][: len(KEYS)], \
    "KEYS and Config must list the same keys in the same order"


def parse_keys(keys: tuple[Key, ...], data: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Check a table against its declared keys: every value converted, defaults filled
    in, and a ConfigError naming the key (and the table, `where`) otherwise."""
    known = {k.name: k for k in keys}
    values: dict[str, Any] = {}
    for name, raw in data.items():
        key = known.get(name)
        if key is None:
            raise ConfigError(f"unknown key '{name}'{where}")
        try:
            values[name] = key.check(raw)
        except ValueError as exc:
            raise ConfigError(f"bad value for '{name}'{where}: {exc}") from None
    for key in keys:
        if key.name not in values:
            values[key.name] = key.check(key.default) if key.default != "" else None
    return values


def parse(data: dict[str, Any], source: Path | None = None) -> Config:
    sections: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        if name in data:
            if not isinstance(data[name], dict):
                raise ConfigError(f"[{name}] must be a table")
            sections[name] = data[name]
    values = parse_keys(KEYS, {k: v for k, v in data.items() if k not in SECTIONS})
    if (values["tls_cert"] is None) != (values["tls_key"] is None):
        raise ConfigError("'tls_cert' and 'tls_key' must be given together")
    if values["tls_client_ca"] is not None and values["tls_cert"] is None:
        raise ConfigError("'tls_client_ca' needs 'tls_cert' and 'tls_key'")
    return Config(**values, sections=sections, source=source)


def load(path: Path | str | None) -> Config:
    """Load and validate a config file; None means the built-in defaults."""
    if path is None:
        return parse({})
    # absolute once, here: the daemon detaches to /, and the supervisor runs vshelper
    # (`-c <source>`) from /, long after the directory it was started in is forgotten
    path = Path(os.path.abspath(path))
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        return parse(data, source=path)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def example_lines(keys: tuple[Key, ...], commented: bool = False) -> list[str]:
    """Each key's doc and its default (or example) for an example config."""
    lines = []
    for key in keys:
        lines.append(f"# {key.doc}")
        shown = key.example if key.example is not None else toml_value(key.default)
        prefix = "# " if commented or key.example is not None else ""
        if key.default == "" and key.example is None:
            prefix, shown = "# ", '""'
        lines.append(f"{prefix}{key.name} = {shown}")
        lines.append("")
    return lines


def example_text() -> str:
    """The documented example config: every key, its default, what it does."""
    lines = ["# vcd configuration (TOML). Every key is optional; shown with its default.", ""]
    lines += example_lines(KEYS)
    from vstatd.config import example_text as vstatd_text  # late: vstatd.config imports this
    return "\n".join(lines) + "\n" + vstatd_text()
