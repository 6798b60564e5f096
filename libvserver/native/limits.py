"""Mapping of vserver limits and scheduler buckets onto cgroups, rlimits and IPC sysctls."""

from __future__ import annotations

import mmap
import resource
from dataclasses import dataclass

from ..api import ContextSpec, Limit, Sched
from .cgroups import Layout

INF = resource.RLIM_INFINITY

# Limit type → (rlimit resource, multiplier to the rlimit's unit).
RLIMITS: dict[str, tuple[int, int]] = {
    "CPU": (resource.RLIMIT_CPU, 1),
    "FSIZE": (resource.RLIMIT_FSIZE, 1),
    "DATA": (resource.RLIMIT_DATA, 1),
    "STACK": (resource.RLIMIT_STACK, 1),
    "CORE": (resource.RLIMIT_CORE, 1),
    "NOFILE": (resource.RLIMIT_NOFILE, 1),
    "MEMLOCK": (resource.RLIMIT_MEMLOCK, 1024),
    "LOCKS": (10, 1),  # RLIMIT_LOCKS: not exported by the resource module
    "SIGPENDING": (resource.RLIMIT_SIGPENDING, 1),
    "MSGQUEUE": (resource.RLIMIT_MSGQUEUE, 1),
}
MEMORY_CGROUP_TYPES = ("RSS", "AS", "ANON")
# IPC namespace sysctls: per-namespace, so the context's values bind only the context.
IPC_SYSCTLS = ("SHMEM", "SEMARY", "NSEMS")
NOT_MAPPED = {
    "NSOCK": "a stock kernel has no per-context socket count",
    "OPENFD": "a stock kernel has no per-context count of open files (NOFILE limits per process)",
    "DENTRY": "a stock kernel has no per-context dentry limit",
    "MAPPED": "a stock kernel has no per-context limit of mapped pages",
}
CPU_PERIOD_US = 100_000
TOKEN_US = 1000  # one vserver token is one tick; ticks are taken as 1 ms


@dataclass(frozen=True)
class RlimitPlan:
    type: str
    resource: int
    soft: int
    hard: int
    capped: bool  # the requested hard limit was above ours and cannot be raised


def _bytes(v: int | None, mult: int) -> int:
    return INF if v is None or v >= (1 << 63) // max(mult, 1) else v * mult


def rlimit_plan(spec: ContextSpec) -> list[RlimitPlan]:
    plans = []
    for lim in spec.limits:
        if lim.type not in RLIMITS or (lim.soft is None and lim.hard is None):
            continue
        res, mult = RLIMITS[lim.type]
        cur_soft, cur_hard = resource.getrlimit(res)
        hard = _bytes(lim.hard, mult) if lim.hard is not None else cur_hard
        soft = _bytes(lim.soft, mult) if lim.soft is not None else hard
        capped = False
        # Without CAP_SYS_RESOURCE a hard limit can only be lowered.
        if cur_hard != INF and (hard == INF or hard > cur_hard):
            hard, capped = cur_hard, True
        if hard != INF and (soft == INF or soft > hard):
            soft = hard
        plans.append(RlimitPlan(lim.type, res, soft, hard, capped))
    return plans


def apply_rlimits(plans: list[RlimitPlan]) -> None:
    for p in plans:
        resource.setrlimit(p.resource, (p.soft, p.hard))


def _min(values: list[int | None]) -> int | None:
    vals = [v for v in values if v is not None]
    return min(vals) if vals else None


def memory_limits(spec: ContextSpec) -> tuple[int | None, int | None]:
    """(hard, soft) in bytes from RSS/AS/ANON; the tightest wins."""
    lims = [spec.limit(t) for t in MEMORY_CGROUP_TYPES]
    hard = _min([lim.hard for lim in lims if lim])
    soft = _min([lim.soft for lim in lims if lim])
    return (None if hard is None else hard * 1024, None if soft is None else soft * 1024)


def sched_bucket(spec: ContextSpec) -> Sched | None:
    if not spec.sched:
        return None
    return next((s for s in spec.sched if s.cpuid == -1), spec.sched[0])


@dataclass(frozen=True)
class CpuPlan:
    quota_us: int | None
    period_us: int
    burst_us: int | None
    shares: int | None   # v1 cpu.shares
    weight: int | None   # v2 cpu.weight


def cpu_plan(s: Sched) -> CpuPlan:
    quota = burst = shares = weight = None
    if s.fillrate > 0 and s.interval > 0:
        quota = max(1000, CPU_PERIOD_US * s.fillrate // s.interval)
        if s.tokensmax > 0:
            burst = min(s.tokensmax * TOKEN_US, quota)  # the kernel refuses burst > quota
    if s.fillrate2 > 0 and s.interval2 > 0:
        shares = max(2, min(262144, 1024 * s.fillrate2 // s.interval2))
        weight = max(1, min(10000, 100 * s.fillrate2 // s.interval2))
    return CpuPlan(quota, CPU_PERIOD_US, burst, shares, weight)


def ipc_sysctls(spec: ContextSpec) -> dict[str, str]:
    """/proc/sys/kernel values to write inside the context's new IPC namespace."""
    out: dict[str, str] = {}
    shm = spec.limit("SHMEM")
    if shm and shm.hard is not None:
        out["shmall"] = str(max(1, shm.hard * 1024 // mmap.PAGESIZE))
    semary = spec.limit("SEMARY")
    nsems = spec.limit("NSEMS")
    if (semary and semary.hard is not None) or (nsems and nsems.hard is not None):
        with open("/proc/sys/kernel/sem") as f:
            semmsl, semmns, semopm, semmni = f.read().split()
        if nsems and nsems.hard is not None:
            semmns = str(nsems.hard)
        if semary and semary.hard is not None:
            semmni = str(min(semary.hard, 32000))
        out["sem"] = f"{semmsl} {semmns} {semopm} {semmni}"
    return out


def apply_cgroup_limits(layout: Layout, spec: ContextSpec) -> None:
    """Write every cgroup limit of spec into the (new, empty) groups of spec.xid."""
    xid = spec.xid
    nproc = spec.limit("NPROC")
    if nproc and nproc.hard is not None and layout.has("pids"):
        layout.write("pids", xid, "pids.max", str(nproc.hard))
    hard, soft = memory_limits(spec)
    if layout.has("memory"):
        v1 = layout.by_ctrl["memory"].version == 1
        if hard is not None:
            if v1:
                layout.write("memory", xid, "memory.limit_in_bytes", str(hard))
                # No escape into swap: memory+swap gets the same ceiling.
                if layout.file_exists("memory", xid, "memory.memsw.limit_in_bytes"):
                    layout.write("memory", xid, "memory.memsw.limit_in_bytes", str(hard))
            else:
                layout.write("memory", xid, "memory.max", str(hard))
                if layout.file_exists("memory", xid, "memory.swap.max"):
                    layout.write("memory", xid, "memory.swap.max", "0")
        if soft is not None:
            layout.write("memory", xid,
                         "memory.soft_limit_in_bytes" if v1 else "memory.high", str(soft))
    bucket = sched_bucket(spec)
    if bucket is not None and layout.has("cpu"):
        plan = cpu_plan(bucket)
        if layout.by_ctrl["cpu"].version == 1:
            if plan.quota_us is not None:
                layout.write("cpu", xid, "cpu.cfs_period_us", str(plan.period_us))
                layout.write("cpu", xid, "cpu.cfs_quota_us", str(plan.quota_us))
                if plan.burst_us and layout.file_exists("cpu", xid, "cpu.cfs_burst_us"):
                    layout.write("cpu", xid, "cpu.cfs_burst_us", str(plan.burst_us))
            if plan.shares is not None:
                layout.write("cpu", xid, "cpu.shares", str(plan.shares))
        else:
            if plan.quota_us is not None:
                layout.write("cpu", xid, "cpu.max", f"{plan.quota_us} {plan.period_us}")
                if plan.burst_us and layout.file_exists("cpu", xid, "cpu.max.burst"):
                    layout.write("cpu", xid, "cpu.max.burst", str(plan.burst_us))
            if plan.weight is not None:
                layout.write("cpu", xid, "cpu.weight", str(plan.weight))
    if spec.cpuset is not None and layout.has("cpuset"):
        layout.write("cpuset", xid, "cpuset.cpus", spec.cpuset.cpus)
        if spec.cpuset.mems:
            layout.write("cpuset", xid, "cpuset.mems", spec.cpuset.mems)


def limit_is_set(lim: Limit) -> bool:
    return lim.soft is not None or lim.hard is not None
