"""vx.start of two vcd trees side by side, alternating call by call: the same moments,
the same load, so a change's gain shows on a busy machine too (issue 13).

Each tree runs its own daemon (and supervisor) from its own source: the other tree's
with PYTHONPATH pointing at it (make one with `git archive main | tar -x -C DIR`).
Prints both medians, the median of the paired differences (this tree minus the other)
and `lxc-start -d` of the same root filesystem, privileged and unprivileged, right after.
With --env NAME=VALUE this tree's daemon gets that in its environment (e.g.
VCD_INIT_FORKER=0: every init forked by the supervisor itself; VCD_NATIVE=0: every init
cloned by the Python forker and every entry forked by the Python entry server, none by
vsinit.c).

Bounded: loopback only, fixed counts, cleans up every context it starts.
    python bench/start_pair.py --other DIR [--runs 60] [--env NAME=VALUE]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from benchdaemon import start_with_busybox, stop_running  # noqa: E402
from lifecycle import bench_lxc, row  # noqa: E402
from templates.busybox import build_rootfs  # noqa: E402


def _vcdtest(tree: Path, alias: str):
    spec = importlib.util.spec_from_file_location(alias, tree / "tests" / "vcdtest.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--other", type=Path, required=True, help="the other vcd source tree")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--env", action="append", default=[], help="NAME=VALUE for this tree")
    args = ap.parse_args()
    trees = {"other": args.other.resolve(), "this": REPO}
    work = Path(tempfile.mkdtemp(prefix="vcd-bench-pair-"))
    work.chmod(0o711)
    daemons = {}
    saved = dict(os.environ)
    try:
        for k, (name, tree) in enumerate(trees.items()):
            vt = _vcdtest(tree, f"vcdtest_{name}")
            os.environ.clear()
            os.environ.update(saved)
            if name == "other":
                os.environ["PYTHONPATH"] = str(tree)
            else:
                os.environ.pop("PYTHONPATH", None)
                os.environ.update(e.split("=", 1) for e in args.env)
            # a cgroup parent and an id window of its own each
            d = daemons[name] = vt.VcdDaemon(work / name / "vcd", workers=2,
                                             cgroup_parent=f"{vt.CGROUP_PARENT}-d{k}",
                                             idmap_base=vt.IDMAP_BASE + (k * 256 << 16))
            start_with_busybox(d)
            admin = d.proxy()
            admin.vx.create(name="bench", template="busybox")
            admin.vxdb.init.set(name="bench", halt="/bin/true", timeout=0)
            admin.vx.start(name="bench")   # warm: backend and supervisor up
            admin.vx.stop(name="bench")
        os.environ.clear()
        os.environ.update(saved)
        times: dict[str, list[float]] = {n: [] for n in trees}
        for i in range(args.runs):
            for name in (("other", "this") if i % 2 == 0 else ("this", "other")):
                admin = daemons[name].proxy()
                t = time.perf_counter()
                admin.vx.start(name="bench")
                times[name].append(time.perf_counter() - t)
                admin.vx.stop(name="bench")
        print(f"\n{'(ms)':<44} {'median':>9} {'p90':>9} {'n':>6}")
        for name, tree in trees.items():
            print(row(f"vx.start, {name} tree", times[name]))
        diffs = sorted((a - b) * 1000 for a, b in zip(times["this"], times["other"]))
        print(f"{'  paired: this minus other':<44} {statistics.median(diffs):>+9.2f} "
              f"(this faster in {sum(d < 0 for d in diffs)} of {len(diffs)})")
        rootfs = work / "rootfs"
        build_rootfs(rootfs)
        for unprivileged in (False, True):
            kind = "unprivileged, idmapped rootfs" if unprivileged else "privileged"
            lxc = bench_lxc(rootfs, 20, work, unprivileged)
            if lxc is not None:
                print(row(f"lxc-start -d ({kind})", lxc[0]))
        print(f"load average: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for d in daemons.values():
            try:
                stop_running(d)
            finally:
                d.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
