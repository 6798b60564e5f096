"""The Unix socket listener: permissions, the same XML-RPC, local peers named by uid, vshelper."""
from __future__ import annotations

import grp
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path
from typing import Callable, Iterator

import pytest

from vcd.config import load
from vcd.transport import server_proxy
from vcdtest import REPO, VcdDaemon
from vshelper.main import url_of

NOBODY = 65534
LOGIN = (b"<?xml version='1.0'?><methodCall><methodName>vcd.login</methodName><params>"
         b"<param><value><struct><member><name>username</name><value>x</value></member>"
         b"<member><name>password</name><value>y</value></member></struct></value></param>"
         b"</params></methodCall>")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may traverse (pytest's own are 0700), so only the socket's mode decides."""
    path = Path(tempfile.mkdtemp(prefix="vcd-sock-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def some_group() -> grp.struct_group:
    for name in ("daemon", "adm", "users", "nogroup"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            continue
    pytest.skip("no unprivileged group to test with")


def admin_via(path: Path, daemon: VcdDaemon) -> xmlrpc.client.ServerProxy:
    proxy = server_proxy(f"unix://{path}", timeout=10)
    proxy.vcd.login({"username": "admin", "password": daemon.admin_password}, {})
    return proxy


def call_as(uid: int, path: Path) -> str:
    """A vcd.login over the socket from a process running as `uid`: "EACCES", or the fault.

    A forked child rather than a subprocess: the interpreter lives where other users
    may not execute it, and the raw request needs nothing but the socket module.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            import socket
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(10)
                try:
                    s.connect(str(path))
                except PermissionError:
                    os.write(write_end, b"EACCES")
                    code = 0
                else:
                    s.sendall(b"POST /RPC2 HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(LOGIN), LOGIN))
                    answer = b""
                    while chunk := s.recv(65536):
                        answer += chunk
                    os.write(write_end, answer[-4000:])
                    code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        out = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    if out == b"EACCES":
        return "EACCES"
    body = out.partition(b"\r\n\r\n")[2]
    try:
        xmlrpc.client.loads(body)
    except xmlrpc.client.Fault as fault:
        return f"fault {fault.faultCode}"
    return "ok"


def test_socket_gets_the_configured_mode_and_group_and_serves_xmlrpc(
        make_vcd: Callable[..., VcdDaemon], open_dir: Path) -> None:
    group = some_group()
    path = open_dir / "vcd.sock"
    daemon = make_vcd(unix_socket=str(path), unix_socket_mode="0660", unix_socket_group=group.gr_name)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == group.gr_gid
    proxy = admin_via(path, daemon)
    assert "vx.start" in proxy.system.listMethods()
    # the same daemon still answers on TCP
    assert daemon.proxy().vcd.login() is None
    # the peer is the caller's uid, as the kernel tells it
    assert "peer=local:uid=0" in daemon.log()
    # the mode is enforced: a user outside owner and group can't connect
    assert call_as(NOBODY, path) == "EACCES"


def test_reload_changes_the_mode_in_place_and_others_may_then_connect(
        make_vcd: Callable[..., VcdDaemon], open_dir: Path) -> None:
    path = open_dir / "vcd.sock"
    daemon = make_vcd(unix_socket=str(path), unix_socket_mode="0600")
    inode = os.stat(path).st_ino
    assert call_as(NOBODY, path) == "EACCES"
    daemon.write_config(unix_socket_mode="0666")
    daemon.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while stat.S_IMODE(os.stat(path).st_mode) != 0o666:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert os.stat(path).st_ino == inode  # the same socket: no connection was dropped
    assert call_as(NOBODY, path) == "fault 100"  # reached vcd; wrong password
    assert "peer=local:uid=65534" in daemon.log()


def test_sighup_adds_a_unix_socket_and_keeps_the_tcp_port(make_vcd: Callable[..., VcdDaemon],
                                                          tmp_path: Path) -> None:
    daemon = make_vcd()
    path = tmp_path / "added.sock"
    daemon.write_config(unix_socket=str(path))
    daemon.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    admin_via(path, daemon)
    assert daemon.proxy().vcd.login() is None
    # and taken away again
    daemon.write_config(unix_socket=None)
    daemon.send_signal(signal.SIGHUP)
    while path.exists():
        assert time.monotonic() < deadline + 20
        time.sleep(0.05)
    assert daemon.proxy().vcd.login() is None


def test_socket_is_removed_on_stop_and_a_stale_one_replaced_after_a_kill(
        make_vcd: Callable[..., VcdDaemon], tmp_path: Path) -> None:
    path = tmp_path / "run" / "vcd.sock"
    daemon = make_vcd(unix_socket=str(path))
    assert daemon.stop() == 0
    assert not path.exists()
    daemon.start()
    daemon.kill(signal.SIGKILL)
    assert path.exists()  # left behind by the killed daemon ...
    daemon.start()        # ... and taken over by the next one
    admin_via(path, daemon)


def test_an_existing_file_that_is_not_a_socket_is_never_replaced(make_vcd: Callable[..., VcdDaemon],
                                                                   tmp_path: Path) -> None:
    path = tmp_path / "precious"
    path.write_text("keep me\n")
    daemon = make_vcd(start=False, unix_socket=str(path))
    result = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 1
    assert "not a socket" in result.stderr and "Traceback" not in result.stderr
    assert path.read_text() == "keep me\n"


def test_a_socket_another_daemon_serves_is_not_stolen(make_vcd: Callable[..., VcdDaemon],
                                                      tmp_path: Path) -> None:
    path = tmp_path / "shared.sock"
    first = make_vcd(name="first", unix_socket=str(path))
    second = make_vcd(name="second", start=False, unix_socket=str(path))
    result = subprocess.run(second.command(), capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 1
    assert "another process serves" in result.stderr
    admin_via(path, first)


def test_vshelper_calls_vcd_over_the_unix_socket_by_default(make_vcd: Callable[..., VcdDaemon],
                                                            tmp_path: Path) -> None:
    path = tmp_path / "vcd.sock"
    daemon = make_vcd(unix_socket=str(path))
    assert url_of(load(daemon.config_path)) == f"unix://{path}"
    # an xid no vserver has: vcd answers "does not exist", which proves the call arrived
    result = subprocess.run([sys.executable, "-m", "vshelper", "-c", str(daemon.config_path),
                             "restart", "4242"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 1
    assert "(202)" in result.stderr
    assert "helper.restart user=vshelper peer=local:uid=0" in daemon.log()


def test_unix_urls_are_checked() -> None:
    with pytest.raises(ValueError):
        server_proxy("unix://host/run/vcd.sock")
    with pytest.raises(ValueError):
        server_proxy("ftp://127.0.0.1/RPC2")
    with pytest.raises(ValueError):
        server_proxy("http://127.0.0.1:13386", cacert="/etc/ssl/certs/ca-certificates.crt")


def test_check_config_rejects_a_group_that_does_not_exist(make_vcd: Callable[..., VcdDaemon],
                                                          tmp_path: Path) -> None:
    daemon = make_vcd(start=False, unix_socket=str(tmp_path / "vcd.sock"),
                      unix_socket_group="no-such-group-here")
    result = subprocess.run([sys.executable, "-m", "vcd.daemon", "-c", str(daemon.config_path),
                             "--check-config"], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 2
    assert "no-such-group-here" in result.stderr and "Traceback" not in result.stderr
