"""Benchmark: populating vdirs from BusyBox and Debian templates, extracted, copied and shared.

Prints one table: per template and mode, the median time of one populate (what
vx.create spends on the file system) and the disk space each vserver adds
(``du -sx`` of its vdir and overlay state, i.e. not counting the shared
template), plus the template's own size.

    python bench/template_cache.py [--templatedir DIR] [-n 5] [--no-debian]

Templates are built once into --templatedir (default /var/tmp/vcd-bench/templates)
and reused by later runs; vdirs go to a temporary directory and are removed.
Needs root (overlay mounts, chown).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from templates import busybox, debian  # noqa: E402
from templates.errors import BuildError  # noqa: E402
from templates.pack import StepPrinter  # noqa: E402
from templates.store import TemplateStore  # noqa: E402


def du_kib(*paths: Path) -> int:
    existing = [str(p) for p in paths if os.path.lexists(p)]
    if not existing:
        return 0
    out = subprocess.run(["du", "-s", "-x", "-k", "-c", "--", *existing], capture_output=True,
                         text=True, check=True).stdout
    return int(out.splitlines()[-1].split()[0])


def ensure_templates(store: TemplateStore, with_debian: bool) -> list[tuple[str, str, str]]:
    """(label, tarball template, directory template) pairs, building what is missing."""
    names = {t.name for t in store.list()}
    say = StepPrinter(sys.stderr)
    if "bench-bb" not in names:
        busybox.build("bench-bb", store.templatedir, fmt="gz", progress=say)
    if "bench-bb-dir" not in names:
        store.unpack("bench-bb", "bench-bb-dir")
    pairs = [("busybox", "bench-bb", "bench-bb-dir")]
    if with_debian:
        try:
            if "bench-deb" not in names:
                debian.build("bench-deb", store.templatedir, fmt="zst", progress=say)
            if "bench-deb-dir" not in names:
                store.unpack("bench-deb", "bench-deb-dir")
            pairs.append(("debian", "bench-deb", "bench-deb-dir"))
        except BuildError as e:
            print(f"skipping Debian: {e}", file=sys.stderr)
    return pairs


def run(store: TemplateStore, label: str, template: str, copy: bool, n: int,
        workdir: Path) -> dict[str, object]:
    base = workdir / f"{template}-{'copy' if copy else 'share'}"
    base.mkdir()
    times = []
    vdirs = [base / f"v{i}" for i in range(n)]
    try:
        for v in vdirs:
            t0 = time.perf_counter()
            store.populate(template, v, copy=copy)
            times.append(time.perf_counter() - t0)
        # -x keeps du off the overlay mounts: what is counted is each vdir's own
        # space (for a sharing vdir: its empty mount point plus upper/work).
        per_vserver = du_kib(base) / n
    finally:
        for v in vdirs:
            if os.path.lexists(v):
                store.remove_tree(v, base)
    info = store.get(template)
    kind = "extract" if info.kind == "tarball" else ("copy" if copy else "share")
    return {"template": label, "source": info.path.name, "mode": kind,
            "median_ms": statistics.median(times) * 1000, "max_ms": max(times) * 1000,
            "kib_per_vserver": per_vserver, "template_kib": du_kib(info.path), "n": n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--templatedir", type=Path, default=Path("/var/tmp/vcd-bench/templates"))
    ap.add_argument("-n", type=int, default=5, help="vservers per case (default 5)")
    ap.add_argument("--no-debian", action="store_true", help="skip the Debian template")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/template_cache.py needs root (overlay mounts)", file=sys.stderr)
        return 1
    store = TemplateStore(args.templatedir)
    pairs = ensure_templates(store, not args.no_debian)
    rows = []
    with tempfile.TemporaryDirectory(prefix="vcd-bench-vs.", dir="/var/tmp") as wd:
        for label, tarball, directory in pairs:
            rows.append(run(store, label, tarball, True, args.n, Path(wd)))
            rows.append(run(store, label, directory, True, args.n, Path(wd)))
            rows.append(run(store, label, directory, False, args.n, Path(wd)))
    head = f"{'template':9} {'from':22} {'mode':8} {'median':>10} {'max':>10} {'du/vserver':>12} {'template':>11}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['template']:9} {r['source']:22} {r['mode']:8} {r['median_ms']:8.1f}ms "
              f"{r['max_ms']:8.1f}ms {r['kib_per_vserver']/1024:9.2f} MiB {r['template_kib']/1024:7.1f} MiB")
    print(f"(n={args.n} vservers per row; du -sx per vserver excludes the shared template)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
