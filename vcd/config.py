"""The daemon's configuration: one TOML file, every key declared once here.

The declaration drives loading, validation, defaults and the documentation in
`vcd.conf.example`, so a key can't exist in one place and be missing in another.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# The key machinery lives below both vcd and vstatd; re-exported for vcd's modules.
from vcd.configkeys import (ConfigError, Key, abspath, boolean, check_keys, choice,  # noqa: F401
                            example_lines, host, int_list, int_range, loglevel, name_like,
                            number_range, octal_mode, optional_abspath, optional_str,
                            parse_keys, toml_value)
from vshelper import config as vshelper_config
from vstatd import config as vstatd_config

DEFAULT_CONFIG = Path("/etc/vcd/vcd.conf")
MAX_UID = 2**32 - 2


def _idmap_base(value: Any) -> int:
    v = int_range(131072, 65534 * 65536)(value)
    if v % 65536:
        raise ValueError("must be a multiple of 65536")
    return v


# Every key of the [vcd] settings (top level of the file). Order = order in vcd.conf.example.
KEYS: tuple[Key, ...] = (
    Key("host", "127.0.0.1", host,
        "Address to listen on (IPv4 or IPv6). Never expose it on an untrusted network."),
    Key("port", 13386, int_range(1, 65535), "TCP port of the XML-RPC server."),
    Key("timeout", 30.0, number_range(0.1, 3600),
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
    Key("rundir", "/run/vcd", abspath, "Runtime state: locks, supervisor socket, pidfiles. "
        "Its libvserver/ directory (the supervisor's records and console logs, written at "
        "every start and stop) gets a tmpfs of its own when it is empty and on a disk "
        "filesystem, as /run is a tmpfs on Debian."),
    Key("logfile", "", optional_abspath,
        "Log file; empty means standard error (foreground) or syslog-less stderr of the daemon.",
        example='"/var/log/vcd.log"'),
    Key("loglevel", "info", loglevel, "debug, info, warning or error."),
    Key("pidfile", "/run/vcd/vcd.pid", abspath, "Pidfile of the detached daemon."),
    Key("exec_timeout", 60.0, number_range(0.1, 86400),
        "Seconds a vx.exec command may run before it is killed."),
    Key("exec_output_cap", 1048576, int_range(1024, 64 * 1048576),
        "Bytes of combined stdout+stderr vx.exec returns at most."),
    Key("exec_timeout_max", 3600.0, number_range(0.1, 7 * 86400),
        "Largest 'timeout' (seconds) a vx.exec call may ask for; not below exec_timeout."),
    Key("task_keep_seconds", 86400, int_range(0, 365 * 86400),
        "Ended tasks (background: true) and their logs are pruned after this many seconds."),
    Key("task_keep_count", 1000, int_range(1, 10**6),
        "At most this many ended tasks of each user are kept (the newest): one user's "
        "tasks never push out another's."),
    Key("waiting_calls_per_user", 8, int_range(1, 4096),
        "Calls that wait (vx.exec, vx.start, vx.stop, ...: served in the workers' threads) "
        "one user who is not an admin may have in progress at once; a further one is "
        "refused with 302 until one ends."),
    Key("task_max_running", 32, int_range(1, 10**5),
        "Tasks one user may have running at once (each is a process); a further "
        "background call is refused with 302 until one of them ends."),
    Key("boot", False, boolean, "Start every member of the group 'onboot' when the daemon starts."),
    Key("cgroup_parent", "vcd", name_like,
        "Parent cgroup (in each controller) of every vserver's cgroup."),
    Key("idmap_base", 131072, _idmap_base,
        "First host uid/gid of xid 2's range; each vserver that is not privileged maps its "
        "ids 0..65535 onto 65536 host ids of its own (xid N at (N << 16) by default; a "
        "multiple of 65536 between 131072 and 4294836224; see libvserver/native/idmap.py)."),
    Key("unix_socket", "", optional_abspath,
        "Also serve XML-RPC on this Unix socket (empty = off). Clients use "
        "/run/vcd/vcd.sock by default when it exists.",
        example='"/run/vcd/vcd.sock"', example_active=True),
    Key("unix_socket_mode", "0660", octal_mode, "Permissions of the Unix socket."),
    Key("unix_socket_group", "", optional_str, "Group owning the Unix socket (empty = root)."),
    Key("unix_socket_trusted_uids", [0], int_list(0, MAX_UID),
        "Local users (uids) who are the user 'admin' on the Unix socket without a password "
        "when they send none (as Incus trusts local root); [] = always ask."),
    Key("tls_cert", "", optional_abspath, "PEM certificate: serve HTTPS instead of HTTP."),
    Key("tls_key", "", optional_abspath, "PEM private key for tls_cert."),
    Key("tls_client_ca", "", optional_abspath,
        "When set, clients must present a certificate signed by this CA."),
    Key("audit_log", "", optional_abspath,
        "Append one JSON line per mutating call (who, from where, method, params "
        "without secrets, result) to this file (empty = off)."),
    Key("default_nproc", 4096, int_range(0, 1 << 22),
        "NPROC limit (processes and threads) of a new vserver unless its template says "
        "otherwise (0 = none): a fork bomb inside cannot take the host's pids. Memory "
        "and disk stay unlimited until an admin sets them."),
)



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
    exec_timeout_max: float = 3600.0
    task_keep_seconds: int = 86400
    task_keep_count: int = 1000
    waiting_calls_per_user: int = 8
    task_max_running: int = 32
    boot: bool = False
    cgroup_parent: str = "vcd"
    idmap_base: int = 131072
    unix_socket: Path | None = None
    unix_socket_mode: int = 0o660
    unix_socket_group: str | None = None
    unix_socket_trusted_uids: tuple[int, ...] = (0,)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    audit_log: Path | None = None
    default_nproc: int = 4096
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

    def data(self) -> dict[str, Any]:
        """The values as a config file holds them: parse(config.data()) gives it back."""
        data: dict[str, Any] = {}
        for key in KEYS:
            value = getattr(self, key.name)
            if key.name == "unix_socket_mode":
                value = f"{value:04o}"
            elif value is None:
                value = ""
            elif isinstance(value, Path):
                value = str(value)
            data[key.name] = value
        return {**data, **self.sections}

    @property
    def taskdir(self) -> Path:
        return self.datadir / "tasks"

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


def parse(data: dict[str, Any], source: Path | None = None) -> Config:
    """Check a whole file's tables; a ConfigError lists every problem, each naming its key."""
    problems: list[str] = []
    sections: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        if name in data:
            if not isinstance(data[name], dict):
                problems.append(f"[{name}] must be a table")
            else:
                sections[name] = data[name]
    values, own = check_keys(KEYS, {k: v for k, v in data.items() if k not in SECTIONS},
                             also_known=SECTIONS)
    problems += own
    if "vstatd" in sections:
        # vstatd's keys are its own, but checked here too: a value is wrong when it is set
        problems += vstatd_config.check(sections["vstatd"])
    if "vshelper" in sections:
        problems += vshelper_config.check(sections["vshelper"])
    if (values.get("tls_cert") is None) != (values.get("tls_key") is None):
        problems.append("'tls_cert' and 'tls_key' must be given together")
    if values.get("exec_timeout") is not None and values.get("exec_timeout_max") is not None \
            and values["exec_timeout"] > values["exec_timeout_max"]:
        problems.append(f"'exec_timeout' ({values['exec_timeout']:g}) is above "
                        f"'exec_timeout_max' ({values['exec_timeout_max']:g})")
    if values.get("tls_client_ca") is not None and values.get("tls_cert") is None:
        problems.append("'tls_client_ca' needs 'tls_cert' and 'tls_key'")
    if problems:
        raise ConfigError(problems)
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
        raise exc.prefixed(f"{path}: ") from None


def example_text() -> str:
    """The documented example config: every key, its default, what it does."""
    lines = ["# vcd configuration (TOML). Every key is optional; shown with its default.", ""]
    lines += example_lines(KEYS)
    return ("\n".join(lines) + "\n" + vstatd_config.example_text() + "\n"
            + vshelper_config.example_text())
