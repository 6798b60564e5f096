"""Group stop: `vg.vx.stop` of N running vservers beside N single `vx.stop` calls.

Issue 13's goal: 200 running vservers (halt=/bin/true) stopped by one vg.vx.stop in
under 2 s, their members stopped in parallel inside the daemon. The anchor, measured in
the same run on the same vservers: the same 200 stopped one `vx.stop` call after the
other. Also prints vg.vx.start of the group beside single vx.start calls.

Bounded: loopback only, fixed counts, cleans up every context it starts.
    python bench/group_stop.py [--count 200] [--rounds 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from benchdaemon import bench_daemon


def running(admin, names: list[str]) -> int:
    return sum(1 for n in names if admin.vx.status(name=n)["running"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200, help="vservers in the group")
    ap.add_argument("--rounds", type=int, default=1, help="repeat both measurements")
    args = ap.parse_args()
    with bench_daemon("vcd-bench-group-") as (daemon, _):
        admin = daemon.proxy()
        names = [f"g{i}" for i in range(args.count)]
        for n in names:
            admin.vx.create(name=n, template="busybox")
            # as bench/lifecycle.py: a halt that exits at once, then the kill
            admin.vxdb.init.set(name=n, halt="/bin/true", timeout=0)
            admin.vg.add(group="bench", name=n)
        singles_stop, singles_start, group_stop, group_start = [], [], [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            for n in names:
                admin.vx.start(name=n)
            singles_start.append(time.perf_counter() - t)
            assert running(admin, names) == len(names)
            t = time.perf_counter()
            for n in names:
                admin.vx.stop(name=n)
            singles_stop.append(time.perf_counter() - t)
            assert running(admin, names) == 0

            t = time.perf_counter()
            assert admin.vg.vx.start(group="bench") is None
            group_start.append(time.perf_counter() - t)
            assert running(admin, names) == len(names)
            t = time.perf_counter()
            assert admin.vg.vx.stop(group="bench") is None
            group_stop.append(time.perf_counter() - t)
            assert running(admin, names) == 0

        def med(xs: list[float]) -> str:
            return f"{statistics.median(xs):8.2f} s"

        print(f"\n{args.count} running vservers, halt=/bin/true (median of {args.rounds} round(s))")
        print(f"{'vg.vx.stop of the group (one call)':<46} {med(group_stop)}   goal < 2 s")
        print(f"{f'{args.count} x vx.stop, one after the other':<46} {med(singles_stop)}   anchor")
        print(f"{'vg.vx.start of the group (one call)':<46} {med(group_start)}")
        print(f"{f'{args.count} x vx.start, one after the other':<46} {med(singles_start)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
