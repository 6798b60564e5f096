"""The RRD layout: which databases a vserver has, their data sources and archives.

File and data-source names follow the reference vstatd so existing graph scripts
keep working: ``<rrddir>/<name>/<db>.rrd`` with

* ``thread_{TOTAL,RUNNING,UNINTR,ONHOLD}``: DS ``value``
* ``sys_LOADAVG``: DS ``1MIN 5MIN 15MIN``
* one file per limit the kernel counts (``mem_RSS``, ``sys_NPROC``, ``file_NOFILE`` ...):
  DS ``min cur max`` (memory limits in KiB, the others counts)
* ``net_<family or interface>``: DS ``recvp recvb sendp sendb failp failb``
* ``cpu``: DS ``user system`` (microseconds, DERIVE: the rate is CPU time per second)
* ``mem``: DS ``rss cache swap`` (bytes)

A metric name that comes in over the API is only ever turned into a path after
`valid_metric()` accepted it, and vserver names are checked by the same rule as
VXDB's, so no request can point outside ``<rrddir>/<name>/``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from libvserver import LIMIT_TYPES, MEMORY_LIMIT_TYPES

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
# net_ + a family (INET, INET6 ...) or an interface name as the kernel allows it, minus
# the characters that would be unsafe in a file name or an rrdtool argument
NET_RE = re.compile(r"net_[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")

# Interfaces are the guest's to name: root inside with NET_ADMIN makes (or renames one
# to) a new name as often as it likes, and each would be a file of about 220 KB on the
# host's disk, forever. A vserver gets files for its first MAX_NET_DBS names only.
MAX_NET_DBS = 32

THREAD_DBS = ("thread_TOTAL", "thread_RUNNING", "thread_UNINTR", "thread_ONHOLD")
LOADAVG_DB = "sys_LOADAVG"

# Limit type -> database name: the reference groups limits by what they limit.
_LIMIT_GROUP = {
    "NPROC": "sys", "CPU": "sys", "DATA": "sys", "STACK": "sys", "CORE": "sys",
    "SIGPENDING": "sys",
    "NOFILE": "file", "OPENFD": "file", "LOCKS": "file", "FSIZE": "file", "DENTRY": "file",
    "NSOCK": "file",
    "MSGQUEUE": "ipc", "SEMARY": "ipc", "NSEMS": "ipc",
}
LIMIT_DBS = {t: f"{'mem' if t in MEMORY_LIMIT_TYPES else _LIMIT_GROUP[t]}_{t}"
             for t in LIMIT_TYPES}
LIMIT_OF_DB = {db: t for t, db in LIMIT_DBS.items()}

# Archives: every step for 30 min, then MIN/MAX/AVERAGE at these (resolution, coverage).
RAW_COVERAGE = 30 * 60
CONSOLIDATED = ((60, 6 * 3600), (240, 86400), (7200, 30 * 86400), (86400, 365 * 86400))
XFF = 0.5


@dataclass(frozen=True)
class DataSource:
    name: str
    kind: str = "GAUGE"     # GAUGE or DERIVE
    minimum: str = "0"


@dataclass(frozen=True)
class Database:
    name: str
    sources: tuple[DataSource, ...]

    @property
    def ds_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sources)


def _gauges(name: str, *ds: str) -> Database:
    return Database(name, tuple(DataSource(d) for d in ds))


def _derives(name: str, *ds: str) -> Database:
    return Database(name, tuple(DataSource(d, "DERIVE") for d in ds))


NET_DS = ("recvp", "recvb", "sendp", "sendb", "failp", "failb")
LIMIT_DS = ("min", "cur", "max")
LOADAVG_DS = ("1MIN", "5MIN", "15MIN")

FIXED: dict[str, Database] = {
    **{db: _gauges(db, "value") for db in THREAD_DBS},
    LOADAVG_DB: _gauges(LOADAVG_DB, *LOADAVG_DS),
    "cpu": _derives("cpu", "user", "system"),
    "mem": _gauges("mem", "rss", "cache", "swap"),
    **{db: _gauges(db, *LIMIT_DS) for db in LIMIT_DBS.values()},
}


def database(metric: str) -> Database:
    """The database of a metric name; ValueError for anything outside the vocabulary."""
    if metric in FIXED:
        return FIXED[metric]
    if NET_RE.fullmatch(metric):
        # counters only grow: DERIVE turns them into rates (per second) for graphs
        return _derives(metric, *NET_DS)
    raise ValueError(f"unknown metric {metric!r}")


def valid_metric(metric: str) -> bool:
    return metric in FIXED or bool(NET_RE.fullmatch(metric))


def valid_name(name: str) -> bool:
    return bool(NAME_RE.fullmatch(name))


def metric_vocabulary() -> list[str]:
    return [*THREAD_DBS, LOADAVG_DB, "cpu", "mem", *LIMIT_DBS.values(), "net_<family|ifname>"]


def vserver_dir(rrddir: Path, name: str) -> Path:
    if not valid_name(name):
        raise ValueError(f"invalid vserver name {name!r}")
    return rrddir / name


def rrd_path(rrddir: Path, name: str, metric: str) -> Path:
    if not valid_metric(metric):
        raise ValueError(f"unknown metric {metric!r}")
    return vserver_dir(rrddir, name) / f"{metric}.rrd"


def heartbeat(step: int) -> int:
    # one missed sample is tolerated; longer gaps become unknown, not interpolated
    return 2 * step


def rra_specs(step: int) -> list[str]:
    specs = [f"RRA:AVERAGE:{XFF}:1:{math.ceil(RAW_COVERAGE / step)}"]
    for resolution, coverage in CONSOLIDATED:
        per_row = max(1, round(resolution / step))
        rows = math.ceil(coverage / (per_row * step))
        for cf in ("MIN", "MAX", "AVERAGE"):
            specs.append(f"RRA:{cf}:{XFF}:{per_row}:{rows}")
    return specs


def create_args(db: Database, step: int, start: int) -> list[str]:
    hb = heartbeat(step)
    return ["--start", str(start), "--step", str(step),
            *(f"DS:{s.name}:{s.kind}:{hb}:{s.minimum}:U" for s in db.sources),
            *rra_specs(step)]
