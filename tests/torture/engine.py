"""The torture workloads, shared by the bounded CI suite (tests/torture/) and the full
run (bench/torture.py). Each returns a report (counts, faults by code, what went
wrong) instead of asserting, so the bench can print figures and the tests can
assert on them.

* `mixed_load`: many clients of mixed reads, writes, starts and stops; every fault
  not in the operation's expected set, and every transport error, is unexpected.
  Afterwards every acknowledged write is checked against VXDB.
* `kill_recovery`: writers running while the whole daemon (supervisor and workers)
  is SIGKILLed at a random moment; after each kill VXDB passes `PRAGMA
  integrity_check` and every acknowledged write is present.
* `fuzz`: hypothesis-generated calls (every registered method, random params, random
  auth) and mutated request bodies; no 5xx, no traceback text, an XML-RPC answer
  every time, and the daemon answers afterwards.
* `slow_clients`, `flood`: see their docstrings.
"""
from __future__ import annotations

import http.client
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import xmlrpc.client
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent)]

from api_helpers import create_vserver  # noqa: E402
from vcdtest import VcdDaemon  # noqa: E402

MAX_NOTES = 20
CLIENT_TIMEOUT = 60.0
# faults a runtime operation may legitimately answer while others act on the same vserver
RUNTIME_EXPECTED = {300, 301, 302}


# --------------------------------------------------------------------------- clients

class _SourceTransport(xmlrpc.client.Transport):
    """HTTP from a chosen local address (loopback has all of 127/8) with a timeout."""

    def __init__(self, source: str | None, timeout: float) -> None:
        super().__init__()
        self.source = source
        self.timeout = timeout

    def make_connection(self, host: str) -> http.client.HTTPConnection:  # type: ignore[override]
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        if self.source:
            conn.source_address = (self.source, 0)
        return conn


@dataclass
class Tally:
    requests: int = 0
    faults: Counter = field(default_factory=Counter)         # fault code -> count (all of them)
    errors: Counter = field(default_factory=Counter)         # transport errors by exception name
    unexpected: int = 0
    notes: list[str] = field(default_factory=list)           # the first few unexpected outcomes

    def note(self, text: str) -> None:
        self.unexpected += 1
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)

    def merge(self, other: "Tally") -> None:
        self.requests += other.requests
        self.faults.update(other.faults)
        self.errors.update(other.errors)
        self.unexpected += other.unexpected
        self.notes.extend(other.notes[:max(0, MAX_NOTES - len(self.notes))])


class Client:
    """One caller: its own connection settings, credentials and tally."""
    OK = object()

    def __init__(self, url: str, username: str, password: str, *, source: str | None = None,
                 timeout: float = CLIENT_TIMEOUT) -> None:
        self.proxy = xmlrpc.client.ServerProxy(url, allow_none=True,
                                               transport=_SourceTransport(source, timeout))
        self.auth = {"username": username, "password": password}
        self.tally = Tally()
        self.last_fault = ""

    def call(self, method: str, params: dict[str, Any] | None = None,
             expect: set[int] | frozenset[int] = frozenset()) -> tuple[bool, Any]:
        """(True, result) or (False, fault code or None for a transport error)."""
        self.tally.requests += 1
        try:
            return True, getattr(self.proxy, method)(self.auth, params or {})
        except xmlrpc.client.Fault as fault:
            self.tally.faults[fault.faultCode] += 1
            self.last_fault = fault.faultString
            if fault.faultCode not in expect:
                self.tally.note(f"{method}({params}): fault {fault.faultCode} {fault.faultString}")
            return False, fault.faultCode
        except (OSError, xmlrpc.client.ProtocolError, http.client.HTTPException) as exc:
            self.tally.errors[type(exc).__name__] += 1
            self.tally.note(f"{method}({params}): {type(exc).__name__}: {exc}")
            return False, None


def _run_threads(targets: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# --------------------------------------------------------------------------- mixed load

@dataclass
class MixedReport:
    clients: int
    seconds: float
    tally: Tally
    ops: Counter
    writes_checked: int = 0
    writes_missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.tally.unexpected == 0 and not self.writes_missing and self.tally.requests > 0


def mixed_load(daemon: VcdDaemon, clients: int, seconds: float, *, runtime_vservers: int = 2,
               data_vservers: int = 4, seed: int = 0, runtime_share: float = 0.12) -> MixedReport:
    """`clients` threads for `seconds`: reads, VXDB writes on shared vservers (each
    client its own keys, so the final state is known), user writes, and start / stop
    / status of `runtime_vservers` running vservers. Stops them all afterwards."""
    admin = daemon.proxy()
    data = [create_vserver(daemon, f"data{i}") for i in range(data_vservers)]
    runtime = [create_vserver(daemon, f"run{i}") for i in range(runtime_vservers)]
    password = daemon.admin_password
    deadline = time.monotonic() + seconds
    tallies: list[Tally] = []
    ops: Counter = Counter()
    # per client: address -> (vserver, acknowledged present?), usernames acknowledged present
    addrs: list[dict[str, tuple[str, bool]]] = [{} for _ in range(clients)]
    users: list[dict[str, bool]] = [{} for _ in range(clients)]
    lock = threading.Lock()

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        c = Client(daemon.url, "admin", password)
        mine_addrs, mine_users = addrs[index], users[index]
        counter = 0
        local_ops: Counter = Counter()
        while time.monotonic() < deadline:
            roll = rng.random()
            # the other kinds keep their proportions below 0.88; runtime calls take the rest
            roll = 0.88 + (roll - (1 - runtime_share)) if roll >= 1 - runtime_share \
                else roll / (1 - runtime_share) * 0.88
            if roll < 0.45:
                method, params = rng.choice([
                    ("vxdb.list", {"username": ""}), ("vcd.login", {}), ("vcd.status", {}),
                    ("vxdb.nx.addr.get", {"name": rng.choice(data)}),
                    ("vxdb.vx.uname.get", {"name": rng.choice(data)}),
                    ("vcd.user.get", {"username": ""}), ("vx.status", {"name": rng.choice(runtime or data)}),
                    ("vxdb.vx.limit.get", {"name": rng.choice(data)})])
                c.call(method, params)
                local_ops["read"] += 1
            elif roll < 0.65:
                counter += 1
                vs = rng.choice(data)
                addr = f"10.{index}.{counter // 250}.{counter % 250 + 1}"
                ok, _ = c.call("vxdb.nx.addr.set", {"name": vs, "addr": addr})
                if ok:
                    mine_addrs[addr] = (vs, True)
                elif addr not in mine_addrs:
                    mine_addrs[addr] = (vs, None)  # unknown outcome: not checked
                local_ops["write"] += 1
            elif roll < 0.72 and mine_addrs:
                addr = rng.choice(list(mine_addrs))
                vs, _ = mine_addrs[addr]
                ok, _ = c.call("vxdb.nx.addr.remove", {"name": vs, "addr": addr})
                mine_addrs[addr] = (vs, False if ok else None)
                local_ops["write"] += 1
            elif roll < 0.80:
                vs = rng.choice(data)
                if roll < 0.76:
                    c.call("vxdb.vx.uname.set", {"name": vs, "uname": "NODENAME", "value": f"c{index}-{counter}"})
                else:
                    c.call("vxdb.vx.limit.set", {"name": vs, "limit": "NPROC", "max": rng.randint(100, 1000)})
                local_ops["write"] += 1
            elif roll < 0.88:
                counter += 1
                present = [u for u, there in mine_users.items() if there]
                if present and rng.random() < 0.3:
                    username = rng.choice(present)
                    ok, _ = c.call("vcd.user.remove", {"username": username})
                    mine_users[username] = False if ok else None
                else:
                    username = f"t{index}x{counter}"
                    ok, _ = c.call("vcd.user.set", {"username": username, "password": "password-" + username,
                                                    "admin": False})
                    mine_users[username] = True if ok else None
                local_ops["write"] += 1
            elif runtime:
                vs = rng.choice(runtime)
                method = rng.choice(["vx.start", "vx.stop", "vx.start", "vx.status"])
                c.call(method, {"name": vs}, expect=RUNTIME_EXPECTED)
                local_ops[method] += 1
        with lock:
            tallies.append(c.tally)
            ops.update(local_ops)

    started = time.monotonic()
    try:
        _run_threads([lambda i=i: client(i) for i in range(clients)])
    finally:
        for vs in runtime:
            try:
                admin.call("vx.stop", name=vs)
            except xmlrpc.client.Fault:
                pass
    total = Tally()
    for t in tallies:
        total.merge(t)
    report = MixedReport(clients, time.monotonic() - started, total, ops)
    # every acknowledged write, as VXDB has it now
    for index in range(clients):
        for addr, (vs, present) in addrs[index].items():
            if present is None:
                continue
            rows = admin.call("vxdb.nx.addr.get", name=vs, addr=addr)
            report.writes_checked += 1
            if bool(rows) != present:
                report.writes_missing.append(f"{vs} {addr}: expected {'present' if present else 'absent'}")
        known = {u["username"] for u in admin.call("vcd.user.get", username="")}
        for username, present in users[index].items():
            if present is None:
                continue
            report.writes_checked += 1
            if (username in known) != present:
                report.writes_missing.append(f"user {username}: expected {'present' if present else 'absent'}")
    return report


# --------------------------------------------------------------------------- SIGKILL recovery

@dataclass
class KillReport:
    kills: int = 0
    kills_during_writes: int = 0
    acknowledged: int = 0
    missing: list[str] = field(default_factory=list)
    integrity: list[str] = field(default_factory=list)   # anything but "ok"
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.integrity or self.unexpected) and self.kills > 0


def kill_all(daemon: VcdDaemon) -> None:
    """SIGKILL the supervisor and every worker at once: a crash, not a shutdown (a
    killed supervisor alone would let its workers finish their requests)."""
    assert daemon.pid is not None
    pids = [*daemon.worker_pids(), daemon.pid]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    daemon.wait_exit()
    if not VcdDaemon._wait_pids_gone(set(pids), 20.0):
        raise RuntimeError(f"processes {pids} survived SIGKILL")


def integrity_of(db_path: Path) -> list[str]:
    from vcd import vxdb
    conn = vxdb.connect(db_path)
    try:
        result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        bad_fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        conn.close()
    problems = [r for r in result if r != "ok"]
    if bad_fk:
        problems.append(f"foreign_key_check: {len(bad_fk)} rows")
    return problems


def kill_recovery(daemon: VcdDaemon, kills: int, *, writers: int = 4, seed: int = 0,
                  max_delay: float = 0.8) -> KillReport:
    """`kills` rounds of: writers hammering three tables with unique keys, SIGKILL of
    the whole daemon at a random moment, integrity check of the file, restart, and a
    check that each acknowledged write is there."""
    rng = random.Random(seed)
    report = KillReport()
    data = create_vserver(daemon, "killdata")
    acked: list[tuple[str, str]] = []   # (kind, key)
    ack_lock = threading.Lock()
    for round_no in range(kills):
        if daemon.pid is None or not daemon.answers():
            daemon.start()
        password = daemon.admin_password
        stop = threading.Event()
        in_flight = [0]

        def writer(w: int, round_no: int = round_no) -> None:
            c = Client(daemon.url, "admin", password, timeout=10.0)
            n = 0
            while not stop.is_set():
                n += 1
                kind = ("user", "addr", "group")[n % 3]
                key = f"k{round_no}w{w}n{n}"
                if kind == "user":
                    method, params = "vcd.user.set", {"username": key, "password": "password-" + key}
                elif kind == "addr":
                    key = f"10.{round_no % 250}.{w * 40 + n // 250 % 40}.{n % 250 + 1}"
                    method, params = "vxdb.nx.addr.set", {"name": data, "addr": key}
                else:
                    method, params = "vg.add", {"group": key, "name": data}
                with ack_lock:
                    in_flight[0] += 1
                try:
                    getattr(c.proxy, method)(c.auth, params)
                except xmlrpc.client.Fault as fault:
                    report.unexpected.append(f"{method} {params}: fault {fault.faultCode} {fault.faultString}")
                    return
                except (OSError, xmlrpc.client.ProtocolError, http.client.HTTPException):
                    return  # the daemon died under this call: outcome unknown, not checked
                finally:
                    with ack_lock:
                        in_flight[0] -= 1
                with ack_lock:
                    acked.append((kind, key))

        threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(writers)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.05, max_delay))
        with ack_lock:
            busy = in_flight[0] > 0
        kill_all(daemon)
        stop.set()
        for t in threads:
            t.join(30)
        report.kills += 1
        report.kills_during_writes += busy
        problems = integrity_of(daemon.datadir / "vxdb")
        report.integrity.extend(f"after kill {round_no + 1}: {p}" for p in problems)
    daemon.start()
    report.acknowledged = len(acked)
    from vcd import vxdb
    conn = vxdb.connect(daemon.datadir / "vxdb")
    try:
        users = {r[0] for r in conn.execute("SELECT username FROM users")}
        addrs = {r[0] for r in conn.execute("SELECT addr FROM nx_addr")}
        groups = {r[0] for r in conn.execute("SELECT name FROM groups")}
    finally:
        conn.close()
    for kind, key in acked:
        present = {"user": users, "addr": addrs, "group": groups}[kind]
        if key not in present:
            report.missing.append(f"{kind} {key}")
    return report


# --------------------------------------------------------------------------- slow clients, flood

@dataclass
class StarvationReport:
    served: int = 0
    failures: list[str] = field(default_factory=list)
    worst_latency: float = 0.0
    slow_dropped: int = 0
    slow_total: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures and self.served > 0


def slow_clients(daemon: VcdDaemon, count: int, seconds: float) -> StarvationReport:
    """`count` connections each sending a valid request at one byte a second, while one
    normal client calls continuously: every call must be answered."""
    report = StarvationReport(slow_total=count)
    body = (b"<?xml version='1.0'?><methodCall><methodName>system.listMethods</methodName>"
            b"<params></params></methodCall>")
    request = b"POST /RPC2 HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    slow = [socket.create_connection((daemon.host, daemon.port), timeout=10) for _ in range(count)]
    stop = threading.Event()
    sent = [0]

    def trickle() -> None:
        while not stop.is_set() and sent[0] < len(request):
            for s in slow:
                try:
                    s.send(request[sent[0]:sent[0] + 1])
                except OSError:
                    pass
            sent[0] += 1
            stop.wait(1.0)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    client = Client(daemon.url, "admin", daemon.admin_password, timeout=10.0)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            began = time.monotonic()
            ok, _ = client.call("vcd.login")
            report.worst_latency = max(report.worst_latency, time.monotonic() - began)
            if ok:
                report.served += 1
            time.sleep(0.01)
        report.failures.extend(client.tally.notes)
        stop.set()
        thread.join(5)
        # the server's deadline ends them (408 or a close), well before they could finish
        for s in slow:
            s.settimeout(max(1.0, daemon.overrides.get("timeout", 10.0) + 5))
            try:
                answer = s.recv(4096)
                report.slow_dropped += answer == b"" or answer.startswith(b"HTTP/1.0 408")
            except OSError:
                report.slow_dropped += 1
    finally:
        stop.set()
        for s in slow:
            s.close()
    report.extra["bytes_sent_per_slow_client"] = sent[0]
    return report


THROTTLE_PROBES = 20  # failed logins before the throttle must have answered (it starts after 10)


def flood(daemon: VcdDaemon, seconds: float, *, attacker: str = "127.0.0.2", victim: str = "127.0.0.3",
          hammer_threads: int = 8, held_connections: int = 600,
          min_victim_calls: int = 20) -> StarvationReport:
    """One address floods: threads of failed logins as fast as they can, plus many
    connections held open with a partial request. Another address calls meanwhile and
    must be served every time, without being throttled.

    Nothing it reports depends on timing: the attacker is first driven into the login
    throttle with sequential failed logins (and the victim then checked, once, to be
    unaffected) before any connection is held, since a flood whose held connections fill
    its share gets every later connection refused and never reaches the throttle; the
    victim makes at least `min_victim_calls` calls however slow the host is; the held
    connections are counted after the victim's first call, whose connection is accepted
    after all of them (the listen queue is FIFO), so each was kept or cut by then."""
    report = StarvationReport()
    stop = threading.Event()
    hammer_tallies: list[Tally] = []
    held: list[socket.socket] = []
    refused = 0
    throttled = [0]
    prober = Client(daemon.url, "admin", "wrong-password", source=attacker, timeout=30.0)
    for _ in range(THROTTLE_PROBES):
        prober.call("vxdb.list", {"username": ""}, expect={100})
        if "too many failed logins" in prober.last_fault:
            throttled[0] += 1
            break
    victim_client = Client(daemon.url, "admin", daemon.admin_password, source=victim, timeout=30.0)
    ok, _ = victim_client.call("vxdb.list", {"username": ""})
    report.served += ok

    for _ in range(held_connections):
        try:
            s = socket.create_connection((daemon.host, daemon.port), timeout=5,
                                         source_address=(attacker, 0))
            s.send(b"POST /RPC2 HTTP/1.0\r\n")  # accepted (data arrived), never completed
            held.append(s)
        except OSError:
            refused += 1


    def hammer() -> None:
        c = Client(daemon.url, "admin", "wrong-password", source=attacker, timeout=10.0)
        while not stop.is_set():
            ok, code = c.call("vxdb.list", {"username": ""}, expect={100})
            if code == 100 and "too many failed logins" in c.last_fault:
                throttled[0] += 1
        hammer_tallies.append(c.tally)

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(hammer_threads)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    calls = 0
    try:
        while time.monotonic() < deadline or calls < min_victim_calls:
            calls += 1
            began = time.monotonic()
            ok, _ = victim_client.call("vxdb.list", {"username": ""})
            report.worst_latency = max(report.worst_latency, time.monotonic() - began)
            report.served += ok
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        # how many of the held connections the server cut (refused beyond the peer's share)
        cut = 0
        for s in held:
            s.settimeout(0.0)
            try:
                cut += s.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                cut += 1
            s.close()
    report.failures.extend(victim_client.tally.notes)
    hammered = Tally()
    for t in hammer_tallies:
        hammered.merge(t)
    report.extra.update(attacker_requests=hammered.requests, attacker_throttled=throttled[0],
                        attacker_faults=dict(hammered.faults),
                        attacker_errors=dict(hammered.errors), held_connections=len(held),
                        held_refused_at_connect=refused, held_cut_by_server=cut,
                        victim_requests=victim_client.tally.requests)
    return report


# --------------------------------------------------------------------------- fuzzing

@dataclass
class FuzzReport:
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    results: int = 0     # calls answered with a result, not a fault
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and self.cases > 0


PROTECTED_USERS = {"admin", "vshelper"}
# methods that must never get the real vserver's name: they would start it or change its files
RUNTIME_PREFIXES = ("vx.start", "vx.stop", "vx.restart", "vx.reboot", "vx.exec", "vx.kill",
                    "vx.create", "vx.remove", "vx.rename", "vg.")


def _post(daemon: VcdDaemon, body: bytes, timeout: float = 30.0,
          source: str | None = None) -> tuple[int, bytes]:
    with socket.create_connection((daemon.host, daemon.port), timeout=timeout,
                                  source_address=(source, 0) if source else None) as s:
        s.sendall(b"POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    head, _, payload = answer.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", head)
    if not match:
        raise AssertionError(f"not an HTTP answer: {answer[:200]!r}")
    return int(match.group(1)), payload


def check_answer(report: FuzzReport, what: str, status: int, payload: bytes) -> None:
    report.cases += 1
    report.statuses[status] += 1
    if status >= 500:
        report.failures.append(f"HTTP {status} for {what}")
    if b"Traceback" in payload or b'File "' in payload:
        report.failures.append(f"traceback text in the answer to {what}")
    if status == 200:
        try:
            xmlrpc.client.loads(payload, use_builtin_types=True)
            report.results += 1
        except xmlrpc.client.Fault as fault:
            report.faults[fault.faultCode] += 1
            if fault.faultString.endswith("internal error"):
                report.failures.append(f"internal error (an unhandled exception) for {what}")
        except Exception as exc:  # an answer that isn't XML-RPC
            report.failures.append(f"malformed answer to {what}: {exc}")


def fuzz(daemon: VcdDaemon, examples: int, *, seed: int = 0, vserver: str | None = None) -> FuzzReport:
    """`examples` generated calls plus `examples` mutated bodies (hypothesis)."""
    from hypothesis import HealthCheck, given, seed as hypothesis_seed, settings, strategies as st

    from vcd.registry import load_all

    registry = load_all()
    report = FuzzReport()
    names = sorted(registry) + ["system.listMethods", "system.methodHelp", "system.methodSignature",
                                "system.multicall"]
    param_names = sorted({n for m in registry.values() for p in m.params for n in (p.name, *p.aliases)})
    admin = {"username": "admin", "password": daemon.admin_password}
    helper = {"username": "vshelper", "password": daemon.vshelper_password}
    vocab = ["", "0", "-1", "inf", "18446744073709551615", "18446744073709551616", "10.1.2.3",
             "255.255.255.0", "/", "/tmp", "../..", "NPROC", "RSS", "NODENAME", "CHOWN", "INFO",
             "x" * 300, "é€𝄞", "<![CDATA[x]]>", "&amp;", "0-3", "a,b"]
    if vserver:
        vocab.append(vserver)

    # Text XML can carry, so generated calls get past the parser into the methods; the
    # parser gets control characters, NULs and broken encodings from `mutated`.
    xml_chars = st.characters(blacklist_categories=("Cs", "Cc"))

    def safe_text() -> st.SearchStrategy[str]:
        return (st.text(xml_chars, max_size=80) | st.sampled_from(vocab)).filter(
            lambda s: s not in PROTECTED_USERS)

    scalars = (st.none() | st.booleans() | st.integers(-2**31, 2**31 - 1) | safe_text()
               | st.floats(allow_nan=True, allow_infinity=True)
               | st.binary(max_size=40).map(xmlrpc.client.Binary)
               | st.datetimes().map(xmlrpc.client.DateTime))
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(safe_text(), inner, max_size=4), max_leaves=12)
    params = st.dictionaries(st.sampled_from(param_names) | safe_text(), values, max_size=6)
    auths = st.sampled_from([{"username": "admin", "password": "nope"}, {"username": "nobody"}]) | values

    def send(what: str, body: bytes, real_auth: bool = True) -> None:
        # Wrong credentials come from another address: their failed logins would
        # otherwise get 127.0.0.1 throttled and every later call refused at the login.
        try:
            status, payload = _post(daemon, body, source=None if real_auth else "127.0.0.7")
        except (OSError, AssertionError) as exc:
            report.cases += 1
            report.failures.append(f"no answer to {what}: {exc}")
            return
        check_answer(report, what, status, payload)

    common = settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                      suppress_health_check=list(HealthCheck), print_blob=False)

    by_type: dict[str, st.SearchStrategy[Any]] = {
        "Int": st.integers(-2**31, 2**31 - 1) | st.sampled_from([0, 1, 2, 65534, 65535, -1]),
        "UInt64": st.integers(0, 2**31 - 1) | st.sampled_from(["0", "inf", "18446744073709551615",
                                                               "18446744073709551616", "-1", "1e3"]),
        "Bool": st.booleans() | st.sampled_from([0, 1, "true", ""]),
        "IPv4": st.ip_addresses(v=4).map(str) | st.sampled_from(["10.1.2.300", "::1", "1.2.3"]),
        "Netmask": st.sampled_from(["255.255.255.0", "24", "255.0.255.0", "33", ""]),
        "AbsPath": st.sampled_from(["/", "/tmp", "/sbin/init", "relative", "/a/../../etc", "/x\0y"]),
        "CpuList": st.sampled_from(["0", "0-1", "0,1", "1-0", "99999", "a"]),
    }

    def plausible(param: Any) -> st.SearchStrategy[Any]:
        """Values a param of this type might take: valid ones and near misses, mixed
        with anything at all, so validation, owner checks and VXDB are all reached."""
        kind = type(param.type).__name__
        if kind == "Choice":
            typed = st.sampled_from(list(param.type.values)) | safe_text()
        elif kind == "Pattern":
            typed = st.sampled_from([v for v in (vserver, "web1", "onboot", "a" * 65, "-x", ".x", "ok_name")
                                     if v]) | safe_text()
        else:
            typed = by_type.get(kind, safe_text())
        return typed | typed | typed | values

    per_method = {
        name: st.fixed_dictionaries({}, optional={
            key: plausible(p) for p in m.params for key in (p.name, *p.aliases)})
        for name, m in registry.items()}

    @st.composite
    def call_case(draw: Any) -> tuple[str, tuple[Any, ...], bool]:
        mode = draw(st.integers(0, 9))
        if mode <= 6:   # a real method, real credentials, typed params (and maybe extra keys)
            method = draw(st.sampled_from(sorted(registry)))
            args = draw(per_method[method])
            if draw(st.booleans()):
                args.update(draw(st.dictionaries(safe_text(), values, max_size=2)))
            auth = helper if method.startswith("helper.") and draw(st.integers(0, 3)) else admin
            return method, (auth, args), True
        if mode == 7:   # a method that doesn't exist, or introspection
            method = draw(st.sampled_from(names) | safe_text())
            return method, (admin, draw(params)), True
        if mode == 8:   # credentials that don't work
            method = draw(st.sampled_from(names))
            return method, (draw(auths), draw(params)), False
        method = draw(st.sampled_from(names))  # odd shapes: no params, one, too many
        shape = draw(st.integers(0, 2))
        tail = tuple(draw(st.lists(values, max_size=2)))
        return method, ((), (admin,), (admin, draw(params), *tail))[shape], True

    @hypothesis_seed(seed)
    @common
    @given(case=call_case())
    def calls(case: tuple[str, tuple[Any, ...], bool]) -> None:
        method, call_params, real_auth = case
        if method.startswith(RUNTIME_PREFIXES) and vserver and vserver in repr(call_params):
            return
        try:
            body = xmlrpc.client.dumps(call_params, method, allow_none=True).encode("utf-8", "surrogatepass")
        except (OverflowError, TypeError, ValueError):
            return
        send(f"{method} {call_params!r:.300}", body, real_auth=real_auth)

    @hypothesis_seed(seed + 1)
    @common
    @given(method=st.sampled_from(names), data=st.data())
    def mutated(method: str, data: Any) -> None:
        args = data.draw(params)
        if method.startswith(RUNTIME_PREFIXES) and vserver and vserver in repr(args):
            return
        try:
            body = bytearray(xmlrpc.client.dumps((admin, args), method, allow_none=True).encode())
        except (OverflowError, TypeError, ValueError):
            return
        for _ in range(data.draw(st.integers(1, 6))):
            op = data.draw(st.integers(0, 4))
            at = data.draw(st.integers(0, max(0, len(body) - 1)))
            if op == 0 and body:      # flip a byte
                body[at] = data.draw(st.integers(0, 255))
            elif op == 1:    # cut a piece out
                del body[at:at + data.draw(st.integers(1, 40))]
            elif op == 2:    # insert junk or markup
                body[at:at] = data.draw(st.binary(max_size=20) | st.sampled_from(
                    [b"<", b">", b"</value>", b"<struct>", b"<array><data>", b"<i8>99999999999999999999</i8>",
                     b"<double>1e999</double>", b"<dateTime.iso8601>x</dateTime.iso8601>",
                     b"<base64>!!</base64>", b"<nil/>", b"&#0;", b"\x00", b"\xff\xfe"]))
            elif op == 3:    # repeat a slice (deep nesting, duplicate members)
                end = at + data.draw(st.integers(1, 60))
                body[at:at] = body[at:end] * data.draw(st.integers(1, 8))
            else:            # truncate
                del body[at:]
        send(f"mutated {method} body {bytes(body)[:300]!r}", bytes(body))

    calls()
    mutated()
    return report
