"""The start and entry paths of issue 13: init born in its cgroups, helpers joining them
without a migration, the supervisor never left in a context's groups, phase timings,
unprivileged inits cloned by the init forker (initforker.py)."""

from __future__ import annotations

import os
import re
import select
import signal
import time
from pathlib import Path

import pytest

from libvserver import Limit, Mount
from libvserver.native import namespaces
from libvserver.native.initforker import NativeForker

from conftest import DEFAULT_BCAPS


def _groups_of_pid(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cgroup") as f:
        return [line.rstrip("\n").split(":", 2)[2] for line in f]


def test_init_is_in_the_context_group_of_every_hierarchy(backend, make_spec, started):
    spec = started(make_spec())
    init = backend.init_pid(spec.xid)
    for h in backend.layout.hierarchies:
        procs = (backend.layout.group(h, spec.xid) / "cgroup.procs").read_text().split()
        assert str(init) in procs, f"init {init} is not in {h.path}"


def test_supervisor_is_in_no_group_of_a_context_it_started(backend, make_spec, started):
    spec = started(make_spec())
    sup = backend.supervisor_pid()
    for h in backend.layout.hierarchies:
        procs = (backend.layout.group(h, spec.xid) / "cgroup.procs").read_text().split()
        assert str(sup) not in procs, f"the supervisor stayed in {h.path}"
    assert not any(p.endswith(f"/{spec.xid}") for p in _groups_of_pid(sup))


def test_exec_runs_in_the_context_groups_of_every_hierarchy(backend, make_spec, started):
    """The entering helper moves itself into the v1 groups and is cloned into the cgroup2
    group: inside, /proc/self/cgroup shows the root of the context's cgroup namespace
    in every hierarchy."""
    spec = started(make_spec())
    r = backend.exec(spec.xid, ["/bin/cat", "/proc/self/cgroup"])
    assert r.status == 0, r.output
    lines = r.output.decode().split()
    assert len(lines) == len(_groups_of_pid(os.getpid()))
    assert all(line.endswith(":/") for line in lines), lines


def test_exec_status_passes_through_the_cgroup_relay(backend, make_spec, started):
    spec = started(make_spec())
    assert backend.exec(spec.xid, ["/bin/sh", "-c", "exit 3"]).status == 3
    assert backend.exec(spec.xid, ["/bin/sh", "-c", "kill -TERM $$"]).status == 128 + 15


def test_start_phases_cover_vcd_supervisor_and_init_when_asked(backend, make_spec, started,
                                                               monkeypatch):
    monkeypatch.setenv("VCD_START_PHASES", "1")
    started(make_spec())
    phases = backend.last_phases
    names = [name for name, _, _ in phases]
    assert any(n.startswith("supervisor: clone") for n in names), names
    # init loads the seccomp filter itself unless the init forker passed it on
    assert "init: stdio, close fds" in names and "init: masks" in names, names
    assert "init: seccomp load" in names or any(n.startswith("forker: ") for n in names), names
    assert names[-1] == "backend: from the supervisor"
    assert all(end >= begin for _, begin, end in phases)


def test_start_phases_are_not_recorded_unless_asked(backend, make_spec, started,
                                                    monkeypatch):
    monkeypatch.delenv("VCD_START_PHASES", raising=False)
    backend.last_phases = []
    started(make_spec())
    assert backend.last_phases == []


def _vcd_ns_mounts_in(ns_path: str) -> int:
    """Handle mounts (tmpfs "vcd-ns") in the mount namespace ns_path, counted by a child
    that joins it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            namespaces.setns(os.open(ns_path, os.O_RDONLY), namespaces.CLONE_NEWNS)
            with open("/proc/self/mountinfo") as f:
                n = sum(1 for line in f if line.partition(" - ")[2].split()[1:2] == ["vcd-ns"])
            os.write(w, str(n).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        out = os.read(r, 64)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    return int(out)


def test_inits_are_forked_in_a_mount_namespace_without_the_namespace_handles(
        backend, make_spec, started):
    """unshare(CLONE_NEWNS) copies every mount of the namespace it starts from; forked
    beside the handles (a bind of its directory and up to eight binds per running
    context), a start slowed down with every context already running."""
    started(make_spec())
    started(make_spec())
    assert _vcd_ns_mounts_in("/proc/self/ns/mnt") >= 3     # ns root + one per context
    sup = backend.supervisor_pid()
    own = os.readlink(f"/proc/{sup}/ns/mnt")
    bases = [f"/proc/{sup}/fd/{fd}" for fd in os.listdir(f"/proc/{sup}/fd")
             if os.readlink(f"/proc/{sup}/fd/{fd}").startswith("mnt:[") and
             os.readlink(f"/proc/{sup}/fd/{fd}") != own]
    assert bases, "the supervisor holds no mount namespace to fork inits in"
    assert all(_vcd_ns_mounts_in(b) == 0 for b in bases)


# --- the init forker (initforker.py) ----------------------------------------------------

FORKER_PHASE = "supervisor: clone by the init forker, id maps"
NS_LINKS = ("user", "pid", "pid_for_children", "mnt", "net", "uts", "ipc", "cgroup", "time",
            "time_for_children")


def _stat_of(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _forker_of(sup: int) -> int | None:
    """The supervisor worker's living init forker that clones a default vserver's init:
    vsinit, or initforker.py where vsinit is not built (the Python one may run beside
    vsinit, for the plans vsinit does not take, whatever the order of their pids)."""
    found: dict[bytes, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state, ppid = _stat_of(int(entry))[:2]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(ppid) != sup or state == "Z":
            continue
        for mark in (b"vsinit\0--serve", b"initforker.py\0--serve"):
            if mark in cmdline:
                found[mark] = int(entry)
    return found.get(b"vsinit\0--serve", found.get(b"initforker.py\0--serve"))


def _phase_names(backend) -> list[str]:
    return [name for name, _, _ in backend.last_phases]


def test_unprivileged_init_is_cloned_by_the_init_forker_as_the_supervisors_child(
        backend, make_spec, started, monkeypatch):
    monkeypatch.setenv("VCD_START_PHASES", "1")
    spec = started(make_spec())
    assert FORKER_PHASE in _phase_names(backend), _phase_names(backend)
    sup = backend.supervisor_pid()
    assert _forker_of(sup) is not None
    init = backend.init_pid(spec.xid)
    # CLONE_PARENT: the supervisor waits for it and learns how it ended, as for its own fork
    assert int(_stat_of(init)[1]) == sup
    # nothing of the forker's reached init (its socket, namespace and cgroup descriptors,
    # the error pipe that SCM_RIGHTS delivers without close-on-exec): the console only
    links = {fd: os.readlink(f"/proc/{init}/fd/{fd}") for fd in os.listdir(f"/proc/{init}/fd")}
    assert sorted(links) == ["0", "1", "2"], links


def _seccomp_status(pid: int) -> tuple[str, str]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if line.startswith("Seccomp"))
    return fields["Seccomp"].strip(), fields["Seccomp_filters"].strip()


def test_init_cloned_by_the_forker_is_born_with_the_default_filter_and_loads_no_second(
        backend, make_spec, started, monkeypatch):
    monkeypatch.setenv("VCD_START_PHASES", "1")
    spec = started(make_spec())
    names = _phase_names(backend)
    assert FORKER_PHASE in names and "init: seccomp load" not in names, names
    assert _seccomp_status(backend.init_pid(spec.xid)) == ("2", "1")
    # a filter no process can shed: a context with another filter (syslog allowed) or
    # none is forked by the supervisor, and loads its own
    syslog = started(make_spec(bcaps=set(DEFAULT_BCAPS) | {"SYSLOG"}))
    names = _phase_names(backend)
    assert FORKER_PHASE not in names and "init: seccomp load" in names, names
    assert _seccomp_status(backend.init_pid(syslog.xid)) == ("2", "1")
    off = started(make_spec(seccomp=False))
    assert FORKER_PHASE not in _phase_names(backend)
    assert _seccomp_status(backend.init_pid(off.xid)) == ("0", "0")


GUEST_VIEW = (
    "cat /proc/1/mountinfo; echo ==; "
    "grep -E '^(Cap|Seccomp|NoNewPrivs|Uid|Gid|Groups|SigIgn|SigBlk|Umask)' /proc/1/status; echo ==; "
    "cat /proc/1/limits; echo ==; ls /proc/1/fd; echo ==; tr '\\0' '\\n' < /proc/1/environ; "
    "echo ==; stat -c '%n %f %u %g %h' /dev/* /dev/pts /dev/shm; echo ==; cat /proc/1/cgroup; "
    "echo ==; ls -l /proc/1/ns | sed 's/.*-> //; s/:.*//'; echo ==; umask; echo ==; "
    # what init takes over from its forker's process (not its namespaces)
    "cat /proc/1/oom_score_adj /proc/1/personality /proc/1/timerslack_ns "
    "/proc/1/coredump_filter; cut -d' ' -f18,19,40,41 /proc/1/stat; "
    "grep -E '^(Cpus|Mems)_allowed_list|^Speculation|^THP' /proc/1/status; echo ==; "
    # VIRT_UPTIME: init's clocks start at its exec, and whoever enters shares them
    "[ \"$(readlink /proc/1/ns/time)\" = \"$(readlink /proc/self/ns/time)\" ] && "
    "echo entered-in-the-time-namespace-of-init; "
    "echo ==; cut -d' ' -f1 /proc/uptime")


def _guest_view(run_sh, xid: int, skip_mount: str) -> list[list[str]]:
    """What init of xid holds, seen from inside, without what differs by nature between
    two contexts (mount ids, device numbers, the one spec mount ``skip_mount``)."""
    status, out = run_sh(xid, GUEST_VIEW)
    assert status == 0, out
    parts = [p.strip().splitlines() for p in out.split("==")]
    mounts = []
    for line in parts[0]:
        f = line.split()
        if f[4] == skip_mount:
            continue
        sep = f.index("-")
        # a tmpfs made inside shows its owner, the context's host id range
        superopts = re.sub(r"\b([ug]id)=\d+", r"\1=N", f[sep + 3])
        root = "/PTY" if f[4] == "/dev/console" else f[3]     # its own pty's number
        mounts.append(" ".join([root, f[4], f[5], *f[6:sep], f[sep + 1], superopts]))
    return [mounts, *parts[1:]]


# the plan's other parts vsinit takes: its own network namespace (sysfs mounted inside,
# /proc/sys/net writable, loopback up, ping_group_range), IPC sysctls, rlimits, uname
PLAN_PARTS = dict(flags={"VIRT_UPTIME", "HIDE_NETIF"}, ccaps={"RAW_ICMP"},
                  limits=[Limit("SHMEM", hard=65536), Limit("NSEMS", hard=100),
                          Limit("NOFILE", 500, 1000), Limit("NPROC", 300, 400)],
                  uname={"NODENAME": "guest-node", "DOMAINNAME": "guest.example"})
PLAN_VIEW = (
    "cat /proc/sys/kernel/hostname /proc/sys/kernel/domainname /proc/sys/kernel/shmall "
    "/proc/sys/kernel/sem; cat /proc/sys/net/ipv4/ping_group_range 2>&1; "
    "cat /sys/class/net/lo/flags; ls /sys/class/net; "
    "awk '$5 == \"/proc/sys/net\" {print \"net-sysctls\", substr($6, 1, 2)}' /proc/self/mountinfo")


@pytest.mark.parametrize("parts", [{}, PLAN_PARTS], ids=["default", "netns-sysctls-limits"])
def test_an_init_of_the_c_forker_holds_what_an_init_of_the_python_forker_holds(
        backend, make_spec, started, monkeypatch, run_sh, parts):
    """vsinit.c repeats spawn.run_init's steps in C for the common plans: the guest must
    not tell which one made its init (mounts and their options, masks, credentials,
    bounding set, seccomp, limits, descriptors, environment, /dev, cgroups, namespaces)."""
    assert NativeForker.available(), "make setup builds libvserver/native/vsinit"
    monkeypatch.setenv("VCD_START_PHASES", "1")
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    native = started(make_spec(**parts))
    assert "forker: parse the plan" in _phase_names(backend), _phase_names(backend)
    # a spec mount: a plan only the Python forker takes
    extra = "/mnt/vcd-python-forker"
    python = started(make_spec(mounts=[Mount("tmpfs", extra, "tmpfs", "size=64k")], **parts))
    assert "forker: unpickle the plan" in _phase_names(backend), _phase_names(backend)
    a, b = _guest_view(run_sh, native.xid, extra), _guest_view(run_sh, python.xid, extra)
    since = time.clock_gettime(time.CLOCK_BOOTTIME) - before
    # VIRT_UPTIME: /proc/uptime counts from init's exec, not from the host's boot
    for view in (a, b):
        assert 0 <= float(view.pop()[0]) <= since + 1, (view, since)
        assert view[-1] == ["entered-in-the-time-namespace-of-init"], view[-1]
    assert len(a) == len(b)
    for part_a, part_b in zip(a, b):
        assert part_a == part_b
    for spec in (native, python):
        assert run_sh(spec.xid, "hostname")[1].strip() == \
            spec.uname.get("NODENAME", spec.name)
    if parts:
        views = [run_sh(spec.xid, PLAN_VIEW) for spec in (native, python)]
        assert views[0] == views[1]
        status, out = views[0]
        assert status == 0 and out.split()[:2] == ["guest-node", "guest.example"], out
        # /proc/sys/net stays writable (its own namespace's); loopback up (IFF_UP|LOOPBACK)
        assert "net-sysctls rw" in out and "0x9" in out.split(), out


def test_init_forker_is_in_no_cgroup_and_no_namespace_of_a_context(backend, make_spec,
                                                                   started):
    """It serves every start of the host: a context's frozen freezer group, memory limit or
    CPU quota must never hold it, and it joins none of a context's namespaces."""
    spec = started(make_spec())
    started(make_spec(flags=set()))     # without VIRT_UPTIME: no time namespace
    sup = backend.supervisor_pid()
    forker = _forker_of(sup)
    assert forker is not None
    assert _groups_of_pid(forker) == _groups_of_pid(sup)
    for ns in NS_LINKS:
        assert os.readlink(f"/proc/{forker}/ns/{ns}") == os.readlink(f"/proc/{sup}/ns/{ns}"), ns
    init = backend.init_pid(spec.xid)
    held = {os.readlink(f"/proc/{forker}/fd/{fd}") for fd in os.listdir(f"/proc/{forker}/fd")}
    theirs = {os.readlink(f"/proc/{init}/ns/{ns}") for ns in NS_LINKS}
    assert not held & theirs, held & theirs
    assert not [h for h in held if h.startswith("/sys/fs/cgroup")], held


def test_start_works_when_the_init_forker_was_killed_and_a_new_one_takes_over(
        backend, make_spec, started, monkeypatch, run_sh):
    monkeypatch.setenv("VCD_START_PHASES", "1")
    started(make_spec())
    sup = backend.supervisor_pid()
    forker = _forker_of(sup)
    assert forker is not None
    os.kill(forker, signal.SIGKILL)
    spec = started(make_spec())
    # forked by the supervisor itself this time
    assert FORKER_PHASE not in _phase_names(backend)
    assert "supervisor: clone3" in _phase_names(backend), _phase_names(backend)
    assert run_sh(spec.xid, "hostname")[1].strip() == spec.name
    spec = started(make_spec())
    assert FORKER_PHASE in _phase_names(backend), _phase_names(backend)
    assert _forker_of(sup) not in (None, forker)
    assert run_sh(spec.xid, "hostname")[1].strip() == spec.name


def test_init_forker_ends_with_its_supervisor_worker(backend, make_spec, started, wait):
    started(make_spec())
    sup = backend.supervisor_pid()
    forker = _forker_of(sup)
    assert forker is not None
    pidfd = os.pidfd_open(forker)
    try:
        os.kill(sup, signal.SIGKILL)
        # its parent death signal; the keeper (a child subreaper) reaps it
        wait(lambda: select.select([pidfd], [], [], 0)[0])
    finally:
        os.close(pidfd)
    wait(lambda: backend.supervisor_pid() != sup)


def _seccomp_of(pid: int) -> tuple[str, str]:
    """(mode, number of filters) from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith("Seccomp"))
    return fields["Seccomp"].strip(), fields["Seccomp_filters"].strip()


def test_inits_the_forker_clones_inherit_its_one_seccomp_filter_and_load_no_copy(
        backend, make_spec, started, monkeypatch):
    """The forker runs under the default filter: every G it clones is born under that
    one BPF program (one filter in init's chain, not the forker's and a copy of its own;
    a filter is 5-8 KiB of kernel memory a vserver). A spec with another filter (SYSLOG
    granted) or none is forked by the supervisor and loads its own."""
    monkeypatch.setenv("VCD_START_PHASES", "1")
    inits = []
    for _ in range(2):
        spec = started(make_spec())
        assert FORKER_PHASE in _phase_names(backend), _phase_names(backend)
        assert "init: seccomp load" not in _phase_names(backend)
        inits.append(backend.init_pid(spec.xid))
    forker = _forker_of(backend.supervisor_pid())
    assert forker is not None and _seccomp_of(forker) == ("2", "1")
    for init in inits:
        assert _seccomp_of(init) == ("2", "1"), init
    for spec, want in ((make_spec(bcaps=set(make_spec().bcaps) | {"SYSLOG"}), ("2", "1")),
                       (make_spec(seccomp=False), ("0", "0"))):
        started(spec)
        assert FORKER_PHASE not in _phase_names(backend), _phase_names(backend)
        assert _seccomp_of(backend.init_pid(spec.xid)) == want, spec


def test_every_handle_is_a_hard_link_of_one_mount_point_file(backend, make_spec, started):
    """A handle's mount point is a name, not a tmpfs inode of its own (~750 bytes of
    kernel memory no reclaim frees, seven a vserver): every name below a context's
    directory is a link of the one mount point file (readdir gives the inode below the
    mount)."""
    from libvserver.native import handles
    specs = [started(make_spec()) for _ in range(2)]
    root = handles.ns_root(backend.state_dir)
    one = os.stat(root / handles.MOUNTPOINT)
    for spec in specs:
        with os.scandir(root / str(spec.xid)) as it:
            below = {e.name: e.inode() for e in it}
        assert len(below) >= 5 and set(below.values()) == {one.st_ino}, below
        kept = handles.load(backend.state_dir, spec.xid)
        assert kept is not None and set(kept.ns) >= {"user", "pid", "mnt", "uts", "ipc"}
        init = backend.init_pid(spec.xid)
        for name, path in kept.ns.items():    # each init's namespace, not the file below
            assert os.stat(path).st_ino == os.stat(f"/proc/{init}/ns/{name}").st_ino, path
