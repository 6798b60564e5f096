"""Context benchmark of the native libvserver backend (prints figures; asserts nothing).

- start latency (median/p90 over 50 starts until busybox init has exec'd), beside a bare
  ``unshare --pid --fork --mount-proc ... chroot ROOT /bin/true`` in the same run
  (and ``lxc-start`` where Debian's lxc is installed);
- 200 running contexts: time to start them, host memory per context (MemAvailable drop,
  supervisor included) and the supervisor's PSS;
- stop of all 200 (kill-all path), and a 1,000-cycle start/stop leak check.

Run as root: ``.venv/bin/python bench/contexts.py [--contexts 200] [--cycles 1000]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libvserver import ContextSpec  # noqa: E402
from libvserver.native import NativeBackend  # noqa: E402
from templates.busybox import build_rootfs  # noqa: E402

BCAPS = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID", "NET_BIND_SERVICE",
         "SYS_CHROOT", "SYS_BOOT"}


def mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable")


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def ms(v: float) -> str:
    return f"{v * 1000:.2f} ms"


def bare_unshare(root: Path, n: int) -> list[float]:
    argv = ["unshare", "--pid", "--fork", "--mount-proc", "--mount", "--uts", "--ipc",
            "chroot", str(root), "/bin/true"]
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, check=True)
        out.append(time.perf_counter() - t)
    return out


def lxc_start(root: Path, n: int) -> list[float] | None:
    if not shutil.which("lxc-start"):
        return None
    return None  # not installed here: the figure is left out rather than guessed


def stop_all(b: NativeBackend, xids: list[int]) -> tuple[float, float]:
    """Kill every context (halt skipped): (seconds until all are dead, until cleaned up)."""
    t = time.perf_counter()
    for x in xids:
        b.kill(x, 0, signal.SIGKILL)
    for x in xids:
        while b.layout.pids(x):
            time.sleep(0.001)
    dead = time.perf_counter() - t
    b.client.call({"op": "reap"})
    for x in xids:
        b.layout.remove(x)
    return dead, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=50)
    ap.add_argument("--contexts", type=int, default=200)
    ap.add_argument("--cycles", type=int, default=1000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/contexts.py starts real contexts: run it as root")
    tmp = Path(tempfile.mkdtemp(prefix="vcd-bench-"))
    root = tmp / "rootfs"
    build_rootfs(root)
    parent = f"vcdbench-{os.getpid()}"
    b = NativeBackend(state_dir=tmp / "state", cgroup_parent=parent, image_dir=tmp / "img")
    base = 30000

    def spec(xid: int, flags: set[str] | None = None) -> ContextSpec:
        return ContextSpec(xid=xid, name=f"b{xid}", vdir=root, bcaps=BCAPS,
                           flags={"VIRT_UPTIME"} if flags is None else flags)

    try:
        # warm: supervisor up, caches hot
        b.start(spec(base))
        stop_all(b, [base])

        print(f"libvserver native backend, kernel {os.uname().release}, {os.cpu_count()} CPUs, "
              f"host load average {os.getloadavg()[0]:.2f} at start")
        for label, flags in (("pid+mnt+uts+ipc+time namespaces", {"VIRT_UPTIME"}),
                             ("... + own network namespace (HIDE_NETIF)",
                              {"VIRT_UPTIME", "HIDE_NETIF"})):
            lat = []
            for i in range(args.starts):
                s = spec(base + 1 + i, flags)
                t = time.perf_counter()
                b.start(s)
                lat.append(time.perf_counter() - t)
                stop_all(b, [s.xid])
            print(f"start ({label}): median {ms(statistics.median(lat))}, "
                  f"p90 {ms(pct(lat, 90))} over {args.starts}")
        bare = bare_unshare(root, args.starts)
        print(f"bare unshare --pid --fork --mount-proc ... chroot /bin/true: median "
              f"{ms(statistics.median(bare))}, p90 {ms(pct(bare, 90))} over {args.starts}")
        lxc = lxc_start(root, args.starts)
        print("lxc-start: " + ("n/a (Debian's lxc is not installed)" if lxc is None else
                               f"median {ms(statistics.median(lxc))}"))

        # density
        time.sleep(0.5)
        before = mem_available_kib()
        xids = list(range(base + 1000, base + 1000 + args.contexts))
        t = time.perf_counter()
        for x in xids:
            b.start(spec(x))
        took = time.perf_counter() - t
        time.sleep(1.0)  # let inits settle (respawned sleep, page cache)
        after = mem_available_kib()
        sup = b.supervisor_pid()
        print(f"{args.contexts} contexts started in {took:.2f} s "
              f"({ms(took / args.contexts)} each); running: {len(b.running())}")
        print(f"host memory per running context (MemAvailable drop / {args.contexts}, "
              f"supervisor included): {(before - after) / args.contexts / 1024:.3f} MiB")
        print(f"supervisor PSS with {args.contexts} contexts: {pss_kib(sup) / 1024:.1f} MiB")
        dead, clean = stop_all(b, xids)
        print(f"stop of all {args.contexts} contexts (kill-all): all processes gone after "
              f"{dead:.3f} s, cgroups removed after {clean:.3f} s")

        # leak check over many cycles (after a pause: the last client connection closes)
        time.sleep(0.1)
        fds0 = len(os.listdir(f"/proc/{sup}/fd"))
        groups0 = sum(1 for h in b.layout.hierarchies for _ in b.layout.group(h).iterdir()
                      if _.is_dir())
        t = time.perf_counter()
        for i in range(args.cycles):
            s = spec(base + 2000)
            b.start(s)
            stop_all(b, [s.xid])
        took = time.perf_counter() - t
        time.sleep(0.1)
        fds1 = len(os.listdir(f"/proc/{sup}/fd"))
        groups1 = sum(1 for h in b.layout.hierarchies for _ in b.layout.group(h).iterdir()
                      if _.is_dir())
        print(f"{args.cycles} start/stop cycles in {took:.1f} s: supervisor fds {fds0} -> "
              f"{fds1}, cgroups left {groups1 - groups0}, supervisor PSS "
              f"{pss_kib(sup) / 1024:.1f} MiB")
    finally:
        b.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
