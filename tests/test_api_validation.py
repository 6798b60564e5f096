"""Values are checked when they are set (issue 12, "Values checked when they are set"):
full-match names, limits the kernel or init cannot live with, the unlimited forms,
init.set keeping what it does not name, lookups that keep other tenants' vservers
hidden, a start that never reports a dead init as success, and RFC 3021 networks."""
from __future__ import annotations

import json
import os
import sqlite3
import time
import xmlrpc.client

import pytest

from api_helpers import create_vserver, fault, fault_code, unique
from vcdtest import VcdDaemon

MIN_MEMORY_KIB = 6144


@pytest.fixture(scope="module")
def admin(vcd_module):
    return vcd_module.proxy()


@pytest.fixture(scope="module")
def vs(vcd_module):
    return create_vserver(vcd_module)


def tenant(daemon: VcdDaemon, *caps: str, owns: tuple[str, ...] = ()):
    """A non-admin user made through the API, with these capabilities and vservers."""
    admin = daemon.proxy()
    username = unique("tenant")
    password = f"password-{username}"
    admin.vcd.user.set(username=username, password=password, admin=False)
    for cap in caps:
        admin.vcd.user.caps.add(username=username, cap=cap)
    for name in owns:
        admin.vxdb.owner.add(name=name, username=username)
    return daemon.proxy(username, password)


# -- names: the whole value must match ---------------------------------------------------

def test_a_name_with_a_trailing_newline_is_refused_and_creates_nothing(admin, vcd_module):
    f = fault(admin.vx.create, name="web\n", template="busybox")
    assert f.faultCode == 200 and "'name'" in f.faultString
    assert not os.path.lexists(vcd_module.vbasedir / "web\n")
    assert "web\n" not in admin.vxdb.list()


@pytest.mark.parametrize("suffix", ["\n", "\nx", " ", "\r"])
def test_usernames_groups_and_renames_are_matched_whole(admin, vs, suffix):
    assert fault_code(admin.vcd.user.set, username="bob" + suffix, password="password1") == 200
    assert fault_code(admin.vg.add, group="grp" + suffix, name=vs) == 200
    assert fault_code(admin.vx.rename, name=vs, newname="renamed" + suffix) == 200
    assert fault_code(admin.vx.create, name="web" + suffix, template="busybox") == 200
    assert admin.vxdb.xid.get(name=vs)


# -- limits -------------------------------------------------------------------------------

@pytest.mark.parametrize("limit,value", [
    ("RSS", "0"), ("RSS", "1"), ("RSS", "4"), ("RSS", str(MIN_MEMORY_KIB - 1)),
    ("RSS", "4611686018427387904"),           # 2^62 KiB: 0 once multiplied into bytes
    ("AS", "0"), ("ANON", "9007199254740992"),
    ("MEMLOCK", "9007199254740992"), ("SHMEM", "18014398509481984"),
    ("NPROC", "5000000"), ("NPROC", "4194305"), ("NPROC", "0"),
    ("NOFILE", "99999999999"), ("NSEMS", "2147483648"),
])
def test_limits_the_kernel_or_init_cannot_live_with_are_refused_naming_the_range(
        admin, vs, limit, value):
    f = fault(admin.vxdb.vx.limit.set, name=vs, limit=limit, max=value)
    assert f.faultCode == 200
    assert value in f.faultString and limit in f.faultString and ".." in f.faultString
    assert not admin.vxdb.vx.limit.get(name=vs, limit=limit) or \
        admin.vxdb.vx.limit.get(name=vs, limit=limit)[0]["max"] != value


def test_a_soft_limit_outside_the_range_is_refused_too(admin, vs):
    f = fault(admin.vxdb.vx.limit.set, name=vs, limit="RSS", soft="100", max="65536")
    assert f.faultCode == 200 and "'soft'" in f.faultString


@pytest.mark.parametrize("limit,value", [
    ("RSS", str(MIN_MEMORY_KIB)), ("RSS", "9007199254740991"), ("NPROC", "1"),
    ("NPROC", "4194304"), ("MEMLOCK", "0"), ("CPU", "18446744073709551614"),
])
def test_limits_at_the_edges_of_the_range_are_kept(admin, vs, limit, value):
    admin.vxdb.vx.limit.set(name=vs, limit=limit, max=value)
    assert admin.vxdb.vx.limit.get(name=vs, limit=limit) == [
        {"limit": limit, "soft": value, "max": value}]


@pytest.mark.parametrize("value", ["inf", "INF", "-1", -1, "18446744073709551615",
                                   " inf "])
def test_every_form_of_unlimited_reads_back_as_inf(admin, vs, value):
    admin.vxdb.vx.limit.set(name=vs, limit="NPROC", soft=value, max=value)
    assert admin.vxdb.vx.limit.get(name=vs, limit="NPROC") == [
        {"limit": "NPROC", "soft": "inf", "max": "inf"}]


def test_unlimited_forms_are_documented_in_the_method_help(vcd_module):
    server = xmlrpc.client.ServerProxy(vcd_module.url)
    text = server.system.methodHelp("vxdb.vx.limit.set")
    assert "inf" in text and "-1" in text and "18446744073709551615" in text
    assert str(MIN_MEMORY_KIB) in text and "4194304" in text


@pytest.mark.parametrize("params", [
    {"interval": 1, "fillrate": 2147483647},
    {"interval": 1, "fillrate": 175921861},                 # quota 2^44 us: one too many
    {"interval": 1, "fillrate": 170000000, "tokensmax": 2147483647},  # quota + burst
])
def test_cpu_rates_the_kernel_refuses_are_refused_when_set(admin, vs, params):
    f = fault(admin.vxdb.vx.sched.set, name=vs, cpuid=0, **params)
    assert f.faultCode == 200 and "175921860" in f.faultString
    assert admin.vxdb.vx.sched.get(name=vs, cpuid=0) == []


def test_the_highest_cpu_rate_the_kernel_takes_is_kept(admin, vs):
    admin.vxdb.vx.sched.set(name=vs, cpuid=0, interval=1, fillrate=175921860)
    assert admin.vxdb.vx.sched.get(name=vs, cpuid=0)[0]["fillrate"] == 175921860
    admin.vxdb.vx.sched.remove(name=vs, cpuid=0)


# -- partial sets ---------------------------------------------------------------------------

def test_init_set_with_only_a_timeout_keeps_the_commands(admin, vcd_module):
    name = create_vserver(vcd_module)
    admin.vxdb.init.set(name=name, init="/bin/myinit", halt="/bin/myhalt",
                        reboot="/bin/myreboot", timeout=20)
    admin.vxdb.init.set(name=name, timeout=7)
    assert admin.vxdb.init.get(name=name) == {"init": "/bin/myinit", "halt": "/bin/myhalt",
                                              "reboot": "/bin/myreboot", "timeout": 7,
                                              "halt_signal": "", "reboot_signal": ""}
    other = create_vserver(vcd_module)
    admin.vxdb.init.set(name=other, timeout=3)   # nothing set yet: defaults for the rest
    assert admin.vxdb.init.get(name=other) == {"init": "/sbin/init", "halt": "/sbin/halt",
                                               "reboot": "/sbin/reboot", "timeout": 3,
                                               "halt_signal": "", "reboot_signal": ""}


def test_dx_and_cpuset_sets_keep_what_they_leave_out(admin, vcd_module):
    name = create_vserver(vcd_module)
    admin.vxdb.dx.limit.set(name=name, space="100000", inodes=1000, reserved=10)
    admin.vxdb.dx.limit.set(name=name, space="200000", inodes=2000)
    assert admin.vxdb.dx.limit.get(name=name)["reserved"] == 10
    admin.vxdb.vx.cpuset.set(name=name, cpus="0", virtualize=True)
    admin.vxdb.vx.cpuset.set(name=name, cpus="0")
    assert admin.vxdb.vx.cpuset.get(name=name)["virtualize"] is True


# -- lookups: not yours = does not exist -------------------------------------------------

def test_lookups_answer_only_owners_admins_and_the_helper(admin, vcd_module):
    mine, theirs = create_vserver(vcd_module), create_vserver(vcd_module)
    user = tenant(vcd_module, "INFO", owns=(mine,))
    xid_mine, xid_theirs = admin.vxdb.xid.get(name=mine), admin.vxdb.xid.get(name=theirs)
    assert user.vxdb.xid.get(name=mine) == xid_mine
    assert user.vxdb.name.get(xid=xid_mine) == mine
    assert user.vxdb.vdir.get(name=mine) == admin.vxdb.vdir.get(name=mine)
    # the same answer as for a vserver that does not exist: nothing but what was asked
    for call, params, asked in ((user.vxdb.xid.get, {"name": theirs}, theirs),
                                (user.vxdb.vdir.get, {"name": theirs}, theirs),
                                (user.vxdb.name.get, {"xid": xid_theirs}, f"xid {xid_theirs}")):
        f = fault(call, **params)
        assert (f.faultCode, f.faultString) == (202, f"Virtual server does not exist: {asked}")
    assert fault_code(user.vxdb.xid.get, name="ghost") == 202
    helper = vcd_module.proxy("vshelper", vcd_module.vshelper_password)
    assert helper.vxdb.xid.get(name=theirs) == xid_theirs
    assert helper.vxdb.name.get(xid=xid_theirs) == theirs


# -- a start reports a dead init -----------------------------------------------------------

def _exit_record(daemon: VcdDaemon, xid: int, timeout: float = 10.0) -> dict:
    path = daemon.rundir / "libvserver" / f"{xid}.exit"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "the supervisor recorded no exit"
        time.sleep(0.05)
    return json.loads(path.read_text())


def _logged_start(daemon: VcdDaemon, name: str) -> float:
    """When the daemon logged the last successful start of name (ms, rounded down)."""
    lines = [line for line in daemon.logfile.read_text().splitlines()
             if f" started {name} (xid " in line]
    stamp = lines[-1][:23]   # "2026-11-29 20:15:09,598"
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S")) + int(stamp[20:]) / 1000


@pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")
def test_start_never_reports_success_for_an_init_that_died(admin, vcd_module):
    """An init that exits at once: whenever its exit was recorded before the daemon
    decided that the start succeeded (its log line "started"), the answer must have been
    fault 500 saying it died. An exit recorded after that decision proves nothing
    either way (init may end at any moment after a start); such an attempt is repeated."""
    name = create_vserver(vcd_module)
    xid = admin.vxdb.xid.get(name=name)
    admin.vxdb.init.set(name=name, init="/bin/false")
    for _ in range(20):
        try:
            admin.vx.start(name=name)
        except xmlrpc.client.Fault as f:
            assert f.faultCode == 500 and "died" in f.faultString and "exit 1" in f.faultString
            break
        decided = _logged_start(vcd_module, name)
        ended = _exit_record(vcd_module, xid)
        assert ended["time"] >= decided, f"vx.start succeeded after init ended: {ended}"
    # (no attempt may be required to fault: how soon /bin/false ends after its exec is
    # the kernel's timing, not ours; the invariant above is what must hold each time)
    assert admin.vx.status(name=name)["running"] is False


@pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")
def test_an_older_rows_memory_limit_of_0_never_makes_a_running_vserver(admin, vcd_module):
    """The issue's example, as an older VXDB (or a hand edit) still holds it: RSS 0."""
    name = create_vserver(vcd_module)
    xid = admin.vxdb.xid.get(name=name)
    db = sqlite3.connect(vcd_module.datadir / "vxdb")
    try:
        with db:
            db.execute("INSERT OR REPLACE INTO vx_limit (xid, type, soft, max) "
                       "VALUES (?, 'RSS', '0', '0')", (xid,))
    finally:
        db.close()
    try:
        admin.vx.start(name=name)
    except xmlrpc.client.Fault as f:
        # killed during its set-up (it is born in its cgroups): the start itself failed
        assert f.faultCode == 500 and name in f.faultString
    else:
        # killed right after its exec: the supervisor saw it end
        assert _exit_record(vcd_module, xid)["reason"] == "signal 9"
    assert admin.vx.status(name=name)["running"] is False
    # a value that cannot run is refused when it is set
    assert fault_code(admin.vxdb.vx.limit.set, name=name, limit="RSS", max="0") == 200


@pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")
def test_init_lives_with_the_smallest_memory_limit_accepted(admin, vcd_module):
    name = create_vserver(vcd_module)
    admin.vxdb.vx.limit.set(name=name, limit="RSS", max=str(MIN_MEMORY_KIB))
    admin.vx.start(name=name)
    try:
        assert admin.vx.status(name=name)["running"] is True
        assert admin.vx.exec(name=name, command="echo alive") == "alive\n"
    finally:
        admin.vx.stop(name=name)


# -- RFC 3021 --------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")
@pytest.mark.parametrize("netmask,prefix", [("255.255.255.254", 31), ("255.255.255.255", 32),
                                            ("255.255.255.0", 24)])
def test_point_to_point_networks_get_no_broadcast(admin, vcd_module, netmask, prefix):
    name = create_vserver(vcd_module)
    admin.vxdb.nx.addr.set(name=name, addr=f"10.219.{prefix}.0", netmask=netmask)
    admin.vx.start(name=name)
    try:
        shown = admin.vx.exec(name=name, command="ip -o -4 addr show dev eth0")
    finally:
        admin.vx.stop(name=name)
    assert f"10.219.{prefix}.0/{prefix}" in shown
    if prefix >= 31:
        assert " brd " not in shown, shown
    else:
        assert f"brd 10.219.{prefix}.255" in shown


def test_a_template_limit_init_cannot_live_with_is_refused_at_create(admin, vcd_module):
    from templates.metadata import LimitSpec, TemplateMeta
    create_vserver(vcd_module)   # the busybox template exists
    tpl = vcd_module.templatedir
    (tpl / "tinymem.tar.gz").symlink_to(next(tpl.glob("busybox.tar*")))
    TemplateMeta(name="tinymem", limits=[LimitSpec("RSS", 100, 100)]).save(tpl / "tinymem.conf")
    name = unique("tiny")
    f = fault(admin.vx.create, name=name, template="tinymem")
    assert f.faultCode == 200 and "tinymem" in f.faultString and "6144" in f.faultString
    assert name not in admin.vxdb.list()
    assert not (vcd_module.vbasedir / name).exists()


@pytest.mark.parametrize("space,inodes,bad", [
    ("1", "1", "'space'"), ("63", "16", "'space'"), (str(2**50 + 1), "1000", "'space'"),
    ("65536", "15", "'inodes'"), ("65536", "65537", "'inodes'"),
    ("9223372036854775807", "100", "'space'"),
])
def test_disk_limits_mkfs_cannot_make_are_refused_naming_the_range(admin, vs, space, inodes,
                                                                   bad):
    f = fault(admin.vxdb.dx.limit.set, name=vs, space=space, inodes=inodes)
    assert f.faultCode == 200 and bad in f.faultString and ".." in f.faultString


def test_the_smallest_disk_limit_is_kept(admin, vs):
    admin.vxdb.dx.limit.set(name=vs, space="64", inodes="16")
    assert admin.vxdb.dx.limit.get(name=vs) == {"space": "64", "inodes": "16", "reserved": 5}
    admin.vxdb.dx.limit.remove(name=vs)
