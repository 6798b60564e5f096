"""Where the host memory of a running vserver goes (prints figures; asserts nothing).

Starts N busybox vservers over the API (own network namespace by default, none with
``--no-netns``) and prints, per running vserver, the difference between "all created"
and "all running" of:
  - MemAvailable (the goal of issue 13) and the precise parts of /proc/meminfo
    (AnonPages, Shmem, Slab, SUnreclaim, KernelStack, PageTables, VmallocUsed, Percpu),
  - the slab caches that grew most (/proc/slabinfo: active objects × object size),
  - what the contexts' memory cgroups are charged (user pages, kernel memory) and how
    many processes each holds with their proportional set size,
  - the proportional set size of the supervisor (keeper and worker) and of vcd.

MemAvailable is machine-wide and moves with everything else on a shared machine (hence
the median over ``--rounds`` start-all/stop-all rounds); the memory cgroup charges are
exact (vcd and its supervisor run in a memory cgroup of the bench's own), and the kernel
counters show the parts that no cgroup is charged for. ``--stopped`` also prints what
stays after all were stopped.

    python bench/density.py [--running 200] [--no-netns] [--rounds 3] [--stopped]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from benchdaemon import bench_daemon  # noqa: E402
from vcdtest import VcdDaemon, children_of  # noqa: E402

MEMINFO_FIELDS = ("MemAvailable", "MemFree", "AnonPages", "Shmem", "Slab", "SReclaimable",
                  "SUnreclaim", "KernelStack", "PageTables", "VmallocUsed", "Percpu")
GOAL_MIB = {False: 0.75, True: 0.25}    # issue 13: with / without a network namespace


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        out[name] = int(rest.split()[0])
    return out


def slabinfo() -> dict[str, int]:
    """Bytes of active objects per slab cache."""
    out = {}
    for line in Path("/proc/slabinfo").read_text().splitlines()[2:]:
        f = line.split()
        out[f[0]] = int(f[1]) * int(f[3])
    return out


def vmalloc_by_caller() -> dict[str, int]:
    """Bytes vmalloc'd per allocating function (/proc/vmallocinfo)."""
    out: dict[str, int] = {}
    try:
        lines = Path("/proc/vmallocinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        f = line.split()
        if len(f) < 3 or "vmalloc" not in line and "vmap" not in line:
            continue
        caller = f[2].split("+")[0]
        out[caller] = out.get(caller, 0) + int(f[1])
    return out


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def supervisor_pids(state_dir: Path) -> list[int]:
    try:
        keeper = int((state_dir / "supervisor.lock").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    # the worker is the keeper's child that is no context's init
    from libvserver.native.supervisor import is_init
    return [keeper, *(p for p in children_of(keeper) if not is_init(p))]


def daemon_pids(daemon: VcdDaemon) -> list[int]:
    try:
        main = int(daemon.pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [main, *children_of(main)]


MEMCG_V1 = Path("/sys/fs/cgroup/memory")
RMDIR_WAIT = 60.0   # s the bench's own memory cgroup may stay busy after the daemon ended


class OwnMemcg:
    """A memory cgroup of this bench's own that vcd and its supervisor are born in: what
    they are charged (their pages, and the kernel objects they allocate: a context's
    cgroup structures, its veth's host end, its pty, its handles) is then exact, apart
    from everything else on the machine. v1 memory hierarchy (this machine) or cgroup2."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.home: Path | None = None
        for root, own in ((MEMCG_V1, "memory"), (Path("/sys/fs/cgroup"), "")):
            if (root / "cgroup.procs").exists() and \
                    ((root / "memory.usage_in_bytes").exists() or (root / "memory.stat").exists()):
                for line in Path("/proc/self/cgroup").read_text().splitlines():
                    _, ctrl, rel = line.split(":", 2)
                    if (own and own in ctrl.split(",")) or (not own and ctrl == ""):
                        self.home = root / rel.lstrip("/")
                self.path = root / f"vcd-bench-density-{os.getpid()}"
                break

    def __enter__(self) -> "OwnMemcg":
        if self.path is not None:
            self.path.mkdir()
            (self.path / "cgroup.procs").write_text(str(os.getpid()))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.path is None:
            return
        if self.home is not None:
            try:
                (self.home / "cgroup.procs").write_text(str(os.getpid()))
            except OSError:
                pass
        # The daemon's processes (its supervisor, the last exiting contexts' tasks that
        # were charged here) leave the group only when they have exited: wait for
        # cgroup.procs to empty, then rmdir (busy for a moment after the last exit).
        deadline = time.monotonic() + RMDIR_WAIT
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    print(f"left behind: {self.path} (processes: "
                          f"{self._procs() or 'none'})", file=sys.stderr)
                    return
                time.sleep(0.1)

    def _procs(self) -> str:
        try:
            return " ".join((self.path / "cgroup.procs").read_text().split())
        except OSError:
            return ""

    def anon(self) -> int:
        """KiB of anonymous pages charged (page cache left out: reclaimable)."""
        if self.path is None:
            return 0
        for line in (self.path / "memory.stat").read_text().splitlines():
            if line.startswith(("rss ", "anon ")):
                return int(line.split()[1]) // 1024
        return 0

    def charged(self) -> tuple[int, int]:
        """(all, kernel) KiB charged."""
        if self.path is None:
            return 0, 0
        for usage, kmem in (("memory.usage_in_bytes", "memory.kmem.usage_in_bytes"),
                            ("memory.current", None)):
            if (self.path / usage).exists():
                u = int((self.path / usage).read_text()) // 1024
                if kmem:
                    return u, int((self.path / kmem).read_text()) // 1024
                for line in (self.path / "memory.stat").read_text().splitlines():
                    if line.startswith("kernel "):
                        return u, int(line.split()[1]) // 1024
                return u, 0
        return 0, 0


@dataclass
class Snapshot:
    mem: dict[str, int]
    slab: dict[str, int]
    vmalloc: dict[str, int]
    supervisor_pss: int
    daemon_pss: int
    own: tuple[int, int]        # KiB charged to vcd's memory cgroup (all, kernel)
    contexts: tuple[int, int]   # KiB charged to the contexts' memory cgroups (all, kernel)
    anon: int                   # KiB of anonymous pages charged to vcd and the contexts
    taken: float = field(default_factory=time.monotonic)


def snapshot(daemon: VcdDaemon, memcg: OwnMemcg) -> Snapshot:
    sup = sum(pss_kib(p) for p in supervisor_pids(daemon.rundir / "libvserver"))
    dmn = sum(pss_kib(p) for p in daemon_pids(daemon))
    c = context_charges(daemon.cgroup_parent)
    return Snapshot(meminfo(), slabinfo(), vmalloc_by_caller(), sup, dmn, memcg.charged(),
                    (sum(c.usage), sum(c.kmem)), memcg.anon() + sum(c.rss))


@dataclass
class Charges:
    usage: list[int]        # KiB per context
    kmem: list[int]
    rss: list[int]
    nproc: list[int]
    pss: list[int]          # KiB of the context's processes, per context


def context_charges(parent: str) -> Charges:
    from libvserver.native.cgroups import Layout
    layout = Layout(parent)
    c = Charges([], [], [], [], [])
    for xid in layout.xids():
        usage = layout.read("memory", xid, "memory.usage_in_bytes") or \
            layout.read("memory", xid, "memory.current")
        if usage:
            c.usage.append(int(usage) // 1024)
        kmem = layout.read("memory", xid, "memory.kmem.usage_in_bytes")
        if kmem:
            c.kmem.append(int(kmem) // 1024)
        stat = layout.read("memory", xid, "memory.stat") or ""
        for line in stat.splitlines():
            if line.startswith(("rss ", "anon ")):
                c.rss.append(int(line.split()[1]) // 1024)
        pids = layout.pids(xid)
        c.nproc.append(len(pids))
        c.pss.append(sum(pss_kib(p) for p in pids))
    return c


def per(n: int, kib: float) -> str:
    return f"{kib / n:>9.1f} KiB"


def report(label: str, n: int, a: Snapshot, b: Snapshot, top: int) -> None:
    print(f"\n{label}: change per vserver over {n} vservers")
    for name in MEMINFO_FIELDS:
        sign = -1 if name in ("MemAvailable", "MemFree") else 1
        print(f"  {name + (' drop' if sign < 0 else ''):<22} {per(n, sign * (b.mem[name] - a.mem[name]))}")
    exact = sum(b.mem[k] - a.mem[k] for k in ("AnonPages", "Shmem", "SUnreclaim", "KernelStack",
                                               "PageTables", "Percpu"))
    vm_stacks = b.vmalloc.get("kernel_clone", 0) + b.vmalloc.get("copy_process", 0) - \
        a.vmalloc.get("kernel_clone", 0) - a.vmalloc.get("copy_process", 0)
    vm_other = (b.mem["VmallocUsed"] - a.mem["VmallocUsed"]) - vm_stacks // 1024
    print(f"  {'not reclaimable':<22} {per(n, exact + vm_other)} "
          "(AnonPages+Shmem+SUnreclaim+KernelStack+PageTables+Percpu+vmalloc other than "
          "stacks; MemAvailable counts reclaimable slab as available)")
    own = [y - x for x, y in zip(a.own, b.own)]
    ctx = [y - x for x, y in zip(a.contexts, b.contexts)]
    kernel = exact - (b.mem["AnonPages"] - a.mem["AnonPages"]) - \
        (b.mem["Shmem"] - a.mem["Shmem"]) + vm_other
    user = b.anon - a.anon
    print(f"  {'kernel + user pages':<22} {per(n, kernel + user)} (the kernel's unreclaimable "
          f"parts above, {kernel / n:.1f} KiB, plus the anonymous pages charged to vcd's and "
          f"the contexts' memory cgroups, {user / n:.1f} KiB: machine-wide anonymous memory "
          "of other work left out)")
    print(f"  {'charged to vcd':<22} {per(n, own[0])} (its memory cgroup; kernel {own[1] / n:.1f} KiB)")
    print(f"  {'charged to contexts':<22} {per(n, ctx[0])} (their memory cgroups; kernel {ctx[1] / n:.1f} KiB)")
    print(f"  {'charged in all':<22} {per(n, own[0] + ctx[0])}")
    print(f"  {'supervisor PSS':<22} {per(n, b.supervisor_pss - a.supervisor_pss)}")
    print(f"  {'vcd PSS':<22} {per(n, b.daemon_pss - a.daemon_pss)}")
    grown = sorted(((b.slab.get(k, 0) - a.slab.get(k, 0), k) for k in b.slab), reverse=True)
    print(f"  slab caches that grew most (bytes per vserver):")
    for d, k in grown[:top]:
        if d <= 0:
            break
        print(f"    {k:<28} {d / n:>9.0f}")
    vm = sorted(((b.vmalloc.get(k, 0) - a.vmalloc.get(k, 0), k) for k in b.vmalloc), reverse=True)
    print(f"  vmalloc callers that grew most (bytes per vserver):")
    for d, k in vm[:8]:
        if d <= 0:
            break
        print(f"    {k:<28} {d / n:>9.0f}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--running", type=int, default=200)
    ap.add_argument("--no-netns", action="store_true")
    ap.add_argument("--stopped", action="store_true", help="also report after stopping all")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3, help="start-all/stop-all rounds")
    args = ap.parse_args()
    memcg = OwnMemcg()
    with memcg:
        return run(args, memcg)


def run(args: argparse.Namespace, memcg: OwnMemcg) -> int:
    n = args.running
    with bench_daemon("vcd-bench-density-", workers=2) as (daemon, _):
        admin = daemon.proxy()
        names = [f"d{i}" for i in range(n)]
        # warm: backend, supervisor and the code paths of a start and a stop
        admin.vx.create(name="warm", template="busybox")
        if args.no_netns:
            admin.vxdb.vx.flags.remove(name="warm", flag="HIDE_NETIF")
        admin.vxdb.init.set(name="warm", halt="/bin/true", timeout=0)
        admin.vx.start(name="warm")
        admin.vx.stop(name="warm")
        for name in names:
            admin.vx.create(name=name, template="busybox")
            admin.vxdb.init.set(name=name, halt="/bin/true", timeout=0)
            if args.no_netns:
                admin.vxdb.vx.flags.remove(name=name, flag="HIDE_NETIF")
        kind = "no network namespace" if args.no_netns else "own network namespace"
        goal = GOAL_MIB[args.no_netns]
        drops = []
        # Rounds: MemAvailable is machine-wide, and on a shared machine other work moves it
        # by more than 500 vservers do; the median of a few start-all/stop-all rounds
        # holds better. The first round also pays for what the kernel grows once (e.g.
        # every memory cgroup's shrinker array when the number of superblocks peaks).
        for rnd in range(1, args.rounds + 1):
            time.sleep(2)
            created = snapshot(daemon, memcg)
            t = time.perf_counter()
            for name in names:
                admin.vx.start(name=name)
            took = time.perf_counter() - t
            time.sleep(3)
            running = snapshot(daemon, memcg)
            charges = context_charges(daemon.cgroup_parent)
            drop = (created.mem["MemAvailable"] - running.mem["MemAvailable"]) / n / 1024
            drops.append(drop)
            print(f"round {rnd}: started {n} vservers ({kind}) in {took:.1f} s; MemAvailable "
                  f"drop {drop:.3f} MiB per vserver")
            if rnd == args.rounds:
                report(f"round {rnd}, all stopped -> all running", n, created, running, args.top)
                if charges.usage:
                    med = statistics.median
                    print(f"  memory cgroup of a context (median): charged {med(charges.usage):.0f} "
                          f"KiB, of it kernel {med(charges.kmem) if charges.kmem else 0:.0f} KiB and "
                          f"user pages {med(charges.rss) if charges.rss else 0:.0f} KiB; "
                          f"{med(charges.nproc):.0f} processes, PSS {med(charges.pss):.0f} KiB")
            # every round ends with all stopped through the API, the last one too: the
            # cleanup's kill-all of hundreds keeps the supervisor too busy to answer it
            t = time.perf_counter()
            for name in names:
                admin.vx.stop(name=name)
            if rnd == args.rounds and args.stopped:
                print(f"\nstopped {n} vservers in {time.perf_counter() - t:.1f} s")
                time.sleep(3)
                report("all stopped again (what stays)", n, created, snapshot(daemon, memcg),
                       args.top)
        drop = statistics.median(drops)
        print(f"\nhost memory per running vserver (MemAvailable drop, {kind}, median of "
              f"{len(drops)} rounds): {drop:.3f} MiB, goal <= {goal} MiB: "
              f"{'met' if drop <= goal else 'NOT met'}")
        print(f"load average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
