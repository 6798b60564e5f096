"""Running vservers over the API: real contexts on this kernel, driven over XML-RPC."""
from __future__ import annotations

import concurrent.futures
import os
import signal
import time
import xmlrpc.client
from pathlib import Path

import pytest

from api_helpers import boot_of, create_vserver, fault, fault_code, unique
from vcdtest import VcdDaemon, daemon_fixture, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")


rt = daemon_fixture("runtime", workers=6, exec_timeout=5.0)


@pytest.fixture
def admin(rt):
    return rt.proxy()


@pytest.fixture
def running(rt, admin):
    """A started vserver; stopped again after the test."""
    name = create_vserver(rt)
    admin.vx.start(name=name)
    yield name
    if admin.vx.status(name=name)["running"]:
        admin.vx.stop(name=name)


def test_full_lifecycle(rt, admin):
    name = create_vserver(rt)
    assert admin.vx.status(name=name)["running"] is False
    assert fault_code(admin.vx.stop, name=name) == 300
    assert fault_code(admin.vx.exec, name=name, command="true") == 300
    assert admin.vx.start(name=name) is None
    assert fault_code(admin.vx.start, name=name) == 301
    st = admin.vx.status(name=name)
    assert st["running"] is True and st["nproc"] >= 1 and st["thr_total"] >= 1
    assert set(st) >= {"running", "nproc", "uptime", "thr_total", "thr_running", "thr_unintr",
                       "thr_onhold", "forks_total", "load1m", "load5m", "load15m"}
    assert fault_code(admin.vx.remove, name=name) == 301
    assert fault_code(admin.vx.rename, name=name, newname=unique()) == 301
    assert fault_code(admin.vx.create, name=name, template="busybox", rebuild=True) == 301
    assert isinstance(admin.vx.stop(name=name), str)
    assert admin.vx.status(name=name) == {
        "running": False, "nproc": 0, "uptime": 0, "thr_total": 0, "thr_running": 0,
        "thr_unintr": 0, "thr_onhold": 0, "forks_total": 0, "load1m": "0.00",
        "load5m": "0.00", "load15m": "0.00", "privileged": False}
    admin.vx.remove(name=name)


def test_exec_returns_output_and_maps_exit_codes(admin, running):
    assert admin.vx.exec(name=running, command="echo hello world") == "hello world\n"
    assert admin.vx.exec(name=running, command="sh -c 'echo out; echo err >&2'") == "out\nerr\n"
    f = fault(admin.vx.exec, name=running, command="sh -c 'echo failing; exit 7'")
    assert f.faultCode == 1007
    assert f.faultString == "Command execution failed: exit status 7: failing\n"
    # no shell: the redirection is just an argument
    assert admin.vx.exec(name=running, command="echo a > /tmp/x") == "a > /tmp/x\n"
    assert fault_code(admin.vx.exec, name=running, command="'unbalanced") == 200
    assert fault_code(admin.vx.exec, name=running, command="/no/such/binary") > 1000


def test_exec_timeout_kills_the_command(admin, running):
    started = time.monotonic()
    f = fault(admin.vx.exec, name=running, command="sleep 60")
    assert f.faultCode > 1000 and "timed out" in f.faultString
    assert time.monotonic() - started < 30


def test_exec_does_not_hang_on_background_processes(admin, running):
    started = time.monotonic()
    out = admin.vx.exec(name=running, command="sh -c 'sleep 100 & echo started'")
    assert out == "started\n"
    assert time.monotonic() - started < 4


def test_kill_one_process_then_all(admin, running):
    admin.vx.exec(name=running, command="sh -c 'sleep 1000 & echo $! > /tmp/sleeper'")
    pid = int(admin.vx.exec(name=running, command="cat /tmp/sleeper"))
    assert pid > 1
    admin.vx.kill(name=running, pid=pid, sig=int(signal.SIGKILL))
    wait_until(lambda: str(pid) not in admin.vx.exec(name=running, command="ps -o pid"),
               what="the sleeper to die")
    assert fault_code(admin.vx.kill, name=running, pid=pid, sig=99) == 200
    admin.vx.kill(name=running, pid=0, sig=int(signal.SIGKILL))
    wait_until(lambda: not admin.vx.status(name=running)["running"], what="the vserver to end")


def test_kill_of_init_with_sigkill_ends_the_vserver(admin, running):
    admin.vx.kill(name=running, pid=1, sig=int(signal.SIGKILL))
    wait_until(lambda: not admin.vx.status(name=running)["running"], what="the vserver to end")


def test_configuration_is_enforced_inside_after_a_start(rt, admin):
    name = create_vserver(rt)
    admin.vxdb.vx.uname.set(name=name, uname="NODENAME", value="inside-host")
    admin.vxdb.vx.bcaps.remove(name=name, bcap="")
    for cap in ("CHOWN", "KILL", "SETUID"):
        admin.vxdb.vx.bcaps.add(name=name, bcap=cap)
    admin.vxdb.vx.limit.set(name=name, limit="NPROC", max=20)
    admin.vxdb.vx.limit.set(name=name, limit="RSS", max=65536)
    admin.vxdb.nx.addr.set(name=name, addr="10.211.0.2", netmask="255.255.255.0")
    admin.vx.start(name=name)
    try:
        assert admin.vx.exec(name=name, command="hostname") == "inside-host\n"
        status = admin.vx.exec(name=name, command="cat /proc/self/status")
        capbnd = int(next(l for l in status.splitlines() if l.startswith("CapBnd:")).split()[1], 16)
        assert capbnd == (1 << 0) | (1 << 5) | (1 << 7)   # CHOWN, KILL, SETUID
        limits = {u["type"]: u for u in admin.vx.limstatus(name=name)}
        assert "NPROC" in limits and int(limits["NPROC"]["cur"]) >= 1
        addrs = admin.vx.exec(name=name, command="ip -4 addr")
        assert "10.211.0.2/24" in addrs
        # forking past the NPROC limit fails inside, and usage stays at the limit
        f = fault(admin.vx.exec, name=name,
                  command="sh -c 'for i in $(seq 40); do sleep 30 & done; wait'")
        assert f.faultCode > 1000 and "fork" in f.faultString
        nproc = {u["type"]: u for u in admin.vx.limstatus(name=name)}["NPROC"]
        assert 1 <= int(nproc["cur"]) <= 20
    finally:
        admin.vx.stop(name=name)


def init_started(admin, name: str) -> str:
    """Which boot runs (api_helpers.boot_of): a new value = a new init."""
    return boot_of(admin, name)


def wait_for_new_init(admin, name: str, before: str) -> None:
    def restarted() -> bool:
        try:
            return init_started(admin, name) != before
        except xmlrpc.client.Fault:
            return False
    wait_until(restarted, timeout=30, what="the vserver to come back")


def test_reboot_from_inside_brings_the_vserver_back(rt, admin, running):
    before = init_started(admin, running)
    admin.vx.exec(name=running, command="sh -c 'reboot -f &'")
    wait_for_new_init(admin, running, before)
    assert admin.vx.status(name=running)["running"]


def test_halt_from_inside_leaves_it_stopped(rt, admin, running):
    admin.vx.exec(name=running, command="sh -c 'halt -f &'")
    wait_until(lambda: not admin.vx.status(name=running)["running"], what="the halt")
    time.sleep(2)
    assert admin.vx.status(name=running)["running"] is False


def test_vx_reboot_runs_the_reboot_command_and_it_comes_back(rt, admin, running):
    admin.vxdb.init.set(name=running, reboot="/bin/sh -c 'reboot -f &'")
    before = init_started(admin, running)
    assert isinstance(admin.vx.reboot(name=running), str)
    wait_for_new_init(admin, running, before)


def test_restart_waits_for_stop_and_start(admin, running):
    admin.vx.exec(name=running, command="sh -c 'echo x > /dev/shm/volatile'")
    admin.vx.restart(name=running)
    assert admin.vx.status(name=running)["running"]
    assert fault_code(admin.vx.exec, name=running, command="cat /dev/shm/volatile") > 1000


def test_vservers_survive_a_sigkill_of_the_daemon(rt, admin):
    name = create_vserver(rt)
    admin.vx.start(name=name)
    rt.kill(signal.SIGKILL)
    rt.start()
    admin = rt.proxy()
    assert admin.vx.status(name=name)["running"] is True
    assert admin.vx.exec(name=name, command="echo alive") == "alive\n"
    admin.vx.stop(name=name)
    assert admin.vx.status(name=name)["running"] is False


def test_eight_clients_hammering_one_vserver_leave_a_consistent_state(rt, admin):
    name = create_vserver(rt)
    allowed = {300, 301, 302}
    errors: list[str] = []

    def client(i: int) -> None:
        p = rt.proxy()
        for j in range(6):
            op = ("start", "stop", "exec")[(i + j) % 3]
            try:
                if op == "exec":
                    p.vx.exec(name=name, command="true")
                else:
                    p.call(f"vx.{op}", name=name)
            except xmlrpc.client.Fault as f:
                if f.faultCode not in allowed and not (op == "exec" and f.faultCode > 1000):
                    errors.append(f"{op}: {f.faultCode} {f.faultString}")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(8)))
    assert errors == []
    st = admin.vx.status(name=name)
    if st["running"]:
        assert admin.vx.exec(name=name, command="echo ok") == "ok\n"
        admin.vx.stop(name=name)
    assert admin.vx.status(name=name)["running"] is False
    admin.vx.start(name=name)
    admin.vx.stop(name=name)


def test_onboot_group_starts_with_the_daemon(make_vcd):
    daemon = make_vcd()
    try:
        name = create_vserver(daemon)
        daemon.proxy().vg.add(group="onboot", name=name)
        daemon.stop()
        daemon.boot = True
        daemon.start()
        admin = daemon.proxy()
        wait_until(lambda: admin.vx.status(name=name)["running"], what="boot")
        admin.vx.stop(name=name)
    finally:
        daemon.cleanup()


def test_group_actions_reach_every_member(rt, admin):
    group = unique("grp")
    members = [create_vserver(rt) for _ in range(3)]
    for m in members:
        admin.vg.add(group=group, name=m)
    admin.vg.vx.start(group=group)
    assert all(admin.vx.status(name=m)["running"] for m in members)
    admin.vg.vx.restart(group=group)
    assert all(admin.vx.status(name=m)["running"] for m in members)
    admin.vg.vx.stop(group=group)
    assert not any(admin.vx.status(name=m)["running"] for m in members)
    assert fault_code(admin.vg.vx.start, group="no-such-group") == 203


def test_fifty_vservers_start_and_stop_without_leaks(rt, admin):
    names = [create_vserver(rt) for _ in range(50)]
    # several clients at once, as a panel would; each stop waits for a graceful halt
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda n: rt.proxy().vx.start(name=n), names))
        assert all(admin.vx.status(name=n)["running"] for n in names)
        list(pool.map(lambda n: rt.proxy().vx.stop(name=n), names))
    leftovers = []
    for controller in ("pids", "memory", "cpu", "freezer"):
        parent = Path("/sys/fs/cgroup") / controller / rt.cgroup_parent
        if parent.is_dir():
            xids = {str(admin.vxdb.xid.get(name=n)) for n in names}
            leftovers += [p.name for p in parent.iterdir() if p.is_dir() and p.name in xids]
    assert leftovers == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert not any(str(rt.vbasedir / n) + "/proc" in mounts for n in names)


def test_helper_methods_need_the_helper_capability(rt, admin):
    name = create_vserver(rt)
    xid = admin.vxdb.xid.get(name=name)
    assert fault_code(admin.helper.restart, xid=xid) == 101
    helper = rt.proxy("vshelper", rt.vshelper_password)
    assert helper.helper.startup(xid=xid) is None
    assert helper.helper.netup(xid=xid) is None
    assert fault_code(helper.helper.startup, xid=65000) == 202
    # a restart request followed by shutdown starts the vserver
    helper.helper.restart(xid=xid)
    helper.helper.shutdown(xid=xid)
    assert admin.vx.status(name=name)["running"] is True
    admin.vx.stop(name=name)
    helper.helper.shutdown(xid=xid)       # nothing requested: stays stopped
    assert admin.vx.status(name=name)["running"] is False


def test_group_actions_never_touch_vservers_the_caller_does_not_own(rt, admin):
    group = unique("mixed")
    mine, theirs = create_vserver(rt), create_vserver(rt)
    user = unique("grpuser")
    admin.vcd.user.set(username=user, password="password1", admin=False)
    admin.vcd.user.caps.add(username=user, cap="INIT")
    admin.vxdb.owner.add(name=mine, username=user)
    admin.vg.add(group=group, name=mine)
    admin.vg.add(group=group, name=theirs)
    f = fault(rt.proxy(user, "password1").vg.vx.start, group=group)
    assert f.faultCode == 202 and theirs in f.faultString
    assert admin.vx.status(name=mine)["running"] is True
    assert admin.vx.status(name=theirs)["running"] is False
    admin.vx.stop(name=mine)


def test_mounts_from_vxdb_are_made_inside_and_confined(rt, admin, tmp_path):
    name = create_vserver(rt)
    vdir = rt.vbasedir / name
    (vdir / "srv" / "data").mkdir(parents=True)
    (vdir / "mnt" / "data").mkdir(parents=True)
    (vdir / "mnt" / "scratch").mkdir(parents=True)
    admin.vxdb.mount.set(name=name, dst="/mnt/data", src="/srv/data")       # a bind mount
    admin.vxdb.mount.set(name=name, dst="/mnt/scratch", src="none", type="tmpfs", opts="size=1m")
    # a symlink in the guest cannot make the bind source a host directory
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (secret / "key").write_text("host only")
    (vdir / "mnt" / "evil").mkdir()
    os.symlink(str(secret), vdir / "srv" / "escape")
    admin.vx.start(name=name)
    try:
        admin.vx.exec(name=name, command="sh -c 'echo from-inside > /mnt/data/file'")
        assert (vdir / "srv" / "data" / "file").read_text() == "from-inside\n"
        assert "tmpfs" in admin.vx.exec(name=name, command="sh -c 'grep /mnt/scratch /proc/mounts'")
    finally:
        admin.vx.stop(name=name)
    admin.vxdb.mount.set(name=name, dst="/mnt/evil", src="/srv/escape")
    code = None
    try:
        admin.vx.start(name=name)
        out = admin.vx.exec(name=name, command="ls /mnt/evil")
        assert "key" not in out
        admin.vx.stop(name=name)
    except xmlrpc.client.Fault as f:
        code = f.faultCode
    assert code in (None, 500)
    assert (secret / "key").read_text() == "host only"
