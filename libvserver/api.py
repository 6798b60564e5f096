"""The typed interface the daemon uses, identical for both backends.

Everything here is plain data plus the abstract :class:`Backend`; a spec
round-trips through :meth:`ContextSpec.to_dict` / :meth:`ContextSpec.from_dict`
because the native backend hands it to its supervisor process as JSON.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

# Vocabularies of the manual (DESIGN.md "Value vocabularies"), case-sensitive.
LIMIT_TYPES = ("CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK",
               "AS", "LOCKS", "SIGPENDING", "MSGQUEUE", "NSOCK", "OPENFD", "ANON", "SHMEM",
               "SEMARY", "NSEMS", "DENTRY", "MAPPED")
# Limit types whose values are KiB; the others are counts (CPU: seconds).
MEMORY_LIMIT_TYPES = frozenset({"RSS", "AS", "ANON", "MAPPED", "MEMLOCK", "SHMEM"})
UNAME_TYPES = ("SYSNAME", "NODENAME", "RELEASE", "VERSION", "MACHINE", "DOMAINNAME")
CCAPS = ("SET_UTSNAME", "SET_RLIMIT", "RAW_ICMP", "SYSLOG", "SECURE_MOUNT", "SECURE_REMOUNT",
         "BINARY_MOUNT", "QUOTA_CTL", "ADMIN_MAPPER", "ADMIN_CLOOP")
FLAGS = ("INFO_PRIVATE", "INFO_INIT", "INFO_HIDE", "SCHED_HARD", "SCHED_PRIO", "SCHED_PAUSE",
         "VIRT_MEM", "VIRT_UPTIME", "VIRT_CPU", "VIRT_LOAD", "VIRT_TIME", "HIDE_MOUNT",
         "HIDE_NETIF", "HIDE_VINFO", "FORK_RSS")
BCAPS = ("CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
         "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
         "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
         "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
         "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
         "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
         "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE")
# The capability number is the index in BCAPS (linux/capability.h order).
CAP_NUMBERS = {name: i for i, name in enumerate(BCAPS)}
# API filesystems mounted before init for a distribution's own init (issue 16): "run" a
# tmpfs on /run, "run-lock" a tmpfs on /run/lock, "cgroup" the vserver's own cgroup2
# view on /sys/fs/cgroup (a cgroup namespace rooted at its group). systemd refuses to
# boot without them ("Failed to mount API filesystems").
API_MOUNTS = ("run", "run-lock", "cgroup")
# How start() tells that init is up: "" once it has exec'd, "notify" on READY=1 through
# NOTIFY_SOCKET (as systemd-nspawn --notify-ready), bounded by the init timeout.
READY_MODES = ("", "notify")

MIN_XID, MAX_XID = 2, 65534
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class LibvserverError(Exception):
    """Base of every error libvserver raises on purpose."""


class AlreadyRunning(LibvserverError):
    """The context is running already."""


class NotRunning(LibvserverError):
    """The context is not running."""


class StartError(LibvserverError):
    """A context could not be started; nothing of it was left behind."""


class InitMissing(StartError):
    """The init command does not exist (or is not executable) inside the vdir."""


class MountError(StartError):
    """A mount of the spec (or of /proc, /sys, /dev) failed or would leave the vdir."""


class QuotaError(StartError):
    """The disk limit could not be set up (e.g. the quota image cannot be made)."""


class NetworkError(StartError):
    """The network namespace, veth pair or an address could not be configured."""


class InvalidSpec(LibvserverError, ValueError):
    """A spec value is outside its vocabulary or range."""


class NoSuchProcess(LibvserverError):
    """kill() named a pid that does not exist inside the context."""


class SyscallError(LibvserverError, OSError):
    """A sys_vserver command failed; the message names the command."""

    def __init__(self, errno_: int, command: str, detail: str = "") -> None:
        import os
        msg = f"sys_vserver {command}: {os.strerror(errno_)}"
        if detail:
            msg += f" ({detail})"
        OSError.__init__(self, errno_, msg)
        self.command = command


@dataclass(frozen=True)
class Limit:
    """One resource limit; memory types in KiB; ``None`` means unlimited."""
    type: str
    soft: int | None = None
    hard: int | None = None


@dataclass(frozen=True)
class Sched:
    """A token-bucket scheduler setting of the vserver kernel."""
    cpuid: int = -1
    interval: int = 0
    fillrate: int = 0
    interval2: int = 0
    fillrate2: int = 0
    tokensmin: int = 0
    tokensmax: int = 0


@dataclass(frozen=True)
class CpuSet:
    cpus: str
    mems: str = ""
    virtualize: bool = False


@dataclass(frozen=True)
class Mount:
    """``dst`` is relative to the vdir; ``src`` is a host path or a label (tmpfs, none)."""
    src: str
    dst: str
    type: str = ""
    opts: str = ""


@dataclass(frozen=True)
class NetAddr:
    addr: str
    netmask: str = "255.255.255.0"


@dataclass(frozen=True)
class DiskLimit:
    space_kib: int
    inodes: int
    reserved_pct: int = 5


@dataclass
class ContextSpec:
    xid: int
    name: str
    vdir: Path
    init: list[str] = field(default_factory=lambda: ["/sbin/init"])
    bcaps: set[str] = field(default_factory=set)
    ccaps: set[str] = field(default_factory=set)
    flags: set[str] = field(default_factory=set)
    limits: list[Limit] = field(default_factory=list)
    sched: list[Sched] = field(default_factory=list)
    cpuset: CpuSet | None = None
    uname: dict[str, str] = field(default_factory=dict)
    mounts: list[Mount] = field(default_factory=list)
    addresses: list[NetAddr] = field(default_factory=list)
    broadcast: str | None = None
    disk_limit: DiskLimit | None = None
    # Security settings (issue "Unprivileged vservers"): both admin-only in the API.
    # privileged: no user namespace (guest root is host root); seccomp: the default filter.
    privileged: bool = False
    seccomp: bool = True
    # How init wants to be run (issue 16, from the template's metadata): API filesystems
    # to mount before it (names of API_MOUNTS) and its readiness protocol (READY_MODES).
    api_mounts: list[str] = field(default_factory=list)
    ready: str = ""

    def validate(self) -> None:
        """Raise :class:`InvalidSpec` naming the first bad value."""
        if not isinstance(self.xid, int) or not MIN_XID <= self.xid <= MAX_XID:
            raise InvalidSpec(f"xid {self.xid!r} outside {MIN_XID}..{MAX_XID}")
        if not _NAME_RE.fullmatch(self.name or "") or self.name[0] in ".-":
            raise InvalidSpec(f"invalid vserver name {self.name!r}")
        if not Path(self.vdir).is_absolute():
            raise InvalidSpec(f"vdir {self.vdir} is not absolute")
        if not self.init or not all(isinstance(a, str) and "\0" not in a for a in self.init):
            raise InvalidSpec("init argv is empty or has a NUL byte")
        if not self.init[0].startswith("/"):
            raise InvalidSpec(f"init {self.init[0]!r} is not an absolute path")
        for vocab, values, what in ((BCAPS, self.bcaps, "bcap"), (CCAPS, self.ccaps, "ccap"),
                                    (FLAGS, self.flags, "flag")):
            bad = sorted(set(values) - set(vocab))
            if bad:
                raise InvalidSpec(f"unknown {what} {bad[0]!r}")
        for lim in self.limits:
            if lim.type not in LIMIT_TYPES:
                raise InvalidSpec(f"unknown limit type {lim.type!r}")
            for v in (lim.soft, lim.hard):
                if v is not None and (not isinstance(v, int) or v < 0):
                    raise InvalidSpec(f"limit {lim.type} value {v!r} is not a count")
        for key, value in self.uname.items():
            if key not in UNAME_TYPES:
                raise InvalidSpec(f"unknown uname type {key!r}")
            if len(value.encode()) > 64 or "\0" in value:
                raise InvalidSpec(f"uname {key} longer than 64 bytes")
        for m in self.mounts:
            if not m.dst or "\0" in m.dst + m.src + m.type + m.opts:
                raise InvalidSpec(f"invalid mount {m}")
        for s in self.sched:
            if s.interval < 0 or s.fillrate < 0 or s.interval2 < 0 or s.fillrate2 < 0:
                raise InvalidSpec(f"negative sched value in {s}")
        bad = sorted(set(self.api_mounts) - set(API_MOUNTS))
        if bad:
            raise InvalidSpec(f"unknown API filesystem {bad[0]!r} (known: {' '.join(API_MOUNTS)})")
        if self.ready not in READY_MODES:
            raise InvalidSpec(f"unknown readiness mode {self.ready!r} (known: '', 'notify')")
        if self.privileged and self.api_mounts and "SYS_ADMIN" in self.bcaps:
            # a distribution's init with CAP_SYS_ADMIN and no user namespace holds it over
            # the host: systemd-sysctl alone would rewrite the host's /proc/sys at boot
            raise InvalidSpec("a privileged vserver must not run a distribution's init "
                              "(template API filesystems " + " ".join(self.api_mounts) +
                              ") with SYS_ADMIN in its bounding set: that is safe only in "
                              "its own user namespace; make it unprivileged or remove "
                              "SYS_ADMIN from its bcaps")
        if self.disk_limit and (self.disk_limit.space_kib <= 0 or self.disk_limit.inodes <= 0
                                or not 0 <= self.disk_limit.reserved_pct <= 50):
            raise InvalidSpec(f"invalid disk limit {self.disk_limit}")

    def limit(self, type_: str) -> Limit | None:
        for lim in self.limits:
            if lim.type == type_:
                return lim
        return None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["vdir"] = str(self.vdir)
        for k in ("bcaps", "ccaps", "flags"):
            d[k] = sorted(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ContextSpec":
        return cls(
            xid=d["xid"], name=d["name"], vdir=Path(d["vdir"]), init=list(d["init"]),
            bcaps=set(d["bcaps"]), ccaps=set(d["ccaps"]), flags=set(d["flags"]),
            limits=[Limit(**x) for x in d["limits"]], sched=[Sched(**x) for x in d["sched"]],
            cpuset=CpuSet(**d["cpuset"]) if d["cpuset"] else None, uname=dict(d["uname"]),
            mounts=[Mount(**x) for x in d["mounts"]],
            addresses=[NetAddr(**x) for x in d["addresses"]], broadcast=d["broadcast"],
            disk_limit=DiskLimit(**d["disk_limit"]) if d["disk_limit"] else None,
            privileged=bool(d.get("privileged", False)), seccomp=bool(d.get("seccomp", True)),
            api_mounts=list(d.get("api_mounts", [])), ready=str(d.get("ready", "")))


@dataclass(frozen=True)
class ExecResult:
    status: int          # exit code, or 128+N when killed by signal N
    output: bytes        # stdout and stderr combined, at most output_cap bytes
    timed_out: bool = False
    truncated: bool = False
    entered: bool = True  # False: the command never ran, entering failed (status 126)


@dataclass(frozen=True)
class LimitUsage:
    """min/max are ``None`` where the kernel keeps no such watermark."""
    type: str
    min: int | None
    cur: int
    max: int | None


@dataclass(frozen=True)
class NetCounters:
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int
    errors: int


@dataclass
class ContextStat:
    running: bool
    nproc: int = 0
    uptime: float = 0.0
    thr_total: int = 0
    thr_running: int = 0
    thr_unintr: int = 0
    thr_onhold: int = 0
    forks_total: int = 0
    load1: float = 0.0
    load5: float = 0.0
    load15: float = 0.0
    mem_rss: int = 0        # bytes
    mem_cache: int = 0
    mem_swap: int = 0
    cpu_user: float = 0.0   # seconds
    cpu_system: float = 0.0
    limits: list[LimitUsage] = field(default_factory=list)
    # Per network family where the kernel counts per family (vserver), per interface name
    # inside the context's network namespace on a stock kernel.
    net: dict[str, NetCounters] = field(default_factory=dict)


ENFORCED = "enforced"


def not_enforced(why: str) -> str:
    return f"not enforced: {why}"


class Backend(abc.ABC):
    """One kernel interface; the daemon never asks which one it has."""

    name: str

    @abc.abstractmethod
    def start(self, spec: ContextSpec) -> None:
        """Start the context; returns once init has exec'd. Raises StartError subclasses."""

    @abc.abstractmethod
    def stop(self, xid: int, halt_argv: list[str], timeout: float) -> str:
        """Run halt inside, wait up to timeout for the end, then kill all; returns halt output.
        An empty halt_argv runs nothing: the caller has told init to stop (its halt
        signal), and stop() only waits and cleans up."""

    @abc.abstractmethod
    def exec(self, xid: int, argv: list[str], timeout: float = 30.0,
             output_cap: int = 1 << 20, stdin: bytes | None = None,
             on_output: Callable[[bytes], None] | None = None) -> ExecResult:
        """Run argv inside (no shell, stdout+stderr combined). stdin: bytes fed to the
        command (None = /dev/null); on_output: called with each chunk as it arrives."""

    @abc.abstractmethod
    def kill(self, xid: int, pid: int, sig: int) -> None:
        """Signal pid as seen inside; 0 = every process, 1 = init."""

    @abc.abstractmethod
    def running(self) -> list[int]:
        """xids of running contexts, ascending."""

    def is_running(self, xid: int) -> bool:
        return xid in self.running()

    @abc.abstractmethod
    def stat(self, xid: int, net: bool = True) -> ContextStat:
        """Counters of a context; ``ContextStat(running=False)`` when it is not running.
        ``net`` False leaves ``net`` empty: reading it costs a line per interface of the
        guest's network namespace, as many as the guest makes."""

    def last_exit(self, xid: int, wait: float = 0.0) -> dict | None:
        """Why the last init of xid ended ({reason, status, time}); None when unknown
        (the vserver kernel tells vshelper instead). ``wait``: seconds to wait for the
        record of an init that has just ended (it may not be reaped yet)."""
        return None

    def console(self, xid: int, lines: int | None = 100,
                offset: int | None = None) -> tuple[bytes, int]:
        """(data, next offset) of the console log of xid: the last ``lines`` lines, or
        what came after ``offset`` (an absolute byte count from an earlier answer)."""
        raise LibvserverError(f"the {self.name} backend keeps no console log")

    def wait_ready(self, xid: int, timeout: float) -> float | None:
        """Wait for a started context's init to report readiness (``ready = "notify"``);
        its seconds since start, or None where the backend cannot tell (it then returns
        at once). Raises StartError when init ends first or is not ready in time."""
        return None

    def forget(self, xid: int) -> None:
        """Remove whatever the backend keeps for a stopped context whose vserver is gone
        (disk image, cgroups, state files), so a new context with this xid starts clean.
        Raises AlreadyRunning while it runs."""
        if self.is_running(xid):
            raise AlreadyRunning(f"context {xid} is running")

    def serve_long(self) -> None:
        """This process serves requests for long and enters contexts often (a daemon
        worker): set up what makes each entry cheap. Nothing by default. Raises OSError
        when it cannot; entering then still works, at a fork of this process each."""

    @abc.abstractmethod
    def enforcement(self, spec: ContextSpec) -> dict[str, str]:
        """Each setting of spec → "enforced" or "not enforced: <why>"."""
