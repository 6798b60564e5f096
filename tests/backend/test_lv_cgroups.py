"""cgroup discovery and the files each limit becomes, for v1, mixed and pure cgroup2 hosts.

This machine has v1 controllers plus an empty cgroup2; a pure cgroup2 host cannot be
made here, so its layout is checked on a directory tree shaped like one (plain files
where the kernel would have its control files).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from libvserver import ContextSpec, CpuSet, Limit, Sched
from libvserver.native import limits
from libvserver.native.cgroups import UNPINNED, Hierarchy, Layout, discover, kernel_at_least

MIXED = """\
25 24 0:22 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
26 24 0:23 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
27 24 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
28 24 0:25 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
29 24 0:26 /sub /mnt/bindofsub rw - cgroup cgroup rw,pids
"""
PURE_V2 = "30 24 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_discover_mixed_hierarchies(tmp_path):
    mi = tmp_path / "mountinfo"
    mi.write_text(MIXED)
    found = discover(str(mi))
    assert [(str(h.path), h.version) for h in found] == [
        ("/sys/fs/cgroup/unified", 2), ("/sys/fs/cgroup/memory", 1),
        ("/sys/fs/cgroup/cpu,cpuacct", 1), ("/sys/fs/cgroup/systemd", 1)]
    # binds of a sub-group are skipped; systemd's named hierarchy is kept for membership
    assert found[2].controllers == {"cpu", "cpuacct"}


def test_discover_this_machine():
    found = discover()
    assert found, "no cgroup hierarchy mounted"
    lay = Layout("vcdtest-discover")
    assert lay.primary in found
    assert lay.has("pids") and lay.has("memory")


@pytest.fixture
def pure_v2(tmp_path) -> Layout:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    h = Hierarchy(root, 2, frozenset({"cpuset", "cpu", "io", "memory", "pids"}))
    lay = Layout("vcd", [h])
    parent = root / "vcd"
    parent.mkdir()
    (parent / "cgroup.subtree_control").write_text("")
    group = parent / "7"
    group.mkdir()
    for f in ("pids.max", "memory.max", "memory.high", "memory.swap.max", "cpu.max",
              "cpu.max.burst", "cpu.weight", "cpuset.cpus", "cpuset.mems", "cgroup.procs"):
        (group / f).write_text("")
    return lay


def test_pure_cgroup2_host_uses_v2_files(pure_v2):
    assert pure_v2.primary.version == 2
    spec = ContextSpec(xid=7, name="v2", vdir=Path("/"),
                       limits=[Limit("NPROC", None, 50), Limit("RSS", 1024, 2048)],
                       sched=[Sched(-1, 4, 1, 1, 3, 0, 10)], cpuset=CpuSet("0", "0"))
    limits.apply_cgroup_limits(pure_v2, spec)
    g = pure_v2.group(pure_v2.primary, 7)
    assert (g / "pids.max").read_text() == "50"
    assert (g / "memory.max").read_text() == str(2048 * 1024)
    assert (g / "memory.high").read_text() == str(1024 * 1024)
    assert (g / "memory.swap.max").read_text() == "0"
    assert (g / "cpu.max").read_text() == "25000 100000"
    assert (g / "cpu.max.burst").read_text() == "10000"
    assert (g / "cpu.weight").read_text() == "300"
    assert (g / "cpuset.cpus").read_text() == "0"
    assert pure_v2.procs_file(7) == g / "cgroup.procs"
    assert pure_v2.tasks_file(7) == g / "cgroup.threads"


def test_cpu_plan_maps_tokens_to_quota_burst_and_shares():
    p = limits.cpu_plan(Sched(-1, interval=100, fillrate=30, interval2=10, fillrate2=5,
                              tokensmin=0, tokensmax=500))
    assert (p.quota_us, p.period_us) == (30000, 100000)
    assert p.burst_us == 30000  # 500 ms of tokens, capped at the quota as the kernel requires
    assert p.shares == 512 and p.weight == 50
    empty = limits.cpu_plan(Sched())
    assert empty.quota_us is None and empty.shares is None


def test_memory_limits_take_the_tightest_of_rss_as_anon():
    spec = ContextSpec(xid=9, name="m", vdir=Path("/"),
                       limits=[Limit("RSS", None, 4096), Limit("AS", 1000, 8192),
                               Limit("ANON", None, None)])
    assert limits.memory_limits(spec) == (4096 * 1024, 1000 * 1024)


def test_parent_must_be_relative():
    with pytest.raises(ValueError):
        Layout("/abs", [])
    with pytest.raises(ValueError):
        Layout("a/../b", [])


HYBRID = """\
32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
"""


def test_contexts_share_the_parent_in_hierarchies_nothing_needs_a_group_of_theirs_in(
        tmp_path):
    """blkio and devices (no limit or rule of a spec is kept there), cpuacct (cgroup2's
    cpu.stat has the times), freezer (cgroup2's cgroup.freeze freezes) and systemd's
    named hierarchy (a hybrid systemd tracks in cgroup2) get no group per context."""
    mi = tmp_path / "mountinfo"
    mi.write_text(HYBRID)
    lay = Layout("vcd", discover(str(mi)))
    assert lay.v2_freezer       # this kernel (Linux >= 5.2)
    shared = {p.name for p in lay.shared}
    assert shared == {"cpuacct", "blkio", "systemd", "freezer", "devices"}
    assert not any(lay.has(c) for c in ("cpuacct", "blkio", "freezer", "devices"))
    by_name = {h.path.name: h for h in lay.hierarchies}
    assert lay.group(by_name["blkio"], 7) == Path("/sys/fs/cgroup/blkio/vcd")
    assert lay.group(by_name["freezer"], 7) == Path("/sys/fs/cgroup/freezer/vcd")
    assert lay.group(by_name["devices"], 7) == Path("/sys/fs/cgroup/devices/vcd")
    assert lay.group(by_name["memory"], 7) == Path("/sys/fs/cgroup/memory/vcd/7")
    assert [g.parent.parent.name for g in lay.context_groups(7)] == [
        "cpu", "cpuset", "memory", "pids", "unified"]
    # cpuset alone: a group of its own only for a context whose spec pins CPUs
    assert lay.pinned_only == Path("/sys/fs/cgroup/cpuset") and lay.has("cpuset")
    assert lay.group(by_name["cpuset"], 7) == Path("/sys/fs/cgroup/cpuset/vcd/unpinned")
    # without cgroup2: cpuacct has the CPU times, systemd v1 tracks in its own hierarchy
    mi.write_text(MIXED.replace("cpu,cpuacct", "cpu").replace(
        "25 24 0:22 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        "30 24 0:30 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n"
        "31 24 0:31 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio\n"))
    lay = Layout("vcd", discover(str(mi)))
    assert {p.name for p in lay.shared} == {"blkio"}
    assert lay.has("cpuacct")


def test_without_cgroup2_a_context_keeps_a_freezer_group_of_its_own(tmp_path):
    """The v1 freezer is what freezes where no cgroup2 group can (none mounted, or a
    kernel before 5.2)."""
    mi = tmp_path / "mountinfo"
    mi.write_text(HYBRID.replace("41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
                                 ""))
    lay = Layout("vcd", discover(str(mi)))
    assert not lay.v2_freezer
    assert {p.name for p in lay.shared} == {"blkio", "devices"}
    freezer = next(h for h in lay.hierarchies if h.path.name == "freezer")
    assert lay.group(freezer, 7) == Path("/sys/fs/cgroup/freezer/vcd/7")
    assert lay.path("freezer", 7) == Path("/sys/fs/cgroup/freezer/vcd/7")


def test_kernel_at_least_compares_major_and_minor():
    assert kernel_at_least((5, 2), "5.2.0") and kernel_at_least((5, 2), "6.1.0-13-amd64")
    assert kernel_at_least((5, 2), "5.10.0") and kernel_at_least((5, 2), "6.18")
    assert not kernel_at_least((5, 2), "5.1.21") and not kernel_at_least((5, 2), "4.19.0")
    assert not kernel_at_least((5, 2), "5.rc1")


def test_a_context_has_no_group_of_its_own_in_shared_hierarchies_and_its_guest_sees_none(
        backend, make_spec, started, run_sh):
    lay = backend.layout
    if not lay.shared:
        pytest.skip("no v1 hierarchy here that contexts share")
    spec = started(make_spec(bcaps={"SYS_ADMIN"} | set(make_spec().bcaps)))
    other = started(make_spec())
    init = backend.init_pid(spec.xid)
    for h in lay.hierarchies:
        own = h.path / lay.parent / str(spec.xid)
        shared = h.path in lay.shared or h.path == lay.pinned_only  # its spec pins nothing
        assert own.is_dir() == (not shared), own
        if shared:
            procs = (lay.group(h, spec.xid) / "cgroup.procs").read_text().split()
            assert str(init) in procs
    # root inside mounts each shared hierarchy: rooted at the shared group, it shows no
    # other context's group and, of the processes there, only its own; and it can change
    # nothing there (devices.allow and .deny, freezer.state: the host root's files)
    for h in (h for h in lay.hierarchies if h.path in lay.shared and h.controllers):
        opt = ",".join(sorted(h.controllers))
        status, out = run_sh(spec.xid, f"mkdir -p /tmp/cg && mount -t cgroup -o {opt} none "
                             f"/tmp/cg && ls /tmp/cg && echo PROCS && cat /tmp/cg/cgroup.procs; "
                             f"echo WRITES; mkdir /tmp/cg/esc 2>/dev/null && echo MADE; "
                             f"for f in /tmp/cg/*; do for v in 1 a FROZEN; do "
                             f"(echo $v > $f) 2>/dev/null && echo W $f; done; done; "
                             f"umount /tmp/cg")
        assert status == 0, (h, out)
        listed, _, rest = out.partition("PROCS")
        procs, _, writes = rest.partition("WRITES")
        assert writes.split() == [], (h, out)   # the shared group is the host's
        assert str(other.xid) not in listed.split() and str(spec.xid) not in listed.split()
        assert procs.split() and backend.init_pid(other.xid) is not None
        in_ns = {int(p) for p in procs.split()}
        assert 1 in in_ns and len(in_ns) <= 4, (h, procs)  # init, the shell, cat (no other's)
    # the CPU times come from cgroup2 when cpuacct is shared
    run_sh(spec.xid, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
    st = backend.stat(spec.xid)
    assert st.cpu_user + st.cpu_system > 0


def test_a_context_has_a_cpuset_group_of_its_own_only_when_its_spec_pins_cpus(
        backend, make_spec, started):
    lay = backend.layout
    if lay.pinned_only is None:
        pytest.skip("no v1 hierarchy of cpuset alone here")
    h = next(h for h in lay.hierarchies if h.path == lay.pinned_only)
    plain = started(make_spec())
    pinned = started(make_spec(cpuset=CpuSet("0", "0", False)))
    assert not lay.context_group(h, plain.xid).exists()
    assert lay.group(h, plain.xid) == lay.group(h) / UNPINNED
    procs = (lay.group(h, plain.xid) / "cgroup.procs").read_text().split()
    assert str(backend.init_pid(plain.xid)) in procs
    own = lay.context_group(h, pinned.xid)
    assert lay.group(h, pinned.xid) == own
    assert (own / "cpuset.cpus").read_text().strip() == "0"
    assert str(backend.init_pid(pinned.xid)) in (own / "cgroup.procs").read_text().split()
    with open(f"/proc/{backend.init_pid(pinned.xid)}/status") as f:
        assert "Cpus_allowed_list:\t0\n" in f.read()
    # what the shared group gives the other: every CPU of the parent
    with open(f"/proc/{backend.init_pid(plain.xid)}/status") as f:
        allowed = next(ln for ln in f if ln.startswith("Cpus_allowed_list:")).split()[1]
    assert allowed == (lay.group(h) / "cpuset.cpus").read_text().strip()


def test_a_guest_that_pins_no_cpu_sees_no_pinned_vservers_cpuset_group(
        backend, make_spec, started, run_sh):
    """The contexts that pin nothing share one group of the cpuset hierarchy, not its
    parent: the guest's cgroup namespace is rooted where it runs, and root inside (with
    SYS_ADMIN) that mounts the hierarchy would see every pinned vserver's group below
    the parent, its xid and its CPUs."""
    lay = backend.layout
    if lay.pinned_only is None:
        pytest.skip("no v1 hierarchy of cpuset alone here")
    pinned = started(make_spec(cpuset=CpuSet("0", "0", False)))
    spec = started(make_spec(bcaps={"SYS_ADMIN"} | set(make_spec().bcaps)))
    status, out = run_sh(spec.xid, "mkdir -p /tmp/cg && mount -t cgroup -o cpuset none "
                         "/tmp/cg && ls /tmp/cg && echo PROCS && cat /tmp/cg/cgroup.procs; "
                         "umount /tmp/cg")
    assert status == 0, out
    listed, _, procs = out.partition("PROCS")
    assert "cpuset.cpus" in listed.split(), out
    assert str(pinned.xid) not in listed.split(), out
    assert "1" in procs.split(), out


def test_a_vserver_freezes_in_cgroup2_with_no_freezer_group_of_its_own_and_its_guest_cannot_thaw_it(
        backend, make_spec, started, run_sh, wait):
    """cgroup2's cgroup.freeze does what a v1 freezer group did (SCHED_PAUSE, kill_all
    without cgroup.kill). The guest's root owns its delegated group's subtree, not that
    group's cgroup.freeze; a child group it made and thaws stays frozen with its
    ancestor."""
    lay = backend.layout
    if not lay.v2_freezer:
        pytest.skip("no cgroup2 freezer here")
    spec = started(make_spec(bcaps={"SYS_ADMIN"} | set(make_spec().bcaps)))
    for h in lay.hierarchies:
        if h.version == 1 and h.controllers & {"freezer", "devices"}:
            assert not (h.path / lay.parent / str(spec.xid)).exists(), h
    status, out = run_sh(spec.xid, "mkdir -p /tmp/cg && mount -t cgroup2 none /tmp/cg && "
                         "mkdir /tmp/cg/esc && (sh -c 'echo $$ > /tmp/cg/esc/cgroup.procs; "
                         "exec sleep 1000' </dev/null >/dev/null 2>&1 &); sleep 0.5; "
                         "cat /tmp/cg/esc/cgroup.procs; (echo 0 > /tmp/cg/cgroup.freeze) "
                         "2>/dev/null && echo W; true")
    assert status == 0 and out.split() and "W" not in out.split(), out
    group = lay.group(lay.v2, spec.xid)
    esc = group / "esc"
    owner = esc.stat()
    assert owner.st_uid != 0 and (group / "cgroup.freeze").stat().st_uid == 0
    assert lay.freeze(spec.xid, True)
    try:
        wait(lambda: "frozen 1" in (group / "cgroup.events").read_text())
        wait(lambda: "frozen 1" in (esc / "cgroup.events").read_text(), timeout=5)
        # what the guest's root may do to its own child group: thaw it; and to its
        # vserver's group: nothing
        as_guest = dict(user=owner.st_uid, group=owner.st_gid, extra_groups=[])
        thaw = subprocess.run(["sh", "-c", f"echo 0 > {esc}/cgroup.freeze"], **as_guest)
        assert thaw.returncode == 0
        assert subprocess.run(["sh", "-c", f"echo 0 > {group}/cgroup.freeze"],
                              stderr=subprocess.DEVNULL, **as_guest).returncode != 0
        time.sleep(0.3)
        assert "frozen 1" in (esc / "cgroup.events").read_text()
        assert "frozen 1" in (group / "cgroup.events").read_text()
        assert backend.stat(spec.xid).thr_running == 0
    finally:
        lay.freeze(spec.xid, False)
    wait(lambda: "frozen 0" in (esc / "cgroup.events").read_text())


def test_a_group_of_its_own_left_in_a_now_shared_hierarchy_goes_with_the_context(
        backend, make_spec, started):
    """A context started by an older vcd (a freezer or devices group of its own, before
    those hierarchies were shared) leaves nothing behind when it stops."""
    lay = backend.layout
    shared = [h for h in lay.hierarchies if h.path in lay.shared and h.controllers]
    if not shared:
        pytest.skip("no v1 hierarchy here that contexts share")
    spec = started(make_spec())
    old = [h.path / lay.parent / str(spec.xid) for h in shared]
    try:
        for g in old:
            g.mkdir()
        backend.stop(spec.xid, ["/bin/true"], timeout=0)
        assert not backend.is_running(spec.xid)
        assert [g for g in old if g.exists()] == []
    finally:
        for g in old:
            if g.exists():
                g.rmdir()
