"""Every method of the manual's Part V and of DESIGN.md's method table, as an outside client
sees it: exact names, params (with their documented aliases), defaults, capabilities, owner
checks, fault codes and texts, and the shapes of the answers.

Sources: the manual (seeds/001, chapters 9-13), DESIGN.md ("Method table", "Added in turn 2",
"Value vocabularies", "Defaults", "Faults") and issues 11, 12, 14, 15 (they win over DESIGN.md).
One daemon serves the module; only the last tests start a vserver.
"""
from __future__ import annotations

import http.client
import time
import xmlrpc.client
from typing import Any

import pytest

from api_helpers import create_vserver, fault, unique

CAPS = ["AUTH", "DLIM", "INIT", "MOUNT", "NET", "BCAP", "CCAP", "CFLAG", "RLIM", "SCHED",
        "UNAME", "CREATE", "EXEC", "INFO"]

STANDARD_TEXT = {100: "Unauthorized", 101: "Operation not permitted", 102: "User does not exist",
                 200: "Invalid argument", 201: "An object already exists",
                 202: "Virtual server does not exist",
                 203: "Virtual server group does not exist", 300: "Virtual server not running",
                 301: "Virtual server still/already running", 302: "Operation still in progress",
                 400: "Low-level database error", 401: "Invalid configuration file",
                 500: "System call or library call failed", 1000: "Command execution failed",
                 -32601: "method not found"}

# method -> the capabilities of which any one is enough (None: no capability), owner check,
# params that make the call pass validation for a vserver "{v}" (after the owner check)
MANUAL = {
    "helper.netup": ("HELPER",), "helper.restart": ("HELPER",),
    "helper.shutdown": ("HELPER",), "helper.startup": ("HELPER",),
    "vcd.login": None, "vcd.status": ("INFO",),
    "vcd.user.caps.add": ("AUTH",), "vcd.user.caps.get": ("AUTH",),
    "vcd.user.caps.remove": ("AUTH",), "vcd.user.get": ("AUTH",),
    "vcd.user.remove": ("AUTH",), "vcd.user.set": ("AUTH",),
    "vx.create": ("CREATE",), "vx.exec": ("EXEC",), "vx.kill": ("INIT",), "vx.load": ("INFO",),
    "vx.reboot": ("INIT",), "vx.remove": ("CREATE",), "vx.rename": ("CREATE",),
    "vx.restart": ("INIT",), "vx.start": ("INIT",), "vx.status": ("INIT", "INFO"),
    "vx.stop": ("INIT",),
    "vxdb.dx.limit.get": ("DLIM",), "vxdb.dx.limit.remove": ("DLIM",),
    "vxdb.dx.limit.set": ("DLIM",), "vxdb.init.get": ("INIT",), "vxdb.init.set": ("INIT",),
    "vxdb.list": None, "vxdb.mount.get": ("MOUNT",), "vxdb.mount.remove": ("MOUNT",),
    "vxdb.mount.set": ("MOUNT",), "vxdb.name.get": ("INFO", "HELPER"),
    "vxdb.nx.addr.get": ("NET",), "vxdb.nx.addr.remove": ("NET",), "vxdb.nx.addr.set": ("NET",),
    "vxdb.nx.broadcast.get": ("NET",), "vxdb.nx.broadcast.remove": ("NET",),
    "vxdb.nx.broadcast.set": ("NET",), "vxdb.owner.add": ("AUTH",), "vxdb.owner.get": ("AUTH",),
    "vxdb.owner.remove": ("AUTH",), "vxdb.vdir.get": ("INFO", "HELPER"),
    "vxdb.vx.bcaps.add": ("BCAP",), "vxdb.vx.bcaps.get": ("BCAP",),
    "vxdb.vx.bcaps.remove": ("BCAP",), "vxdb.vx.ccaps.add": ("CCAP",),
    "vxdb.vx.ccaps.get": ("CCAP",), "vxdb.vx.ccaps.remove": ("CCAP",),
    "vxdb.vx.flags.add": ("CFLAG",), "vxdb.vx.flags.get": ("CFLAG",),
    "vxdb.vx.flags.remove": ("CFLAG",), "vxdb.vx.limit.get": ("RLIM",),
    "vxdb.vx.limit.remove": ("RLIM",), "vxdb.vx.limit.set": ("RLIM",),
    "vxdb.vx.sched.get": ("SCHED",), "vxdb.vx.sched.remove": ("SCHED",),
    "vxdb.vx.sched.set": ("SCHED",), "vxdb.vx.uname.get": ("UNAME",),
    "vxdb.vx.uname.remove": ("UNAME",), "vxdb.vx.uname.set": ("UNAME",),
    "vxdb.xid.get": ("INFO", "HELPER"),
}
DESIGN_EXTRA = {
    "vcd.hostinfo": ("INFO",), "vx.templates": ("CREATE",), "vx.limstatus": ("INFO",),
    "vx.netstatus": ("INFO",), "vxdb.vx.cpuset.get": ("SCHED",),
    "vxdb.vx.cpuset.set": ("SCHED",), "vxdb.vx.cpuset.remove": ("SCHED",),
    "vg.add": ("AUTH",), "vg.list": ("AUTH",), "vg.remove": ("AUTH",),
    "vg.vx.start": ("INIT",), "vg.vx.stop": ("INIT",), "vg.vx.reboot": ("INIT",),
    "vg.vx.restart": ("INIT",),
    "vcd.whoami": None, "vxdb.vx.security.get": None, "vxdb.vx.security.set": None,
    "task.list": None, "task.get": None, "task.log": None, "task.stop": None,
    "vx.console": None,
}
SYSTEM = ["system.listMethods", "system.methodHelp", "system.methodSignature",
          "system.multicall"]

# methods whose first param is a vserver name and that check ownership (manual 9.2.4)
OWNER_CHECKED = sorted(
    m for m in MANUAL if m.split(".")[0] in ("vx", "vxdb")
    and m not in ("vxdb.list", "vxdb.name.get", "vxdb.owner.add", "vxdb.owner.get",
                  "vxdb.owner.remove")) + [
    "vx.limstatus", "vx.netstatus", "vx.console", "vxdb.vx.cpuset.get", "vxdb.vx.cpuset.set",
    "vxdb.vx.cpuset.remove", "vxdb.vx.security.get", "vxdb.vx.security.set"]

# not called on the shared vserver by the capability test: they would change or start it
DESTRUCTIVE = {"vx.remove", "vx.rename", "vx.start", "vx.restart", "vx.reboot"}

# params that pass validation, so a call reaches its owner check
VALID = {
    "vx.create": {"template": "busybox"}, "vx.exec": {"command": "true"},
    "vx.kill": {"pid": 0, "sig": 0}, "vx.rename": {"newname": "renamed-never"},
    "vxdb.dx.limit.set": {"space": "100000", "inodes": 1000},
    "vxdb.mount.set": {"dst": "/mnt/x", "type": "tmpfs"},
    "vxdb.nx.addr.set": {"addr": "10.77.0.1"}, "vxdb.nx.broadcast.set": {"broadcast": "10.77.0.255"},
    "vxdb.vx.bcaps.add": {"bcap": "CHOWN"}, "vxdb.vx.bcaps.remove": {"bcap": "CHOWN"},
    "vxdb.vx.ccaps.add": {"ccap": "RAW_ICMP"}, "vxdb.vx.ccaps.remove": {"ccap": "RAW_ICMP"},
    "vxdb.vx.flags.add": {"flag": "VIRT_MEM"}, "vxdb.vx.flags.remove": {"flag": "VIRT_MEM"},
    "vxdb.vx.limit.set": {"limit": "NOFILE", "max": "1024"},
    "vxdb.vx.sched.set": {"cpuid": 0, "interval": 100, "fillrate": 50},
    "vxdb.vx.uname.set": {"uname": "NODENAME", "value": "x"},
    "vxdb.vx.cpuset.set": {"cpus": "0"}, "vxdb.vx.security.set": {"seccomp": True},
}


def call(proxy: Any, method: str, **params: Any) -> Any:
    return proxy.call(method, params)


@pytest.fixture(scope="module")
def env(vcd_module):
    """The module's daemon with a vserver owned by "tenant" (every capability, not admin),
    one owned by nobody, a user without capabilities and one user per capability."""
    admin = vcd_module.proxy()
    mine = create_vserver(vcd_module, unique("mine"))
    other = create_vserver(vcd_module, unique("other"))
    users = {}
    for username, caps in [("tenant", CAPS), ("nocaps", [])] + [(f"only{c.lower()}", [c])
                                                               for c in CAPS]:
        admin.vcd.user.set(username=username, password=f"{username}-pw1", admin=False)
        for cap in caps:
            admin.vcd.user.caps.add(username=username, cap=cap)
        admin.vxdb.owner.add(name=mine, username=username)
        users[username] = vcd_module.proxy(username, f"{username}-pw1")
    return {"d": vcd_module, "admin": admin, "mine": mine, "other": other, **users,
            "helper": vcd_module.proxy("vshelper", vcd_module.vshelper_password)}


def code_of(fn, *args, **kw) -> int:
    return fault(fn, *args, **kw).faultCode


# -- names --------------------------------------------------------------------------------

def test_every_method_of_the_manual_and_of_design_exists_under_its_exact_name(env):
    listed = set(env["admin"].raw("system.listMethods"))
    missing = (set(MANUAL) | set(DESIGN_EXTRA) | set(SYSTEM)) - listed
    assert not missing, sorted(missing)


# -- capabilities -------------------------------------------------------------------------

@pytest.mark.parametrize("method", sorted(m for m, caps in {**MANUAL, **DESIGN_EXTRA}.items()
                                          if caps))
def test_a_caller_without_the_capability_gets_101_with_the_standard_text(env, method):
    f = fault(env["nocaps"].call, method, {"name": env["mine"], **VALID.get(method, {})})
    assert f.faultCode == 101 and f.faultString.startswith("Operation not permitted"), f


@pytest.mark.parametrize("method", sorted(m for m, caps in {**MANUAL, **DESIGN_EXTRA}.items()
                                          if caps and "HELPER" not in caps and "AUTH" not in caps
                                          and m.startswith(("vx.", "vxdb."))
                                          and m not in DESTRUCTIVE))
def test_each_of_the_documented_capabilities_alone_passes_the_capability_check(env, method):
    """An owner holding only the (one of the) documented capability gets past 101."""
    caps = {**MANUAL, **DESIGN_EXTRA}[method]
    for cap in caps:
        try:
            env[f"only{cap.lower()}"].call(method, {"name": env["mine"], **VALID.get(method, {})})
        except xmlrpc.client.Fault as f:
            if f.faultCode == 101 and "admin" in f.faultString:
                continue        # vxdb.vx.security.set: admins only (issue 11)
            assert f.faultCode != 101, (cap, f)


def test_vcd_login_and_whoami_and_vxdb_list_need_no_capability(env):
    nocaps = env["nocaps"]
    assert nocaps.vcd.login() is None
    assert nocaps.vcd.whoami() == {"username": "nocaps", "admin": False, "caps": []}
    assert nocaps.vxdb.list() == [env["mine"]]


def test_helper_methods_need_helper_and_admins_lack_it(env):
    assert code_of(env["admin"].helper.netup, xid=2) == 101
    assert "HELPER" not in env["admin"].vcd.whoami()["caps"]


def test_security_set_is_for_admins_only_even_with_bcap(env):
    f = fault(env["onlybcap"].vxdb.vx.security.set, name=env["mine"], seccomp=False)
    assert f.faultCode == 101 and f.faultString.startswith("Operation not permitted")
    assert env["tenant"].vxdb.vx.security.get(name=env["mine"]) == {"privileged": False,
                                                                     "seccomp": True}


# -- owner checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", OWNER_CHECKED)
def test_a_vserver_that_is_not_yours_does_not_exist(env, method):
    tenant = env["tenant"]
    for name in (env["other"], "no-such-vserver"):
        f = fault(tenant.call, method, {"name": name, **VALID.get(method, {})})
        assert f.faultCode == 202, (name, f)
        assert f.faultString.startswith("Virtual server does not exist"), f
        assert env["mine"] not in f.faultString


def test_name_xid_and_vdir_lookups_apply_the_owner_rule_helper_and_admin_excepted(env):
    admin, tenant, helper = env["admin"], env["tenant"], env["helper"]
    mine, other = env["mine"], env["other"]
    xid_mine, xid_other = admin.vxdb.xid.get(name=mine), admin.vxdb.xid.get(name=other)
    assert tenant.vxdb.xid.get(name=mine) == xid_mine
    assert tenant.vxdb.name.get(xid=xid_mine) == mine
    assert tenant.vxdb.vdir.get(name=mine) == admin.vxdb.vdir.get(name=mine)
    assert code_of(tenant.vxdb.xid.get, name=other) == 202
    assert code_of(tenant.vxdb.vdir.get, name=other) == 202
    f = fault(tenant.vxdb.name.get, xid=xid_other)
    assert f.faultCode == 202 and other not in f.faultString
    # the same answer as for an xid nobody has
    assert code_of(tenant.vxdb.name.get, xid=65000) == 202
    assert helper.vxdb.name.get(xid=xid_other) == other
    assert helper.vxdb.xid.get(name=other) == xid_other
    assert helper.vxdb.vdir.get(name=other).endswith(other)


def test_method_help_and_readme_table_say_the_lookups_are_owner_checked(env):
    from vcd.registry import method_table_markdown
    table = method_table_markdown()
    for method in ("vxdb.name.get", "vxdb.xid.get", "vxdb.vdir.get"):
        help_text = env["admin"].raw("system.methodHelp", method)
        assert "owner check: yes" in help_text, help_text
        row = next(line for line in table.splitlines() if line.startswith(f"| `{method}`"))
        assert row.rstrip(" |").split("|")[-1].strip().startswith("yes"), row
    for method in ("vcd.status", "vxdb.owner.add", "vxdb.list", "helper.netup"):
        assert "owner check: no" in env["admin"].raw("system.methodHelp", method)


def test_owner_methods_need_no_ownership_but_auth(env):
    # manual 13.17-13.19: AUTH, no owner check
    assert env["onlyauth"].vxdb.owner.get(name=env["other"]) == []
    assert code_of(env["onlyauth"].vxdb.owner.get, name="no-such-vserver") == 202


def test_vxdb_list_returns_only_what_passes_owner_checks(env):
    assert env["tenant"].vxdb.list() == [env["mine"]]
    assert env["tenant"].vxdb.list(username="") == [env["mine"]]
    assert {env["mine"], env["other"]} <= set(env["admin"].vxdb.list())


def test_vx_create_of_a_new_name_needs_the_admin_flag(env):
    f = fault(env["tenant"].vx.create, name=unique("new"), template="busybox")
    assert f.faultCode in (101, 202)


# -- shapes ---------------------------------------------------------------------------------

def test_vcd_status_has_exactly_the_four_counters(env):
    s = env["admin"].vcd.status()
    assert set(s) == {"uptime", "requests", "flogins", "nomethod"}
    assert all(isinstance(v, int) for v in s.values())


def test_vcd_status_takes_no_params_in_every_form(env):
    admin = env["admin"]
    for args in ((admin.auth,), (admin.auth, ""), (admin.auth, {}), (admin.auth, [])):
        assert set(admin.raw("vcd.status", *args)) == {"uptime", "requests", "flogins",
                                                       "nomethod"}


def test_vcd_user_get_whoami_and_hostinfo_shapes(env):
    admin = env["admin"]
    rows = admin.vcd.user.get(username="tenant")
    assert rows == [{"username": "tenant", "uid": rows[0]["uid"], "admin": False,
                     "caps": sorted(CAPS)}]
    everyone = admin.vcd.user.get()
    assert {"admin", "vshelper", "tenant"} <= {u["username"] for u in everyone}
    assert all(set(u) == {"username", "uid", "admin", "caps"} for u in everyone)
    assert admin.vcd.user.get(username="nobody-here") == []
    assert admin.vcd.user.caps.get(username="onlyinfo") == ["INFO"]
    me = admin.vcd.whoami()
    assert set(me) == {"username", "admin", "caps"} and me["admin"] is True
    info = admin.vcd.hostinfo()
    assert {"vbasedir", "cpus", "memnodes"} <= set(info)
    assert isinstance(info["cpus"], int) and info["vbasedir"].startswith("/")


def test_the_single_row_getters_of_a_new_vserver(env):
    admin, name = env["admin"], create_vserver(env["d"], unique("fresh"))
    try:
        assert admin.vxdb.init.get(name=name) == {
            "init": "/sbin/init", "halt": "/sbin/halt", "reboot": "/sbin/reboot", "timeout": 15,
            "halt_signal": "", "reboot_signal": ""}
        assert admin.vxdb.vx.bcaps.get(name=name) == sorted(
            "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID "
            "NET_BIND_SERVICE SYS_CHROOT SYS_PTRACE SYS_BOOT SYS_TTY_CONFIG LEASE".split())
        assert admin.vxdb.vx.ccaps.get(name=name) == ["RAW_ICMP", "SET_UTSNAME"]
        assert admin.vxdb.vx.flags.get(name=name) == sorted(
            "VIRT_MEM VIRT_UPTIME VIRT_CPU VIRT_LOAD HIDE_NETIF".split())
        # issue 11: default_nproc = 4096, memory and disk unlimited
        assert admin.vxdb.vx.limit.get(name=name) == [{"limit": "NPROC", "soft": "4096",
                                                       "max": "4096"}]
        assert admin.vxdb.vx.security.get(name=name) == {"privileged": False, "seccomp": True}
        assert admin.vxdb.nx.broadcast.get(name=name) == ""
        for getter in ("vxdb.mount.get", "vxdb.nx.addr.get", "vxdb.vx.sched.get",
                       "vxdb.vx.uname.get", "vxdb.owner.get"):
            assert admin.call(getter, {"name": name}) == [], getter
        assert set(admin.vxdb.dx.limit.get(name=name)) == {"space", "inodes", "reserved"}
        assert set(admin.vxdb.vx.cpuset.get(name=name)) == {"cpus", "mems", "virtualize"}
        st = admin.vx.status(name=name)
        assert {"running": False, "nproc": 0, "uptime": 0}.items() <= st.items()
        assert {"thr_total", "thr_running", "thr_unintr", "thr_onhold", "forks_total",
                "load1m", "load5m", "load15m", "privileged"} <= set(st)
        load = admin.vx.load(name=name)
        assert set(load) == {"1m", "5m", "15m"} and all(isinstance(v, str) for v in load.values())
        assert admin.vx.console(name=name) == {"data": "", "offset": 0}
        assert isinstance(admin.vxdb.xid.get(name=name), int)
    finally:
        admin.vx.remove(name=name)


def test_keyed_rows_with_their_documented_aliases_and_empty_keys(env):
    admin, name = env["admin"], env["mine"]
    admin.vxdb.vx.limit.set(name=name, limit="NOFILE", soft=100, max="200")
    admin.vxdb.vx.limit.set(name=name, type="CORE", max=0)
    assert admin.vxdb.vx.limit.get(name=name, type="NOFILE") == [
        {"limit": "NOFILE", "soft": "100", "max": "200"}]
    assert admin.vxdb.vx.limit.get(name=name, limit="") == admin.vxdb.vx.limit.get(name=name)
    assert admin.vxdb.vx.limit.get(name=name, limit="MEMLOCK") == []
    admin.vxdb.vx.limit.remove(name=name, type="CORE")
    admin.vxdb.vx.limit.remove(name=name, limit="MEMLOCK")       # missing row: success
    admin.vxdb.vx.uname.set(name=name, type="NODENAME", value="host1")
    assert admin.vxdb.vx.uname.get(name=name, uname="NODENAME") == [
        {"uname": "NODENAME", "value": "host1"}]
    admin.vxdb.vx.uname.remove(name=name, type="NODENAME")
    assert admin.vxdb.vx.uname.get(name=name, uname="") == []
    admin.vxdb.nx.addr.remove(name=name, addr="")             # empty key: all of them
    assert admin.vxdb.nx.addr.get(name=name) == []
    admin.vxdb.nx.addr.set(name=name, addr="10.77.1.1", netmask="")
    admin.vxdb.nx.addr.set(name=name, addr="10.77.1.2", netmask="255.255.0.0")
    assert admin.vxdb.nx.addr.get(name=name, addr="10.77.1.1") == [
        {"addr": "10.77.1.1", "netmask": "255.255.255.0"}]
    assert len(admin.vxdb.nx.addr.get(name=name, addr="")) == 2
    admin.vxdb.nx.addr.remove(name=name, addr="10.77.1.2")
    assert admin.vxdb.nx.addr.get(name=name) == [{"addr": "10.77.1.1",
                                                  "netmask": "255.255.255.0"}]
    admin.vxdb.mount.set(name=name, dst="/mnt/t", src="", type="tmpfs", opts="")
    assert admin.vxdb.mount.get(name=name, dst="/mnt/t") == [
        {"src": "none", "dst": "/mnt/t", "type": "tmpfs", "opts": "defaults"}]
    admin.vxdb.mount.remove(name=name, dst="")
    admin.vxdb.vx.sched.set(name=name, cpuid=0, interval=100, fillrate=50)
    assert admin.vxdb.vx.sched.get(name=name, cpuid=0) == [
        {"cpuid": 0, "interval": 100, "fillrate": 50, "interval2": 0, "fillrate2": 0,
         "tokensmin": 0, "tokensmax": 0}]
    admin.vxdb.vx.sched.remove(name=name, cpuid=0)
    admin.vxdb.dx.limit.set(name=name, space=5000000, inodes="100000", reserved=5)
    assert admin.vxdb.dx.limit.get(name=name) == {"space": "5000000", "inodes": "100000",
                                                  "reserved": 5}
    admin.vxdb.dx.limit.remove(name=name)
    admin.vxdb.nx.broadcast.set(name=name, broadcast="10.77.255.255")
    assert admin.vxdb.nx.broadcast.get(name=name) == "10.77.255.255"
    admin.vxdb.nx.broadcast.remove(name=name)


def test_64_bit_values_travel_as_decimal_strings_and_unlimited_reads_back_as_inf(env):
    admin, name = env["admin"], env["mine"]
    admin.vxdb.vx.limit.set(name=name, limit="AS", max="9000000000")
    assert admin.vxdb.vx.limit.get(name=name, limit="AS")[0]["max"] == "9000000000"
    for unlimited in ("inf", "-1", -1, str(2**64 - 1)):
        admin.vxdb.vx.limit.set(name=name, limit="AS", soft=unlimited, max=unlimited)
        assert admin.vxdb.vx.limit.get(name=name, limit="AS") == [
            {"limit": "AS", "soft": "inf", "max": "inf"}], unlimited
    admin.vxdb.vx.limit.remove(name=name, limit="AS")


def test_vx_create_takes_rebuild_or_its_alias_force(env):
    admin, name = env["admin"], create_vserver(env["d"], unique("reb"))
    try:
        f = fault(admin.vx.create, name=name, template="busybox")
        assert f.faultCode == 201 and f.faultString.startswith("An object already exists")
        xid = admin.vxdb.xid.get(name=name)
        admin.vx.create(name=name, template="busybox", force=True)
        admin.vx.create(name=name, template="busybox", rebuild=1)
        assert admin.vxdb.xid.get(name=name) == xid        # a rebuild keeps the xid
    finally:
        admin.vx.remove(name=name)


def test_vxdb_init_set_keeps_the_fields_it_is_not_given(env):
    admin, name = env["admin"], env["mine"]
    admin.vxdb.init.set(name=name, halt="/bin/true")
    admin.vxdb.init.set(name=name, timeout=20)
    got = admin.vxdb.init.get(name=name)
    assert got["halt"] == "/bin/true" and got["timeout"] == 20 and got["init"] == "/sbin/init"
    admin.vxdb.init.set(name=name, halt="", timeout=15)


# -- fault codes -----------------------------------------------------------------------------

def test_each_documented_fault_code_with_its_standard_text(env):
    d, admin, name = env["d"], env["admin"], env["mine"]
    before = admin.vcd.status()
    cases = [
        (100, lambda: d.proxy("admin", "wrong-password").vcd.login()),
        (100, lambda: d.proxy("no-such-user", "wrong-password").vcd.login()),
        (101, lambda: env["nocaps"].vcd.status()),
        (102, lambda: admin.vcd.user.caps.add(username="no-such-user", cap="INFO")),
        (102, lambda: admin.vxdb.owner.add(name=name, username="no-such-user")),
        (200, lambda: admin.vxdb.vx.limit.set(name=name, limit="BOGUS", max="1")),
        (200, lambda: admin.vxdb.vx.bcaps.add(name=name, bcap="BOGUS")),
        (200, lambda: admin.vx.create(name=unique("x"), template="")),
        (200, lambda: admin.vx.status()),
        (200, lambda: admin.vx.kill(name=name, pid="abc", sig=9)),
        (201, lambda: admin.vx.rename(name=name, newname=env["other"])),
        (202, lambda: admin.vx.start(name="no-such-vserver")),
        (203, lambda: admin.vg.vx.start(group="no-such-group")),
        (300, lambda: admin.vx.exec(name=name, command="true")),
        (300, lambda: admin.vx.stop(name=name)),
        (300, lambda: admin.vx.kill(name=name, pid=0, sig=0)),
        (-32601, lambda: admin.call("vx.nosuchmethod")),
    ]
    for code, fn in cases:
        f = fault(fn)
        assert f.faultCode == code, (code, f)
        assert f.faultString.startswith(STANDARD_TEXT[code]), (code, f.faultString)
    after = admin.vcd.status()
    assert after["flogins"] >= before["flogins"] + 2          # counted (DESIGN.md)
    assert after["nomethod"] >= before["nomethod"] + 1
    assert after["requests"] > before["requests"]
    # the password of an existing user may stay empty (manual 11.8): no fault
    admin.vcd.user.set(username="tenant", password="", admin=False)
    assert env["tenant"].vcd.login() is None


def test_a_group_fault_names_each_member_after_the_standard_text(env):
    admin, group = env["admin"], unique("grp")
    admin.vg.add(group=group, name=env["other"])
    try:
        f = fault(env["tenant"].vg.vx.stop, group=group)       # not theirs: 202 per member
        assert f.faultCode == 202
        assert f.faultString.startswith("Virtual server does not exist: 1 of 1 members of "
                                         f"group {group} failed: {env['other']}: "), f
    finally:
        admin.vg.remove(group=group)


def test_a_disk_limit_has_no_unlimited_value_and_says_so(env):
    """An image needs a size: no disk limit is vxdb.dx.limit.remove; "inf" is fault 200
    naming the range, and methodHelp does not promise "inf" for it."""
    admin, name = env["admin"], env["mine"]
    f = fault(admin.vxdb.dx.limit.set, name=name, space="inf", inodes=1000)
    assert f.faultCode == 200 and "'space'" in f.faultString and "0.." in f.faultString
    help_text = admin.raw("system.methodHelp", "vxdb.dx.limit.set")
    space_line = next(ln for ln in help_text.splitlines() if ln.strip().startswith("space:"))
    assert "inf" not in space_line.replace("vxdb.dx.limit.remove", "")
    assert "unlimited" in admin.raw("system.methodHelp", "vxdb.vx.limit.set")


@pytest.mark.parametrize("bad", ["web\n", ".hidden", "-dash", "a" * 65, "sp ace", "a/b", ""])
def test_vserver_and_user_names_outside_the_vocabulary_are_200(env, bad):
    admin = env["admin"]
    f = fault(admin.vx.create, name=bad, template="busybox")
    assert f.faultCode == 200 and f.faultString.startswith("Invalid argument"), f
    if bad:   # usernames: 1-64 of [A-Za-z0-9_.-], starting alphanumeric
        f = fault(admin.vcd.user.set, username=bad, password="long-enough-1")
        assert f.faultCode == 200, f
    assert code_of(admin.vx.rename, name=env["mine"], newname=bad) == 200


def test_what_other_clients_send_i8_and_ints_for_strings(env):
    """An <i8> 64-bit value (xmlrpc-c, Java) and a name sent as <int> (Perl) are taken."""
    d, admin, name = env["d"], env["admin"], env["mine"]
    auth = "".join(f"<member><name>{k}</name><value><string>{v}</string></value></member>"
                   for k, v in admin.auth.items())
    body = ("<?xml version='1.0'?><methodCall><methodName>vxdb.vx.limit.set</methodName>"
            f"<params><param><value><struct>{auth}</struct></value></param>"
            "<param><value><struct>"
            f"<member><name>name</name><value><string>{name}</string></value></member>"
            "<member><name>limit</name><value>AS</value></member>"
            "<member><name>max</name><value><i8>9000000000</i8></value></member>"
            "</struct></value></param></params></methodCall>").encode()
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    conn.request("POST", "/RPC2", body, {"Content-Type": "text/xml"})
    assert xmlrpc.client.loads(conn.getresponse().read())[0] == (None,)
    assert admin.vxdb.vx.limit.get(name=name, limit="AS")[0]["max"] == "9000000000"
    admin.vxdb.vx.limit.remove(name=name, limit="AS")
    f = fault(admin.vxdb.xid.get, name=12345)
    assert f.faultCode == 202 and "12345" in f.faultString
    # an all-digit password arrives as <int> from Perl
    admin.vcd.user.set(username="digits", password="123456789", admin=False)
    try:
        assert admin.raw("vcd.login", {"username": "digits", "password": 123456789}, {}) is None
        f = fault(admin.raw, "vcd.login", {"username": "digits", "password": 123456780}, {})
        assert f.faultCode == 100 and f.faultString == "Unauthorized"
    finally:
        admin.vcd.user.remove(username="digits")


def test_a_malformed_request_is_fault_minus_32700_with_http_200(env):
    d = env["d"]
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    body = b"<?xml version='1.0'?><methodCall><methodName>vcd.login</methodName><params"
    conn.request("POST", "/RPC2", body, {"Content-Type": "text/xml"})
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(response.read())
    assert info.value.faultCode == -32700


# -- a running vserver -------------------------------------------------------------------------

def test_running_vserver_faults_exec_status_and_shapes(env):
    admin, name = env["admin"], create_vserver(env["d"], unique("run"))
    try:
        admin.vxdb.init.set(name=name, halt="/bin/true")
        assert admin.vx.start(name=name) is None
        for fn, kw in ((admin.vx.start, {}), (admin.vx.remove, {}),
                       (admin.vx.rename, {"newname": unique("ren")}),
                       (admin.vx.create, {"template": "busybox", "rebuild": True})):
            f = fault(fn, name=name, **kw)
            assert f.faultCode == 301, f
            assert f.faultString.startswith("Virtual server still/already running"), f
        assert admin.vx.exec(name=name, command="echo hi") == "hi\n"
        f = fault(admin.vx.exec, name=name, command="sh -c 'echo out; exit 3'")
        assert f.faultCode == 1003
        assert f.faultString.startswith("Command execution failed"), f.faultString
        assert f.faultString.endswith("out\n")
        assert fault(admin.vx.exec, name=name, command="false").faultCode == 1001
        # turn 2: stdin, timeout and encoding of vx.exec
        assert admin.vx.exec(name=name, command="cat", stdin="fed\n", timeout=30) == "fed\n"
        raw = admin.vx.exec(name=name, command="printf 'a\\001b'", encoding="base64")
        assert isinstance(raw, xmlrpc.client.Binary) and raw.data == b"a\x01b"
        st = admin.vx.status(name=name)
        assert st["running"] is True and st["nproc"] >= 1
        rows = admin.vx.limstatus(name=name)
        assert rows and all({"type", "min", "cur", "max"} <= set(r) for r in rows)
        assert all(isinstance(r[k], str) for r in rows for k in ("min", "cur", "max"))
        load = admin.vx.load(name=name)
        assert set(load) == {"1m", "5m", "15m"}
        assert admin.vx.kill(name=name, pid=1, sig=0) is None
        task_id = admin.vx.exec(name=name, command="echo tasked", background=True)
        assert isinstance(task_id, str)
        for _ in range(300):
            task = admin.task.get(id=task_id)
            if not task["running"]:
                break
            time.sleep(0.1)
        assert set(task) == {"id", "method", "name", "user", "started", "ended", "running",
                             "fault_code", "fault_string", "result"}
        assert task["fault_code"] == 0 and task["method"] == "vx.exec" and task["name"] == name
        log = admin.task.log(id=task_id, offset=0)
        assert set(log) == {"data", "offset", "eof"} and "tasked" in log["data"]
        assert isinstance(admin.vx.stop(name=name), str)
        assert admin.vx.status(name=name)["running"] is False
        assert code_of(admin.vx.restart, name=name) == 300
    finally:
        try:
            admin.vx.stop(name=name)
        except xmlrpc.client.Fault:
            pass
        admin.vx.remove(name=name)
