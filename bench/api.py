#!/usr/bin/env python3
"""API throughput and latency: vcd against the bare stdlib XML-RPC server.

    .venv/bin/python bench/api.py [--duration SECONDS] [--connections 1,8,64] [--workers N]

Starts a real `vcd` (temporary datadir, loopback, a free port) and, in the same run, a
bare `xmlrpc.server.SimpleXMLRPCServer` answering None to the same method names (the
ceiling for a Python XML-RPC server on this machine). Each workload runs with 1, 8
and 64 concurrent connections through `wrk` (Debian package `wrk`, C, so the load
generator doesn't compete for the two cores the way Python client processes would),
and every answer is checked for being a non-fault XML-RPC response. Prints requests/s,
p50/p99 latency, errors and vcd's ratio to the ceiling. Everything is bounded: each
cell runs `--duration` seconds, both servers are stopped at the end.

Workloads: `vcd.login`, `vxdb.list` (as admin, all authenticated), and a
`vxdb.vx.uname.set` / `vxdb.vx.uname.get` pair alternating on one vserver.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# The stdlib's listen backlog of 5 makes connections beyond it wait for a SYN
# retransmit (1 s); vcd listens with 1024, so the ceiling gets the same.
BARE_SERVER = textwrap.dedent("""
    import sys
    from xmlrpc.server import SimpleXMLRPCServer
    SimpleXMLRPCServer.request_queue_size = 1024
    server = SimpleXMLRPCServer(("127.0.0.1", int(sys.argv[1])), allow_none=True, logRequests=False)
    for name in sys.argv[2:]:
        server.register_function(lambda *args: None, name)
    print("ready", flush=True)
    server.serve_forever()
""")

# wrk script: alternate the given bodies per connection thread, count faults and
# answers that are not XML-RPC, print one machine-readable line at the end.
WRK_SCRIPT = """
local bodies = {%(bodies)s}
local n = 0
local threads = {}
faults = 0
bad = 0
function setup(thread) table.insert(threads, thread) end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "text/xml"
end
function request()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n %% #bodies) + 1])
end
function response(status, headers, body)
  if string.find(body, "<fault>", 1, true) then faults = faults + 1
  elseif not string.find(body, "<methodResponse>", 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local f, b = 0, 0
  for _, t in ipairs(threads) do f = f + t:get("faults"); b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, f, b))
end
"""


@dataclass
class Cell:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors, timeouts, non-200, faults, non-XML-RPC answers

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_answering(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    proxy = xmlrpc.client.ServerProxy(url, allow_none=True)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        try:
            proxy.system.listMethods()
            return
        except (OSError, xmlrpc.client.Error):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def body(method: str, *params: object) -> str:
    return xmlrpc.client.dumps(params, method, allow_none=True)


def run_wrk(url: str, bodies: list[str], connections: int, duration: float, workdir: Path) -> Cell:
    quoted = ", ".join("[==[" + b + "]==]" for b in bodies)
    script = workdir / "bench.lua"
    script.write_text(WRK_SCRIPT % {"bodies": quoted})
    threads = min(connections, 2)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
           "--timeout", "5s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60).stdout
    match = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", out, re.M)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    reqs, dur_us, p50, p99, sock_err, status_err, faults, bad = map(int, match.groups())
    return Cell(reqs, dur_us / 1e6, p50 / 1000, p99 / 1000, sock_err + status_err + faults + bad)


class Vcd:
    """A throwaway vcd for the run."""

    def __init__(self, root: Path, workers: int) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/RPC2"
        (root / "templates" / "mini" / "etc").mkdir(parents=True)
        (root / "templates" / "mini" / "etc" / "hostname").write_text("mini\n")
        (root / "vservers").mkdir()
        self.config = root / "vcd.conf"
        self.config.write_text(textwrap.dedent(f"""\
            host = "127.0.0.1"
            port = {self.port}
            workers = {workers}
            datadir = "{root}/data"
            templatedir = "{root}/templates"
            vbasedir = "{root}/vservers"
            rundir = "{root}/run"
            pidfile = "{root}/run/vcd.pid"
            logfile = "{root}/vcd.log"
            cgroup_parent = "vcd-bench-{os.getpid()}"
            """))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "vcd.daemon", "-f", "-c", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.root / "vcd.stderr", "wb"), cwd=REPO)
        wait_answering(self.url, self.proc)

    @property
    def password(self) -> str:
        return (self.root / "data" / "admin.password").read_text().strip()

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per cell (default 4)")
    parser.add_argument("--connections", default="1,8,64", help="comma-separated (default 1,8,64)")
    parser.add_argument("--workers", type=int, default=0, help="vcd workers (default: vcd's, 2 x CPUs)")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    if shutil.which("wrk") is None:
        print("bench/api.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory(prefix="vcd-bench-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        vcd = Vcd(root / "vcd", args.workers)
        bare_port = free_port()
        bare_url = f"http://127.0.0.1:{bare_port}/RPC2"
        bare = None
        try:
            vcd.start()
            creds = {"username": "admin", "password": vcd.password}
            admin = xmlrpc.client.ServerProxy(vcd.url, allow_none=True)
            # a copy, not a shared (overlay-mounted) root: nothing to unmount if removal fails
            admin.vx.create(creds, {"name": "bench", "template": "mini", "copy": True})
            workloads = {
                "vcd.login": [body("vcd.login", creds, {})],
                "vxdb.list": [body("vxdb.list", creds, {"username": ""})],
                "uname set/get": [
                    body("vxdb.vx.uname.set", creds, {"name": "bench", "uname": "NODENAME", "value": "b1"}),
                    body("vxdb.vx.uname.get", creds, {"name": "bench", "uname": "NODENAME"})],
            }
            names = ["vcd.login", "vxdb.list", "vxdb.vx.uname.set", "vxdb.vx.uname.get", "system.listMethods"]
            bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port), *names],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            wait_answering(bare_url, bare)

            workers = args.workers or 2 * (os.cpu_count() or 1)
            print(f"vcd with {workers} workers vs bare SimpleXMLRPCServer, {os.cpu_count()} CPUs, "
                  f"{args.duration:g}s per cell, loopback, wrk")
            header = (f"{'workload':<14} {'conns':>5} | {'vcd req/s':>9} {'p50 ms':>7} {'p99 ms':>7} "
                      f"{'errors':>6} | {'bare req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} | "
                      f"{'ratio':>5}")
            print(header)
            print("-" * len(header))
            for name, bodies in workloads.items():
                for conns in connections:
                    ours = run_wrk(vcd.url, bodies, conns, args.duration, root)
                    # the bare server answers None to everything: same bodies, same sizes
                    ceiling = run_wrk(bare_url, bodies, conns, args.duration, root)
                    ratio = ours.rate / ceiling.rate if ceiling.rate else float("nan")
                    print(f"{name:<14} {conns:>5} | {ours.rate:>9.0f} {ours.p50_ms:>7.2f} "
                          f"{ours.p99_ms:>7.2f} {ours.errors:>6} | {ceiling.rate:>10.0f} "
                          f"{ceiling.p50_ms:>7.2f} {ceiling.p99_ms:>7.2f} {ceiling.errors:>6} | "
                          f"{ratio:>5.2f}", flush=True)
            value = admin.vxdb.vx.uname.get(creds, {"name": "bench", "uname": "NODENAME"})
            print(f"check: uname after the run = {value}")
        finally:
            if vcd.proc is not None and vcd.proc.poll() is None:
                try:  # the vserver's root may be a mount; vcd removes it properly
                    xmlrpc.client.ServerProxy(vcd.url, allow_none=True).vx.remove(
                        {"username": "admin", "password": vcd.password}, {"name": "bench"})
                except (OSError, xmlrpc.client.Error) as exc:
                    print(f"warning: removing the bench vserver failed: {exc}", file=sys.stderr)
            vcd.stop()
            stop_process(bare)
    return 0


if __name__ == "__main__":
    sys.exit(main())
