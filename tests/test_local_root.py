"""Local root needs no password (the Incus convention): on the Unix socket a trusted uid
that sends no credentials is the admin; every other peer, and TCP, keeps passwords."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import xmlrpc.client
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from vcd.transport import server_proxy
from vcdtest import VcdDaemon

BIN = Path(sys.executable).parent
NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to be root and nobody")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may traverse (pytest's own are 0700), so the socket's mode decides."""
    path = Path(tempfile.mkdtemp(prefix="vcd-root-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def local_daemon(make_vcd: Callable[..., VcdDaemon], open_dir: Path, **config: Any) -> VcdDaemon:
    # 0666: nobody may connect, so only the daemon's trust decides
    return make_vcd(unix_socket=str(open_dir / "vcd.sock"), unix_socket_mode="0666", **config)


def client_env(home: Path, socket: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VCD_PASSWORD", "VCD_SOCKET")}
    env.update(HOME=str(home), VCD_SOCKET=str(socket), **extra)
    return env


def as_uid(uid: int, func: Callable[[], int]) -> tuple[int, str]:
    """Run `func` in a forked child as `uid` (the interpreter and the modules are loaded
    already: other users may not read where they live); its exit status and output."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        status = 99
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            buffer = io.StringIO()
            with redirect_stdout(buffer), redirect_stderr(buffer):
                status = func()
            os.write(write_end, buffer.getvalue().encode()[-8000:])
        except BaseException as exc:
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        out = fh.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def test_root_on_the_unix_socket_calls_without_credentials_as_admin(make_vcd, open_dir):
    daemon = local_daemon(make_vcd, open_dir)
    proxy = server_proxy(f"unix://{open_dir / 'vcd.sock'}", timeout=30)
    assert proxy.vcd.login({}, {}) is None
    assert proxy.vcd.login({"username": "", "password": ""}, {}) is None
    assert proxy.vcd.user.get({}, {"username": "admin"})[0]["admin"] is True
    # the audit trail and the request log name the admin and the uid the kernel vouched for
    assert "vcd.user.get user=admin peer=local:uid=0" in daemon.log()


def test_a_trusted_uid_that_sends_credentials_is_checked_like_anyone(make_vcd, open_dir):
    local_daemon(make_vcd, open_dir)
    proxy = server_proxy(f"unix://{open_dir / 'vcd.sock'}", timeout=30)
    with pytest.raises(xmlrpc.client.Fault) as fault:
        proxy.vcd.login({"username": "admin", "password": "not-the-password"}, {})
    assert fault.value.faultCode == 100


def test_tcp_keeps_passwords_even_from_root_on_this_host(make_vcd, open_dir):
    daemon = local_daemon(make_vcd, open_dir)
    with pytest.raises(xmlrpc.client.Fault) as fault:
        xmlrpc.client.ServerProxy(daemon.url).vcd.login({}, {})
    assert fault.value.faultCode == 100


def test_an_untrusted_uid_is_refused_without_a_password_and_let_in_with_one(make_vcd, open_dir):
    daemon = local_daemon(make_vcd, open_dir)
    url = f"unix://{open_dir / 'vcd.sock'}"

    def call(creds: dict[str, str]) -> int:
        try:
            server_proxy(url, timeout=30).vcd.login(creds, {})
        except xmlrpc.client.Fault as fault:
            print(fault.faultString)
            return fault.faultCode % 256
        return 0

    status, out = as_uid(NOBODY, lambda: call({}))
    assert status == 100 and "uid 65534 is not trusted" in out, out
    password = daemon.admin_password
    assert as_uid(NOBODY, lambda: call({"username": "admin", "password": password}))[0] == 0


def test_vcc_as_an_untrusted_user_fails_as_unauthorized_without_a_password(make_vcd, open_dir):
    local_daemon(make_vcd, open_dir)
    from vcd.clients import programs   # loaded before the child gives up root
    home = open_dir / "home"
    environ = client_env(home, open_dir / "vcd.sock")

    def vcc() -> int:
        os.environ.clear()
        os.environ.update(environ)
        return programs.vcc(["--non-interactive", "list"])

    status, out = as_uid(NOBODY, vcc)
    assert status == 3 and "VCD_PASSWORD" in out, out


def test_vcc_uses_the_local_socket_by_default_and_root_needs_no_password(make_vcd, open_dir):
    daemon = local_daemon(make_vcd, open_dir)
    env = client_env(open_dir / "home", open_dir / "vcd.sock")
    for prog, args in (("vcc", ["list"]), ("vcdadm", ["user.get", "admin"]), ("vgc", ["list"]),
                       ("vce", ["list"])):
        r = subprocess.run([str(BIN / prog), "--non-interactive", *args], capture_output=True,
                           text=True, env=env, timeout=120)
        assert r.returncode == 0, (prog, r.stderr)
    assert "vcd.user.get user=admin peer=local:uid=0" in daemon.log()
    # a named user is that user: asked for its password, not trusted as root
    r = subprocess.run([str(BIN / "vcc"), "-u", "admin", "--non-interactive", "list"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 3, r.stderr


def test_trusted_uids_are_configured_and_an_empty_list_trusts_nobody(make_vcd, open_dir):
    daemon = local_daemon(make_vcd, open_dir, unix_socket_trusted_uids=[])
    proxy = server_proxy(f"unix://{open_dir / 'vcd.sock'}", timeout=30)
    with pytest.raises(xmlrpc.client.Fault) as fault:
        proxy.vcd.login({}, {})
    assert fault.value.faultCode == 100 and "unix_socket_trusted_uids" in fault.value.faultString
    # vcc is refused until it has the password
    env = client_env(open_dir / "home", open_dir / "vcd.sock")
    r = subprocess.run([str(BIN / "vcc"), "--non-interactive", "list"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 3
    r = subprocess.run([str(BIN / "vcc"), "--non-interactive", "list"], capture_output=True,
                       text=True, env={**env, "VCD_PASSWORD": daemon.admin_password}, timeout=120)
    assert r.returncode == 0, r.stderr
