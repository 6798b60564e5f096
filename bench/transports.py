#!/usr/bin/env python3
"""The three transports side by side: HTTP, HTTPS and the Unix socket.

    .venv/bin/python bench/transports.py [--duration SECONDS] [--connections 1,8,64]

Two real daemons (plain HTTP with a Unix socket; HTTPS with a fresh self-signed
certificate from `vcd.tls`), `vcd.login` as admin:

* `wrk` (C, so the load generator doesn't take the CPUs from the daemon) against
  http:// and https:// (a TLS handshake per request: XML-RPC clients make one
  request per connection);
* the same Python client code (`vcd.transport.server_proxy`, one thread per
  connection) over http:// and unix://, since wrk can't speak to a Unix socket.

Prints requests/s and p50/p99 latency per cell. Figures, not pass/fail.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests"), str(REPO)]

from api import body, run_wrk  # noqa: E402
from vcd.tls import make_self_signed  # noqa: E402
from vcd.transport import server_proxy  # noqa: E402
from vcdtest import VcdDaemon  # noqa: E402


def python_clients(url: str, password: str, connections: int, duration: float) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of `connections` threads calling vcd.login."""
    latencies: list[list[float]] = [[] for _ in range(connections)]
    deadline = time.monotonic() + duration
    auth = {"username": "admin", "password": password}

    def client(i: int) -> None:
        proxy = server_proxy(url, timeout=30)
        mine = latencies[i]
        while time.monotonic() < deadline:
            began = time.perf_counter()
            proxy.vcd.login(auth, {})
            mine.append(time.perf_counter() - began)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = sorted(x for per in latencies for x in per)
    if not flat:
        return 0.0, 0.0, 0.0
    return len(flat) / duration, flat[len(flat) // 2] * 1000, flat[int(len(flat) * 0.99)] * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--connections", default="1,8,64")
    args = p.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    with tempfile.TemporaryDirectory(prefix="vcd-bench-transports-") as tmp:
        root = Path(tmp)
        cert, key = root / "tls" / "vcd.crt", root / "tls" / "vcd.key"
        make_self_signed(cert, key, ["127.0.0.1"])
        plain = VcdDaemon(root / "plain", workers=4, unix_socket=str(root / "vcd.sock"))
        https = VcdDaemon(root / "https", workers=4, tls_cert=str(cert), tls_key=str(key))
        try:
            plain.start()
            https.start()
            login = [body("vcd.login", {"username": "admin", "password": plain.admin_password}, {})]
            login_tls = [body("vcd.login", {"username": "admin", "password": https.admin_password}, {})]
            print(f"vcd.login, 4 workers, {args.duration:g}s per cell, loopback")
            print(f"{'transport':<26} {'conns':>5} | {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7}")
            print("-" * 58)
            for n in conns:
                for name, url, bodies in (("http (wrk)", plain.url, login),
                                          ("https (wrk)", https.url, login_tls)):
                    cell = run_wrk(url, bodies, n, args.duration, root)
                    note = f"  {cell.errors} errors" if cell.errors else ""
                    print(f"{name:<26} {n:>5} | {cell.rate:>7.0f} "
                          f"{cell.p50_ms:>7.2f} {cell.p99_ms:>7.2f}{note}", flush=True)
                for name, url in (("http (python clients)", plain.url),
                                  ("unix (python clients)", f"unix://{root / 'vcd.sock'}")):
                    rate, p50, p99 = python_clients(url, plain.admin_password, n, args.duration)
                    print(f"{name:<26} {n:>5} | {rate:>7.0f} {p50:>7.2f} {p99:>7.2f}", flush=True)
        finally:
            plain.cleanup()
            https.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
