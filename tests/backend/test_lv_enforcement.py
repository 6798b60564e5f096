"""Every setting the native backend claims to enforce, checked from inside a running context."""

from __future__ import annotations

import os
import subprocess

import pytest

from libvserver import CpuSet, DiskLimit, Limit, NetAddr, Sched
from libvserver.api import CAP_NUMBERS
from libvserver.native import namespaces


def capbnd(out: str) -> int:
    return int(next(line.split()[1] for line in out.splitlines() if line.startswith("CapBnd")), 16)


def test_bounding_set_is_exactly_the_bcaps(backend, make_spec, started, run_sh):
    bcaps = {"CHOWN", "KILL", "SETUID", "SETGID", "NET_BIND_SERVICE", "SYS_BOOT"}
    spec = started(make_spec(bcaps=bcaps))
    want = sum(1 << CAP_NUMBERS[c] for c in bcaps)
    _, out = run_sh(spec.xid, "cat /proc/1/status")
    assert capbnd(out) == want
    _, out = run_sh(spec.xid, "cat /proc/self/status")
    assert capbnd(out) == want
    # and the missing caps really are missing: no mknod without CAP_MKNOD
    status, _ = run_sh(spec.xid, "mknod /tmp/n c 1 3")
    assert status != 0
    assert backend.enforcement(spec)["bcap:CHOWN"] == "enforced"


def test_bcap_the_host_lacks_is_reported_not_enforced(backend, make_spec):
    host = namespaces.bounding_set()
    missing = [c for c, n in CAP_NUMBERS.items() if n not in host and
               n <= namespaces.cap_last_cap()]
    if not missing:
        pytest.skip("the host's bounding set is complete")
    rep = backend.enforcement(make_spec(bcaps={missing[0]}, privileged=True))
    assert rep[f"bcap:{missing[0]}"].startswith("not enforced:")
    # in its own user namespace a vserver holds it there
    assert backend.enforcement(make_spec(bcaps={missing[0]}))[f"bcap:{missing[0]}"] == "enforced"


def test_nproc_limit_is_pids_max(backend, make_spec, started, run_sh):
    spec = started(make_spec(limits=[Limit("NPROC", None, 12)]))
    status, out = run_sh(spec.xid, "for i in $(seq 30); do sleep 100 & done; echo done")
    assert "can't fork" in out
    st = backend.stat(spec.xid)
    assert 2 < st.nproc <= 12
    assert backend.layout.read("pids", spec.xid, "pids.max").strip() == "12"
    usage = {u.type: u for u in backend.stat(spec.xid).limits}
    assert usage["NPROC"].cur <= 12


def test_memory_limit_kills_an_allocation_beyond_it(backend, make_spec, started, run_sh):
    spec = started(make_spec(limits=[Limit("RSS", 16 * 1024, 32 * 1024)]))
    status, out = run_sh(spec.xid, "dd if=/dev/zero of=/dev/null bs=1M count=4; echo small=$?")
    assert "small=0" in out
    status, out = run_sh(spec.xid, "dd if=/dev/zero of=/dev/null bs=96M count=1; echo big=$?")
    assert "big=137" in out  # SIGKILL from the memory cgroup's OOM killer
    v1 = backend.layout.by_ctrl["memory"].version == 1
    hard = backend.layout.read("memory", spec.xid, "memory.limit_in_bytes" if v1 else "memory.max")
    soft = backend.layout.read("memory", spec.xid,
                               "memory.soft_limit_in_bytes" if v1 else "memory.high")
    assert int(hard) == 32 * 1024 * 1024
    assert int(soft) == 16 * 1024 * 1024


def test_other_limits_are_rlimits_of_init(backend, make_spec, started, run_sh):
    spec = started(make_spec(limits=[Limit("NOFILE", 100, 200), Limit("CORE", 0, 0)]))
    _, out = run_sh(spec.xid, "ulimit -n; ulimit -Hn; ulimit -c; grep 'open files' /proc/1/limits")
    lines = out.split("\n")
    assert lines[0] == "100" and lines[1] == "200" and lines[2] == "0"
    assert lines[3].split()[3:5] == ["100", "200"]


def test_ipc_limits_are_namespace_sysctls(backend, make_spec, started, run_sh):
    spec = started(make_spec(limits=[Limit("SHMEM", None, 4096), Limit("NSEMS", None, 77)]))
    _, out = run_sh(spec.xid, "cat /proc/sys/kernel/shmall /proc/sys/kernel/sem")
    shmall, sem = out.splitlines()
    assert int(shmall) == 4096 * 1024 // os.sysconf("SC_PAGESIZE")
    assert sem.split()[1] == "77"
    with open("/proc/sys/kernel/shmall") as f:
        assert int(f.read()) != int(shmall)  # the host's value is untouched


def test_unmappable_limits_are_reported(backend, make_spec):
    rep = backend.enforcement(make_spec(limits=[Limit("NSOCK", None, 5),
                                                Limit("DENTRY", None, 5)]))
    assert rep["limit:NSOCK"].startswith("not enforced:")
    assert rep["limit:DENTRY"].startswith("not enforced:")


def test_uname_nodename_and_domainname(backend, make_spec, started, run_sh):
    spec = started(make_spec(uname={"NODENAME": "web1", "DOMAINNAME": "example.test",
                                    "RELEASE": "2.6.22-vs2.2"}))
    _, out = run_sh(spec.xid, "hostname; cat /proc/sys/kernel/domainname; uname -r")
    host_release = os.uname().release
    assert out.split() == ["web1", "example.test", host_release]
    rep = backend.enforcement(spec)
    assert rep["uname:NODENAME"] == "enforced"
    assert rep["uname:RELEASE"].startswith("not enforced:")
    assert os.uname().nodename != "web1"


def test_guest_cannot_change_its_hostname_without_sys_admin(backend, make_spec, started, run_sh):
    spec = started(make_spec(uname={"NODENAME": "fixed"}, ccaps={"SET_UTSNAME"}))
    status, out = run_sh(spec.xid, "hostname other; hostname")
    assert status != 0 or out.strip().endswith("fixed")
    assert out.strip().splitlines()[-1] == "fixed"
    assert backend.enforcement(spec)["ccap:SET_UTSNAME"].startswith("not enforced:")


@pytest.mark.skipif(not namespaces.has_time_namespace(), reason="kernel has no time namespaces")
def test_virt_uptime_starts_uptime_at_zero(backend, make_spec, started, run_sh):
    spec = started(make_spec(flags={"VIRT_UPTIME"}))
    with open("/proc/uptime") as f:
        host_up = float(f.read().split()[0])
    if host_up < 120:
        pytest.skip("the host itself booted less than two minutes ago")
    _, out = run_sh(spec.xid, "cat /proc/uptime")
    assert float(out.split()[0]) < 60
    assert backend.enforcement(spec)["flag:VIRT_UPTIME"] == "enforced"


def test_without_virt_uptime_the_host_uptime_shows(backend, make_spec, started, run_sh):
    spec = started(make_spec(flags=set()))
    with open("/proc/uptime") as f:
        host_up = float(f.read().split()[0])
    _, out = run_sh(spec.xid, "cat /proc/uptime")
    assert float(out.split()[0]) >= host_up


def test_sched_fillrate_is_a_cpu_quota_that_throttles(backend, make_spec, started, run_sh):
    spec = started(make_spec(sched=[Sched(cpuid=-1, interval=10, fillrate=1, interval2=1,
                                          fillrate2=2, tokensmin=0, tokensmax=5)]))
    lay = backend.layout
    v1 = lay.by_ctrl["cpu"].version == 1
    if v1:
        assert lay.read("cpu", spec.xid, "cpu.cfs_quota_us").strip() == "10000"
        assert lay.read("cpu", spec.xid, "cpu.cfs_period_us").strip() == "100000"
        assert lay.read("cpu", spec.xid, "cpu.shares").strip() == "2048"
    else:
        assert lay.read("cpu", spec.xid, "cpu.max").split() == ["10000", "100000"]
    r = backend.exec(spec.xid, ["/bin/sh", "-c", "while :; do :; done"], timeout=1.0)
    assert r.timed_out
    stats = dict(line.split() for line in lay.read("cpu", spec.xid, "cpu.stat").splitlines())
    assert int(stats["nr_throttled"]) > 0
    assert backend.enforcement(spec)["sched"] == "enforced"


def test_cpuset_restricts_the_cpus(backend, make_spec, started, run_sh):
    if os.cpu_count() < 2:
        pytest.skip("needs two CPUs")
    spec = started(make_spec(cpuset=CpuSet(cpus="1", mems="0")))
    _, out = run_sh(spec.xid, "grep Cpus_allowed_list /proc/self/status")
    assert out.split()[1] == "1"


def test_addresses_get_a_veth_reachable_from_the_host(backend, make_spec, started, run_sh,
                                                      groups_of):
    spec = started(make_spec(addresses=[NetAddr("10.93.1.2", "255.255.255.0")],
                             broadcast="10.93.1.255", ccaps={"RAW_ICMP"}))
    _, out = run_sh(spec.xid, "ip -o addr show dev eth0; ip -o link | grep -c ': '")
    assert "inet 10.93.1.2/24 brd 10.93.1.255" in out
    assert out.strip().splitlines()[-1] == "2"  # lo and eth0: the host's interfaces are hidden
    ping = subprocess.run(["busybox", "ping", "-c", "1", "-W", "5", "10.93.1.2"],
                          capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    status, out = run_sh(spec.xid, "cat /proc/sys/net/ipv4/ping_group_range")
    # every gid of the vserver's user namespace (only mapped gids are valid in there)
    assert out.split() == ["0", "65535"]
    host_if = f"vx{spec.xid}-{backend.net_tag}"
    assert os.path.exists(f"/sys/class/net/{host_if}")
    backend.stop(spec.xid, ["/bin/true"], timeout=0)
    assert not os.path.exists(f"/sys/class/net/{host_if}")
    route = subprocess.run(["ip", "route", "show", "10.93.1.2"], capture_output=True, text=True)
    assert route.stdout.strip() == ""


def test_hide_netif_without_addresses_shows_only_loopback(backend, make_spec, started, run_sh):
    spec = started(make_spec(flags={"HIDE_NETIF"}))
    _, out = run_sh(spec.xid, "ip -o link")
    assert len(out.strip().splitlines()) == 1 and "lo:" in out


def test_net_counters_come_from_the_context_namespace(backend, make_spec, started, run_sh):
    spec = started(make_spec(addresses=[NetAddr("10.93.2.2", "255.255.255.0")]))
    subprocess.run(["busybox", "ping", "-c", "2", "-W", "5", "10.93.2.2"], capture_output=True)
    net = backend.stat(spec.xid).net
    assert set(net) == {"lo", "eth0"}
    assert net["eth0"].rx_packets >= 2 and net["eth0"].tx_packets >= 2


def test_disk_limit_bounds_space_and_inodes(backend, make_spec, started, run_sh, session_dir):
    spec = started(make_spec(disk_limit=DiskLimit(space_kib=16 * 1024, inodes=1024,
                                                  reserved_pct=0)))
    status, out = run_sh(spec.xid, "dd if=/dev/zero of=/big bs=1M count=40 2>&1; echo rc=$?; "
                                   "rm /big")
    assert "No space left" in out and "rc=1" in out
    status, out = run_sh(spec.xid, "mkdir /many; cd /many; i=0; while touch f$i 2>/dev/null; "
                                   "do i=$((i+1)); done; echo $i; rm -rf /many", timeout=60)
    made = int(out.split()[-1])
    assert 100 < made < 1024
    _, out = run_sh(spec.xid, "df -k / | tail -1")
    assert int(out.split()[1]) <= 16 * 1024
    assert backend.enforcement(spec)["disk_limit"] == "enforced"


def test_disk_limit_image_too_small_raises_quota_error(backend, make_spec, groups_of):
    from libvserver import QuotaError
    spec = make_spec(disk_limit=DiskLimit(space_kib=512, inodes=64, reserved_pct=0))
    with pytest.raises(QuotaError, match="cannot be made"):
        backend.start(spec)
    assert groups_of(spec.xid) == []
    assert not backend.is_running(spec.xid)


def test_not_enforced_settings_are_listed_with_a_reason(backend, make_spec):
    rep = backend.enforcement(make_spec(ccaps={"SYSLOG", "SECURE_MOUNT"},
                                        flags={"VIRT_MEM", "VIRT_UPTIME"},
                                        uname={"VERSION": "x"}))
    for key in ("ccap:SYSLOG", "ccap:SECURE_MOUNT", "flag:VIRT_MEM", "uname:VERSION"):
        assert rep[key].startswith("not enforced: ") and len(rep[key]) > 20


def test_hard_rlimit_above_the_hosts_is_reported_not_enforced(backend, make_spec):
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("the host's NOFILE hard limit is unlimited")
    rep = backend.enforcement(make_spec(limits=[Limit("NOFILE", None, hard + 1000)]))
    assert rep["limit:NOFILE"].startswith("not enforced:")
    assert "CAP_SYS_RESOURCE" in rep["limit:NOFILE"]


def test_sched_pause_freezes_the_context(backend, make_spec, started, wait):
    spec = started(make_spec(flags={"SCHED_PAUSE"}))
    lay = backend.layout
    if lay.v2 is not None and (lay.group(lay.v2, spec.xid) / "cgroup.freeze").exists():
        assert (lay.group(lay.v2, spec.xid) / "cgroup.freeze").read_text().strip() == "1"
        wait(lambda: "frozen 1" in (lay.group(lay.v2, spec.xid) / "cgroup.events").read_text())
    else:
        wait(lambda: lay.read("freezer", spec.xid, "freezer.state").strip() == "FROZEN")
    st = backend.stat(spec.xid)
    assert st.running and st.thr_running == 0
    assert backend.enforcement(spec)["flag:SCHED_PAUSE"] == "enforced"
    backend.stop(spec.xid, ["/bin/true"], timeout=0.5)  # a frozen context still stops
    assert not backend.is_running(spec.xid)


def test_disk_limit_grows_offline_between_starts(backend, make_spec, started, run_sh):
    spec = make_spec(disk_limit=DiskLimit(space_kib=16 * 1024, inodes=1024, reserved_pct=0))
    started(spec)
    run_sh(spec.xid, "echo kept > /root/marker")
    _, out = run_sh(spec.xid, "df -k / | tail -1")
    small = int(out.split()[1])
    backend.stop(spec.xid, ["/bin/true"], timeout=0)
    spec.disk_limit = DiskLimit(space_kib=48 * 1024, inodes=1024, reserved_pct=0)
    started(spec)
    _, out = run_sh(spec.xid, "df -k / | tail -1; cat /root/marker")
    lines = out.splitlines()
    assert int(lines[0].split()[1]) > small + 24 * 1024
    assert lines[1] == "kept"  # the vserver's files live in the image and survive


def test_loopback_is_up_in_a_private_network_namespace_without_addresses(started, make_spec, run_sh):
    spec = started(make_spec(flags={"HIDE_NETIF"}))
    status, out = run_sh(spec.xid, "ip link show lo")
    assert status == 0 and "UP" in out.split(">")[0], out
    # a TCP round trip over loopback, as daemons inside need
    status, out = run_sh(spec.xid, "nc -l -p 7777 -e echo via-lo & sleep 0.3; nc 127.0.0.1 7777")
    assert status == 0 and "via-lo" in out, out
