"""vstatd benchmark: CPU time of one sampling step for 10, 100 and 500 running contexts.

Contexts are busybox inits started directly through libvserver's native backend
(no vcd); names come from a scratch VXDB, files go to a scratch rrddir, exactly
as in the daemon (`Collector.step`). For each count it prints the CPU time of the
first step (which creates the RRD files) and the mean/max of the steady steps over
one flush interval (files are written in turn, a share each step),
split into the sampling pass and the whole step (sampling + VXDB + RRD updates),
and what that is as a share of one core at the default 5 s step. Goal (issue 6):
500 vservers per 5 s step under 5 % of one core.

Run as root: ``.venv/bin/python bench/vstatd.py [--counts 10,100,500] [--steps 8]``.
Every context, cgroup and file it makes is removed at the end, whatever happens.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from libvserver import ContextSpec  # noqa: E402
from libvserver.native import NativeBackend  # noqa: E402
from templates.busybox import build_rootfs  # noqa: E402
from vcd import vxdb  # noqa: E402
from vstatd.collector import Collector  # noqa: E402
from vstatd.sample import NativeSampler  # noqa: E402
from vstatd.store import Store  # noqa: E402

BCAPS = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID", "SYS_CHROOT",
         "SYS_BOOT"}
STEP = 5
FLUSH_INTERVAL = 60   # the default of [vstatd] flush_interval
BASE_XID = 31000


def cpu_ms(fn) -> tuple[float, object]:
    t = time.process_time()
    result = fn()
    return (time.process_time() - t) * 1000, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="10,100,500")
    ap.add_argument("--steps", type=int, default=FLUSH_INTERVAL // STEP,
                    help="steady steps measured per count (default: one flush interval)")
    args = ap.parse_args()
    counts = sorted(int(c) for c in args.counts.split(","))
    if os.geteuid() != 0:
        sys.exit("bench/vstatd.py starts real contexts: run it as root")
    tmp = Path(tempfile.mkdtemp(prefix="vstatd-bench-"))
    root = tmp / "rootfs"
    build_rootfs(root)
    parent = f"vstatdbench-{os.getpid()}"
    b = NativeBackend(state_dir=tmp / "state", cgroup_parent=parent, image_dir=tmp / "img")
    db = vxdb.connect(tmp / "vxdb", create=True)
    vxdb.migrate(db)
    rows = []
    try:
        started = 0
        t = (int(time.time()) // STEP + 1) * STEP
        for n in counts:
            with vxdb.transaction(db, immediate=True):
                for i in range(started, n):
                    db.execute("INSERT INTO vservers (xid, name, vdir) VALUES (?, ?, ?)",
                               (BASE_XID + i, f"bench{i}", str(root)))
            for i in range(started, n):
                b.start(ContextSpec(xid=BASE_XID + i, name=f"bench{i}", vdir=root,
                                    bcaps=BCAPS))
            started = n
            time.sleep(1.0)  # let every init reach its respawned sleep
            running = len(b.running())
            rrddir = tmp / f"rrd{n}"
            sampler = NativeSampler(b)
            collector = Collector(tmp / "vxdb", sampler, Store(rrddir, STEP, "keep",
                                                               FLUSH_INTERVAL))
            first, r = cpu_ms(lambda: collector.step(t))
            files = r.queued
            samples, steps = [], []
            for k in range(1, args.steps + 1):
                samples.append(cpu_ms(sampler.sample)[0])
                steps.append(cpu_ms(lambda: collector.step(t + k * STEP))[0])
            collector.close()
            t += (args.steps + 2) * STEP
            rows.append((n, running, files, first, statistics.mean(samples),
                         statistics.mean(steps), max(steps)))
            print(f"... {n} contexts measured", file=sys.stderr, flush=True)
        print(f"vstatd step cost, native backend, kernel {os.uname().release}, "
              f"{os.cpu_count()} CPUs; CPU time of this process (no child processes)")
        print(f"{'contexts':>8} {'running':>7} {'files':>6} {'first step':>11} "
              f"{'sample pass':>12} {'full step':>10} {'max step':>9} {'% core @5s':>10}")
        print(f"{'':>8} {'':>7} {'':>6} {'(creates)':>11} {'(mean)':>12} {'(mean)':>10}")
        for n, running, files, first, sample, step, worst in rows:
            print(f"{n:>8} {running:>7} {files:>6} {first:>8.1f} ms {sample:>9.1f} ms "
                  f"{step:>7.1f} ms {worst:>6.1f} ms {step / (STEP * 1000) * 100:>9.2f}%")
    finally:
        db.close()
        b.shutdown()    # every context, the supervisor and the cgroups of this parent
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
