"""The start and entry paths of issue 13: init born in its cgroups, helpers joining them
without a migration, the supervisor never left in a context's groups, phase timings."""

from __future__ import annotations

import os

from libvserver.native import namespaces


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
    assert "init: seccomp load" in names and "init: masks" in names, names
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
