"""A Debian vserver boots its own systemd (issue 16), unprivileged: API filesystems before
init (/run, /run/lock, its own cgroup2 view), readiness by NOTIFY_SOCKET, a clean halt by
SIGRTMIN+3, reboot from outside and inside, sandboxing units, the console.

The template is built once per module with debootstrap (downloaded packages are kept in
DEB_CACHE, so a repeated run takes well under a minute); without a reachable Debian
mirror the module is skipped.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

import pytest

from api_helpers import boot_of, fault, unique
from vcdtest import VcdDaemon

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root"),
              pytest.mark.timeout(900)]

DEB_CACHE = Path(os.environ.get("VCD_TEST_DEB_CACHE", "/var/cache/vcd-test-debs"))
TEMPLATE = "debian-systemd"
# host values a guest's boot must leave alone (systemd sets many sysctls at boot)
SYSCTLS = ("kernel/pid_max", "kernel/printk", "kernel/core_pattern", "kernel/sysrq",
           "net/ipv4/ip_forward", "fs/protected_regular", "fs/protected_symlinks",
           "vm/max_map_count", "kernel/kptr_restrict", "net/core/default_qdisc")


def build_template(templatedir: Path) -> None:
    from templates import debian
    prebuilt = os.environ.get("VCD_TEST_SYSTEMD_TEMPLATE_DIR")
    if prebuilt:  # a tree built by templates.debian.build earlier (development runs)
        for suffix in (".tar.zst", ".conf"):
            shutil.copy(Path(prebuilt, TEMPLATE + suffix), templatedir)
        return
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed")
    mirror = debian.host_mirror()
    try:
        debian.check_mirror(mirror, "bookworm", timeout=10)
    except debian.BuildError as e:
        pytest.skip(f"no Debian mirror reachable: {e}")
    DEB_CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    t0 = time.monotonic()
    debian.build(TEMPLATE, templatedir, suite="bookworm", mirror=mirror, fmt="zst",
                 cache_dir=DEB_CACHE)
    print(f"systemd template built in {time.monotonic() - t0:.1f} s")


GUEST_UNITS = ("/init.scope", "/systemd-journald.service", "/systemd-logind.service",
               "/console-getty.service", "/dbus.service")


def sysctls() -> dict[str, str]:
    out = {}
    for name in SYSCTLS:
        try:
            out[name] = Path("/proc/sys", name).read_text()
        except OSError:
            pass
    return out


def cgroup_dirs(parent: str) -> set[str]:
    """Every cgroup directory of every hierarchy outside ``parent`` (the test daemon's)."""
    from libvserver.native.cgroups import discover
    found = set()
    for h in discover():
        for dirpath, dirnames, _ in os.walk(h.path):
            if Path(dirpath) == h.path / parent:
                dirnames[:] = []
                continue
            found.add(dirpath)
    return found


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    daemon = VcdDaemon(tmp_path_factory.mktemp("sdguest"), workers=4, exec_timeout=120.0)
    try:
        build_template(daemon.templatedir)
        daemon.start()
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture(scope="module")
def host_before(sd):
    return sysctls()


@pytest.fixture
def admin(sd):
    return sd.proxy()


@pytest.fixture
def guest(sd, admin, host_before):
    """A created (stopped) systemd vserver, stopped and removed afterwards."""
    name = unique("sd")
    admin.vx.create(name=name, template=TEMPLATE)
    yield name
    try:
        if admin.vx.status(name=name)["running"]:
            admin.vx.stop(name=name)
    finally:
        admin.vx.remove(name=name)


def system_state(admin, name: str) -> str:
    """`systemctl is-system-running --wait`: running, or degraded with the failed units
    printed; anything else fails the test with the console's last lines."""
    try:
        out = admin.vx.exec(name=name, command="systemctl is-system-running --wait",
                            timeout=90)
    except xmlrpc.client.Fault as f:
        out = f.faultString
    state = out.strip().splitlines()[-1] if out.strip() else ""
    if state == "degraded":
        failed = admin.vx.exec(name=name, command="systemctl --failed --no-pager")
        print(f"{name} is degraded; failed units:\n{failed}")
    assert state in ("running", "degraded"), \
        f"system state {out!r}; console:\n{admin.vx.console(name=name, lines=40)}"
    return state


def ended_reasons(sd) -> list[str]:
    """Why each context of the test daemon ended, from its supervisor's log."""
    log = (sd.rundir / "libvserver" / "supervisor.log").read_text()
    return [ln.split(" ended: ", 1)[1] for ln in log.splitlines() if " ended: " in ln]


def console_text(admin, name: str) -> str:
    got = admin.vx.console(name=name, lines=500)
    data = got["data"] if isinstance(got, dict) else got
    return data.data.decode(errors="replace") if isinstance(data, xmlrpc.client.Binary) \
        else str(data)


def test_systemd_boots_to_running_unprivileged_and_halts_cleanly(sd, admin, guest):
    t0 = time.monotonic()
    admin.vx.start(name=guest)
    started = time.monotonic() - t0
    state = system_state(admin, guest)
    print(f"vx.start (until READY=1) {started:.2f} s; state {state} after "
          f"{time.monotonic() - t0:.2f} s")
    # unprivileged: the guest's root is not the host's
    uid_map = admin.vx.exec(name=guest, command="cat /proc/self/uid_map").split()
    assert uid_map[:2] == ["0", str(int(uid_map[1]))] and uid_map[1] != "0"
    # its own cgroup2 view rooted at its group, with systemd's groups below it
    cgroups = admin.vx.exec(name=guest, command="cat /proc/1/cgroup").split()
    assert "0::/init.scope" in cgroups
    # (a hybrid host shows its v1 hierarchies too, but rooted at the vserver: no host path)
    assert all(ln.endswith(":/") for ln in cgroups if not ln.startswith("0::")), cgroups
    fstype = admin.vx.exec(name=guest, command="stat -f -c %T /sys/fs/cgroup")
    assert fstype.strip() == "cgroup2fs"
    assert "system.slice" in admin.vx.exec(name=guest, command="ls /sys/fs/cgroup")
    mounts = admin.vx.exec(name=guest, command="findmnt -rn -o TARGET,FSTYPE")
    assert "/run tmpfs" in mounts and "/run/lock tmpfs" in mounts
    assert not any(ln.split()[1] == "cgroup" for ln in mounts.splitlines() if ln.split()[1:])
    # a sandboxing unit makes its own mount namespace inside the user namespace
    out = admin.vx.exec(name=guest, command=(
        "systemd-run --wait --pipe -q -p PrivateTmp=yes -p ProtectSystem=strict "
        "sh -c 'touch /tmp/private && echo sandboxed'"), timeout=60)
    assert "sandboxed" in out
    assert fault(admin.vx.exec, name=guest, command="test -e /tmp/private").faultCode \
        == 1001
    assert "Reached target" in console_text(admin, guest)
    t0 = time.monotonic()
    assert admin.vx.stop(name=guest) == ""
    stopped = time.monotonic() - t0
    print(f"vx.stop {stopped:.2f} s")
    assert not admin.vx.status(name=guest)["running"]
    assert ended_reasons(sd)[-1] == "halt", ended_reasons(sd)[-3:]


def wait_new_init(admin, name: str, old: str, what: str) -> str:
    """The start time of the vserver's next init, once it runs (the old one ended)."""
    # generous: a loaded machine; a boot and halt take well under a second here
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            now = boot_of(admin, name)
            if now != old:
                return now
        except xmlrpc.client.Fault:
            pass  # between the end and vshelper's restart
        time.sleep(1)
    raise AssertionError(f"the vserver did not come back after {what}")


def test_restart_and_reboots_come_back(sd, admin, guest):
    admin.vx.start(name=guest)
    system_state(admin, guest)
    first = boot_of(admin, guest)
    admin.vx.restart(name=guest)
    assert admin.vx.status(name=guest)["running"]
    system_state(admin, guest)
    second = boot_of(admin, guest)
    assert second != first
    assert ended_reasons(sd)[-1] == "halt"
    # vx.reboot sends SIGINT: systemd reboots itself, reboot(2) in its PID namespace ends
    # it with SIGHUP, and vcd starts it again (vshelper's restart)
    assert admin.vx.reboot(name=guest) == ""
    third = wait_new_init(admin, guest, second, "vx.reboot")
    system_state(admin, guest)
    assert ended_reasons(sd)[-1] == "reboot"
    # and a reboot from inside
    t0 = time.monotonic()
    try:
        admin.vx.exec(name=guest, command="systemctl reboot", timeout=30)
    except xmlrpc.client.Fault:
        pass  # the exec may be cut off by the reboot itself
    wait_new_init(admin, guest, third, "systemctl reboot inside")
    print(f"back {time.monotonic() - t0:.1f} s after systemctl reboot inside")
    system_state(admin, guest)
    assert ended_reasons(sd)[-1] == "reboot"


def test_console_shows_the_boot_and_a_login_prompt(sd, admin, guest):
    admin.vx.start(name=guest)
    system_state(admin, guest)
    deadline = time.monotonic() + 30
    while "login:" not in console_text(admin, guest) and time.monotonic() < deadline:
        time.sleep(0.2)
    text = console_text(admin, guest)
    assert "Reached target" in text and "Console Getty" in text and "login:" in text, text
    env = dict(os.environ, VCD_PASSWORD=sd.admin_password, HOME=str(sd.root / "home"))
    r = subprocess.run([str(Path(sys.executable).parent / "vcc"), "-p", str(sd.port),
                        "console", guest, "--lines", "3"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0 and "login:" in r.stdout, (r.stdout, r.stderr)


def test_privileged_vserver_with_systemd_and_sys_admin_is_refused(sd, admin, guest):
    admin.vxdb.vx.security.set(name=guest, privileged=True)
    f = fault(admin.vx.start, name=guest)
    assert f.faultCode == 200 and "SYS_ADMIN" in f.faultString and "privileged" in \
        f.faultString, f.faultString
    assert not admin.vx.status(name=guest)["running"]


def test_init_that_dies_at_start_is_a_fault_with_its_console(sd, admin, guest):
    # an init that says why on its console and dies before it is ready (READY=1)
    admin.vxdb.init.set(name=guest, init="/bin/sh -c 'echo no-API-filesystems-here; exit 3'")
    f = fault(admin.vx.start, name=guest)
    assert f.faultCode == 500 and "exit 3" in f.faultString, f.faultString
    assert "last console lines:\nno-API-filesystems-here" in f.faultString, f.faultString
    assert not admin.vx.status(name=guest)["running"]


def test_host_sysctls_and_cgroups_are_untouched(sd, admin, guest, host_before):
    from libvserver.native.cgroups import UNPINNED, discover
    before = cgroup_dirs(sd.cgroup_parent)
    admin.vx.start(name=guest)
    system_state(admin, guest)
    admin.vx.stop(name=guest)
    assert sysctls() == host_before
    # other test runs and the host's own sessions make groups meanwhile: what matters is
    # that none of the guest's units got a group outside the vserver's own
    new = cgroup_dirs(sd.cgroup_parent) - before
    assert not [d for d in new if d.endswith(GUEST_UNITS)], new
    # systemd's groups lived below the vserver's own and went with it
    for h in discover():
        group = h.path / sd.cgroup_parent
        left = [p for p in group.iterdir() if p.is_dir()] if group.exists() else []
        # the one group every unpinned vserver shares in a cpuset hierarchy stays, empty
        assert all(p.name == UNPINNED and not (p / "tasks").read_text().split()
                   and not [q for q in p.iterdir() if q.is_dir()] for p in left), left


def test_distro_init_capabilities_are_refused_without_a_user_namespace(tmp_path):
    from libvserver.api import ContextSpec, InvalidSpec
    from libvserver.native.backend import enforcement
    from libvserver.native.cgroups import Layout
    from templates import debian
    meta = debian.build_meta("sd", "bookworm", "systemd")
    spec = ContextSpec(xid=77, name="sd", vdir=tmp_path, init=["/sbin/init"],
                       bcaps=set(meta.bcaps), api_mounts=list(meta.api_mounts), ready="notify")
    spec.validate()
    layout = Layout("vcdtest-enforcement")
    assert enforcement(layout, spec)["security:distro_init"] == "enforced"
    spec.privileged = True
    with pytest.raises(InvalidSpec, match="SYS_ADMIN"):
        spec.validate()
    assert enforcement(layout, spec)["security:distro_init"].startswith("not enforced:")
    spec.bcaps.discard("SYS_ADMIN")
    spec.validate()  # privileged without SYS_ADMIN: the admin's choice
