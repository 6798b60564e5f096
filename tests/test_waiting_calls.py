"""Calls that wait on a guest (Method.waits: vx.exec, vx.stop, ...) are served in threads of
a worker, off its event loop: a tenant's long commands never hold up the calls of others,
and one peer holds at most SLOW_PER_PEER of a worker's threads (vcd/server.py)."""
from __future__ import annotations

import fcntl
import http.client
import os
import select
import sqlite3
import struct
import threading
import time
import xmlrpc.client
from pathlib import Path
from typing import Any, Callable

import pytest

from api_helpers import create_vserver
from vcd.server import SLOW_PER_PEER, SlowLane
from vcdtest import VcdDaemon, VcdProxy, wait_until

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")


class _FromAddress(xmlrpc.client.Transport):
    """XML-RPC from another loopback source address: another peer to the daemon."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def make_connection(self, host: Any) -> Any:
        conn = super().make_connection(host)
        conn.source_address = (self.source, 0)
        return conn


def _blocking_execs(daemon: VcdDaemon, name: str, ids: list[str],
                    proxy: Callable[[], Any]) -> tuple[list[threading.Thread], list[Any]]:
    """vx.exec calls that each wait inside for the file /tmp/go-<id>; returns their
    threads and, once each returns, its answer or fault."""
    results: list[Any] = []

    def one(i: str) -> None:
        try:
            results.append(proxy().vx.exec(
                name=name, timeout=120,
                command=f"sh -c 'touch /tmp/started-{i}; "
                        f"while [ ! -e /tmp/go-{i} ]; do sleep 0.05; done; echo {i}'"))
        except Exception as exc:  # noqa: BLE001 - the test looks at what came back
            results.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    return threads, results


@ROOT_ONLY
def test_long_commands_of_one_peer_hold_up_neither_quick_calls_nor_other_peers(make_vcd):
    daemon = make_vcd(workers=1)
    admin = daemon.proxy()
    name = create_vserver(daemon)
    admin.vx.start(name=name)
    tmp = daemon.vbasedir / name / "tmp"
    ids = [f"a{i}" for i in range(SLOW_PER_PEER + 2)]
    threads, results = _blocking_execs(daemon, name, ids, daemon.proxy)
    try:
        wait_until(lambda: len(list(tmp.glob("started-a*"))) == SLOW_PER_PEER,
                   what=f"{SLOW_PER_PEER} commands of one peer running")
        # the one worker is not blocked: quick calls are answered while they run
        assert name in admin.vxdb.list()
        assert admin.vx.status(name=name)["running"] is True
        # and another peer's command runs beside them, not after them
        other = xmlrpc.client.ServerProxy(
            daemon.url, transport=_FromAddress("127.0.0.2"), allow_none=True)
        creds = {"username": "admin", "password": daemon.admin_password}
        (tmp / "go-b").touch()
        b = other.vx.exec(creds, {"name": name, "command":
                                  "sh -c 'touch /tmp/started-b; while [ ! -e /tmp/go-b ]; "
                                  "do sleep 0.05; done; echo b'"})
        assert b == "b\n"
        assert results == []      # the first peer's commands are still waiting
        # that peer's further commands waited for a thread of its share
        assert len(list(tmp.glob("started-a*"))) == SLOW_PER_PEER
        first = sorted(p.name.split("-")[1] for p in tmp.glob("started-a*"))[0]
        (tmp / f"go-{first}").touch()
        wait_until(lambda: len(list(tmp.glob("started-a*"))) == SLOW_PER_PEER + 1,
                   what="the next command of the peer, once one of its share ended")
    finally:
        for i in ids:
            (tmp / f"go-{i}").touch()
        for t in threads:
            t.join(60)
    assert sorted(results) == sorted(f"{i}\n" for i in ids)
    admin.vx.stop(name=name)


@ROOT_ONLY
def test_a_setter_waiting_for_the_lock_a_stop_holds_does_not_hold_up_the_worker(make_vcd):
    daemon = make_vcd(workers=1)
    admin = daemon.proxy()
    name = create_vserver(daemon)
    tmp = daemon.vbasedir / name / "tmp"
    admin.vxdb.init.set(name=name, timeout=120,
                        halt="/bin/sh -c 'while [ ! -e /tmp/go-halt ]; do sleep 0.05; done; /sbin/halt'")
    admin.vx.start(name=name)
    answers: dict[str, Any] = {}

    def call(key: str, fn: Callable[[], Any]) -> threading.Thread:
        def run() -> None:
            try:
                answers[key] = fn()
            except Exception as exc:  # noqa: BLE001 - the test looks at what came back
                answers[key] = exc
        t = threading.Thread(target=run)
        t.start()
        return t

    stop = call("stop", lambda: daemon.proxy().vx.stop(name=name))
    try:
        wait_until(lambda: any(b"go-halt" in p.read_bytes() for p in Path("/proc").glob(
            "[0-9]*/cmdline") if _readable(p)), what="the halt command running")
        setter = call("set", lambda: daemon.proxy().vxdb.vx.uname.set(
            name=name, uname="NODENAME", value="later"))
        # time for the setter to reach the worker first (only how sharply this test
        # catches a worker that waits on the loop depends on it, never its passing)
        time.sleep(0.5)
        # the setter waits (up to 3 s) for the vserver's lock, in a thread: the worker
        # answers others meanwhile
        assert name in admin.vxdb.list()
        assert "set" not in answers
        setter.join(30)
        assert getattr(answers["set"], "faultCode", None) is not None   # busy, not a hang
    finally:
        (tmp / "go-halt").touch()
        stop.join(60)
    assert "stop" in answers and not isinstance(answers["stop"], Exception)


def _readable(p: Path) -> bool:
    try:
        p.read_bytes()
        return True
    except OSError:
        return False


class _Held:
    """A dispatcher whose answers wait until the test releases them (the scheduling of
    SlowLane alone, without a daemon)."""

    def __init__(self, gates: dict[str, threading.Event], started: list[str]) -> None:
        self.gates, self.started = gates, started

    def answer(self, request: Any, peer: str, nil: bool = True) -> bytes:
        self.started.append(request)
        self.gates[request].wait(30)
        return request.encode()

    def close(self) -> None:
        pass


def test_slow_lane_gives_each_peer_its_share_and_serves_the_rest_in_turn():
    gates = {f"{p}{i}": threading.Event() for p in "ab" for i in range(4)}
    started: list[str] = []
    woken = threading.Semaphore(0)
    lane = SlowLane(lambda: _Held(gates, started), woken.release, threads=3, per_peer=2)

    class Conn:
        def __init__(self, peer: str) -> None:
            self.peer, self.share, self.nil = peer, peer, True
            self.sent: bytes | None = None

        def answer(self, body: bytes) -> None:
            self.sent = body

    for req in ["a0", "a1", "a2", "a3", "b0", "b1"]:
        lane.submit(0, Conn(req[0]), req)
    try:
        wait_until(lambda: len(started) == 3, what="three calls running")
        # a's share is two; the third thread went to b, not to a's third call
        assert sorted(started) == ["a0", "a1", "b0"]
        assert len(lane) == 6
        gates["a0"].set()
        woken.acquire(timeout=30)
        done = lane.finished()
        # answered by the thread itself, before the event loop hears of it
        assert [(c.answer, c.conn.sent) for c in done] == [(b"a0", b"a0")]
        # the thread a0 freed: a is under its share again, and it is a's turn
        wait_until(lambda: len(started) == 4, what="the next call")
        assert started[3] == "a2"
    finally:
        for g in gates.values():
            g.set()
        lane.close()


def _read_by_server(server_port: int, client_port: int) -> bool:
    """Whether the daemon has taken the request of our connection from client_port off
    its socket: the accepted side is established with nothing left to read."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
        if int(local.split(":")[1], 16) == server_port and \
                int(remote.split(":")[1], 16) == client_port:
            return state == "01" and int(queues.split(":")[1], 16) == 0
    return False


def test_a_failed_login_while_a_long_write_holds_vxdb_holds_up_no_other_call(make_vcd):
    """Recording a failed login writes VXDB, whose write lock a tenant's long vx.create
    (rebuild) holds while it extracts a template: that wait is a thread's, not the
    event loop's, and the failure is still recorded (and throttled) once it may."""
    daemon = make_vcd(workers=1)
    admin = daemon.proxy()
    assert admin.vcd.login() is None
    held = sqlite3.connect(str(daemon.datadir / "vxdb"), isolation_level=None)
    bad = http.client.HTTPConnection(daemon.host, daemon.port, timeout=60)
    try:
        held.execute("BEGIN IMMEDIATE")     # VXDB's write lock, as a long create holds it
        bad.connect()
        bad.request("POST", "/RPC2", headers={"Content-Type": "text/xml"},
                    body=xmlrpc.client.dumps(({"username": "admin", "password": "wrong"},),
                                             "vcd.login").encode())
        wait_until(lambda: _read_by_server(daemon.port, bad.sock.getsockname()[1])
                   or select.select([bad.sock], [], [], 0)[0],
                   what="the failed login taken by the worker")
        # the one worker answers others while that login waits to be recorded
        assert admin.vcd.whoami()["username"] == "admin"
        assert select.select([bad.sock], [], [], 0)[0] == [], \
            "the failed login was answered while VXDB was still write-locked"
        held.execute("ROLLBACK")
        answer = bad.getresponse().read()
        with pytest.raises(xmlrpc.client.Fault) as failed:
            xmlrpc.client.loads(answer)
        assert failed.value.faultCode == 100
        row = held.execute("SELECT count FROM login_failures WHERE addr = '127.0.0.1'").fetchone()
        assert row == (1,)
    finally:
        if held.in_transaction:
            held.execute("ROLLBACK")
        held.close()
        bad.close()


def _claimed_stats_slots(rundir: Path) -> int:
    """How many slots of vcd.stats a process holds (vcd/stats.py: an OFD lock each)."""
    from vcd import stats
    fd = os.open(rundir / "vcd.stats", os.O_RDONLY)
    try:
        claimed = 0
        for slot in range(stats.SLOTS):
            probe = struct.pack("hh4xqqi4x", fcntl.F_RDLCK, os.SEEK_SET,
                                stats.Stats._offset(slot), 1, 0)
            kind = struct.unpack("hh4xqqi4x", fcntl.fcntl(fd, fcntl.F_OFD_GETLK, probe))[0]
            claimed += kind != fcntl.F_UNLCK
        return claimed
    finally:
        os.close(fd)


def test_a_worker_counts_in_one_statistics_slot_however_many_threads_serve_it(make_vcd):
    """vcd.stats has SLOTS slots, one per process: a thread of each worker's SlowLane
    taking one of its own would use them up on a many-core host (2 workers per cpu,
    17 dispatchers each), and every call of a dispatcher without one would fail."""
    daemon = make_vcd(workers=1)
    admin = daemon.proxy()
    before = admin.vcd.status()["requests"]
    (worker,) = daemon.worker_pids()
    threads_before = len(os.listdir(f"/proc/{worker}/task"))
    held = sqlite3.connect(str(daemon.datadir / "vxdb"), isolation_level=None)
    writers: list[threading.Thread] = []
    answers: list[Any] = []
    n = SLOW_PER_PEER - 1
    try:
        held.execute("BEGIN IMMEDIATE")     # each writing call waits in a thread of its own
        for i in range(n):
            t = threading.Thread(target=lambda i=i: answers.append(daemon.proxy().vcd.user.set(
                username=f"slot{i}", password=f"password-slot{i}", admin=False)))
            t.start()
            writers.append(t)
        wait_until(lambda: len(os.listdir(f"/proc/{worker}/task")) >= threads_before + n,
                   what=f"{n} calls waiting in threads of the worker")
    finally:
        if held.in_transaction:
            held.execute("ROLLBACK")
        held.close()
        for t in writers:
            t.join(60)
    assert answers == [None] * n
    assert _claimed_stats_slots(daemon.rundir) == 1
    # and the counts stay exact: each of those calls counted once, as was the first status
    assert admin.vcd.status()["requests"] - before == n + 1


def _waits_for_its_share(make_vcd, method: str,
                         params: Callable[[dict[str, str], str], tuple]) -> Any:
    """Call `method` with params(credentials, vserver name) from a peer whose share of the
    one worker's threads is taken by its own long commands: it must wait for that share
    while another peer's call is answered, and then be answered; returns its answer."""
    daemon = make_vcd(workers=1)
    admin = daemon.proxy()
    name = create_vserver(daemon)
    admin.vx.start(name=name)
    tmp = daemon.vbasedir / name / "tmp"
    ids = [f"a{i}" for i in range(SLOW_PER_PEER)]
    threads, results = _blocking_execs(daemon, name, ids, daemon.proxy)
    creds = {"username": "admin", "password": daemon.admin_password}
    held = http.client.HTTPConnection(daemon.host, daemon.port, timeout=120)
    try:
        wait_until(lambda: len(list(tmp.glob("started-a*"))) == SLOW_PER_PEER,
                   what=f"{SLOW_PER_PEER} commands of one peer running")
        held.connect()
        held.request("POST", "/RPC2", headers={"Content-Type": "text/xml"},
                     body=xmlrpc.client.dumps(params(creds, name), method,
                                              allow_none=True).encode())
        wait_until(lambda: _read_by_server(daemon.port, held.sock.getsockname()[1])
                   or select.select([held.sock], [], [], 0)[0],
                   what=f"the {method} call taken by the worker")
        other = xmlrpc.client.ServerProxy(
            daemon.url, transport=_FromAddress("127.0.0.2"), allow_none=True)
        assert other.vx.status(creds, {"name": name})["running"] is True
        assert select.select([held.sock], [], [], 0)[0] == [], \
            f"{method} was answered beside the peer's full share of threads"
        for i in ids:
            (tmp / f"go-{i}").touch()
        answer, _ = xmlrpc.client.loads(held.getresponse().read())
    finally:
        for i in ids:
            (tmp / f"go-{i}").touch()
        for t in threads:
            t.join(60)
        held.close()
    assert sorted(results) == sorted(f"{i}\n" for i in ids)
    admin.vx.stop(name=name)
    return answer[0]


@ROOT_ONLY
def test_network_counters_of_a_guest_are_read_in_the_callers_share_of_threads(make_vcd):
    """What vx.netstatus costs to read is the guest's to decide (a line per interface of
    its network namespace, as many as root inside makes): a caller's vx.netstatus waits
    for its share of a worker's threads, and never holds up the event loop, where
    another peer's calls are answered meanwhile."""
    answer = _waits_for_its_share(make_vcd, "vx.netstatus",
                                  lambda creds, name: (creds, {"name": name}))
    assert isinstance(answer, list)


@ROOT_ONLY
def test_a_multicall_of_many_quick_calls_waits_in_the_callers_share_of_threads(make_vcd):
    """A request of 1 MiB carries thousands of calls in a system.multicall (each of
    which may read a guest's /proc): served at once on the event loop they would hold
    up everybody; in the caller's share of threads they hold up nobody but the caller."""
    answers = _waits_for_its_share(make_vcd, "system.multicall", lambda creds, name: (
        [{"methodName": "vx.status", "params": [creds, {"name": name}]}] * 50,))
    assert len(answers) == 50 and all(a[0]["running"] is True for a in answers)


@ROOT_ONLY
def test_task_list_waits_in_the_callers_share_of_threads(make_vcd):
    """task.list reads (and prunes) the file of every task, up to task_keep_count of
    each user's: its cost grows with what every user has run."""
    answer = _waits_for_its_share(make_vcd, "task.list", lambda creds, name: (creds, {}))
    assert isinstance(answer, list)


@ROOT_ONLY
def test_a_tenant_calling_from_many_addresses_holds_at_most_its_share_of_waiting_calls(make_vcd):
    """A worker's threads are 16, 4 per peer: a tenant with a few addresses (or /64s)
    would take every thread of every worker with commands that wait an hour, and hold up
    everybody's vx.start, vx.stop and writes. One user who is not an admin has at most
    waiting_calls_per_user such calls in progress, from wherever it calls."""
    daemon = make_vcd(workers=1, waiting_calls_per_user=2)
    admin = daemon.proxy()
    name = create_vserver(daemon)
    username, password = "waiter", "password-waiter"
    admin.vcd.user.set(username=username, password=password, admin=False)
    admin.vcd.user.caps.add(username=username, cap="EXEC")
    admin.vxdb.owner.add(name=name, username=username)
    admin.vx.start(name=name)
    tmp = daemon.vbasedir / name / "tmp"

    def tenant_from(address: str) -> VcdProxy:
        proxy = VcdProxy(daemon.url, username, password)
        proxy.server = xmlrpc.client.ServerProxy(daemon.url, transport=_FromAddress(address),
                                                 allow_none=True)
        return proxy

    # two commands from two addresses: neither address is near its share of threads
    ids = ["t2", "t3"]
    threads, results = _blocking_execs(
        daemon, name, ids, iter([tenant_from("127.0.0.2"), tenant_from("127.0.0.3")]).__next__)
    try:
        wait_until(lambda: len(list(tmp.glob("started-t*"))) == 2,
                   what="the tenant's two commands running")
        third = tenant_from("127.0.0.4")
        with pytest.raises(xmlrpc.client.Fault) as refused:
            third.vx.exec(name=name, command="echo third")
        assert refused.value.faultCode == 302
        assert "waiting_calls_per_user = 2" in refused.value.faultString
        # nobody else's calls are counted against it
        assert admin.vx.exec(name=name, command="echo admin") == "admin\n"
        (tmp / "go-t2").touch()
        wait_until(lambda: len(results) == 1, what="one of the tenant's commands ended")
        # a slot again, once one of its calls has ended
        assert third.vx.exec(name=name, command="echo third") == "third\n"
    finally:
        for i in ids:
            (tmp / f"go-{i}").touch()
        for t in threads:
            t.join(60)
    assert sorted(results) == ["t2\n", "t3\n"]
    admin.vx.stop(name=name)


def test_a_peer_making_many_waiting_calls_at_once_is_never_refused_for_connections_it_closed(
        make_vcd):
    """A slow-lane thread sends its call's answer and closes the connection itself; the
    event loop may accept the next connection on the same descriptor number before it
    has settled the first. A peer's count of open connections must not keep the closed
    one: with a worker of 56 connections (14 a peer) and 10 clients in a row of writes,
    every call is answered."""
    daemon = make_vcd(start=False, workers=1)
    plain = daemon.command
    daemon.command = lambda: ["prlimit", "--nofile=120:120", "--", *plain()]  # type: ignore
    daemon.start()
    name = create_vserver(daemon)
    failures: list[str] = []

    def writer(i: int) -> None:
        proxy = daemon.proxy()
        for n in range(100):
            try:
                proxy.vxdb.vx.uname.set(name=name, uname="NODENAME", value=f"c{i}n{n}")
            except Exception as exc:    # a refused or dropped connection, a fault
                failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [], failures[:3]


@pytest.mark.parametrize("how", ["answer", "answer_error"])
def test_a_slow_lane_answer_is_never_cut_by_the_deadline_its_request_had(how: str):
    """A slow-lane thread sends its call's answer (deliver) while the event loop goes on
    expiring deadlines. The connection's deadline queue may still hold the one its
    request had to arrive by, long past for a long call: at no step of the thread's
    answer may the loop take that one for the answer's and drop the connection. The
    thread stops at each line of Connection.answer and the loop expires meanwhile."""
    import heapq
    import linecache
    from http import HTTPStatus
    import queue
    import socket
    import sys

    from vcd.config import Config
    from vcd.httpconn import Connection, State, error_answer
    from vcd.server import Worker

    worker = Worker(Config(timeout=0.05), [], None, os.getpid())   # type: ignore[arg-type]
    worker.poller = select.epoll()
    ours, client = socket.socketpair()
    ours.setblocking(False)
    fd = ours.fileno()
    conn = Connection(ours, "peer", None, worker.timeout, 1 << 20)
    worker.conns[fd] = conn
    body = b"<methodCall/>"
    client.sendall(b"POST /RPC2 HTTP/1.0\r\n")     # the head comes in two parts
    conn.on_readable()
    worker._settle(fd, conn)
    assert len(worker.deadlines) == 1, "a connection waiting for its request has a deadline"
    old = worker.deadlines[0]
    client.sendall(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    conn.on_readable()
    worker._settle(fd, conn)
    assert conn.state is State.READY
    worker.ready.clear()                # taken by the dispatcher: a waiting call
    time.sleep(0.1)                     # the call runs longer than the request's deadline

    step = getattr(Connection, how)
    sent = b"<methodResponse/>" if how == "answer" else error_answer(HTTPStatus.INTERNAL_SERVER_ERROR)
    steps: queue.Queue[int] = queue.Queue()
    resume: queue.Queue[None] = queue.Queue()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            return tracer if frame.f_code is step.__code__ else None
        if event == "line":
            steps.put(frame.f_lineno)
            resume.get(timeout=30)
        return tracer

    def thread() -> None:
        sys.settrace(tracer)
        try:
            getattr(conn, how)(sent)
        finally:
            sys.settrace(None)
            steps.put(-1)

    t = threading.Thread(target=thread)
    t.start()
    seen = []
    while (line := steps.get(timeout=30)) != -1:
        seen.append(linecache.getline(step.__code__.co_filename, line).strip())
        # the old deadline queued at every step (the first look pops it: put back, as a
        # loop that has not looked since it passed still holds it)
        if old not in worker.deadlines:
            heapq.heappush(worker.deadlines, old)
        worker._expire()
        resume.put(None)
    t.join(30)
    assert any("self.state" in s for s in seen) and any("self.deadline" in s for s in seen)
    client.settimeout(10)
    got = b""
    while chunk := client.recv(65536):
        got += chunk
    assert got.startswith(b"HTTP/1.0 ") and got.endswith(sent[-20:]), got
    client.close()
    worker.poller.close()
