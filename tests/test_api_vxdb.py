"""vxdb.*: every area's get/set/remove (add), defaults, validation and aliases."""
from __future__ import annotations

import pytest

from api_helpers import create_vserver, fault, fault_code


@pytest.fixture(scope="module")
def vs(vcd_module):
    return create_vserver(vcd_module)


@pytest.fixture
def admin(vcd_module):
    return vcd_module.proxy()


def test_new_vserver_has_design_defaults(admin, vs):
    assert admin.vxdb.vx.bcaps.get(name=vs) == sorted(
        "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID NET_BIND_SERVICE "
        "SYS_CHROOT SYS_PTRACE SYS_BOOT SYS_TTY_CONFIG LEASE".split())
    assert admin.vxdb.vx.ccaps.get(name=vs) == ["RAW_ICMP", "SET_UTSNAME"]
    assert admin.vxdb.vx.flags.get(name=vs) == sorted(
        ["VIRT_MEM", "VIRT_UPTIME", "VIRT_CPU", "VIRT_LOAD", "HIDE_NETIF"])
    assert admin.vxdb.init.get(name=vs) == {"init": "/sbin/init", "halt": "/sbin/halt",
                                            "reboot": "/sbin/reboot", "timeout": 15,
                                            "halt_signal": "", "reboot_signal": ""}
    # host-protecting default (default_nproc); memory and disk unlimited
    assert admin.vxdb.vx.limit.get(name=vs) == [{"limit": "NPROC", "soft": "4096",
                                                 "max": "4096"}]
    assert admin.vxdb.dx.limit.get(name=vs)["space"] == ""
    assert admin.vxdb.vx.security.get(name=vs) == {"privileged": False, "seccomp": True}


def test_nx_addr_round_trip_with_default_netmask(admin, vs):
    admin.vxdb.nx.addr.set(name=vs, addr="10.1.2.3", netmask="")
    admin.vxdb.nx.addr.set(name=vs, addr="10.1.2.4", netmask="255.255.0.0")
    assert admin.vxdb.nx.addr.get(name=vs, addr="") == [
        {"addr": "10.1.2.3", "netmask": "255.255.255.0"},
        {"addr": "10.1.2.4", "netmask": "255.255.0.0"}]
    assert admin.vxdb.nx.addr.get(name=vs, addr="10.1.2.4") == [
        {"addr": "10.1.2.4", "netmask": "255.255.0.0"}]
    assert admin.vxdb.nx.addr.get(name=vs, addr="10.9.9.9") == []
    admin.vxdb.nx.addr.set(name=vs, addr="10.1.2.4", netmask="255.255.255.128")
    assert admin.vxdb.nx.addr.get(name=vs, addr="10.1.2.4")[0]["netmask"] == "255.255.255.128"
    admin.vxdb.nx.addr.remove(name=vs, addr="10.1.2.3")
    admin.vxdb.nx.addr.remove(name=vs, addr="10.1.2.3")  # removing a missing row succeeds
    assert [a["addr"] for a in admin.vxdb.nx.addr.get(name=vs)] == ["10.1.2.4"]
    admin.vxdb.nx.addr.remove(name=vs, addr="")
    assert admin.vxdb.nx.addr.get(name=vs) == []


@pytest.mark.parametrize("addr,netmask,bad", [
    ("10.1.2.300", "", "addr"), ("10.1.2", "", "addr"), ("::1", "", "addr"),
    ("10.1.2.3", "255.0.255.0", "netmask"), ("10.1.2.3", "255.255.255.256", "netmask"),
])
def test_nx_addr_refuses_bad_addresses_and_noncontiguous_netmasks(admin, vs, addr, netmask, bad):
    f = fault(admin.vxdb.nx.addr.set, name=vs, addr=addr, netmask=netmask)
    assert f.faultCode == 200 and f"'{bad}'" in f.faultString


def test_nx_broadcast_round_trip(admin, vs):
    assert admin.vxdb.nx.broadcast.get(name=vs) == ""
    admin.vxdb.nx.broadcast.set(name=vs, broadcast="10.1.2.255")
    assert admin.vxdb.nx.broadcast.get(name=vs) == "10.1.2.255"
    assert fault_code(admin.vxdb.nx.broadcast.set, name=vs, broadcast="nope") == 200
    admin.vxdb.nx.broadcast.remove(name=vs)
    admin.vxdb.nx.broadcast.remove(name=vs)
    assert admin.vxdb.nx.broadcast.get(name=vs) == ""


def test_limit_round_trip_with_64_bit_values_as_strings(admin, vs):
    admin.vxdb.vx.limit.set(name=vs, limit="RSS", soft="1048576", max="9007199254740991")
    admin.vxdb.vx.limit.set(name=vs, type="NPROC", soft=50, max=100)   # the alias `type`
    admin.vxdb.vx.limit.set(name=vs, limit="AS", max="inf")
    assert admin.vxdb.vx.limit.get(name=vs, limit="") == [
        {"limit": "AS", "soft": "inf", "max": "inf"},
        {"limit": "NPROC", "soft": "50", "max": "100"},
        {"limit": "RSS", "soft": "1048576", "max": "9007199254740991"}]
    assert admin.vxdb.vx.limit.get(name=vs, type="NPROC") == [
        {"limit": "NPROC", "soft": "50", "max": "100"}]
    admin.vxdb.vx.limit.remove(name=vs, limit="AS")
    assert [x["limit"] for x in admin.vxdb.vx.limit.get(name=vs)] == ["NPROC", "RSS"]
    admin.vxdb.vx.limit.remove(name=vs, limit="")
    assert admin.vxdb.vx.limit.get(name=vs) == []


@pytest.mark.parametrize("params,bad", [
    ({"limit": "BOGUS", "max": 1}, "limit"), ({"limit": "rss", "max": 1}, "limit"),
    ({"limit": "RSS", "max": "-5"}, "max"), ({"limit": "RSS", "max": "18446744073709551616"}, "max"),
    ({"limit": "RSS", "max": "12abc"}, "max"), ({"limit": "RSS"}, "max"),
    ({"limit": "NPROC", "soft": 10, "max": 5}, "soft"),
])
def test_limit_validation_names_the_param(admin, vs, params, bad):
    f = fault(admin.vxdb.vx.limit.set, name=vs, **params)
    assert f.faultCode == 200 and f"'{bad}'" in f.faultString


def test_sched_round_trip(admin, vs):
    admin.vxdb.vx.sched.set(name=vs, cpuid=0, interval=100, fillrate=25, interval2=200,
                            fillrate2=50, tokensmin=10, tokensmax=500)
    admin.vxdb.vx.sched.set(name=vs, cpuid=1, interval=4, fillrate=1)
    rows = admin.vxdb.vx.sched.get(name=vs, cpuid="")
    assert rows == [
        {"cpuid": 0, "interval": 100, "fillrate": 25, "interval2": 200, "fillrate2": 50,
         "tokensmin": 10, "tokensmax": 500},
        {"cpuid": 1, "interval": 4, "fillrate": 1, "interval2": 0, "fillrate2": 0,
         "tokensmin": 0, "tokensmax": 0}]
    assert admin.vxdb.vx.sched.get(name=vs, cpuid=1)[0]["fillrate"] == 1
    admin.vxdb.vx.sched.remove(name=vs, cpuid=1)
    assert len(admin.vxdb.vx.sched.get(name=vs)) == 1
    assert fault_code(admin.vxdb.vx.sched.set, name=vs, cpuid=0, interval=0, fillrate=5) == 200
    assert fault_code(admin.vxdb.vx.sched.set, name=vs, cpuid=-1, interval=1, fillrate=1) == 200
    admin.vxdb.vx.sched.remove(name=vs, cpuid="")
    assert admin.vxdb.vx.sched.get(name=vs) == []


def test_uname_round_trip_with_alias_and_empty_value(admin, vs):
    admin.vxdb.vx.uname.set(name=vs, uname="NODENAME", value="web.example")
    admin.vxdb.vx.uname.set(name=vs, type="DOMAINNAME", value="")
    assert admin.vxdb.vx.uname.get(name=vs, uname="") == [
        {"uname": "DOMAINNAME", "value": ""}, {"uname": "NODENAME", "value": "web.example"}]
    assert fault_code(admin.vxdb.vx.uname.set, name=vs, uname="HOSTNAME", value="x") == 200
    assert fault_code(admin.vxdb.vx.uname.set, name=vs, uname="NODENAME", value="x" * 65) == 200
    admin.vxdb.vx.uname.remove(name=vs, uname="DOMAINNAME")
    assert admin.vxdb.vx.uname.get(name=vs, type="NODENAME") == [
        {"uname": "NODENAME", "value": "web.example"}]


def test_mount_round_trip_with_defaults(admin, vs):
    admin.vxdb.mount.set(name=vs, dst="/mnt/data", src="/srv/data", type="", opts="")
    admin.vxdb.mount.set(name=vs, dst="/tmp", src="tmpfs", type="tmpfs", opts="size=16m")
    assert admin.vxdb.mount.get(name=vs, dst="") == [
        {"dst": "/mnt/data", "src": "/srv/data", "type": "auto", "opts": "defaults"},
        {"dst": "/tmp", "src": "tmpfs", "type": "tmpfs", "opts": "size=16m"}]
    assert fault_code(admin.vxdb.mount.set, name=vs, dst="relative/path") == 200
    assert fault_code(admin.vxdb.mount.set, name=vs, dst="/../../etc") == 200
    admin.vxdb.mount.remove(name=vs, dst="/tmp")
    assert [m["dst"] for m in admin.vxdb.mount.get(name=vs)] == ["/mnt/data"]
    admin.vxdb.mount.remove(name=vs, dst="")
    assert admin.vxdb.mount.get(name=vs) == []


def test_dx_limit_round_trip(admin, vs):
    assert admin.vxdb.dx.limit.get(name=vs) == {"space": "", "inodes": "", "reserved": 0}
    admin.vxdb.dx.limit.set(name=vs, space="5000000000", inodes=100000, reserved=10)
    assert admin.vxdb.dx.limit.get(name=vs) == {"space": "5000000000", "inodes": "100000",
                                                "reserved": 10}
    assert fault_code(admin.vxdb.dx.limit.set, name=vs, space=1, inodes=1, reserved=101) == 200
    admin.vxdb.dx.limit.remove(name=vs)
    assert admin.vxdb.dx.limit.get(name=vs)["space"] == ""


def test_init_set_keeps_empty_fields_and_validates_paths(admin, vs):
    admin.vxdb.init.set(name=vs, init="/bin/myinit", halt="", reboot="/bin/reboot2", timeout=30)
    assert admin.vxdb.init.get(name=vs) == {"init": "/bin/myinit", "halt": "/sbin/halt",
                                            "reboot": "/bin/reboot2", "timeout": 30,
                                            "halt_signal": "", "reboot_signal": ""}
    assert fault_code(admin.vxdb.init.set, name=vs, init="sbin/init") == 200
    admin.vxdb.init.set(name=vs)   # names nothing: changes nothing
    assert admin.vxdb.init.get(name=vs)["init"] == "/bin/myinit"
    admin.vxdb.init.set(name=vs, init="/sbin/init")
    assert admin.vxdb.init.get(name=vs)["init"] == "/sbin/init"


def test_cpuset_round_trip_refuses_cpus_the_host_lacks(admin, vs):
    admin.vxdb.vx.cpuset.set(name=vs, cpus="0", mems="0", virtualize=True)
    assert admin.vxdb.vx.cpuset.get(name=vs) == {"cpus": "0", "mems": "0", "virtualize": True}
    f = fault(admin.vxdb.vx.cpuset.set, name=vs, cpus="0-4095")
    assert f.faultCode == 200 and "'cpus'" in f.faultString
    assert fault_code(admin.vxdb.vx.cpuset.set, name=vs, cpus="a-b") == 200
    admin.vxdb.vx.cpuset.remove(name=vs)
    assert admin.vxdb.vx.cpuset.get(name=vs)["cpus"] == ""


@pytest.mark.parametrize("area,key,value,bad", [
    ("bcaps", "bcap", "NET_ADMIN", "CAP_NET_ADMIN"),
    ("ccaps", "ccap", "SYSLOG", "syslog"),
    ("flags", "flag", "SCHED_HARD", "NO_SUCH_FLAG"),
])
def test_flag_lists_add_get_remove(admin, vs, area, key, value, bad):
    methods = getattr(admin.vxdb.vx, area)
    methods.add(name=vs, **{key: value})
    methods.add(name=vs, **{key: value})
    assert value in methods.get(name=vs)
    f = fault(methods.add, name=vs, **{key: bad})
    assert f.faultCode == 200 and f"'{key}'" in f.faultString
    methods.remove(name=vs, **{key: value})
    assert value not in methods.get(name=vs)


def test_flag_list_remove_with_empty_value_removes_all(admin, vcd_module):
    vs2 = create_vserver(vcd_module)
    admin.vxdb.vx.bcaps.remove(name=vs2, bcap="")
    assert admin.vxdb.vx.bcaps.get(name=vs2) == []


def test_lookups_by_name_and_xid(admin, vs, vcd_module):
    xid = admin.vxdb.xid.get(name=vs)
    assert 2 <= xid <= 65534
    assert admin.vxdb.name.get(xid=xid) == vs
    assert admin.vxdb.vdir.get(name=vs) == str(vcd_module.vbasedir / vs)
    assert fault_code(admin.vxdb.xid.get, name="ghost") == 202
    assert fault_code(admin.vxdb.name.get, xid=65000) == 202
    assert fault_code(admin.vxdb.name.get, xid=1) == 200
    assert fault_code(admin.vxdb.vdir.get, name="ghost") == 202


def test_every_owner_checked_method_on_a_missing_vserver_is_202(admin):
    for method, params in [("vxdb.nx.addr.get", {}), ("vxdb.vx.limit.set", {"limit": "RSS", "max": 1}),
                           ("vxdb.init.get", {}), ("vxdb.dx.limit.remove", {}),
                           ("vxdb.vx.bcaps.add", {"bcap": "KILL"}), ("vxdb.mount.get", {})]:
        assert fault_code(admin.call, method, name="ghost", **params) == 202, method


def test_owner_methods_need_existing_vserver_and_user(admin, vs):
    assert fault_code(admin.vxdb.owner.add, name="ghost", username="admin") == 202
    assert fault_code(admin.vxdb.owner.add, name=vs, username="ghost") == 102
    admin.vxdb.owner.add(name=vs, username="admin")
    assert admin.vxdb.owner.get(name=vs) == ["admin"]
    admin.vxdb.owner.remove(name=vs, username="")
    assert admin.vxdb.owner.get(name=vs) == []


@pytest.mark.parametrize("value", [
    "x'); DROP TABLE vservers;--", "a\" OR \"1\"=\"1", "%s %d \\' ; --", "é ü 中文 😀"])
def test_sql_metacharacters_are_stored_verbatim(admin, vs, value):
    admin.vxdb.mount.set(name=vs, dst="/mnt/meta", src=value, type=value, opts=value)
    assert admin.vxdb.mount.get(name=vs, dst="/mnt/meta") == [
        {"dst": "/mnt/meta", "src": value, "type": value, "opts": value}]
    admin.vxdb.vx.uname.set(name=vs, uname="VERSION", value=value[:64])
    assert admin.vxdb.vx.uname.get(name=vs, uname="VERSION")[0]["value"] == value[:64]
    assert vs in admin.vxdb.list()


@pytest.mark.parametrize("value", [1, True, [1], {"a": 1}, 1.5])
def test_wrong_types_are_refused_naming_the_param(admin, vs, value):
    f = fault(admin.vxdb.nx.addr.set, name=vs, addr=value)
    assert f.faultCode == 200 and "'addr'" in f.faultString


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "-x", "x" * 65, "a b", "a;b"])
def test_traversal_and_bad_vserver_names_are_refused(admin, name):
    f = fault(admin.vxdb.nx.addr.get, name=name)
    assert f.faultCode == 200 and "'name'" in f.faultString


def test_groups_add_list_remove(admin, vcd_module):
    a, b = create_vserver(vcd_module), create_vserver(vcd_module)
    admin.vg.add(group="web", name=a)
    admin.vg.add(group="web", name=b)
    admin.vg.add(group="empty")
    assert {"web", "empty"} <= set(admin.vg.list(group=""))
    assert admin.vg.list(group="web") == sorted([a, b])
    assert admin.vg.list(group="empty") == []
    admin.vg.remove(group="web", name=a)
    assert admin.vg.list(group="web") == [b]
    assert fault_code(admin.vg.add, group="web", name="ghost") == 202
    admin.vg.remove(group="web")
    assert fault_code(admin.vg.list, group="web") == 203
    assert fault_code(admin.vg.remove, group="web") == 203
