"""Which kernel allocations a running vserver holds, traced (prints figures; asserts nothing).

MemAvailable and the slab counters are machine-wide: on a shared machine other work moves
them by more than the vservers do. This traces instead (``perf record -a`` of the kmem,
percpu and vmalloc tracepoints) while N busybox vservers start, keeps what is still
allocated when they all run, and attributes it by the process that allocated it (vcd, the
supervisor, a context's init before and after exec, other processes of the context) and
by allocating function, so the figures are exact for what the kernel allocates on our
behalf, whatever else the machine does. Frees are matched machine-wide (RCU callbacks
free in other tasks). Objects no cgroup is charged for show as accounted=False.

    python bench/density_trace.py [--running 30] [--no-netns] [--top 40]

Needs perf (Debian's linux-perf) and root; the trace of 30 starts is ~200 MB in a
temporary directory, removed afterwards.
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdaemon import bench_daemon
from vcdtest import children_of  # noqa: E402

EVENTS = ("kmem:kmalloc", "kmem:kmem_cache_alloc", "kmem:kfree", "kmem:kmem_cache_free",
          "percpu:percpu_alloc_percpu", "percpu:percpu_free_percpu",
          "vmalloc:alloc_vmap_area", "vmalloc:free_vmap_area_noflush",
          "sched:sched_process_fork")
# caches the kernel gives back under memory pressure: MemAvailable counts them as available
RECLAIMABLE = {"dentry", "inode_cache", "proc_inode_cache", "radix_tree_node",
               "ext4_inode_cache", "buffer_head"}
LINE = re.compile(r"^\s*(\S.*?)\s+(\d+)/(\d+)\s+(\S+):\s(.*)$")
FIELD = re.compile(r"(\w+)=(\S+)")


def record(n: int, no_netns: bool, out: Path) -> dict:
    """Start n vservers under perf; returns who is who (pids)."""
    with bench_daemon("vcd-bench-trace-", workers=2) as (daemon, _):
        admin = daemon.proxy()
        names = [f"t{i}" for i in range(n)]
        for name in ["warm", *names]:
            admin.vx.create(name=name, template="busybox")
            admin.vxdb.init.set(name=name, halt="/bin/true", timeout=0)
            if no_netns:
                admin.vxdb.vx.flags.remove(name=name, flag="HIDE_NETIF")
        for _ in range(2):  # warm: the supervisor, its imports, the kernel's caches
            admin.vx.start(name="warm")
            admin.vx.stop(name="warm")
        time.sleep(1)
        args = ["perf", "record", "-a", "-q", "-m", "4096", "-o", str(out / "perf.data")]
        for e in EVENTS:
            args += ["-e", e]
        perf = subprocess.Popen(args)
        time.sleep(2)
        for name in names:
            admin.vx.start(name=name)
        time.sleep(3)
        perf.send_signal(signal.SIGINT)
        perf.wait()
        from libvserver.native.cgroups import Layout
        from libvserver.native.supervisor import is_init
        keeper = int((daemon.rundir / "libvserver" / "supervisor.lock").read_text().split()[0])
        main = int(daemon.pidfile.read_text().split()[0])
        layout = Layout(daemon.cgroup_parent)
        ctx = {p: ("init" if is_init(p) else "other") for xid in layout.xids()
               for p in layout.pids(xid)}
        who = {"supervisor": [keeper, *children_of(keeper)], "vcd": [main, *children_of(main)],
               "ctx": ctx}
        return who


def analyze(script: Path, who: dict, n: int, top: int) -> None:
    sup, vcd = set(who["supervisor"]), set(who["vcd"])
    ctx: dict[int, str] = who["ctx"]
    parent: dict[int, int] = {}

    def owner(pid: int) -> str | None:
        p, hops = pid, 0
        while p and hops < 64:
            if p in ctx:
                return f"context {ctx[p]}" if p == pid else "context (short-lived)"
            if p in sup:
                return "supervisor"
            if p in vcd:
                return "vcd"
            p, hops = parent.get(p, 0), hops + 1
        return None

    objs: dict[str, tuple] = {}
    pcpu: dict[str, tuple] = {}
    vmap: dict[str, tuple] = {}
    with open(script) as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            _comm, pid, _tid, ev, rest = m.groups()
            fields = dict(FIELD.findall(rest))
            if ev == "sched:sched_process_fork":
                parent[int(fields["child_pid"])] = int(fields.get("pid", pid))
            elif ev in ("kmem:kfree", "kmem:kmem_cache_free"):
                objs.pop(fields.get("ptr", ""), None)
            elif ev == "percpu:percpu_free_percpu":
                pcpu.pop(fields.get("ptr", ""), None)
            elif ev == "vmalloc:free_vmap_area_noflush":
                vmap.pop(str(int(fields.get("va_start", "0x0"), 16)), None)
            else:
                o = owner(int(pid))
                if o is None:
                    continue
                if ev in ("kmem:kmalloc", "kmem:kmem_cache_alloc"):
                    objs[fields["ptr"]] = (o, fields["call_site"].split("+")[0],
                                           fields.get("name", "kmalloc"),
                                           int(fields["bytes_alloc"]),
                                           fields.get("accounted") == "true")
                elif ev == "percpu:percpu_alloc_percpu":
                    pcpu[fields["ptr"]] = (o, fields["call_site"].split("+")[0],
                                           int(fields["bytes_alloc"]))
                elif ev == "vmalloc:alloc_vmap_area":
                    va = re.search(r"va_start: (\d+)", rest)
                    if va:
                        vmap[va.group(1)] = (o, int(fields["size"]))

    def table(title: str, rows: collections.Counter, count: collections.Counter | None,
              limit: int) -> None:
        print(f"\n{title}: {sum(rows.values()) / n / 1024:.1f} KiB per vserver")
        for key, size in rows.most_common(limit):
            times = f" {count[key] / n:6.1f}x" if count is not None else ""
            print(f"  {size / n:9.0f} B{times}  {' / '.join(map(str, key))}")

    by_owner, by_site, cnt = collections.Counter(), collections.Counter(), collections.Counter()
    for o, site, cache, size, accounted in objs.values():
        kind = "reclaimable" if cache in RECLAIMABLE else "unreclaimable"
        by_owner[(o, kind, "charged" if accounted else "no cgroup charged")] += size
        by_site[(o, site, cache)] += size
        cnt[(o, site, cache)] += 1
    table("slab objects still allocated", by_owner, None, 20)
    table("by allocating function", by_site, cnt, top)
    pc = collections.Counter()
    for o, site, size in pcpu.values():
        pc[(o, site)] += size
    table("per-cpu memory still allocated", pc, None, 15)
    vm = collections.Counter()
    for o, size in vmap.values():
        vm[(o, f"{size} B areas")] += size
    table("vmalloc areas still allocated (kernel stacks, pty buffers, BPF programs; "
          "with guard pages)", vm, None, 10)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--running", type=int, default=30)
    ap.add_argument("--no-netns", action="store_true")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    if shutil.which("perf") is None:
        print("perf is not installed (Debian: apt-get install linux-perf)")
        return 1
    out = Path(tempfile.mkdtemp(prefix="vcd-bench-trace-data-"))
    try:
        who = record(args.running, args.no_netns, out)
        script = out / "script.txt"
        with open(script, "w") as f:
            subprocess.run(["perf", "script", "-i", str(out / "perf.data"),
                            "-F", "comm,pid,tid,event,trace"], stdout=f,
                           stderr=subprocess.DEVNULL, check=True)
        kind = "no network namespace" if args.no_netns else "own network namespace"
        print(f"kernel memory held per running vserver ({kind}), {args.running} started")
        analyze(script, who, args.running, args.top)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
