"""Boot and halt of Debian's systemd as an unprivileged vserver, beside unprivileged LXC.

Prints, in one run on this machine, for the same debootstrap tree (the `debian-systemd`
template, built here with templates.debian or taken from --template-dir):
  - vcd: vx.start (answers at READY=1), then until `systemctl is-system-running --wait`
    says running/degraded (seconds after vx.start was called); vx.stop (SIGRTMIN+3);
  - LXC: `lxc-start -d` with a user namespace (LXC_UNPRIVILEGED of bench/lifecycle.py) and
    `cgroup:rw`, until `lxc-attach -- systemctl is-system-running --wait` says the same;
    `lxc-stop` (its halt signal SIGRTMIN+3, as LXC's systemd configurations set).

Bounded: no network inside, fixed counts, cleans up what it starts.
    python bench/systemd_boot.py [--runs 5] [--template-dir DIR]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

from benchdaemon import bench_daemon
from lifecycle import LXC_UNPRIVILEGED, pct  # noqa: E402

TEMPLATE = "debian-systemd"
UP = ("running", "degraded")


def row(label: str, samples: list[float]) -> str:
    return (f"{label:<52} {statistics.median(samples):>8.2f} {pct(samples, 90):>8.2f} "
            f"{len(samples):>4}")


def get_template(templatedir: Path, prebuilt: Path | None) -> None:
    if prebuilt is not None:
        for suffix in (".tar.zst", ".conf"):
            shutil.copy(prebuilt / (TEMPLATE + suffix), templatedir)
        return
    from templates import debian
    debian.build(TEMPLATE, templatedir, suite="bookworm", fmt="zst",
                 cache_dir=Path("/var/cache/vcd-test-debs"), progress=None)


def bench_vcd(admin, runs: int) -> tuple[list[float], list[float], list[float], list[str]]:
    admin.vx.create(name="sdbench", template=TEMPLATE)
    starts, ups, stops, states = [], [], [], []
    try:
        for _ in range(runs):
            t = time.perf_counter()
            admin.vx.start(name="sdbench")
            starts.append(time.perf_counter() - t)
            state = admin.vx.exec(name="sdbench", command="systemctl is-system-running --wait",
                                  timeout=120).strip()
            ups.append(time.perf_counter() - t)
            states.append(state)
            t = time.perf_counter()
            if admin.vx.stop(name="sdbench") != "":
                raise RuntimeError("vx.stop ran a command instead of sending SIGRTMIN+3")
            stops.append(time.perf_counter() - t)
    except xmlrpc.client.Fault as f:
        print(f"vcd run failed: {f.faultString[:500]}")
        raise
    finally:
        if admin.vx.status(name="sdbench")["running"]:
            admin.vx.stop(name="sdbench")
        admin.vx.remove(name="sdbench")
    return starts, ups, stops, states


def bench_lxc(rootfs: Path, workdir: Path, runs: int
              ) -> tuple[list[float], list[float], list[float], list[str]] | None:
    lxc_start, lxc_attach, lxc_stop = (shutil.which(c) for c in
                                       ("lxc-start", "lxc-attach", "lxc-stop"))
    if not (lxc_start and lxc_attach and lxc_stop):
        print("LXC is not installed: no comparison")
        return None
    lxcpath = workdir / "lxc"
    (lxcpath / "sd").mkdir(parents=True)
    (lxcpath / "sd").chmod(0o755)
    (lxcpath / "sd" / "config").write_text(
        f"lxc.uts.name = sdbench\nlxc.rootfs.path = dir:{rootfs}\nlxc.net.0.type = empty\n"
        "lxc.init.cmd = /sbin/init\nlxc.mount.auto = proc:mixed sys:ro cgroup:rw\n"
        "lxc.autodev = 1\nlxc.apparmor.profile = unconfined\nlxc.pty.max = 4\n"
        "lxc.signal.halt = SIGRTMIN+3\nlxc.signal.reboot = SIGINT\n" + LXC_UNPRIVILEGED)
    # LXC as root writes the id maps itself only without newuidmap on PATH (lifecycle.py)
    env = {"PATH": "/nonexistent"}
    base = ["-P", str(lxcpath), "-n", "sd"]
    starts, ups, stops, states = [], [], [], []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run([lxc_start, *base, "-d"], capture_output=True, text=True, env=env)
        starts.append(time.perf_counter() - t)
        if r.returncode != 0:
            print(f"lxc-start failed: {r.stderr.strip()[:300]}")
            return None
        state = ""
        deadline = time.monotonic() + 120
        while state not in UP and time.monotonic() < deadline:
            # until systemd's private socket exists, --wait cannot wait ("Failed to
            # connect to bus"): ask again
            r = subprocess.run([lxc_attach, *base, "--clear-env", "--", "/bin/systemctl",
                                "is-system-running", "--wait"], capture_output=True,
                               text=True, env=env, timeout=120)
            state = r.stdout.strip()
        ups.append(time.perf_counter() - t)
        states.append(state or r.stderr.strip()[:100])
        t = time.perf_counter()
        subprocess.run([lxc_stop, *base, "-t", "30"], capture_output=True, env=env)
        stops.append(time.perf_counter() - t)
    return starts, ups, stops, states


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--template-dir", type=Path, help="holds debian-systemd.tar.zst/.conf")
    args = ap.parse_args()
    with bench_daemon("vcd-bench-systemd-", start=False, exec_timeout=120.0) as (daemon, work):
        get_template(daemon.templatedir, args.template_dir)
        from templates.store import TemplateStore
        rootfs = work / "rootfs"
        TemplateStore(daemon.templatedir).populate(TEMPLATE, rootfs)
        daemon.start()
        vcd = bench_vcd(daemon.proxy(), args.runs)
        lxc = bench_lxc(rootfs, work, args.runs)
        print(f"\n{'seconds, ' + str(args.runs) + ' runs':<52} {'median':>8} {'p90':>8} {'n':>4}")
        print(row("vcd: vx.start (until READY=1)", vcd[0]))
        print(row("vcd: vx.start -> is-system-running says up", vcd[1]))
        print(row("vcd: vx.stop (SIGRTMIN+3, until gone)", vcd[2]))
        if lxc is not None:
            print(row("lxc: lxc-start -d (unprivileged)", lxc[0]))
            print(row("lxc: lxc-start -> is-system-running says up", lxc[1]))
            print(row("lxc: lxc-stop (SIGRTMIN+3, until gone)", lxc[2]))
        print(f"states: vcd {sorted(set(vcd[3]))}"
              + (f", lxc {sorted(set(lxc[3]))}" if lxc is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
