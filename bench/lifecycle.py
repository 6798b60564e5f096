"""Lifecycle over the API: vx.start / vx.stop latency, status latency under load, memory.

Prints, in one run on this machine:
  - vx.start -> running and vx.stop -> stopped over XML-RPC (median, p90 of N),
  - beside `lxc-start -d` / `lxc-stop -k` of the same root filesystem (Debian's lxc, if
    installed), privileged and unprivileged, in turns of five cycles each (the same
    minutes: this machine's speed drifts by a third within minutes), and a bare
    `unshare --pid --fork --mount-proc ... chroot ... /bin/true`,
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


BURST = 5   # cycles of one system before the next system's turn

LXC_UNPRIVILEGED = (
    # the fair comparison with vcd's default: a 65536-id range and an idmapped rootfs
    "lxc.idmap = u 0 1000000 65536\nlxc.idmap = g 0 1000000 65536\n"
    "lxc.rootfs.options = idmap=container\n")


class Lxc:
    """lxc-start -d / lxc-stop -k of a root filesystem, one cycle at a time (so that a
    bench can interleave them with vcd's: machine speed here drifts by a third within
    minutes, and only calls made at the same moments compare); privileged as LXC runs as
    root by default, or with a user namespace like vcd's default."""

    def __init__(self, rootfs: Path, workdir: Path, unprivileged: bool = False) -> None:
        self.start_cmd = self.stop_cmd = None
        self.env = None
        lxc_start, lxc_stop = shutil.which("lxc-start"), shutil.which("lxc-stop")
        if lxc_start is None or lxc_stop is None:
            return
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
        self.env = {"PATH": "/nonexistent"} if unprivileged else None
        self.start_cmd = [lxc_start, "-P", str(lxcpath), "-n", name, "-d"]
        self.stop_cmd = [lxc_stop, "-P", str(lxcpath), "-n", name, "-k"]

    @property
    def available(self) -> bool:
        return self.start_cmd is not None

    def cycle(self) -> tuple[float, float]:
        """One start and its stop: (seconds, seconds). RuntimeError when lxc-start fails."""
        assert self.start_cmd is not None and self.stop_cmd is not None
        t = time.perf_counter()
        r = subprocess.run(self.start_cmd, capture_output=True, text=True, env=self.env)
        started = time.perf_counter() - t
        if r.returncode != 0:
            raise RuntimeError(f"lxc-start failed: {r.stderr.strip()[:300]}")
        t = time.perf_counter()
        subprocess.run(self.stop_cmd, capture_output=True)
        return started, time.perf_counter() - t


def bench_lxc(rootfs: Path, runs: int, workdir: Path, unprivileged: bool = False
              ) -> tuple[list[float], list[float]] | None:
    """`runs` cycles of Lxc: (starts, stops) in seconds; None without LXC or when
    lxc-start fails (said on stdout)."""
    lxc = Lxc(rootfs, workdir, unprivileged)
    if not lxc.available:
        return None
    starts, stops = [], []
    try:
        for _ in range(runs):
            a, b = lxc.cycle()
            starts.append(a)
            stops.append(b)
    except RuntimeError as exc:
        print(exc)
        return None
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

        def cycle(starts: list[float], stops: list[float]) -> None:
            t = time.perf_counter()
            admin.vx.start(name="bench")
            starts.append(time.perf_counter() - t)
            t = time.perf_counter()
            admin.vx.stop(name="bench")
            stops.append(time.perf_counter() - t)

        # a vx.stop of busybox waits for its graceful halt (TERM, 1 s, KILL)
        graceful_starts: list[float] = []
        graceful_stops: list[float] = []
        for _ in range(args.runs):
            cycle(graceful_starts, graceful_stops)
        # the API path to "stopped" with the halt command `true` plus the kill, in turns
        # with LXC's containers of the same root filesystem
        admin.vxdb.init.set(name="bench", halt="/bin/true", timeout=0)
        lxcs = {kind: Lxc(rootfs, work, kind == "unprivileged, idmapped rootfs")
                for kind in ("privileged", "unprivileged, idmapped rootfs")}
        lxcs = {kind: lxc for kind, lxc in lxcs.items() if lxc.available}
        starts: list[float] = []
        stops: list[float] = []
        lxc_cycles: dict[str, list[tuple[float, float]]] = {kind: [] for kind in lxcs}
        # in bursts of BURST cycles each, taking turns: every system runs back to back
        # as it would alone (LXC's start is 2-3 times slower right after another
        # system's stop or a pause), and all are sampled over the same minutes
        while len(starts) < args.runs:
            for _ in range(min(BURST, args.runs - len(starts))):
                cycle(starts, stops)
            for kind, lxc in list(lxcs.items()):
                try:
                    for _ in range(BURST):
                        lxc_cycles[kind].append(lxc.cycle())
                except RuntimeError as exc:
                    print(f"{kind}: {exc}")
                    del lxcs[kind]

        print(f"\n{'lifecycle (ms)':<44} {'median':>9} {'p90':>9} {'n':>6}")
        print(row("vx.start over XML-RPC (busybox init running)", starts))
        print(row("vx.stop over XML-RPC (halt=/bin/true, kill)", stops))
        print(row("vx.start, each after a graceful stop", graceful_starts))
        print(row("vx.stop over XML-RPC (graceful busybox halt)", graceful_stops))
        print(row("bare unshare --pid --fork --mount-proc chroot", bench_unshare(rootfs, args.runs)))
        for kind in ("privileged", "unprivileged, idmapped rootfs"):
            cycles = lxc_cycles.get(kind)
            if not cycles or kind not in lxcs:
                print(f"{'lxc-start -d (' + kind + ')':<44} {'not available (apt-get install lxc)':>26}")
                continue
            lxc_starts, lxc_stops = [c[0] for c in cycles], [c[1] for c in cycles]
            print(row(f"lxc-start -d ({kind})", lxc_starts))
            print(row(f"lxc-stop -k ({kind})", lxc_stops))
            # each burst's medians side by side: the same minutes
            bursts = [(statistics.median(starts[i:i + BURST]),
                       statistics.median(lxc_starts[i:i + BURST]))
                      for i in range(0, min(len(starts), len(lxc_starts)), BURST)]
            faster = sum(v < x for v, x in bursts)
            print(f"{'  ratio vx.start / lxc-start -d':<44} "
                  f"{statistics.median(starts) / statistics.median(lxc_starts):>9.2f}"
                  f"   (vx.start faster in {faster} of {len(bursts)} bursts)")
            print(f"{'  ratio vx.stop (halt=/bin/true) / lxc-stop -k':<44} "
                  f"{statistics.median(stops) / statistics.median(lxc_stops):>9.2f}")
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
