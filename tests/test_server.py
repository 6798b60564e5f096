"""The HTTP transport, the worker pool and the `vcd` command, against a real daemon."""
from __future__ import annotations

import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Callable

import pytest

from vcdtest import REPO, VcdDaemon, _alive, free_port, http_request

LISTMETHODS = (b"<?xml version='1.0'?><methodCall><methodName>system.listMethods</methodName>"
               b"<params></params></methodCall>")


def raw_exchange(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 10.0) -> bytes:
    """Send `data` as is and read the whole answer until the server closes."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1."), answer[:200]
    return int(answer.split(b" ", 2)[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def accept_queue_length(port: int) -> int:
    """Connections waiting in the kernel's accept queue of the listener on `port`."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                local, state, queues = fields[1], fields[3], fields[4]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    return int(queues.split(":")[1], 16)
    raise AssertionError(f"nothing listens on port {port}")


def call_ok(daemon: VcdDaemon) -> list[str]:
    return xmlrpc.client.ServerProxy(daemon.url).system.listMethods()


# --------------------------------------------------------------------------- HTTP rules

def test_post_rpc2_answers_xml_with_exact_length_and_closes(vcd_module: VcdDaemon) -> None:
    answer = raw_exchange(vcd_module.port,
                          b"POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(LISTMETHODS), LISTMETHODS))
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.0 200 OK"
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"] == "text/xml"
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    assert xmlrpc.client.loads(body)[0][0]  # a non-empty list of method names


def test_fault_is_answered_with_http_200(vcd_module: VcdDaemon) -> None:
    body = xmlrpc.client.dumps(({"username": "nobody", "password": "x"}, {}), "no.such.method")
    status, headers, data = http_request(vcd_module.host, vcd_module.port, "POST", "/RPC2",
                                         body.encode())
    assert status == 200
    assert headers["content-type"] == "text/xml"
    with pytest.raises(xmlrpc.client.Fault) as fault:
        xmlrpc.client.loads(data)
    assert fault.value.faultCode == -32601


@pytest.mark.parametrize("path", ["/", "/RPC", "/RPC2/x", "/rpc2", "/index.html"])
def test_paths_other_than_rpc2_get_404(vcd_module: VcdDaemon, path: str) -> None:
    status, _, _ = http_request(vcd_module.host, vcd_module.port, "POST", path, LISTMETHODS)
    assert status == 404


@pytest.mark.parametrize("verb", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
def test_other_verbs_on_rpc2_get_405_with_allow_header(vcd_module: VcdDaemon, verb: str) -> None:
    status, headers, _ = http_request(vcd_module.host, vcd_module.port, verb, "/RPC2")
    assert status == 405
    assert headers["allow"] == "POST"


def test_post_without_content_length_gets_411(vcd_module: VcdDaemon) -> None:
    answer = raw_exchange(vcd_module.port, b"POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\n\r\n")
    assert status_of(answer) == 411


def test_chunked_post_gets_411(vcd_module: VcdDaemon) -> None:
    answer = raw_exchange(vcd_module.port,
                          b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"5\r\n<a/>\n\r\n0\r\n\r\n")
    assert status_of(answer) == 411


@pytest.mark.parametrize("value", [b"abc", b"-5", b"+5", b"1e3", b"\xb2"])
def test_invalid_content_length_gets_400(vcd_module: VcdDaemon, value: bytes) -> None:
    answer = raw_exchange(vcd_module.port,
                          b"POST /RPC2 HTTP/1.0\r\nContent-Length: " + value + b"\r\n\r\n<x/>")
    assert status_of(answer) == 400


def test_conflicting_content_lengths_get_400(vcd_module: VcdDaemon) -> None:
    answer = raw_exchange(vcd_module.port,
                          b"POST /RPC2 HTTP/1.0\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n<x/>")
    assert status_of(answer) == 400


@pytest.mark.parametrize("request_line", [b"POST /RPC2", b"POST  /RPC2 HTTP/1.0", b"\x16\x03\x01garbage"])
def test_malformed_request_line_gets_400(vcd_module: VcdDaemon, request_line: bytes) -> None:
    answer = raw_exchange(vcd_module.port, request_line + b"\r\nContent-Length: 0\r\n\r\n")
    assert status_of(answer) == 400


def test_unsupported_http_version_gets_505(vcd_module: VcdDaemon) -> None:
    answer = raw_exchange(vcd_module.port, b"POST /RPC2 HTTP/2.0\r\nContent-Length: 0\r\n\r\n")
    assert status_of(answer) == 505


def test_oversized_head_gets_431(vcd_module: VcdDaemon) -> None:
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"y" * 1000) for i in range(70))
    answer = raw_exchange(vcd_module.port, b"POST /RPC2 HTTP/1.0\r\n" + filler + b"\r\n")
    assert status_of(answer) == 431


def test_oversize_body_is_refused_with_413_and_daemon_keeps_serving(make_vcd: Callable[..., VcdDaemon]) -> None:
    daemon = make_vcd(max_request_size=4096)
    # announced and actually sent: the answer must still reach the client
    body = b"<" + b"x" * 100_000 + b"/>"
    answer = raw_exchange(daemon.port, b"POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert status_of(answer) == 413
    # announced only: refused from the header alone, without waiting for the body
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as s:
        s.sendall(b"POST /RPC2 HTTP/1.0\r\nContent-Length: 999999999999\r\n\r\n")
        assert status_of(s.recv(4096)) == 413
    # the same through a real client library
    proxy = xmlrpc.client.ServerProxy(daemon.url)
    with pytest.raises(xmlrpc.client.ProtocolError) as refused:
        proxy.system.methodHelp("x" * 10_000)
    assert refused.value.errcode == 413
    assert call_ok(daemon)
    assert "HTTP 413" in daemon.log()


def test_body_at_the_size_limit_is_accepted(make_vcd: Callable[..., VcdDaemon]) -> None:
    daemon = make_vcd(max_request_size=4096)
    pad = b" " * (4096 - len(LISTMETHODS))
    status, _, _ = http_request(daemon.host, daemon.port, "POST", "/RPC2", LISTMETHODS + pad)
    assert status == 200


def test_expect_100_continue_gets_interim_answer_then_result(vcd_module: VcdDaemon) -> None:
    with socket.create_connection((vcd_module.host, vcd_module.port), timeout=10) as s:
        s.sendall(b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(LISTMETHODS))
        assert s.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(LISTMETHODS)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert status_of(answer) == 200


def test_head_and_body_split_across_many_packets_are_reassembled(vcd_module: VcdDaemon) -> None:
    request = (b"POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s"
               % (len(LISTMETHODS), LISTMETHODS))
    with socket.create_connection((vcd_module.host, vcd_module.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(request), 7):
            s.sendall(request[i:i + 7])
            time.sleep(0.001)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert status_of(answer) == 200


def test_silent_connections_do_not_occupy_the_workers(make_vcd: Callable[..., VcdDaemon]) -> None:
    daemon = make_vcd(workers=2, timeout=30.0)
    silent = [socket.create_connection((daemon.host, daemon.port), timeout=10) for _ in range(6)]
    try:
        for _ in range(5):  # answered long before a silent connection's 30 s would run out
            status, _, _ = http_request(daemon.host, daemon.port, "POST", "/RPC2", LISTMETHODS,
                                        timeout=10.0)
            assert status == 200
    finally:
        for s in silent:
            s.close()


def test_client_vanishing_mid_body_leaves_the_daemon_serving(vcd_module: VcdDaemon) -> None:
    for _ in range(3 * 2):  # more than there are workers
        with socket.create_connection((vcd_module.host, vcd_module.port), timeout=10) as s:
            s.sendall(b"POST /RPC2 HTTP/1.0\r\nContent-Length: 500\r\n\r\n<method")
    assert call_ok(vcd_module)


# --------------------------------------------------------------------------- hostile XML

def test_malformed_xml_gets_a_parse_fault(vcd_module: VcdDaemon) -> None:
    for body in (b"<methodCall><methodName>vcd.login", b"not xml at all", b"",
                 b"<methodCall><params><param><value><int>x</int></value></param></params></methodCall>"):
        status, _, data = http_request(vcd_module.host, vcd_module.port, "POST", "/RPC2", body)
        assert status == 200
        with pytest.raises(xmlrpc.client.Fault) as fault:
            xmlrpc.client.loads(data)
        assert fault.value.faultCode == -32700
        assert b"Traceback" not in data


def test_entity_expansion_and_dtd_get_a_fault_not_a_hang(vcd_module: VcdDaemon) -> None:
    laughs = b'<!ENTITY lol0 "lol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, b"".join(b"&lol%d;" % (i - 1) for _ in range(10)))
        for i in range(1, 10))
    bombs = [
        b'<?xml version="1.0"?><!DOCTYPE lolz [' + laughs + b']><methodCall><methodName>&lol9;'
        b'</methodName></methodCall>',
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<methodCall><methodName>&e;</methodName></methodCall>',
        b'<?xml version="1.0"?><!DOCTYPE methodCall SYSTEM "http://127.0.0.1:9/x.dtd">'
        b'<methodCall><methodName>system.listMethods</methodName></methodCall>',
    ]
    for body in bombs:
        # the client timeout is the hang detector: the answer is immediate or the test fails
        status, _, data = http_request(vcd_module.host, vcd_module.port, "POST", "/RPC2", body,
                                       timeout=10.0)
        assert status == 200
        with pytest.raises(xmlrpc.client.Fault) as fault:
            xmlrpc.client.loads(data)
        assert fault.value.faultCode == -32700
        assert b"root:" not in data
    assert call_ok(vcd_module)


def test_password_never_appears_in_the_log(vcd: VcdDaemon) -> None:
    password = vcd.admin_password
    for method in ("vcd.login", "no.such.method"):
        try:
            vcd.proxy().call(method)
        except xmlrpc.client.Fault:
            pass
    try:
        vcd.proxy("admin", "wrong-Password-42").call("vcd.login")
    except xmlrpc.client.Fault:
        pass
    assert vcd.stop() == 0
    text = vcd.log()
    assert "vcd.login" in text  # the requests were logged ...
    assert password not in text and "wrong-Password-42" not in text  # ... without secrets


# --------------------------------------------------------------------------- the pool

def test_sigkilled_worker_is_respawned_and_daemon_keeps_serving(vcd: VcdDaemon) -> None:
    before = set(vcd.worker_pids())
    assert len(before) == 2
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(set(vcd.worker_pids()) - before) == 1 and len(vcd.worker_pids()) == 2,
               what="a replacement worker")
    assert victim not in vcd.worker_pids()
    for _ in range(10):
        assert call_ok(vcd)
    assert "killed by SIGKILL" in vcd.log()


def test_worker_is_recycled_after_max_requests(make_vcd: Callable[..., VcdDaemon]) -> None:
    daemon = make_vcd(workers=1, max_requests=5)
    first = daemon.worker_pids()
    assert len(first) == 1
    for _ in range(12):  # every request is answered, across two recyclings
        assert call_ok(daemon)
    wait_until(lambda: len(daemon.worker_pids()) == 1 and daemon.worker_pids() != first,
               what="a recycled worker")
    assert daemon.log().count("retired after 5 requests") >= 2


def test_debug_flag_logs_at_debug_level(make_vcd: Callable[..., VcdDaemon]) -> None:
    daemon = make_vcd(debug=True, loglevel="error")
    assert call_ok(daemon)
    assert " DEBUG " in daemon.log()


def test_workers_setting_decides_the_pool_size(make_vcd: Callable[..., VcdDaemon]) -> None:
    daemon = make_vcd(workers=3)
    assert len(daemon.worker_pids()) == 3


def test_sighup_reloads_config_restarts_workers_and_keeps_serving(vcd: VcdDaemon) -> None:
    first = set(vcd.worker_pids())
    vcd.write_config(loglevel="warning")
    vcd.send_signal(signal.SIGHUP)
    wait_until(lambda: len(vcd.worker_pids()) == 2 and not first & set(vcd.worker_pids()),
               what="the first reload's new workers")
    assert call_ok(vcd)
    before = set(vcd.worker_pids())
    mark = len(vcd.log())
    assert " DEBUG " not in vcd.log()
    vcd.write_config(loglevel="debug", workers=3)
    vcd.send_signal(signal.SIGHUP)
    # the supervisor logs its workers' start at debug level: only visible with the new level
    wait_until(lambda: " DEBUG " in vcd.log()[mark:], what="debug lines after the reload")
    wait_until(lambda: len(vcd.worker_pids()) == 3 and not before & set(vcd.worker_pids()),
               what="a new generation of 3 workers")
    for _ in range(10):
        assert call_ok(vcd)


def test_sighup_with_a_bad_config_keeps_the_running_one(vcd: VcdDaemon) -> None:
    before = set(vcd.worker_pids())
    vcd.config_path.write_text(vcd.config_path.read_text() + 'bogus_key = 1\n')
    vcd.send_signal(signal.SIGHUP)
    wait_until(lambda: "rejected" in vcd.log(), what="the rejection in the log")
    assert "bogus_key" in vcd.log()
    assert set(vcd.worker_pids()) == before
    assert call_ok(vcd)


def test_sighup_with_a_new_port_moves_the_listener(vcd: VcdDaemon) -> None:
    old_port = vcd.port
    new_port = free_port()
    vcd.write_config(port=new_port)
    vcd.send_signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in vcd.log(), what="the reload")
    assert call_ok(vcd)  # vcd.url follows the new port
    wait_until(lambda: not _port_open(old_port), what="the old port to close")


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def test_sighup_reopens_a_rotated_log_file(vcd: VcdDaemon) -> None:
    rotated = vcd.logfile.with_suffix(".log.1")
    vcd.logfile.rename(rotated)
    vcd.send_signal(signal.SIGHUP)
    wait_until(lambda: vcd.logfile.exists() and "configuration reloaded" in vcd.log(),
               what="a new log file")
    assert stat.S_IMODE(vcd.logfile.stat().st_mode) == 0o640


def test_sigterm_exits_0_removes_pidfile_and_stops_workers(vcd: VcdDaemon) -> None:
    assert int(vcd.pidfile.read_text()) == vcd.pid
    workers = vcd.worker_pids()
    assert vcd.stop() == 0
    assert not vcd.pidfile.exists()
    assert not any(_alive(pid) for pid in workers)
    assert "vcd stopped" in vcd.log()


def test_sigint_stops_like_sigterm(vcd: VcdDaemon) -> None:
    vcd.send_signal(signal.SIGINT)
    assert vcd.wait_exit() == 0
    assert not vcd.pidfile.exists()


def test_sigterm_lets_an_inflight_request_finish(vcd: VcdDaemon) -> None:
    with socket.create_connection((vcd.host, vcd.port), timeout=10) as s:
        s.sendall(b"POST /RPC2 HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(LISTMETHODS)
                  + LISTMETHODS[:20])
        # the request must be in a worker's hands, not in the listen queue, when SIGTERM comes
        wait_until(lambda: accept_queue_length(vcd.port) == 0, what="a worker to accept")
        vcd.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the supervisor has relayed it; the worker is still reading
        s.sendall(LISTMETHODS[20:])
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert status_of(answer) == 200
    assert vcd.wait_exit() == 0


def test_workers_exit_when_the_supervisor_is_sigkilled(vcd: VcdDaemon) -> None:
    workers = vcd.worker_pids()
    assert workers
    os.kill(vcd.pid, signal.SIGKILL)
    vcd.wait_exit()
    wait_until(lambda: not any(_alive(pid) for pid in workers), what="orphaned workers to exit")


def test_new_instance_takes_over_after_a_sigkill(vcd: VcdDaemon) -> None:
    vcd.kill(signal.SIGKILL)
    assert vcd.pidfile.exists()  # stale: nobody could remove it
    vcd.start()
    assert int(vcd.pidfile.read_text()) == vcd.pid
    assert call_ok(vcd)


# --------------------------------------------------------------------------- detaching, pidfile

def test_detached_daemon_writes_pidfile_and_second_instance_refuses(make_vcd: Callable[..., VcdDaemon]) -> None:
    first = make_vcd(foreground=False, name="first")
    pid = int(first.pidfile.read_text())
    assert _alive(pid) and pid != first.process.pid  # the launcher exited, the daemon lives on
    assert stat.S_IMODE(first.pidfile.stat().st_mode) == 0o644
    assert call_ok(first)

    second = make_vcd(foreground=False, name="second", start=False)
    second.pidfile = first.pidfile
    second.write_config(pidfile=str(first.pidfile))
    result = subprocess.run(second.command(), capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert str(first.pidfile) in result.stderr and str(pid) in result.stderr
    assert int(first.pidfile.read_text()) == pid
    assert call_ok(first)

    first.stop()
    assert not _alive(pid)
    assert not first.pidfile.exists()


def test_stale_pidfile_of_a_dead_process_is_taken_over(make_vcd: Callable[..., VcdDaemon]) -> None:
    daemon = make_vcd(start=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    daemon.rundir.mkdir(parents=True, exist_ok=True)
    daemon.pidfile.write_text(dead.stdout)
    os.chmod(daemon.pidfile, 0o600)
    daemon.foreground = False
    daemon.start()
    assert int(daemon.pidfile.read_text()) == daemon.pid != int(dead.stdout)
    assert stat.S_IMODE(daemon.pidfile.stat().st_mode) == 0o644


def test_detached_start_failure_is_reported_with_nonzero_status(make_vcd: Callable[..., VcdDaemon]) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        daemon = make_vcd(start=False, foreground=False, port=busy.getsockname()[1])
        result = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=30)
    finally:
        busy.close()
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert not daemon.pidfile.exists()


# --------------------------------------------------------------------------- slow clients, IPv6

def test_slow_client_does_not_block_others_and_is_dropped_after_timeout(make_vcd: Callable[..., VcdDaemon]) -> None:
    daemon = make_vcd(workers=2, timeout=2.0)
    request = b"POST /RPC2 HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(LISTMETHODS), LISTMETHODS)
    dropped = False
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as slow:
        for i in range(len(request)):  # one byte a second: would take minutes to finish
            try:
                slow.sendall(request[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
                break
            assert call_ok(daemon)  # others are served meanwhile
            readable, _, _ = select.select([slow], [], [], 1.0)
            if readable:
                try:
                    answer = slow.recv(4096)
                except ConnectionResetError:
                    answer = b""
                assert answer == b"" or status_of(answer) == 408
                dropped = True
                break
    assert dropped and i < len(request) - 1
    assert "timed out" in daemon.log()
    assert call_ok(daemon)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_ipv6_host_listens_on_ipv6(make_vcd: Callable[..., VcdDaemon]) -> None:
    daemon = make_vcd(host="::1")
    assert daemon.url.startswith("http://[::1]:")
    assert call_ok(daemon)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", daemon.port), timeout=2).close()


# --------------------------------------------------------------------------- command line

@pytest.mark.parametrize("line, key", [
    ('port = "http"', "port"),
    ("workers = -1", "workers"),
    ('host = "not an address"', "host"),
    ("max_request_size = 10", "max_request_size"),
    ("no_such_key = 1", "no_such_key"),
])
def test_config_error_exits_2_naming_the_key(tmp_path: Path, line: str, key: str) -> None:
    conf = tmp_path / "vcd.conf"
    conf.write_text(f'rundir = "{tmp_path}/run"\npidfile = "{tmp_path}/run/vcd.pid"\n{line}\n')
    for extra in (["-f"], ["--check-config"], []):
        result = subprocess.run([sys.executable, "-m", "vcd.daemon", "-c", str(conf), *extra],
                                capture_output=True, text=True, timeout=30, cwd=REPO)
        assert result.returncode == 2, result.stderr
        assert key in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing was started


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "vcd.daemon", "-f", "-c", str(tmp_path / "nope.conf")],
                            capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 2
    assert "nope.conf" in result.stderr


def test_check_config_accepts_a_valid_file(make_vcd: Callable[..., VcdDaemon]) -> None:
    daemon = make_vcd(start=False)
    result = subprocess.run([sys.executable, "-m", "vcd.daemon", "-c", str(daemon.config_path),
                             "--check-config"], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert not daemon.pidfile.exists()


def test_address_in_use_is_reported_in_foreground(make_vcd: Callable[..., VcdDaemon]) -> None:
    first = make_vcd(name="a")
    second = make_vcd(name="b", start=False, port=first.port)
    result = subprocess.run(second.command(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert call_ok(first)


# One IPv6 host holds a whole /64: run in a network namespace of its own, where loopback
# carries addresses of two /64s, a daemon listening on one of them and the clients.
_IPV6_SHARE = r'''
import os, resource, socket, sqlite3, subprocess, sys, xmlrpc.client
from pathlib import Path
sys.path[:0] = [sys.argv[2], str(Path(sys.argv[2]).parent)]
from vcdtest import VcdDaemon, wait_until

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
for addr in ("fd00:5::1", "fd00:5::2", "fd00:5::3", "fd00:6::2"):
    subprocess.run(["ip", "-6", "addr", "add", f"{addr}/64", "dev", "lo", "nodad"], check=True)
# few descriptors: a worker takes 64 connections, 16 of them from one peer
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
SHARE = 16


class From(xmlrpc.client.Transport):
    def __init__(self, source):
        super().__init__()
        self.source = source

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.source_address = (self.source, 0)
        return conn


def login(daemon, source, password):
    proxy = xmlrpc.client.ServerProxy(daemon.url, transport=From(source))
    try:
        proxy.vcd.login({"username": "admin", "password": password})
        return 0
    except xmlrpc.client.Fault as fault:
        return fault.faultCode


def held(port):
    """Accepted connections to port whose request head the worker has read."""
    n = 0
    for line in Path("/proc/net/tcp6").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and f[3] == "01" \
                and int(f[4].split(":")[1], 16) == 0:
            n += 1
    return n


def closed(sock):
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


daemon = VcdDaemon(Path(sys.argv[1]), host="fd00:5::1", workers=1, timeout=120.0)
socks = []
try:
    daemon.start()
    # failed logins from two addresses of one /64 count as one client's
    for i in range(6):
        assert login(daemon, ("fd00:5::2", "fd00:5::3")[i % 2], "wrong") == 100
    db = sqlite3.connect(daemon.datadir / "vxdb")
    rows = db.execute("SELECT addr, count FROM login_failures").fetchall()
    db.close()
    assert rows == [("fd00:5::/64", 6)], rows
    # the /64 holds its share of the worker's connections, whichever of its addresses
    for _ in range(SHARE):
        s = socket.create_connection(("fd00:5::1", daemon.port), source_address=("fd00:5::2", 0))
        s.sendall(b"POST /RPC2 HTTP/1.1\r\n")
        socks.append(s)
    wait_until(lambda: held(daemon.port) == SHARE, what=f"{SHARE} connections held")
    more = socket.create_connection(("fd00:5::1", daemon.port), source_address=("fd00:5::3", 0))
    socks.append(more)
    more.sendall(b"POST /RPC2 HTTP/1.1\r\n")
    wait_until(lambda: closed(more), what="a further connection of the /64 refused")
    # another /64 is still served
    assert login(daemon, "fd00:6::2", daemon.admin_password) == 0
    print("ok")
finally:
    for s in socks:
        s.close()
    daemon.cleanup()
'''


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root")
def test_the_addresses_of_one_ipv6_64_are_one_peer_for_shares_and_throttling(tmp_path: Path) -> None:
    script = tmp_path / "ipv6_share.py"
    script.write_text(_IPV6_SHARE)
    r = subprocess.run(["unshare", "--net", "--", sys.executable, str(script),
                        str(tmp_path / "vcd"), str(REPO / "tests")],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
