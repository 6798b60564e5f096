"""Reading a context's counters back from cgroups and /proc (nothing is cached)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..api import ContextStat, LimitUsage, NetCounters
from . import netns
from .cgroups import Layout

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _kv(text: str | None) -> dict[str, int]:
    out = {}
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        if v.strip().lstrip("-").isdigit():
            out[k] = int(v)
    return out


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    t = text.strip()
    return int(t) if t.isdigit() else None


def stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat after the command name (field 3 on); readable for a zombie too;
    None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            st = f.read()
    except OSError:
        return None
    return st[st.rfind(b")") + 2:].split()


def nspids(pid: int) -> list[int]:
    """pid in each PID namespace it is in, the reader's first ([] when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


def task_info(tid: int) -> tuple[str, int] | None:
    """(state letter, pid as seen inside its innermost PID namespace)."""
    try:
        with open(f"/proc/{tid}/status") as f:
            state, nspid = "?", 0
            for line in f:
                if line.startswith("State:"):
                    state = line.split()[1]
                elif line.startswith("NSpid:"):
                    nspid = int(line.split()[-1])
                    break
            return state, nspid
    except (OSError, ValueError, IndexError):
        return None


def uptime_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        st = f.read()
    fields = st[st.rfind(b")") + 2:].split()
    start = int(fields[19]) / CLK_TCK  # field 22 of stat: start time in ticks after boot
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - start)


def collect(layout: Layout, xid: int, init_pid: int | None, state_dir: Path,
            net: bool = True) -> ContextStat:
    pids = layout.pids(xid)
    if not pids:
        return ContextStat(running=False)
    st = ContextStat(running=True, nproc=len(pids))
    for tid in layout.tids(xid):
        info = task_info(tid)
        if info is None:
            continue
        state, nspid = info
        st.thr_total += 1
        if state == "R":
            st.thr_running += 1
        elif state == "D":
            st.thr_unintr += 1
        elif state in ("T", "t"):
            st.thr_onhold += 1
        # PIDs of a fresh namespace count up from 1: the highest live one is a lower bound
        # of the forks since start (a stock kernel keeps no per-context fork counter).
        st.forks_total = max(st.forks_total, nspid)
    if init_pid is not None:
        try:
            st.uptime = uptime_of(init_pid)
        except OSError:
            pass
        if net:
            st.net = {name: NetCounters(*c)
                      for name, c in netns.read_counters(init_pid).items()}
    try:
        load = json.loads((state_dir / f"{xid}.load").read_text())["load"]
        st.load1, st.load5, st.load15 = load
    except (OSError, ValueError, KeyError):
        pass
    read_memory(layout, xid, st)
    read_cpu(layout, xid, st)
    read_limits(layout, xid, st)
    return st


def read_memory(layout: Layout, xid: int, st: ContextStat) -> None:
    if not layout.has("memory"):
        return
    m = _kv(layout.read("memory", xid, "memory.stat"))
    if layout.by_ctrl["memory"].version == 1:
        st.mem_rss = m.get("total_rss", m.get("rss", 0))
        st.mem_cache = m.get("total_cache", m.get("cache", 0))
        st.mem_swap = m.get("total_swap", m.get("swap", 0))
    else:
        st.mem_rss = m.get("anon", 0)
        st.mem_cache = m.get("file", 0)
        st.mem_swap = _int(layout.read("memory", xid, "memory.swap.current")) or 0


def read_cpu(layout: Layout, xid: int, st: ContextStat) -> None:
    if layout.has("cpuacct") and layout.by_ctrl["cpuacct"].version == 1:
        c = _kv(layout.read("cpuacct", xid, "cpuacct.stat"))
        st.cpu_user = c.get("user", 0) / CLK_TCK
        st.cpu_system = c.get("system", 0) / CLK_TCK
    elif layout.v2 is not None:
        # cpu.stat exists in every cgroup2 group, controller enabled or not
        try:
            c = _kv((layout.group(layout.v2, xid) / "cpu.stat").read_text())
        except OSError:
            return
        st.cpu_user = c.get("user_usec", 0) / 1e6
        st.cpu_system = c.get("system_usec", 0) / 1e6


def read_limits(layout: Layout, xid: int, st: ContextStat) -> None:
    if layout.has("pids"):
        cur = _int(layout.read("pids", xid, "pids.current"))
        if cur is not None:
            st.limits.append(LimitUsage("NPROC", None, cur,
                                        _int(layout.read("pids", xid, "pids.peak"))))
    if layout.has("memory"):
        v1 = layout.by_ctrl["memory"].version == 1
        cur = _int(layout.read("memory", xid, "memory.usage_in_bytes" if v1 else "memory.current"))
        peak = _int(layout.read("memory", xid, "memory.max_usage_in_bytes" if v1 else "memory.peak"))
        if cur is not None:
            st.limits.append(LimitUsage("RSS", None, cur // 1024,
                                        None if peak is None else peak // 1024))
            st.limits.append(LimitUsage("ANON", None, st.mem_rss // 1024, None))
