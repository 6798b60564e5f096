"""Lifecycle over the API: vx.start / vx.stop latency, status latency under load, memory.

Prints, in one run on this machine:
  - vx.start -> running and vx.stop -> stopped over XML-RPC (median, p90 of N),
  - beside `lxc-start -d` of the same root filesystem (Debian's lxc, if installed) and a
    bare `unshare --pid --fork --mount-proc ... chroot ... /bin/true`,
  - vx.status and vxdb.list latency with M vservers running,
  - host memory per running vserver (MemAvailable drop, supervisor included) beside its goal
    (issue 13: 0.75 MiB with the default network namespace, 0.25 MiB without one), and the
    exact part of it the memory cgroups are charged: the contexts' own and that of vcd and
    its supervisor, which run in a memory cgroup of this bench's own (bench/density.py
    shows where the rest goes).

Bounded: loopback only, fixed counts, cleans up every context it starts.
    python bench/lifecycle.py [--runs 50] [--running 200] [--no-netns]

--no-netns: the many running vservers get no network namespace of their own (the
HIDE_NETIF flag removed), for the density figure without one.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchdaemon import bench_daemon
from density import GOAL_MIB, OwnMemcg  # noqa: E402
from templates.busybox import build_rootfs  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def row(label: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"{label:<44} {statistics.median(ms):>9.2f} {pct(ms, 90):>9.2f} {len(ms):>6}"


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def supervisor_rss_kib(state_dir: Path) -> int:
    """VmRSS of the supervisor's keeper and worker (the keeper's pid is in its lock file)."""
    try:
        keeper = int((state_dir / "supervisor.lock").read_text().split()[0])
        kids = Path(f"/proc/{keeper}/task/{keeper}/children").read_text().split()
    except (OSError, ValueError, IndexError):
        return 0
    total = 0
    for pid in [keeper, *map(int, kids)]:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def memcg_charged_kib(parent: str) -> list[int]:
    """What each running context's memory cgroup is charged (kernel objects its processes
    allocated included: page tables, stacks, mounts, its network namespace's accounted
    parts), in KiB; MemAvailable is machine-wide and moves with everything else here."""
    from libvserver.native.cgroups import Layout
    layout = Layout(parent)
    out = []
    for xid in layout.xids():
        for name in ("memory.usage_in_bytes", "memory.current"):
            v = layout.read("memory", xid, name)
            if v:
                out.append(int(v) // 1024)
                break
    return out


def bench_unshare(rootfs: Path, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--mount-proc",
                        "chroot", str(rootfs), "/bin/true"], check=True)
        out.append(time.perf_counter() - t)
    return out


LXC_UNPRIVILEGED = (
    # the fair comparison with vcd's default: a 65536-id range and an idmapped rootfs
    "lxc.idmap = u 0 1000000 65536\nlxc.idmap = g 0 1000000 65536\n"
    "lxc.rootfs.options = idmap=container\n")


def bench_lxc(rootfs: Path, runs: int, workdir: Path, unprivileged: bool = False
              ) -> tuple[list[float], list[float]] | None:
    """lxc-start -d / lxc-stop -k of the same root filesystem; privileged as LXC runs as
    root by default, or with a user namespace like vcd's default."""
    if shutil.which("lxc-start") is None:
        return None
    name = "bench-u" if unprivileged else "bench"
    lxcpath = workdir / "lxc"
    (lxcpath / name).mkdir(parents=True)
    (lxcpath / name).chmod(0o755)
    (lxcpath / name / "config").write_text(
        f"lxc.uts.name = bench\nlxc.rootfs.path = dir:{rootfs}\nlxc.net.0.type = empty\n"
        "lxc.init.cmd = /sbin/init\nlxc.mount.auto = proc:mixed sys:ro\nlxc.autodev = 1\n"
        "lxc.apparmor.profile = unconfined\n" + (LXC_UNPRIVILEGED if unprivileged else ""))
    # Without newuidmap on PATH, LXC running as root writes the id maps itself; with it,
    # it would want /etc/subuid entries for root, which this bench must not add.
    env = {"PATH": "/nonexistent"} if unprivileged else None
    lxc_start = shutil.which("lxc-start")
    lxc_stop = shutil.which("lxc-stop")
    starts, stops = [], []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run([lxc_start, "-P", str(lxcpath), "-n", name, "-d"],
                           capture_output=True, text=True, env=env)
        starts.append(time.perf_counter() - t)
        if r.returncode != 0:
            print(f"lxc-start failed: {r.stderr.strip()[:300]}")
            return None
        t = time.perf_counter()
        subprocess.run([lxc_stop, "-P", str(lxcpath), "-n", name, "-k"], capture_output=True)
        stops.append(time.perf_counter() - t)
    return starts, stops


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--running", type=int, default=200)
    ap.add_argument("--no-netns", action="store_true")
    args = ap.parse_args()
    memcg = OwnMemcg()
    with memcg:
        return run(args, memcg)


def run(args: argparse.Namespace, memcg: OwnMemcg) -> int:
    with bench_daemon("vcd-bench-lifecycle-") as (daemon, work):
        rootfs = work / "rootfs"
        build_rootfs(rootfs)
        admin = daemon.proxy()
        admin.vx.create(name="bench", template="busybox")
        admin.vx.start(name="bench")   # warm: backend and supervisor up
        admin.vx.stop(name="bench")
        starts, stops = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            admin.vx.start(name="bench")
            starts.append(time.perf_counter() - t)
            # a vx.stop of busybox waits for its graceful halt (TERM, 1 s, KILL); measure
            # the API path to "stopped" with the halt command `true` plus the kill
            t = time.perf_counter()
            admin.vx.stop(name="bench")
            stops.append(time.perf_counter() - t)
        admin.vxdb.init.set(name="bench", halt="/bin/true", timeout=0)
        fast_stops = []
        for _ in range(args.runs):
            admin.vx.start(name="bench")
            t = time.perf_counter()
            admin.vx.stop(name="bench")
            fast_stops.append(time.perf_counter() - t)

        print(f"\n{'lifecycle (ms)':<44} {'median':>9} {'p90':>9} {'n':>6}")
        print(row("vx.start over XML-RPC (busybox init running)", starts))
        print(row("vx.stop over XML-RPC (graceful busybox halt)", stops))
        print(row("vx.stop over XML-RPC (halt=/bin/true, kill)", fast_stops))
        print(row("bare unshare --pid --fork --mount-proc chroot", bench_unshare(rootfs, args.runs)))
        for unprivileged in (False, True):
            kind = "unprivileged, idmapped rootfs" if unprivileged else "privileged"
            lxc = bench_lxc(rootfs, min(args.runs, 20), work, unprivileged)
            if lxc is None:
                print(f"{'lxc-start -d (' + kind + ')':<44} {'not available (apt-get install lxc)':>26}")
            else:
                print(row(f"lxc-start -d ({kind})", lxc[0]))
                print(row(f"lxc-stop -k ({kind})", lxc[1]))
                print(f"{'  ratio vx.start / lxc-start -d':<44} "
                      f"{statistics.median(starts) / statistics.median(lxc[0]):>9.2f}")
                print(f"{'  ratio vx.stop (halt=/bin/true) / lxc-stop -k':<44} "
                      f"{statistics.median(fast_stops) / statistics.median(lxc[1]):>9.2f}")
        print(f"load average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")

        # many running vservers: API latency and memory
        before = mem_available_kib()
        names = [f"m{i}" for i in range(args.running)]
        for n in names:
            admin.vx.create(name=n, template="busybox")
            if args.no_netns:
                admin.vxdb.vx.flags.remove(name=n, flag="HIDE_NETIF")
        created = mem_available_kib()
        own_before = memcg.charged()[0]
        sup_before = supervisor_rss_kib(daemon.rundir / "libvserver")
        t = time.perf_counter()
        for n in names:
            admin.vx.start(name=n)
        start_all = time.perf_counter() - t
        time.sleep(2)
        running = mem_available_kib()
        own_after = memcg.charged()[0]
        sup_after = supervisor_rss_kib(daemon.rundir / "libvserver")
        charged = memcg_charged_kib(daemon.cgroup_parent)
        status = []
        for n in names[:100]:
            t = time.perf_counter()
            admin.vx.status(name=n)
            status.append(time.perf_counter() - t)
        lists = []
        for _ in range(100):
            t = time.perf_counter()
            admin.vxdb.list()
            lists.append(time.perf_counter() - t)
        print(f"\n{f'with {args.running} vservers running (ms)':<44} {'median':>9} {'p90':>9} {'n':>6}")
        print(row("vx.status", status))
        print(row("vxdb.list", lists))
        per = (created - running) / args.running / 1024
        goal = GOAL_MIB[args.no_netns]
        print(f"\nstarted {args.running} vservers in {start_all:.2f} s; host memory per running "
              f"vserver (MemAvailable drop, supervisor included, "
              f"{'no network namespace' if args.no_netns else 'own network namespace'}): "
              f"{per:.2f} MiB, goal <= {goal} MiB: {'met' if per <= goal else 'NOT met'} "
              f"(creating their root filesystems took {(before - created) / 1024:.0f} MiB of page cache)")
        if charged:
            own = (own_after - own_before) / args.running
            print(f"memory cgroup charge per running vserver: median {statistics.median(charged) / 1024:.2f} "
                  f"MiB, p90 {pct(charged, 90) / 1024:.2f} MiB, and {own / 1024:.2f} MiB charged to "
                  f"vcd and its supervisor; supervisor RSS grew by "
                  f"{(sup_after - sup_before) / args.running:.1f} KiB per vserver")
        print(f"load average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        for n in names:
            admin.vxdb.init.set(name=n, halt="/bin/true", timeout=0)
        t = time.perf_counter()
        for n in names:
            admin.vx.stop(name=n)
        print(f"stopped {args.running} vservers over the API in {time.perf_counter() - t:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
