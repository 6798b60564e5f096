"""One sampling pass over every running context, and its values per database.

On the native backend this reads the cgroup and /proc files directly, in one pass,
through libvserver's cgroup layout and its own readers of memory, cpu and limit
counters (imported, so both report the same numbers).  It leaves out what only
`Backend.stat()` needs for vx.status (uptime, forks, a /proc/<pid>/status per
task) and never spawns a process.  Other backends are asked through `stat()`.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import libvserver
from libvserver import ContextStat, NetCounters

from vstatd.layout import LIMIT_DBS, LOADAVG_DB, NET_RE

if TYPE_CHECKING:
    from libvserver.native.cgroups import Layout

log = logging.getLogger("vcd.vstatd.sample")

Value = int | float | None
Records = dict[str, tuple[Value, ...]]


class Sampler(Protocol):
    def sample(self) -> dict[int, ContextStat]:
        """xid -> counters of every context running now."""


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 65536)
        while len(data) % 65536 == 0 and data:  # a long task list: read to the end
            more = os.read(fd, 65536)
            if not more:
                break
            data += more
        return data
    except OSError:
        return None
    finally:
        os.close(fd)


def _fast_layout(base: "Layout") -> "Layout":
    """libvserver's cgroup layout, with each file's path worked out once, not per read.

    The counters are parsed by libvserver's own readers (so vx.status and the RRD
    files agree); they read through ``layout.read()``, which builds three Path
    objects per file. For 500 contexts that was most of the sampling cost.
    """
    from libvserver.native.cgroups import Layout

    class FastLayout(Layout):
        def __init__(self) -> None:
            # a copy of base: the hierarchies are discovered once, by libvserver
            self.__dict__.update(base.__dict__)
            self.files: dict[tuple[str, int, str], str] = {}

        def _file(self, ctrl: str, xid: int, name: str) -> str:
            key = (ctrl, xid, name)
            path = self.files.get(key)
            if path is None:
                path = self.files[key] = str(self.path(ctrl, xid) / name)
            return path

        def read(self, ctrl: str, xid: int, name: str) -> str | None:
            if ctrl not in self.by_ctrl:
                return None
            raw = _read(self._file(ctrl, xid, name))
            return None if raw is None else raw.decode()

        def tids(self, xid: int) -> list[int]:
            key = ("", xid, "tasks")
            path = self.files.get(key)
            if path is None:
                path = self.files[key] = str(self.tasks_file(xid))
            raw = _read(path)
            return [int(x) for x in raw.split()] if raw else []

        def alive(self, xid: int) -> bool:
            return os.path.isdir(self._group_of(xid))

        def _group_of(self, xid: int) -> str:
            key = ("", xid, "group")
            path = self.files.get(key)
            if path is None:
                path = self.files[key] = str(self.group(self.primary, xid))
            return path

        def forget(self, xid: int) -> None:
            for key in [k for k in self.files if k[1] == xid]:
                del self.files[key]

    return FastLayout()


class NativeSampler:
    """The batch reader of the native backend."""

    def __init__(self, backend: "libvserver.native.NativeBackend") -> None:
        from libvserver.native import netns, stat
        from libvserver.native.supervisor import init_pid_of
        self._stat, self._netns, self._init_pid_of = stat, netns, init_pid_of
        self.layout = _fast_layout(backend.layout)
        self.state_dir = Path(backend.state_dir)
        self._init: dict[int, int] = {}          # xid -> pid of its init
        self._own_net: dict[int, bool] = {}      # init pid -> in a network namespace of its own
        self._host_net = os.readlink("/proc/self/ns/net")
        self._live: set[int] = set()

    def sample(self) -> dict[int, ContextStat]:
        out: dict[int, ContextStat] = {}
        for xid in self.layout.xids():
            try:
                st = self._one(xid)
            except OSError as exc:
                # the context stopped while we read it: no sample rather than zeros
                log.debug("context %d vanished during sampling: %s", xid, exc)
                continue
            if st is not None:
                out[xid] = st
        live = set(out)
        for xid in self._live - live:
            init = self._init.pop(xid, None)
            if init is not None:
                self._own_net.pop(init, None)
            self.layout.forget(xid)
        self._live = live
        return out

    def _one(self, xid: int) -> ContextStat | None:
        tids = self.layout.tids(xid)
        if not tids:
            return None
        st = ContextStat(running=True)
        for tid in tids:
            raw = _read(f"/proc/{tid}/stat")
            if raw is None:
                continue  # exited since the list was read
            # the state letter follows the command name, which may itself hold ") "
            state = raw[raw.rfind(b")") + 2:raw.rfind(b")") + 3]
            st.thr_total += 1
            if state == b"R":
                st.thr_running += 1
            elif state == b"D":
                st.thr_unintr += 1
            elif state in (b"T", b"t"):
                st.thr_onhold += 1
        self._load(xid, st)
        self._stat.read_memory(self.layout, xid, st)
        self._stat.read_cpu(self.layout, xid, st)
        self._stat.read_limits(self.layout, xid, st)
        init = self._init_of(xid, tids)
        if init is not None and self._has_own_net(init):
            st.net = {name: NetCounters(*c)
                      for name, c in self._netns.read_counters(init).items()}
        # the readers above turn a vanished file into 0: only keep what a live group gave
        if not self.layout.alive(xid):
            raise FileNotFoundError(f"cgroup of context {xid} is gone")
        return st

    def _load(self, xid: int, st: ContextStat) -> None:
        # The supervisor decays each context's load every 5 s, like the kernel; its file
        # is the one source of vx.load, vx.status and sys_LOADAVG alike.
        raw = _read(str(self.state_dir / f"{xid}.load"))
        if raw is None:
            return
        try:
            st.load1, st.load5, st.load15 = (float(x) for x in json.loads(raw)["load"])
        except (ValueError, KeyError, TypeError):
            pass

    def _init_of(self, xid: int, tids: list[int]) -> int | None:
        pid = self._init.get(xid)
        if pid is not None and pid in tids:
            return pid
        pid = self._init_pid_of(self.layout.pids(xid))
        if pid is not None:
            self._init[xid] = pid
        return pid

    def _has_own_net(self, pid: int) -> bool:
        # Without a network namespace of its own a context sees the host's interfaces:
        # their counters are the host's traffic, not the vserver's.
        own = self._own_net.get(pid)
        if own is None:
            try:
                own = os.readlink(f"/proc/{pid}/ns/net") != self._host_net
            except OSError:
                return False
            self._own_net[pid] = own
        return own


class BackendSampler:
    """Any backend, one stat() per running context (the Linux-VServer kernel's way)."""

    def __init__(self, backend: libvserver.Backend) -> None:
        self.backend = backend

    def sample(self) -> dict[int, ContextStat]:
        out: dict[int, ContextStat] = {}
        for xid in self.backend.running():
            try:
                st = self.backend.stat(xid)
            except libvserver.LibvserverError as exc:
                log.debug("context %d: %s", xid, exc)
                continue
            if st.running:
                out[xid] = st
        return out


def sampler_for(backend: libvserver.Backend) -> Sampler:
    from libvserver.native import NativeBackend
    if isinstance(backend, NativeBackend):
        return NativeSampler(backend)
    return BackendSampler(backend)


def records(st: ContextStat) -> Records:
    """The values of one sample, per database (None = unknown)."""
    out: Records = {
        "thread_TOTAL": (st.thr_total,),
        "thread_RUNNING": (st.thr_running,),
        "thread_UNINTR": (st.thr_unintr,),
        "thread_ONHOLD": (st.thr_onhold,),
        LOADAVG_DB: (st.load1, st.load5, st.load15),
        # DERIVE takes integers only: microseconds keep the precision of cgroup v2
        "cpu": (round(st.cpu_user * 1e6), round(st.cpu_system * 1e6)),
        "mem": (st.mem_rss, st.mem_cache, st.mem_swap),
    }
    for usage in st.limits:
        db = LIMIT_DBS.get(usage.type)
        if db is not None:
            out[db] = (usage.min, usage.cur, usage.max)
    for key, c in st.net.items():
        metric = f"net_{key}"
        if NET_RE.fullmatch(metric):
            # no kernel counts the bytes of failed packets: failb stays unknown
            out[metric] = (c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes, c.errors, None)
    return out
