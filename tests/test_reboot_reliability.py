"""Reboots from inside always come back, and one daemon owns its rundir and cgroup parent
(issue 12): a daemon started with a relative config path, a supervisor restarted under a
running vserver, a failing callback that is reported, a second daemon that must not
share, listeners that open only when the daemon is ready."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

import pytest

from api_helpers import boot_of, create_vserver
from vcdtest import REPO, VcdDaemon, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="vservers need root")


def init_started(admin, name: str) -> str | None:
    """Which boot runs (api_helpers.boot_of): a new value is a new init."""
    try:
        return boot_of(admin, name)
    except xmlrpc.client.Fault:
        return None


def reboot_and_wait(admin, name: str) -> None:
    before = init_started(admin, name)
    assert before is not None
    admin.vx.exec(name=name, command="sh -c 'reboot -f &'")
    wait_until(lambda: init_started(admin, name) not in (None, before),
               what=f"{name} to come back after its reboot")
    assert admin.vx.status(name=name)["running"]


def supervisor_worker(daemon: VcdDaemon) -> int:
    """The pid that answers on the supervisor's socket (the worker, parent of the inits)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(daemon.rundir / "libvserver" / "supervisor.sock"))
        s.sendall(b'{"op": "ping"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(json.loads(data)["pid"])


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def relative_vcd(make_vcd):
    """A daemon started as `make run` starts it: `-c <config>` relative to its cwd."""
    daemon = make_vcd(start=False)
    relative = os.path.relpath(daemon.config_path, REPO)
    assert not relative.startswith("/")
    daemon.command = lambda: [sys.executable, "-m", "vcd.daemon", "-c", relative, "-f"]
    return daemon.start()


def test_a_daemon_started_with_a_relative_config_brings_a_rebooted_vserver_back(relative_vcd):
    admin = relative_vcd.proxy()
    name = create_vserver(relative_vcd)
    admin.vx.start(name=name)
    # the supervisor's callback names the config by its absolute path
    worker = supervisor_worker(relative_vcd)
    cmdline = Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")
    notify = json.loads(cmdline[cmdline.index(b"--notify") + 1])
    # (behind vcd's sh filter: the vshelper argv is the part after "-m vshelper")
    vshelper = notify[notify.index("vshelper") - 1:]
    assert vshelper[vshelper.index("-c") + 1] == str(relative_vcd.config_path)
    reboot_and_wait(admin, name)
    admin.vx.stop(name=name)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_vserver_rebooted_after_the_supervisor_was_restarted_comes_back(vcd, sig):
    admin = vcd.proxy()
    name = create_vserver(vcd)
    admin.vx.start(name=name)
    old = supervisor_worker(vcd)
    os.kill(old, sig)
    wait_until(lambda: gone(old), what="the old supervisor worker to end")
    assert admin.vx.status(name=name)["running"]
    new = wait_until(lambda: _answering_worker(vcd), what="a new supervisor worker")
    assert new != old
    reboot_and_wait(admin, name)
    # and again, with the worker that adopted it replaced once more
    os.kill(new, signal.SIGKILL)
    wait_until(lambda: gone(new), what="the second worker to end")
    reboot_and_wait(admin, name)
    admin.vx.stop(name=name)


def _answering_worker(daemon: VcdDaemon) -> int | None:
    try:
        return supervisor_worker(daemon)
    except (OSError, ValueError):
        return None


def test_a_failing_callback_is_in_the_supervisor_log_and_in_vcds_log(vcd):
    admin = vcd.proxy()
    name = create_vserver(vcd)
    admin.vx.start(name=name)
    # vshelper cannot log in any more: its helper.restart gets a fault and it says so
    password = vcd.datadir / "vshelper.password"
    password.write_text("not-the-password\n")
    admin.vx.exec(name=name, command="sh -c 'reboot -f &'")
    wait_until(lambda: "callback restart for context" in vcd.log(), what="vcd to log the failure")
    line = next(li for li in vcd.log().splitlines() if "callback restart for context" in li)
    assert "vshelper" in line and "output: vshelper: helper.restart" in line
    supervisor_log = (vcd.rundir / "libvserver" / "supervisor.log").read_text()
    assert "callback restart for context" in supervisor_log
    assert "vshelper: helper.restart" in supervisor_log


def test_a_second_daemon_on_the_same_rundir_with_another_datadir_refuses_to_start(vcd, make_vcd):
    other = make_vcd(start=False, name="other")
    other.rundir = vcd.rundir
    other.pidfile = other.root / "vcd.pid"
    other.write_config()
    with pytest.raises(RuntimeError) as info:
        other.start()
    assert f"rundir {vcd.rundir} is in use by a running vcd with datadir {vcd.datadir}" \
        in str(info.value)
    assert vcd.proxy().vcd.status()  # the first one is unaffected


def test_a_second_daemon_on_the_same_cgroup_parent_refuses_to_start(vcd, make_vcd):
    other = make_vcd(start=False, name="other", cgroup_parent=vcd.cgroup_parent)
    with pytest.raises(RuntimeError) as info:
        other.start()
    assert f"cgroup parent '{vcd.cgroup_parent}' is in use by a running vcd with datadir " \
           f"{vcd.datadir}" in str(info.value)


def test_a_stopped_daemons_rundir_is_refused_while_its_supervisor_runs(vcd, make_vcd):
    admin = vcd.proxy()
    name = create_vserver(vcd)
    admin.vx.start(name=name)
    admin.vx.stop(name=name)
    vcd.stop()
    other = make_vcd(start=False, name="other")
    other.rundir = vcd.rundir
    other.pidfile = other.root / "vcd.pid"
    other.write_config()
    with pytest.raises(RuntimeError) as info:
        other.start()
    assert "whose supervisor" in str(info.value) and str(vcd.datadir) in str(info.value)
    vcd.start()  # its own daemon takes it back
    assert vcd.proxy().vcd.status()


def test_the_port_accepts_only_once_the_first_users_exist(make_vcd):
    daemon = make_vcd(start=False)
    daemon.start(wait=False)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection((daemon.host, daemon.port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, daemon.stderr()
            time.sleep(0.001)
    assert (daemon.datadir / "admin.password").read_text().strip()
    assert (daemon.datadir / "vshelper.password").read_text().strip()
    daemon.wait_ready()


def test_systemd_hears_ready_when_the_daemon_serves(make_vcd, tmp_path):
    daemon = make_vcd(start=False)
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(60)
        env = {**os.environ, "NOTIFY_SOCKET": str(path)}
        with open(daemon.stderr_path, "ab") as err:
            daemon.process = subprocess.Popen(daemon.command(), stdin=subprocess.DEVNULL,
                                              stdout=err, stderr=err, cwd=REPO, env=env)
        daemon.pid = daemon.process.pid
        message = server.recv(4096).decode()
        assert "READY=1" in message.splitlines()
        assert f"MAINPID={daemon.pid}" in message.splitlines()
        # ready means serving
        assert daemon.answers()
        daemon.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in server.recv(4096).decode()
    daemon.wait_exit()


def test_a_reload_onto_a_cgroup_parent_another_daemon_uses_is_refused(vcd, make_vcd):
    other = make_vcd(name="other")
    before = set(other.worker_pids())
    mark = len(other.log())
    other.write_config(cgroup_parent=vcd.cgroup_parent)
    other.send_signal(signal.SIGHUP)
    wait_until(lambda: "keeping the running one" in other.log()[mark:], what="the refusal")
    assert f"cgroup parent '{vcd.cgroup_parent}' is in use" in other.log()[mark:]
    assert set(other.worker_pids()) == before  # no new generation: the old config serves
    assert other.proxy().vcd.status()
    # and its own parent is still its own: a third daemon cannot take it
    third = make_vcd(start=False, name="third", cgroup_parent=other.cgroup_parent)
    with pytest.raises(RuntimeError, match="is in use by a running vcd"):
        third.start()


def test_a_reload_onto_a_free_cgroup_parent_gives_up_the_old_one(make_vcd):
    daemon = make_vcd()
    old_parent = daemon.cgroup_parent
    before = set(daemon.worker_pids())
    daemon.write_config(cgroup_parent=f"{old_parent}-moved")
    daemon.send_signal(signal.SIGHUP)
    wait_until(lambda: not before & set(daemon.worker_pids()), what="the new generation")
    assert daemon.proxy().vcd.status()
    # the old parent is free now (its workers, which held copies of the lock, are gone)
    third = make_vcd(name="third", cgroup_parent=old_parent)
    assert third.proxy().vcd.status()
    fourth = make_vcd(start=False, name="fourth", cgroup_parent=f"{old_parent}-moved")
    with pytest.raises(RuntimeError, match="is in use by a running vcd"):
        fourth.start()
