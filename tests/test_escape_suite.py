"""The escape suite (issue 11): a tenant holding root inside a default vserver, with
the bcaps a non-admin owner may add (SYS_ADMIN, MKNOD, SYS_MODULE, SYS_RAWIO ...), and
the same tenant at the API, try to reach the host or another tenant. Every test asserts
the host boundary held. Entry-path attacks live in test_escape_entry.py, mount and
removal attacks in test_tenant_safety.py."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

import pytest

from api_helpers import create_vserver, fault, unique
from vcdtest import PROBE_SRC, VcdDaemon, daemon_fixture, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")

BIN = Path(sys.executable).parent
# what a tenant with the BCAP capability may add to its own vserver
WIDE_BCAPS = ("SYS_ADMIN", "MKNOD", "SYS_MODULE", "SYS_RAWIO", "NET_ADMIN", "DAC_READ_SEARCH",
              "SYS_PTRACE", "SYS_RESOURCE", "SYS_TIME", "SYS_BOOT")
TENANT_CAPS = ("INIT", "EXEC", "MOUNT", "NET", "BCAP", "RLIM", "INFO", "UNAME", "CCAP", "CFLAG")


rt = daemon_fixture("escape-suite", workers=2, exec_timeout=30.0)


def make_tenant(daemon: VcdDaemon, *caps: str, owns: tuple[str, ...] = ()):
    admin = daemon.proxy()
    username = unique("attacker")
    admin.vcd.user.set(username=username, password=f"password-{username}", admin=False)
    for cap in caps:
        admin.vcd.user.caps.add(username=username, cap=cap)
    for name in owns:
        admin.vxdb.owner.add(name=name, username=username)
    return daemon.proxy(username, f"password-{username}")


def _probe_into(rt, name: str, probe: Path) -> None:
    """The static probe as /bin/probe of vserver name."""
    shutil.copyfile(probe, rt.vbasedir / name / "bin" / "probe")
    os.chmod(rt.vbasedir / name / "bin" / "probe", 0o755)


def _udp_listener(family: int):
    """A host UDP socket on every address of family, and its port."""
    import socket
    listener = socket.socket(family, socket.SOCK_DGRAM)
    listener.bind(("0.0.0.0" if family == socket.AF_INET else "::", 0))
    listener.settimeout(0.5)
    return listener, listener.getsockname()[1]


@pytest.fixture(scope="module")
def wide(rt, probe):
    """A running vserver whose tenant gave it every bcap it may: (name, tenant proxy)."""
    name = create_vserver(rt)
    user = make_tenant(rt, *TENANT_CAPS, owns=(name,))
    for bcap in WIDE_BCAPS:
        user.vxdb.vx.bcaps.add(name=name, bcap=bcap)
    _probe_into(rt, name, probe)
    user.vx.start(name=name)
    yield name, user
    admin = rt.proxy()
    if admin.vx.status(name=name)["running"]:
        admin.vx.stop(name=name)


def sh(user, name: str, script: str) -> str:
    """Run a shell script as root inside; its output whatever its exit status."""
    try:
        return user.vx.exec(name=name, command=f"sh -c '{script}'")
    except xmlrpc.client.Fault as f:
        assert f.faultCode > 1000, f.faultString    # exit status, not a daemon fault
        return f.faultString


# -- root inside with the widest bcaps a tenant may give ---------------------------------

def test_tenant_given_bcaps_are_capabilities_of_the_vservers_user_namespace_only(wide):
    name, user = wide
    uid_map = user.vx.exec(name=name, command="cat /proc/self/uid_map").split()
    assert uid_map[:2] != ["0", "0"] and uid_map[2] == "65536", uid_map
    for call in ("mknod_block", "init_module", "finit_module", "open_by_handle_at",
                 "name_to_handle_at", "int80", "keyctl", "add_key", "bpf", "kexec_load",
                 "perf_event_open", "userfaultfd"):
        out = user.vx.exec(name=name, command=f"/bin/probe {call}")
        assert " ok" not in out, out
    out = sh(user, name, "mknod /tmp/mem c 1 1 2>&1; mknod /tmp/sda b 8 0 2>&1; "
                         "ls /tmp/mem /tmp/sda 2>&1; true")
    assert "Operation not permitted" in out and "No such file" in out, out
    # the probe's own keyring requests are ENOSYS; the host's keys are not shown
    assert user.vx.exec(name=name, command="cat /proc/keys") == ""


def test_no_sysctl_outside_proc_sys_net_takes_a_write(wide):
    name, user = wide
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    # write every sysctl's own value back (harmless if the boundary broke) and list
    # what took it: through vcd's /proc, and through a fresh proc of a new pid namespace
    script = ("for f in $(find $P/sys -type f ! -path \"$P/sys/net/*\"); do "
              "v=$(head -c 4096 $f 2>/dev/null) || continue; echo T; "
              "(printf \"%s\" \"$v\" > $f) 2>/dev/null && echo W $f; done; "
              "(echo \"|/tmp/evil %p\" > $P/sys/kernel/core_pattern) 2>/dev/null "
              "&& echo W core_pattern; true")
    written = user.vx.exec(name=name, command=f"sh -c 'P=/proc; {script}'").split("\n")
    assert written.count("T") > 100 and [w for w in written if w not in ("T", "")] == [], written
    fresh = user.vx.exec(name=name, command=(
        "unshare -p -f -m sh -c 'mkdir -p /tmp/fp; mount -t proc proc /tmp/fp || exit 0; "
        f"P=/tmp/fp; {script}'"))
    # only sysctls that belong to the vserver's own namespaces may take writes there
    namespaced = ("/kernel/hostname", "/kernel/domainname", "/kernel/shm", "/kernel/msg",
                  "/kernel/sem", "/kernel/ns_last_pid", "/fs/mqueue/", "/user/",
                  "/kernel/auto_msgmni", "/kernel/pid_max")   # pid_max: per pid ns since 6.14
    assert fresh.splitlines().count("T") > 100, fresh
    host_wide = [line for line in fresh.splitlines()
                 if line != "T" and not any(part in line for part in namespaced)]
    assert host_wide == [], host_wide
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before


def test_lifting_vcds_masks_shows_no_more_than_the_kernel_allows_the_user_namespace(wide):
    """The masks over /proc and /sys are mounts the vserver's own user namespace owns:
    a guest with SYS_ADMIN may take them off (recorded as open in the escape report);
    behind them the kernel's user-namespace checks still refuse every host write."""
    name, user = wide
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    out = sh(user, name, "umount /proc/sys/net; umount /proc/sys; umount /proc/sysrq-trigger; "
                         "(echo \"|/tmp/evil\" > /proc/sys/kernel/core_pattern) 2>/dev/null "
                         "&& echo W core; (echo h > /proc/sysrq-trigger) 2>/dev/null && echo W "
                         "sysrq; umount /proc/timer_list; "
                         "[ -n \"$(head -c 16 /proc/kcore 2>/dev/null)\" ] && echo R kcore; "
                         "[ -n \"$(head -c 16 /proc/timer_list 2>/dev/null)\" ] && echo R timer; "
                         "true")
    assert "W " not in out and "R " not in out, out
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before
    # /sys made writable again: the host's attributes still refuse (their own value
    # written back, so nothing changes if the boundary broke)
    out = sh(user, name, "umount /sys/kernel/security /sys/kernel/debug /sys/kernel/tracing "
                         "/sys/firmware; mount -o remount,rw,bind /sys; "
                         "for f in $(find /sys/kernel /sys/module -type f -perm -200 "
                         "2>/dev/null | head -400); do v=$(head -c 4096 $f 2>/dev/null) || "
                         "continue; echo T; (printf \"%s\" \"$v\" > $f) 2>/dev/null && "
                         "echo W $f; done; true")
    assert "W " not in out and out.split().count("T") > 20, out


def test_pseudo_filesystems_that_show_the_host_cannot_be_mounted(wide):
    name, user = wide
    out = sh(user, name, "mkdir -p /tmp/s /tmp/d; mount -t sysfs sysfs /tmp/s && echo M sysfs; "
                         "mount -t devtmpfs devtmpfs /tmp/d && echo M devtmpfs; "
                         "mount -t debugfs debugfs /tmp/d && echo M debugfs; "
                         "mount -t bpf bpf /tmp/d && echo M bpf; true")
    assert "M " not in out, out


def _host_cgroup(rt, user, name: str, controller: str) -> Path:
    xid = user.vxdb.xid.get(name=name)
    found = [p for p in Path("/sys/fs/cgroup", controller).rglob(str(xid))
             if p.parent.name.startswith(os.environ.get("_", "")[:0] + "vcd-test")]
    return found[0] if found else Path("/nonexistent")


def test_the_guests_own_cgroup_mounts_change_none_of_its_limits(rt, wide):
    name, user = wide
    out = sh(user, name,
             "mkdir -p /tmp/c1 /tmp/c2 /tmp/c3 /tmp/c4; "
             "mount -t cgroup -o pids none /tmp/c1; mount -t cgroup -o memory none /tmp/c2; "
             "mount -t cgroup -o none,name=systemd none /tmp/c3; mount -t cgroup2 none /tmp/c4; "
             "for f in /tmp/c1/pids.max /tmp/c2/memory.limit_in_bytes /tmp/c3/release_agent "
             "/tmp/c4/cgroup.freeze /tmp/c4/cgroup.kill /tmp/c4/cgroup.max.descendants; do "
             "(echo 1 > $f) 2>/dev/null && echo W $f; done; "
             "mkdir /tmp/c1/esc 2>/dev/null && echo W mkdir; "
             "cat /tmp/c1/pids.max")
    lines = out.split()
    assert "W" not in lines, out
    assert lines[-1] == "4096", out        # the default NPROC, as vcd set it
    assert user.vx.status(name=name)["running"] is True


def _settled_nproc(user, name: str, wait: float = 10.0) -> int:
    """nproc once two reads 0.2 s apart agree (the boot scripts have ended)."""
    deadline = time.monotonic() + wait
    last = user.vx.status(name=name)["nproc"]
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = user.vx.status(name=name)["nproc"]
        if now == last:
            return now
        last = now
    return last


def test_a_process_hidden_in_a_frozen_child_cgroup_is_counted_and_stopped(rt, probe):
    name = create_vserver(rt)
    user = make_tenant(rt, *TENANT_CAPS, owns=(name,))
    user.vxdb.vx.bcaps.add(name=name, bcap="SYS_ADMIN")
    user.vx.start(name=name)
    try:
        before = _settled_nproc(user, name)     # not counting the boot's passing processes
        hide = rt.vbasedir / name / "tmp" / "hide.sh"
        hide.write_text("#!/bin/sh\necho $$ > /tmp/cg/hide/cgroup.procs\nexec sleep 1000\n")
        hide.chmod(0o755)
        user.vx.exec(name=name, command=(
            "sh -c 'mkdir -p /tmp/cg; mount -t cgroup2 none /tmp/cg; mkdir /tmp/cg/hide; "
            "/tmp/hide.sh >/dev/null 2>&1 </dev/null & sleep 1; "
            "echo 1 > /tmp/cg/hide/cgroup.freeze; cat /tmp/cg/hide/cgroup.procs'"))
        assert user.vx.status(name=name)["nproc"] >= before + 1
        user.vx.stop(name=name)
        assert user.vx.status(name=name)["running"] is False
    finally:
        admin = rt.proxy()
        if admin.vx.status(name=name)["running"]:
            admin.vx.stop(name=name)


def test_the_host_run_directory_and_vcds_socket_are_out_of_reach(rt, wide):
    name, user = wide
    out = sh(user, name, "ls /run; find / -xdev -name \"vcd*.sock\" 2>/dev/null; "
                         "ls /proc/1/root/run 2>&1; true")
    assert "vcd" not in out, out
    assert str(rt.root) not in user.vx.exec(name=name, command="ls /")


def test_a_fork_bomb_stops_at_the_process_limit(rt, probe):
    name = create_vserver(rt)
    user = make_tenant(rt, *TENANT_CAPS, owns=(name,))
    user.vxdb.vx.limit.set(name=name, limit="NPROC", max=40)
    user.vx.start(name=name)
    try:
        out = sh(user, name, "i=0; while [ $i -lt 100 ]; do sleep 30 >/dev/null 2>&1 & "
                             "i=$((i+1)); done 2>/dev/null; echo looped $i")
        nproc = user.vx.status(name=name)["nproc"]
        assert 20 <= nproc <= 40, (nproc, out)     # it forked up to the limit, not beyond
        assert user.vx.status(name=name)["nproc"] <= 40
        assert rt.proxy().vcd.status() is not None   # the daemon still answers
    finally:
        rt.proxy().vx.stop(name=name)


# -- the console -------------------------------------------------------------------------

def test_guest_control_sequences_never_reach_the_terminal_of_vcc_console(rt, wide):
    name, user = wide
    # ESC [2J, a title OSC, and C1 CSI / OSC as UTF-8 characters (legal in XML)
    sh(user, name, "printf \"mark\\033[2J\\033]0;pwned\\007\\302\\2332J\\302\\235x\\n\" "
                   "> /dev/console")
    wait_until(lambda: "mark" in user.vx.console(name=name)["data"], 20, "the console mark")
    env = dict(os.environ, VCD_PASSWORD=rt.admin_password, HOME=str(rt.root / "home"))
    r = subprocess.run([str(BIN / "vcc"), "-p", str(rt.port), "console", name, "--lines", "5"],
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert b"mark" in r.stdout
    text = r.stdout.decode("utf-8")
    controls = [c for c in text if (ord(c) < 32 and c not in "\n\r\t") or 0x7f <= ord(c) <= 0x9f]
    assert controls == [], [hex(ord(c)) for c in controls]


# -- the tenant at the API ---------------------------------------------------------------

def _host_addresses() -> tuple[list[str], list[str]]:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        own = [a.get_attr("IFA_LOCAL") for a in ipr.get_addr(family=2)]
        gateways = [r.get_attr("RTA_GATEWAY") for r in ipr.get_routes(family=2, table=254)]
    return ([a for a in own if a and not a.startswith("127.")],
            [g for g in gateways if g])


@pytest.mark.parametrize("addr", ["127.0.0.1", "127.0.0.2", "0.0.0.0", "255.255.255.255",
                                  "224.0.0.1", "239.1.2.3", "240.0.0.1"])
def test_no_one_gives_a_vserver_an_address_that_is_not_unicast(rt, addr):
    name = create_vserver(rt)
    user = make_tenant(rt, "NET", owns=(name,))
    for who in (user, rt.proxy()):
        f = fault(who.vxdb.nx.addr.set, name=name, addr=addr)
        assert f.faultCode == 200 and addr in f.faultString and "unicast" in f.faultString
    assert rt.proxy().vxdb.nx.addr.get(name=name) == []


def test_a_tenant_cannot_claim_an_address_the_host_uses(rt):
    """Its /32 route would pull the host's own traffic for that address (to its
    gateway, its DNS server, itself) into the tenant's vserver."""
    own, gateways = _host_addresses()
    if not own and not gateways:
        pytest.skip("the host has no IPv4 address besides loopback")
    name = create_vserver(rt)
    user = make_tenant(rt, "NET", owns=(name,))
    for addr in own + gateways:
        f = fault(user.vxdb.nx.addr.set, name=name, addr=addr)
        assert f.faultCode == 101 and addr in f.faultString and "admin" in f.faultString
    assert user.vxdb.nx.addr.get(name=name) == []
    # an admin decides otherwise deliberately
    rt.proxy().vxdb.nx.addr.set(name=name, addr=(own + gateways)[0])
    rt.proxy().vxdb.nx.addr.remove(name=name, addr=(own + gateways)[0])


def test_a_tenant_reaches_no_other_tenants_vserver_or_the_admin_flags(rt):
    mine, other = create_vserver(rt), create_vserver(rt)
    user = make_tenant(rt, *TENANT_CAPS, "CREATE", owns=(mine,))
    admin = rt.proxy()
    for call, kw in [(user.vx.status, {}), (user.vx.console, {}), (user.vx.start, {}),
                     (user.vx.exec, {"command": "id"}), (user.vxdb.vx.bcaps.add,
                                                         {"bcap": "SYS_ADMIN"}),
                     (user.vxdb.mount.set, {"dst": "/mnt/x", "src": "/srv"}),
                     (user.vx.remove, {}), (user.vxdb.vx.security.get, {}),
                     (user.vx.create, {"template": "busybox", "rebuild": True})]:
        assert fault(call, name=other, **kw).faultCode == 202, call
    # a rename onto another's name, a new vserver, a vdir of another: refused
    assert fault(user.vx.rename, name=mine, newname=other).faultCode in (201, 202)
    f = fault(user.vx.create, name=unique("n"), template="busybox",
              vdir=str(rt.vbasedir / other))
    assert f.faultCode in (101, 201, 202), f.faultString
    assert fault(user.vx.create, name=mine, template="../busybox", rebuild=True).faultCode == 200
    assert fault(user.vxdb.vx.security.set, name=mine, privileged=True).faultCode == 101
    # group actions and users are AUTH's, which this tenant lacks
    admin.vg.add(group="others", name=other)
    for call, kw in [(user.vg.add, {"group": "others", "name": mine}),
                     (user.vcd.user.set, {"username": "evil", "password": "password-x",
                                          "admin": True}),
                     (user.vxdb.owner.add, {"name": other, "username": "admin"})]:
        assert fault(call, **kw).faultCode in (100, 101), call
    f = fault(user.vg.vx.start, group="others")
    assert f.faultCode in (101, 202), f.faultString
    assert admin.vx.status(name=other)["running"] is False
    assert admin.vxdb.owner.get(name=other) == []


# -- host paths the daemon touches: guest symlinks and the shared template ---------------

def _plant_symlinks(user, name: str, victim: Path) -> None:
    """What root inside leaves for the host's tree walkers: absolute and relative links
    to a host directory, and a directory replaced by a link."""
    up = "../" * 12
    sh(user, name, f"ln -s {victim} /root/abs; ln -s {up}{str(victim).lstrip('/')} /root/rel; "
                   f"rm -rf /home && ln -s {victim} /home; ln -s {victim}/precious /root/file")


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "host-victim"
    victim.mkdir()
    (victim / "precious").write_text("host data")
    return victim


def test_rebuild_and_remove_never_follow_the_guests_symlinks(rt, tmp_path):
    name = create_vserver(rt)
    user = make_tenant(rt, *TENANT_CAPS, "CREATE", owns=(name,))
    victim = _victim(tmp_path)
    user.vx.start(name=name)
    _plant_symlinks(user, name, victim)
    user.vx.stop(name=name)
    user.vx.create(name=name, template="busybox", rebuild=True)
    assert (victim / "precious").read_text() == "host data"
    user.vx.start(name=name)
    _plant_symlinks(user, name, victim)
    user.vx.stop(name=name)
    user.vx.remove(name=name)
    assert (victim / "precious").read_text() == "host data"
    assert sorted(p.name for p in victim.iterdir()) == ["precious"]


def test_a_shared_vservers_root_never_writes_its_template(rt, tmp_path):
    """Root inside a vserver that shares a template directory (overlay) with others,
    with SYS_ADMIN, tries to get under its overlay to the template itself."""
    from templates.store import TemplateStore
    if not (rt.templatedir / "bbshared").exists():
        TemplateStore(rt.templatedir).unpack("busybox", "bbshared")
    name = unique("shared")
    rt.proxy().vx.create(name=name, template="bbshared")
    user = make_tenant(rt, *TENANT_CAPS, "CREATE", owns=(name,))
    user.vxdb.vx.bcaps.add(name=name, bcap="SYS_ADMIN")
    victim = _victim(tmp_path)
    before = sorted(p.name for p in (rt.templatedir / "bbshared").rglob("*"))
    user.vx.start(name=name)
    try:
        out = sh(user, name, "cd /; umount -l / 2>/dev/null && echo U root; "
                             "mkdir -p /tmp/r; mount --bind / /tmp/r; umount -l /tmp/r; "
                             "echo x > /evil-shared; rm -f /bin/true; echo y >> /etc/passwd; "
                             "true")
        assert "U root" not in out, out
        _plant_symlinks(user, name, victim)
    finally:
        user.vx.stop(name=name)
    after = sorted(p.name for p in (rt.templatedir / "bbshared").rglob("*"))
    assert after == before
    assert "y" not in (rt.templatedir / "bbshared" / "etc" / "passwd").read_text().split()
    user.vx.create(name=name, template="bbshared", rebuild=True)
    rt.proxy().vx.remove(name=name)
    assert (victim / "precious").read_text() == "host data"
    assert sorted(p.name for p in (rt.templatedir / "bbshared").rglob("*")) == before


# -- the network: another tenant's address as a source -----------------------------------

def test_a_vserver_cannot_send_with_another_vservers_address(rt, probe):
    """Root inside with NET_ADMIN (a bcap its tenant may add) puts the neighbour's
    address on its own eth0 and sends from it to the host: the host must drop it
    (strict reverse-path filter on the vserver's veth), or every service that trusts a
    source address, and every packet the host forwards, would take it for the other."""
    own, _ = _host_addresses()
    if not own:
        pytest.skip("the host has no IPv4 address besides loopback")
    import socket
    mine, other = create_vserver(rt), create_vserver(rt)
    admin = rt.proxy()
    admin.vxdb.nx.addr.set(name=mine, addr="10.233.7.2")
    admin.vxdb.nx.addr.set(name=other, addr="10.233.7.3")
    user = make_tenant(rt, *TENANT_CAPS, owns=(mine,))
    user.vxdb.vx.bcaps.add(name=mine, bcap="NET_ADMIN")
    _probe_into(rt, mine, probe)
    listener, port = _udp_listener(socket.AF_INET)
    admin.vx.start(name=mine)
    admin.vx.start(name=other)
    try:
        sh(user, mine, "ip addr add 10.233.7.3/32 dev eth0; true")
        seen: set[str] = set()
        for _ in range(5):
            for src in ("10.233.7.2", "10.233.7.3"):
                sh(user, mine, f"/bin/probe udp {src} {own[0]} {port}")
            try:
                while True:
                    data, (addr, _) = listener.recvfrom(100)
                    seen.add(addr)
            except socket.timeout:
                pass
            if "10.233.7.2" in seen:
                break
        assert "10.233.7.2" in seen, seen         # its own address reaches the host
        assert "10.233.7.3" not in seen, seen     # the neighbour's never does
    finally:
        listener.close()
        admin.vx.stop(name=mine)
        admin.vx.stop(name=other)


def _host_v6_addresses() -> list[str]:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        own = [(a.get_attr("IFA_ADDRESS"), a["scope"]) for a in ipr.get_addr(family=10)]
    return [a for a, scope in own if a and scope == 0 and a != "::1"]


@pytest.mark.parametrize("net_admin", [False, True], ids=["link-local", "net-admin-route"])
def test_a_vserver_without_an_ipv6_address_sends_no_ipv6_to_the_host(rt, probe, net_admin):
    """vx addresses are IPv4, and only IPv4 has the reverse-path filter (IPv6 has no
    rp_filter sysctl). Root inside sent the host datagrams from any IPv6 source, one of
    the host's own network's among them: with no capability beyond the default to the
    host end's link-local address (IPV6_FREEBIND binds any source), with NET_ADMIN (a
    bcap its tenant may add) through a default route to every host address."""
    own = _host_v6_addresses()
    if not own:
        pytest.skip("the host has no global IPv6 address")
    import socket
    mine = create_vserver(rt)
    admin = rt.proxy()
    admin.vxdb.nx.addr.set(name=mine, addr="10.233.8.3" if net_admin else "10.233.8.2")
    user = make_tenant(rt, *TENANT_CAPS, owns=(mine,))
    if net_admin:
        user.vxdb.vx.bcaps.add(name=mine, bcap="NET_ADMIN")
    _probe_into(rt, mine, probe)
    listener, port = _udp_listener(socket.AF_INET6)
    admin.vx.start(name=mine)
    try:
        peer = int(user.vx.exec(name=mine, command="cat /sys/class/net/eth0/iflink"))
        host_end = next(d for d in Path("/sys/class/net").iterdir()
                        if int((d / "ifindex").read_text()) == peer)
        sources = ("fd55:233:8::2", own[0].rsplit(":", 1)[0] + ":9999")
        seen: set[str] = set()
        for _ in range(8):     # until duplicate address detection is done on both ends
            # the host end's link-local address (root inside learns it from a multicast
            # echo); none (IPv6 off on the host end) leaves the guest nothing to send to
            lladdr = next((":".join(f[0][i:i + 4] for i in range(0, 32, 4))
                           for f in (line.split() for line in
                                     Path("/proc/net/if_inet6").read_text().splitlines())
                           if f[5] == host_end.name and f[0].startswith("fe80")), "fe80::1")
            if net_admin:
                sh(user, mine, f"ip -6 route add default via {lladdr} dev eth0; true")
            dst = own[0] if net_admin else f"{lladdr}%eth0"
            for src in sources:
                sh(user, mine, f"/bin/probe udp6 {src} {dst} {port}")
            try:
                while True:
                    _, addr = listener.recvfrom(100)
                    seen.add(addr[0])
            except socket.timeout:
                pass
        assert seen == set(), seen
    finally:
        listener.close()
        admin.vx.stop(name=mine)


def test_a_tenant_cannot_put_its_vserver_into_the_hosts_network(rt):
    """Without HIDE_NETIF and without addresses a vserver would share the host's network
    namespace: root inside would reach the host's loopback-only services and abstract
    unix sockets and listen on the host's ports. Only an admin may decide that."""
    import socket
    name = create_vserver(rt)
    user = make_tenant(rt, *TENANT_CAPS, owns=(name,))
    f = fault(user.vxdb.vx.flags.remove, name=name, flag="HIDE_NETIF")
    assert f.faultCode == 101 and "HIDE_NETIF" in f.faultString, f.faultString
    assert "HIDE_NETIF" in user.vxdb.vx.flags.get(name=name)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    user.vx.start(name=name)
    try:
        sh(user, name, f"echo hi | nc -w 2 127.0.0.1 {port}; true")
        with pytest.raises(socket.timeout):
            listener.accept()[0].close()
    finally:
        listener.close()
        user.vx.stop(name=name)


def test_a_tenant_cannot_lift_the_hosts_process_limit(rt):
    """default_nproc keeps a fork bomb off the host's pids; a tenant with RLIM may lower
    its vserver's NPROC and raise it again up to that, never above or away."""
    name = create_vserver(rt)
    user = make_tenant(rt, "RLIM", owns=(name,))
    admin = rt.proxy()
    for params in ({"max": 4097}, {"max": "inf"}, {"max": 5000, "soft": 100}):
        f = fault(user.vxdb.vx.limit.set, name=name, limit="NPROC", **params)
        assert f.faultCode == 101 and "default_nproc" in f.faultString, f.faultString
    for limit in ("NPROC", ""):
        f = fault(user.vxdb.vx.limit.remove, name=name, limit=limit)
        assert f.faultCode == 101 and "NPROC" in f.faultString, f.faultString
    assert user.vxdb.vx.limit.get(name=name, limit="NPROC")[0]["max"] == "4096"
    user.vxdb.vx.limit.set(name=name, limit="NPROC", max=100)
    user.vxdb.vx.limit.set(name=name, limit="NPROC", max=4096)
    user.vxdb.vx.limit.set(name=name, limit="RSS", max=100000)
    user.vxdb.vx.limit.remove(name=name, limit="RSS")          # other limits are its own
    # what an admin raised stays the tenant's to use
    admin.vxdb.vx.limit.set(name=name, limit="NPROC", max=9000)
    user.vxdb.vx.limit.set(name=name, limit="NPROC", max=9000, soft=8000)
    assert fault(user.vxdb.vx.limit.set, name=name, limit="NPROC",
                 max=9001).faultCode == 101


# -- newer surfaces: tasks, the console log, the kept namespace handles ----------------

def test_a_tenant_cannot_follow_or_stop_another_tenants_task(rt, wide):
    """Task ids are guessable in part (the first half is the start time): the check is
    the owner check of the method that started it, and ids that look like paths name
    no task."""
    name, user = wide
    other = make_tenant(rt, *TENANT_CAPS, owns=(create_vserver(rt),))
    task_id = user.vx.exec(name=name, command="sleep 60", background=True)
    try:
        for call in (other.task.get, other.task.log, other.task.stop):
            # the owner check's answer: the other tenant's vserver "does not exist"
            assert fault(call, id=task_id).faultCode in (101, 202), call
        assert task_id not in [t["id"] for t in other.task.list()]
        try:
            seen = other.task.list(name=name)
        except xmlrpc.client.Fault as f:
            assert f.faultCode in (101, 202), f.faultString
            seen = []
        assert task_id not in [t["id"] for t in seen]
        for bad in ("../../etc/passwd", f"../tasks/{task_id}", f"{task_id}.json",
                    f"{task_id}/..", "/" + task_id):
            assert fault(other.task.get, id=bad).faultCode == 200, bad
            assert fault(user.task.get, id=bad).faultCode == 200, bad
        assert user.task.get(id=task_id)["running"] is True
    finally:
        user.task.stop(id=task_id)


def test_a_console_flood_keeps_the_hosts_log_bounded_and_the_daemon_serving(rt, wide):
    from libvserver.native import console
    name, user = wide
    sh(user, name, "head -c 3000000 /dev/zero | tr \"\\\\0\" x > /dev/console; "
                   "echo floodmark > /dev/console")
    wait_until(lambda: "floodmark" in user.vx.console(name=name)["data"], 60,
               "the mark after the flood")
    logs = list((rt.rundir / "libvserver").rglob("*.console"))
    assert logs and all(p.stat().st_size <= console.LOG_CAP for p in logs), \
        [(p, p.stat().st_size) for p in logs]
    assert all(p.stat().st_mode & 0o077 == 0 for p in logs)
    assert user.vx.status(name=name)["running"]


def test_the_kept_namespace_handles_are_out_of_the_guests_reach(rt, wide):
    """vcd enters a vserver through namespace handles it kept at start; nothing in
    the guest may see, reach or swap them (they would make the next vx.exec join
    namespaces the guest chose)."""
    name, user = wide
    ns_dir = rt.rundir / "libvserver" / "ns"
    before = sorted(str(p.relative_to(ns_dir)) for p in ns_dir.rglob("*"))
    assert any(p.endswith("/user") for p in before), before     # the handles are kept
    out = sh(user, name, "grep -c libvserver /proc/self/mountinfo; "
                         f"ls {ns_dir} 2>&1; ls /proc/1/root{ns_dir} 2>&1; true")
    assert "No such file" in out and str(ns_dir) not in out.replace(
        f"ls: {ns_dir}", "").replace(f"/proc/1/root{ns_dir}", ""), out
    assert out.splitlines()[0] == "0", out
    after = sorted(str(p.relative_to(ns_dir)) for p in ns_dir.rglob("*"))
    assert before == after
    # an entered command still lands in the vserver's own user namespace
    uid_map = user.vx.exec(name=name, command="cat /proc/self/uid_map").split()
    assert uid_map[:2] != ["0", "0"], uid_map


def _supervisor_pid(rt) -> int:
    state = str(rt.rundir / "libvserver")
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"libvserver.native.supervisor" in argv and state.encode() in argv:
            return int(p.name)
    raise AssertionError(f"no supervisor for {state}")


def test_an_init_flooding_the_notify_socket_with_descriptors_leaves_the_supervisor_intact(
        rt, tmp_path):
    """The sd_notify socket is the one host socket a guest init may write to: datagrams
    carrying descriptors (SCM_RIGHTS), oversized and many, must leave the supervisor
    with none of them, serving, and the start must still end on READY=1."""
    from templates import busybox
    from templates.metadata import TemplateMeta
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the in-vserver init")
    binary = tmp_path / "notify_flood"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(binary),
                    str(PROBE_SRC.parent / "notify_flood.c")], check=True)
    admin = rt.proxy()
    tpl = unique("bbnotify")
    busybox.build(tpl, rt.templatedir)
    conf = rt.templatedir / f"{tpl}.conf"
    meta = TemplateMeta.load(conf)
    meta.api_mounts, meta.ready = ["run"], "notify"
    meta.save(conf)
    name = unique()
    admin.vx.create(name=name, template=tpl)
    user = make_tenant(rt, *TENANT_CAPS, owns=(name,))
    try:
        root = rt.vbasedir / name
        shutil.copyfile(binary, root / "bin" / "notify_flood")
        os.chmod(root / "bin" / "notify_flood", 0o755)
        (root / "sbin" / "init").unlink()
        (root / "sbin" / "init").write_text(
            "#!/bin/sh\nexec /bin/notify_flood /bin/busybox init\n")
        os.chmod(root / "sbin" / "init", 0o755)
        # a plain vserver's start brings the supervisor up (it starts with the first)
        plain = create_vserver(rt)
        admin.vx.start(name=plain)
        admin.vx.stop(name=plain)
        admin.vx.remove(name=plain)
        sup = _supervisor_pid(rt)
        fds_before = len(os.listdir(f"/proc/{sup}/fd"))
        user.vx.start(name=name)
        assert user.vx.status(name=name)["running"]
        shown = user.vx.console(name=name)["data"]
        sent = int(shown.split("notify_flood sent ")[1].split()[0])
        assert sent > 100, shown
        assert _supervisor_pid(rt) == sup
        # none of the guest's descriptors stayed with the supervisor
        held = [os.readlink(f"/proc/{sup}/fd/{fd}") for fd in os.listdir(f"/proc/{sup}/fd")]
        assert len(held) <= fds_before + 4, held
        assert str(root) not in "\n".join(held) and held.count("/") == 0, held
        # READY=1 closed the socket: the guest has nothing more to send to
        assert list((rt.rundir / "libvserver" / "sd-notify").iterdir()) == []
    finally:
        if admin.vx.status(name=name)["running"]:
            admin.vx.stop(name=name)
        admin.vx.remove(name=name)


def _guest_pids(rt, xid: int) -> set[int]:
    """Host pids in the vserver's cgroup (or below it), read from /proc."""
    mark = f"{rt.cgroup_parent}/{xid}".strip("/")
    found = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cg = (p / "cgroup").read_text()
        except OSError:
            continue
        if any(line.split(":", 2)[2].strip("/") == mark
               or line.split(":", 2)[2].strip("/").startswith(mark + "/")
               for line in cg.splitlines() if line.count(":") >= 2):
            found.add(int(p.name))
    return found


def test_stop_ends_a_respawning_guest_that_ignores_signals_and_holds_the_console(rt, probe):
    """The stop path waits until the cgroup is empty: processes that keep forking,
    ignore SIGTERM/SIGHUP, hide in a child cgroup and hold /dev/console open
    are all gone when vx.stop answers, and the next start gets a fresh console."""
    name = create_vserver(rt)
    user = make_tenant(rt, *TENANT_CAPS, owns=(name,))
    user.vxdb.vx.bcaps.add(name=name, bcap="SYS_ADMIN")
    user.vx.start(name=name)
    admin = rt.proxy()
    try:
        xid = user.vxdb.xid.get(name=name)
        spin = rt.vbasedir / name / "tmp" / "spin.sh"
        spin.write_text("#!/bin/sh\ntrap \"\" TERM HUP INT\nexec 3>/dev/console\n"
                        "while :; do sleep 100 & sleep 0.2; echo held >&3; done\n")
        spin.chmod(0o755)
        sh(user, name, "mkdir -p /tmp/cg; mount -t cgroup2 none /tmp/cg; mkdir /tmp/cg/hide; "
                       "echo $$ > /tmp/cg/hide/cgroup.procs; "
                       "setsid /tmp/spin.sh >/dev/null 2>&1 </dev/null & sleep 1; true")
        assert len(_guest_pids(rt, xid)) >= 3
        user.vx.stop(name=name)
        assert user.vx.status(name=name)["running"] is False
        assert _guest_pids(rt, xid) == set()
        user.vx.start(name=name)
        assert "held" not in user.vx.console(name=name)["data"]
    finally:
        if admin.vx.status(name=name)["running"]:
            admin.vx.stop(name=name)


def test_init_runs_its_first_command_inside_its_cgroup_and_limits(rt):
    """Init is cloned straight into the vserver's cgroup (clone3 CLONE_INTO_CGROUP): its
    very first commands already see their own cgroup as / and fork only up to NPROC."""
    name = create_vserver(rt)
    user = make_tenant(rt, *TENANT_CAPS, owns=(name,))
    user.vxdb.vx.limit.set(name=name, limit="NPROC", max=30)
    admin = rt.proxy()
    root = rt.vbasedir / name
    (root / "sbin" / "init").unlink()
    (root / "sbin" / "init").write_text(
        "#!/bin/sh\ncat /proc/self/cgroup > /tmp/first.cg\n"
        # a shell whose fork fails exits: the last count written is the last fork
        "(i=0; while [ $i -lt 60 ]; do sleep 5 & i=$((i+1)); echo $i > /tmp/first.n; "
        "done) >/dev/null 2>&1\necho done > /tmp/first.forks\nexec /bin/busybox init\n")
    os.chmod(root / "sbin" / "init", 0o755)
    try:
        user.vx.start(name=name)
        end = time.monotonic() + 30
        while not (root / "tmp" / "first.forks").exists():
            assert time.monotonic() < end, (list((root / "tmp").iterdir()),
                                            user.vx.console(name=name)["data"][-2000:],
                                            user.vx.status(name=name))
            time.sleep(0.2)
        first = (root / "tmp" / "first.cg").read_text().split()
        assert first and {line.split(":", 2)[2] for line in first} == {"/"}, first
        assert int((root / "tmp" / "first.n").read_text()) < 30
        # (the guest's init never reaps the sleeps it did not fork itself: the vserver
        # stays at its limit, its own affair; vx.stop still ends it)
    finally:
        if admin.vx.status(name=name)["running"]:
            admin.vx.stop(name=name)


def test_a_task_stays_with_its_vserver_not_with_a_later_vserver_of_the_same_name(rt):
    """A tenant who gets a vserver of a removed one's name (and maybe its xid) must not
    read the output of the commands the earlier owner ran there."""
    admin = rt.proxy()
    name = create_vserver(rt)
    first = make_tenant(rt, *TENANT_CAPS, owns=(name,))
    first.vx.start(name=name)
    task_id = first.vx.exec(name=name, command="echo secret-of-the-first", background=True)
    end = time.monotonic() + 60
    while first.task.get(id=task_id)["running"]:
        assert time.monotonic() < end
        time.sleep(0.2)
    admin.vx.stop(name=name)
    admin.vx.remove(name=name)
    admin.vx.create(name=name, template="busybox")
    try:
        second = make_tenant(rt, *TENANT_CAPS, owns=(name,))
        for call in (second.task.get, second.task.log):
            assert fault(call, id=task_id).faultCode in (101, 202), call
        assert task_id not in [t["id"] for t in second.task.list(name=name)]
        assert admin.task.get(id=task_id)["name"] == name      # admins still see it
    finally:
        admin.vx.remove(name=name)


def test_a_renamed_vservers_tasks_follow_it_and_not_its_old_name(rt):
    admin = rt.proxy()
    name, newname = create_vserver(rt), unique("renamed")
    first = make_tenant(rt, *TENANT_CAPS, "CREATE", owns=(name,))
    first.vx.start(name=name)
    task_id = first.vx.exec(name=name, command="echo before-rename", background=True)
    end = time.monotonic() + 60
    while first.task.get(id=task_id)["running"]:
        assert time.monotonic() < end
        time.sleep(0.2)
    first.vx.stop(name=name)
    first.vx.rename(name=name, newname=newname)
    try:
        assert first.task.get(id=task_id)["name"] == newname
        assert "before-rename" in first.task.log(id=task_id)["data"]
        admin.vx.create(name=name, template="busybox", vdir=str(rt.vbasedir / unique("d")))
        second = make_tenant(rt, *TENANT_CAPS, owns=(name,))
        assert fault(second.task.log, id=task_id).faultCode in (101, 202)
        admin.vx.remove(name=name)
    finally:
        admin.vx.remove(name=newname)


def test_a_guest_whose_reboot_fails_forges_no_line_of_vcds_log(rt, tmp_path):
    """A reboot from inside whose start fails comes back as vshelper's failed callback,
    with the guest's last console lines in its output, and vcd logs that output: a
    guest printing log-like lines on its console forged entries of vcd's log."""
    from templates import busybox
    from templates.metadata import TemplateMeta
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the in-vserver init")
    binary = tmp_path / "notify_flood"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(binary),
                    str(PROBE_SRC.parent / "notify_flood.c")], check=True)
    admin = rt.proxy()
    tpl = unique("bbforge")
    busybox.build(tpl, rt.templatedir)
    conf = rt.templatedir / f"{tpl}.conf"
    meta = TemplateMeta.load(conf)
    meta.api_mounts, meta.ready = ["run"], "notify"
    meta.save(conf)
    name = unique()
    admin.vx.create(name=name, template=tpl)
    user = make_tenant(rt, *TENANT_CAPS, owns=(name,))
    forged = f"2026-11-30 10:00:00,000 vcd.auth[1] WARNING {name} forged this line"
    try:
        root = rt.vbasedir / name
        shutil.copyfile(binary, root / "bin" / "notify_flood")
        os.chmod(root / "bin" / "notify_flood", 0o755)
        (root / "sbin" / "init").unlink()
        # the first boot comes up; the one after its reboot prints and ends unready
        (root / "sbin" / "init").write_text(
            "#!/bin/sh\nif [ -e /booted ]; then printf '\\n%s\\n' "
            f"'{forged}'; exit 1; fi\n"
            ": > /booted; exec /bin/notify_flood /bin/busybox init\n")
        os.chmod(root / "sbin" / "init", 0o755)
        user.vx.start(name=name)
        try:
            user.vx.exec(name=name, command="/bin/busybox reboot -f")
        except (xmlrpc.client.Fault, ConnectionError, OSError):
            pass    # the exec may end with its vserver
        wait_until(lambda: forged in rt.log(), timeout=60)
        lines = [line for line in rt.log().splitlines() if forged in line]
        assert lines and all(not line.startswith(forged) for line in lines), lines
    finally:
        if admin.vx.status(name=name)["running"]:
            admin.vx.stop(name=name)
        admin.vx.remove(name=name)
