"""Where a vx.start spends its time: per-phase timings of N starts over the API.

The daemon runs with VCD_START_PHASES=<file>; each start appends its phases there
(vcd/dispatch.py, vcd/runtime.py, libvserver/native/phases.py): the daemon's (XML-RPC
parse, authentication, owner check, lock, spec from VXDB, checks),
the backend's, the supervisor's and those of the context's init, which run at the same
time as the supervisor's ("init: ..." rows; their begin is relative to the API call).
Prints per phase the median begin (ms after the call was sent) and median duration,
then the API round trip beside `lxc-start -d` (privileged and unprivileged) of the same
root filesystem, run in the same invocation.

With VCD_INIT_FORKER=0 in the environment the supervisor forks every init itself, as
before the init forkers; with VCD_NATIVE=0 the Python forker
(libvserver/native/initforker.py) clones every init, as before the C one (vsinit.c):
run them alternately to compare under the same load (or bench/start_pair.py --env).

Bounded: loopback only, fixed counts, cleans up every context it starts.
    python bench/start_phases.py [--runs 30] [--netns] [--running 200] [--pause S] [--save FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchdaemon import bench_daemon, start_with_busybox
from templates.busybox import build_rootfs  # noqa: E402
from lifecycle import bench_lxc, row  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--netns", action="store_true", help="give the vserver an address (veth)")
    ap.add_argument("--running", type=int, default=0,
                    help="then start this many other vservers and measure vx.start again "
                         "(a start must not slow down with the number running)")
    ap.add_argument("--pause", type=float, default=0.0,
                    help="seconds to wait after each stop: a start on an idle machine (its "
                         "CPUs asleep, its caches cold) takes longer than one right after "
                         "another")
    ap.add_argument("--save", type=Path, help="also write each start's raw phases here "
                    "(JSON lines: [name, begin, end] in seconds; the call's own first)")
    args = ap.parse_args()
    with bench_daemon("vcd-bench-phases-", start=False) as (daemon, work):
        phases_file = work / "phases.jsonl"
        os.environ["VCD_START_PHASES"] = str(phases_file)    # the daemon's, from its start
        rootfs = work / "rootfs"
        build_rootfs(rootfs)
        start_with_busybox(daemon)
        admin = daemon.proxy()
        admin.vx.create(name="bench", template="busybox")
        if args.netns:
            admin.vxdb.nx.addr.set(name="bench", addr="10.213.0.2", netmask="255.255.255.0")
        admin.vxdb.init.set(name="bench", halt="/bin/true", timeout=0)
        admin.vx.start(name="bench")   # warm: backend and supervisor up
        admin.vx.stop(name="bench")
        phases_file.unlink(missing_ok=True)
        calls: list[tuple[float, float]] = []
        for _ in range(args.runs):
            time.sleep(args.pause)
            t = time.time()
            admin.vx.start(name="bench")
            calls.append((t, time.time()))
            admin.vx.stop(name="bench")
        runs = [json.loads(line) for line in phases_file.read_text().splitlines()]
        if args.save:
            args.save.write_text("".join(json.dumps([["call", *c], *r]) + "\n"
                                         for c, r in zip(calls, runs)))
        by_name: dict[str, list[tuple[float, float]]] = {}
        order: list[str] = []
        for (t0, t_end), rows in zip(calls, runs):
            # the client's side and the HTTP exchange, before the daemon's first step and
            # after its last
            rows = [["client: marshal, HTTP request, worker wake-up", t0, rows[0][1]], *rows,
                    ["vcd: answer, HTTP response, client", rows[-1][2], t_end]]
            for name, begin, end in rows:
                if name not in by_name:
                    by_name[name] = []
                    order.append(name)
                by_name[name].append(((begin - t0) * 1000, (end - begin) * 1000))
        order.sort(key=lambda n: statistics.median(b for b, _ in by_name[n]))
        print(f"\n{'vx.start phases (ms, median of ' + str(len(runs)) + ')':<58} {'begin':>7} {'takes':>7}")
        for name in order:
            v = by_name[name]
            print(f"{name:<58} {statistics.median(b for b, _ in v):>7.2f} "
                  f"{statistics.median(d for _, d in v):>7.2f}")
        print(f"\n{'(ms)':<44} {'median':>9} {'p90':>9} {'n':>6}")
        api = [e - b for b, e in calls]
        print(row("vx.start over XML-RPC (with phase recording)", api))
        for unprivileged in (False, True):
            kind = "unprivileged, idmapped rootfs" if unprivileged else "privileged"
            lxc = bench_lxc(rootfs, min(args.runs, 20), work, unprivileged)
            if lxc is not None:
                print(row(f"lxc-start -d ({kind})", lxc[0]))
                print(f"{'  ratio vx.start / lxc-start':<44} "
                      f"{statistics.median(api) / statistics.median(lxc[0]):>9.2f}")
        print(f"load average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
        if args.running:
            others = [f"o{i}" for i in range(args.running)]
            for n in others:
                admin.vx.create(name=n, template="busybox")
                admin.vx.start(name=n)
            loaded = []
            for _ in range(args.runs):
                t = time.time()
                admin.vx.start(name="bench")
                loaded.append(time.time() - t)
                admin.vx.stop(name="bench")
            print(row(f"vx.start with {args.running} others running", loaded))
            print(f"{'  ratio to vx.start with none running':<44} "
                  f"{statistics.median(loaded) / statistics.median(api):>9.2f}")
            for n in others:
                admin.vxdb.init.set(name=n, halt="/bin/true", timeout=0)
                admin.vx.stop(name=n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
