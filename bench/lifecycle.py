"""Lifecycle over the API: vx.start / vx.stop latency, status latency under load, memory.

Prints, in one run on this machine:
  - vx.start -> running and vx.stop -> stopped over XML-RPC (median, p90 of N),
  - beside `lxc-start -d` of the same root filesystem (Debian's lxc, if installed) and a
    bare `unshare --pid --fork --mount-proc ... chroot ... /bin/true`,
  - vx.status and vxdb.list latency with M vservers running,
  - host memory per running vserver (MemAvailable drop, supervisor included).

Bounded: loopback only, fixed counts, cleans up every context it starts.
    python bench/lifecycle.py [--runs 50] [--running 200]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from vcdtest import VcdDaemon  # noqa: E402
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


def bench_unshare(rootfs: Path, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--mount-proc",
                        "chroot", str(rootfs), "/bin/true"], check=True)
        out.append(time.perf_counter() - t)
    return out


def bench_lxc(rootfs: Path, runs: int, workdir: Path) -> tuple[list[float], list[float]] | None:
    if shutil.which("lxc-start") is None:
        return None
    lxcpath = workdir / "lxc"
    (lxcpath / "bench").mkdir(parents=True)
    (lxcpath / "bench" / "config").write_text(
        f"lxc.uts.name = bench\nlxc.rootfs.path = dir:{rootfs}\nlxc.net.0.type = empty\n"
        "lxc.init.cmd = /sbin/init\nlxc.mount.auto = proc:rw sys:ro\nlxc.autodev = 1\n"
        "lxc.apparmor.profile = unconfined\n")
    starts, stops = [], []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(["lxc-start", "-P", str(lxcpath), "-n", "bench", "-d"],
                           capture_output=True, text=True)
        starts.append(time.perf_counter() - t)
        if r.returncode != 0:
            print(f"lxc-start failed: {r.stderr.strip()[:300]}")
            return None
        t = time.perf_counter()
        subprocess.run(["lxc-stop", "-P", str(lxcpath), "-n", "bench", "-k"], capture_output=True)
        stops.append(time.perf_counter() - t)
    return starts, stops


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--running", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vcd-bench-lifecycle-"))
    rootfs = work / "rootfs"
    build_rootfs(rootfs)
    daemon = VcdDaemon(work / "vcd", workers=4)
    try:
        daemon.start()
        admin = daemon.proxy()
        from templates import busybox
        busybox.build("busybox", daemon.templatedir)
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
        lxc = bench_lxc(rootfs, min(args.runs, 20), work)
        if lxc is None:
            print(f"{'lxc-start -d':<44} {'not available (apt-get install lxc)':>26}")
        else:
            print(row("lxc-start -d (same rootfs)", lxc[0]))
            print(row("lxc-stop -k", lxc[1]))

        # many running vservers: API latency and memory
        before = mem_available_kib()
        names = [f"m{i}" for i in range(args.running)]
        for n in names:
            admin.vx.create(name=n, template="busybox")
        created = mem_available_kib()
        t = time.perf_counter()
        for n in names:
            admin.vx.start(name=n)
        start_all = time.perf_counter() - t
        time.sleep(2)
        running = mem_available_kib()
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
        print(f"\nstarted {args.running} vservers in {start_all:.2f} s; host memory per running "
              f"vserver (MemAvailable drop, supervisor included): {per:.2f} MiB "
              f"(creating their root filesystems took {(before - created) / 1024:.0f} MiB of page cache)")
        for n in names:
            admin.vxdb.init.set(name=n, halt="/bin/true", timeout=0)
        t = time.perf_counter()
        for n in names:
            admin.vx.stop(name=n)
        print(f"stopped {args.running} vservers over the API in {time.perf_counter() - t:.2f} s")
    finally:
        daemon.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
