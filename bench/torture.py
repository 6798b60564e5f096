#!/usr/bin/env python3
"""The full torture run (tests/torture/ runs the same workloads in a bounded form).

    .venv/bin/python bench/torture.py [--clients 64] [--seconds 60] [--kills 100] [--fuzz 5000]
                                      [--slow 256] [--flood-seconds 30] [--only mixed,kill,...]

Phases, each against a fresh real `vcd` on loopback (temporary directories,
vservers from the busybox template, every context killed at the end):

* mixed: CLIENTS threads for SECONDS of reads, VXDB writes, user writes and
  starts/stops; prints requests, faults by code, unexpected faults, and the
  acknowledged writes verified afterwards.
* kill: KILLS SIGKILLs of the whole daemon at random moments while 4 writers write;
  prints kills survived, integrity checks, acknowledged writes verified.
* fuzz: FUZZ generated calls + FUZZ mutated bodies; prints cases, HTTP statuses, faults.
* slow: SLOW connections at one byte a second against 2 workers; prints calls served
  meanwhile and the worst latency.
* flood: one address floods (failed logins, 600 held connections), another calls;
  prints what the victim got and what happened to the attacker.

Exit status 0 when every phase met its criteria, 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests" / "torture"), str(REPO / "tests"), str(REPO)]

from api_helpers import create_vserver  # noqa: E402
from engine import flood, fuzz, kill_recovery, mixed_load, slow_clients  # noqa: E402
from vcdtest import VcdDaemon  # noqa: E402

PHASES = ("mixed", "kill", "fuzz", "slow", "flood")


def daemon_in(root: Path, **config: object) -> VcdDaemon:
    return VcdDaemon(root, **{"workers": 4, "timeout": 30.0, **config})


def run_phase(name: str, root: Path, args: argparse.Namespace) -> bool:
    config: dict[str, object] = {}
    if name == "mixed":
        config = {"workers": args.workers}
    elif name == "slow":
        config = {"workers": 2, "timeout": 10.0}
    elif name in ("fuzz", "flood"):
        config = {"workers": 2}
    daemon = daemon_in(root / name, **config)
    started = time.monotonic()
    try:
        daemon.start()
        ok = globals()[f"phase_{name}"](daemon, args)
        if "Traceback" in daemon.log():
            print("  daemon log contains a traceback")
            ok = False
        print(f"  {'PASS' if ok else 'FAIL'} in {time.monotonic() - started:.0f}s\n", flush=True)
        return ok
    finally:
        daemon.cleanup()


def phase_mixed(daemon: VcdDaemon, args: argparse.Namespace) -> bool:
    print(f"mixed load: {args.clients} clients x {args.seconds:g}s, {args.workers} workers", flush=True)
    r = mixed_load(daemon, args.clients, args.seconds, runtime_vservers=4, data_vservers=8,
                   seed=args.seed, runtime_share=args.runtime_share)
    t = r.tally
    print(f"  requests {t.requests} ({t.requests / r.seconds:.0f}/s), ops {dict(r.ops)}")
    print(f"  faults by code {dict(sorted(t.faults.items()))}, transport errors {dict(t.errors)}")
    print(f"  unexpected {t.unexpected}; acknowledged writes verified {r.writes_checked}, "
          f"missing {len(r.writes_missing)}")
    for note in t.notes[:5] + r.writes_missing[:5]:
        print(f"    {note}")
    return r.ok


def phase_kill(daemon: VcdDaemon, args: argparse.Namespace) -> bool:
    print(f"SIGKILL recovery: {args.kills} kills", flush=True)
    r = kill_recovery(daemon, args.kills, writers=4, seed=args.seed)
    print(f"  kills survived {r.kills} ({r.kills_during_writes} with a write in flight)")
    print(f"  integrity_check failures {len(r.integrity)}; acknowledged writes {r.acknowledged}, "
          f"missing {len(r.missing)}; unexpected faults {len(r.unexpected)}")
    for note in (r.integrity + r.missing + r.unexpected)[:5]:
        print(f"    {note}")
    return r.ok


def phase_fuzz(daemon: VcdDaemon, args: argparse.Namespace) -> bool:
    print(f"fuzz: {args.fuzz} generated calls + {args.fuzz} mutated bodies", flush=True)
    vserver = create_vserver(daemon, "fz1")
    r = fuzz(daemon, args.fuzz, seed=args.seed, vserver=vserver)
    alive = daemon.answers()
    print(f"  cases run {r.cases}, HTTP statuses {dict(r.statuses)}, answered with a result {r.results}")
    print(f"  faults by code {dict(sorted(r.faults.items()))}")
    print(f"  failures {len(r.failures)}; daemon answers afterwards: {alive}")
    for note in r.failures[:5]:
        print(f"    {note}")
    return r.ok and alive


def phase_slow(daemon: VcdDaemon, args: argparse.Namespace) -> bool:
    print(f"slow clients: {args.slow} at 1 byte/s against 2 workers (timeout 10s)", flush=True)
    r = slow_clients(daemon, args.slow, seconds=8.0)
    print(f"  calls served meanwhile {r.served}, worst latency {r.worst_latency * 1000:.1f} ms, "
          f"slow ones dropped at the deadline {r.slow_dropped}/{r.slow_total}")
    for note in r.failures[:5]:
        print(f"    {note}")
    return r.ok and r.slow_dropped == r.slow_total


def phase_flood(daemon: VcdDaemon, args: argparse.Namespace) -> bool:
    print(f"flood from 127.0.0.2 for {args.flood_seconds:g}s; victim 127.0.0.3", flush=True)
    r = flood(daemon, args.flood_seconds)
    print(f"  victim calls served {r.served} of {r.extra['victim_requests']}, "
          f"worst latency {r.worst_latency * 1000:.1f} ms")
    print(f"  attacker: {r.extra['attacker_requests']} calls, throttled {r.extra['attacker_throttled']}, "
          f"faults {r.extra['attacker_faults']}, refused connections {r.extra['attacker_errors']}; "
          f"held {r.extra['held_connections']}, cut beyond its share {r.extra['held_cut_by_server']}")
    for note in r.failures[:5]:
        print(f"    {note}")
    return r.ok and r.extra["attacker_throttled"] > 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--workers", type=int, default=8, help="vcd workers for the mixed load")
    p.add_argument("--runtime-share", type=float, default=0.06,
                   help="share of the mixed load's calls that start/stop vservers")
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--fuzz", type=int, default=5000)
    p.add_argument("--slow", type=int, default=256)
    p.add_argument("--flood-seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    args = p.parse_args()
    phases = [x for x in args.only.split(",") if x]
    unknown = set(phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phases: {', '.join(sorted(unknown))}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="vcd-torture-") as tmp:
        for name in phases:
            results[name] = run_phase(name, Path(tmp), args)
    print("summary: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
