"""Entering a running context cleanly (libvserver.native.enter, handles): the entering
process holds nothing of the caller, cannot be taken over from inside, and takes its
privileges and namespaces from what the context was started with, never from the guest."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from libvserver.api import CAP_NUMBERS
from libvserver.native import enter, handles
from libvserver.native.namespaces import NS_FLAGS


@pytest.fixture(autouse=True, params=["forked by the caller", "forked by the entry server"])
def entry_path(request):
    """Every test here twice: E1 forked by this process (a one-shot caller: vcc login, a
    task runner) and by an entry server (what a daemon worker uses)."""
    if request.param.endswith("server"):
        enter.use_entry_server()
    yield request.param
    enter.stop_entry_server()


def _mask(caps: set[str]) -> int:
    return sum(1 << CAP_NUMBERS[c] for c in caps)


def _capbnd(status: str) -> int:
    return int(next(line for line in status.splitlines()
                    if line.startswith("CapBnd:")).split()[1], 16)


def test_guest_cannot_take_descriptors_or_attach_to_entering_processes(
        backend, make_spec, started, vdir, probe_in, wait):
    probe_in(vdir)
    spec = make_spec()
    if "user" not in (handles.load(backend.state_dir, spec.xid) or handles.Kept(spec, 0, {})).ns:
        # without a user namespace, guest root with CAP_SYS_PTRACE is ptrace-capable over
        # every uid-0 process of its PID namespace; the boundary is the non-dumpable flag
        spec.bcaps.discard("SYS_PTRACE")
    started(spec)
    backend.exec(spec.xid, ["/bin/sh", "-c", "/bin/probe steal /tmp/steal.log 60 "
                                             ">/dev/null 2>&1 &"])
    log_file = vdir / "tmp" / "steal.log"     # read from the host: a reader inside is a target
    wait(lambda: log_file.exists() and "started" in log_file.read_text())
    for _ in range(60):
        assert backend.exec(spec.xid, ["true"]).status == 0
    log = log_file.read_text()
    # the exec'd `true` holds only 0-2: any descriptor 3..20 came from the entry itself
    assert "GOTFD" not in log, log
    # after exec, `true` (busybox) is a guest process like any other, and one that has
    # exited has no program left; before exec (the caller's Python), never
    attached = {line.split()[-1] for line in log.splitlines() if line.startswith("ATTACHED")}
    assert attached <= {"/bin/busybox", "(ENOENT)"}, log


def test_entered_command_holds_only_its_stdio(backend, make_spec, started):
    spec = started(make_spec())
    keep = os.open("/dev/null", os.O_RDONLY)     # an inheritable descriptor of the caller
    try:
        r = backend.exec(spec.xid, ["/bin/ls", "/proc/self/fd"])
    finally:
        os.close(keep)
    # 0-2 and the directory ls reads
    assert r.output.split() == [b"0", b"1", b"2", b"3"]


def test_guest_init_that_widens_its_bounding_set_gives_entered_commands_nothing(
        backend, make_spec, started, vdir, probe_in, wait):
    probe_in(vdir, "evilinit")
    spec = started(make_spec(init=["/bin/evilinit", "evilinit", "1"]))
    wait(lambda: _capbnd(backend.exec(spec.xid, ["/bin/cat", "/proc/1/status"])
                         .output.decode()) == (1 << (max(CAP_NUMBERS.values()) + 1)) - 1
         or _capbnd(backend.exec(spec.xid, ["/bin/cat", "/proc/1/status"]).output.decode())
         > _mask(spec.bcaps))
    status = backend.exec(spec.xid, ["/bin/cat", "/proc/self/status"]).output.decode()
    assert _capbnd(status) == _mask(spec.bcaps)
    r = backend.exec(spec.xid, ["/bin/mknod", "/tmp/sda", "b", "8", "0"])
    assert r.status != 0
    # halt runs with the same privileges and still stops the context
    out = backend.stop(spec.xid, ["/bin/sh", "-c", "grep CapBnd /proc/self/status"],
                       timeout=2)
    assert _capbnd(out) == _mask(spec.bcaps)
    assert not backend.is_running(spec.xid)


def test_entry_joins_the_namespaces_made_at_start_not_ones_init_made_later(
        backend, make_spec, started):
    spec = started(make_spec())
    kept = handles.load(backend.state_dir, spec.xid)
    assert kept is not None and kept.init_pid == backend.init_pid(spec.xid)
    assert {"mnt", "uts", "ipc", "pid"} <= set(kept.ns)
    for name, path in kept.ns.items():
        assert os.stat(path).st_ino == os.stat(f"/proc/{kept.init_pid}/ns/{name}").st_ino
        assert name in NS_FLAGS or name == "user"
    assert oct(os.stat(handles.spec_path(backend.state_dir, spec.xid)).st_mode & 0o777) == \
        "0o600"
    # a command that unshares its own mount namespace and stays: later entries still
    # see the context's mounts, not its private tmpfs
    backend.exec(spec.xid, ["/bin/sh", "-c", "unshare -m sh -c 'mount -t tmpfs x /mnt; "
                                             "touch /mnt/decoy; sleep 100' >/dev/null 2>&1 &"])
    time.sleep(0.3)
    assert backend.exec(spec.xid, ["/bin/ls", "/mnt"]).output == b""


def test_handles_and_spec_go_when_the_context_ends(backend, make_spec, started, wait):
    spec = started(make_spec())
    d = handles.ns_dir(backend.state_dir, spec.xid)
    assert d.is_dir()
    backend.stop(spec.xid, ["/bin/true"], timeout=0)
    wait(lambda: not d.exists())
    assert not handles.spec_path(backend.state_dir, spec.xid).exists()


def test_restarted_supervisor_finds_the_handles(backend, make_spec, started, wait):
    import signal
    spec = started(make_spec())
    old = backend.supervisor_pid()
    os.kill(old, signal.SIGTERM)
    wait(lambda: not os.path.exists(f"/proc/{old}") or
         open(f"/proc/{old}/stat").read().rsplit(")", 1)[1].split()[0] == "Z")
    assert backend.supervisor_pid() != old      # a new one, started on demand
    assert backend.exec(spec.xid, ["/bin/hostname"]).output.strip() == spec.name.encode()


def _nspid(pid: int) -> list[str]:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1:] for line in f if line.startswith("NSpid:"))


def test_guest_process_claiming_pid_1_of_its_own_namespace_is_not_init(
        backend, make_spec, started, wait):
    import signal
    spec = started(make_spec(bcaps={"SYS_ADMIN"} | set(make_spec().bcaps)))
    init = backend.init_pid(spec.xid)
    backend.exec(spec.xid, ["/bin/sh", "-c", "unshare -p -f sleep 1000 >/dev/null 2>&1 &"])
    # a process of the guest that is PID 1 of a PID namespace of its own
    nested = wait(lambda: [p for p in backend.layout.pids(spec.xid)
                           if len(_nspid(p)) == 3 and _nspid(p)[-1] == "1"])
    for _ in range(3):
        assert backend.init_pid(spec.xid) == init
    assert backend.stat(spec.xid).running
    # vx.kill names it by its pid in the context (what the guest's ps shows), not by 1
    in_ctx = int(_nspid(nested[0])[1])
    backend.kill(spec.xid, in_ctx, signal.SIGKILL)
    wait(lambda: nested[0] not in backend.layout.pids(spec.xid))
    assert backend.is_running(spec.xid) and backend.init_pid(spec.xid) == init


def test_handles_refuse_namespaces_a_guest_made_inside_its_user_namespace(tmp_path):
    """A hostile init that unshares before the supervisor keeps its namespaces is caught
    when the context has a user namespace: a nested one, or a namespace owned by another
    user namespace, is not what start made."""
    from libvserver.native import namespaces
    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            namespaces.unshare(namespaces.CLONE_NEWUSER)
            os.write(w, b"1")
            os.read(r2, 1)                      # our maps are written
            namespaces.unshare(namespaces.CLONE_NEWUSER)
            namespaces.unshare(namespaces.CLONE_NEWUTS)
            os.write(w, b"2")
            os.read(r2, 1)
        finally:
            os._exit(0)
    os.close(w)
    first = None
    try:
        assert os.read(r, 1) == b"1"
        first = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY)
        for m in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{m}", "w") as f:
                f.write("0 0 1\n")
        os.write(w2, b"g")
        assert os.read(r, 1) == b"2"
        made = Path(f"/proc/self/fd/{first}")
        handles._check_owners({"user": made})
        with pytest.raises(OSError, match="user namespace of init"):
            handles._check_owners({"user": Path(f"/proc/{pid}/ns/user")})
        with pytest.raises(OSError, match="uts namespace of init"):
            handles._check_owners({"user": made, "uts": Path(f"/proc/{pid}/ns/uts")})
    finally:
        os.write(w2, b"q")
        os.waitpid(pid, 0)
        for fd in (r, r2, w2) + ((first,) if first is not None else ()):
            os.close(fd)


def test_entered_command_is_root_inside_with_no_supplementary_groups(backend, make_spec,
                                                                      started):
    spec = started(make_spec())
    before = os.getgroups()
    os.setgroups([0, 4, 27])        # what the caller carries must not come along
    try:
        status = backend.exec(spec.xid, ["/bin/cat", "/proc/self/status"]).output.decode()
    finally:
        os.setgroups(before)
    fields = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()}
    assert fields["Uid"] == ["0"] * 4 and fields["Gid"] == ["0"] * 4
    assert fields["Groups"] == []
    assert fields["NoNewPrivs"] == ["0"] and fields["Seccomp"] == ["2"]
    assert int(fields["CapEff"][0], 16) == _mask(spec.bcaps)


def test_entry_refuses_when_the_namespace_handles_are_not_visible(backend, make_spec,
                                                                  started):
    """A caller in another mount namespace than the supervisor sees an empty handle
    directory: it must not run the command on the host instead."""
    from libvserver import LibvserverError
    from libvserver.native.namespaces import CLONE_NEWNS, MNT_DETACH, umount2, unshare
    spec = started(make_spec())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            unshare(CLONE_NEWNS)
            umount2(str(handles.ns_root(backend.state_dir)), MNT_DETACH)
            try:
                backend.exec(spec.xid, ["/bin/true"])
            except LibvserverError as e:
                os.write(w, str(e).encode())
                code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    message = os.read(r, 4096).decode()
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0, message
    assert "not visible" in message
    assert backend.exec(spec.xid, ["/bin/true"]).status == 0


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_entering_process_of_the_entry_server_is_the_callers_child(
        backend, make_spec, started, entry_path):
    spec = started(make_spec())
    entry = backend.entry(spec.xid)
    devnull = os.open("/dev/null", os.O_RDWR)
    try:
        e1 = enter.spawn(entry, enter.Command(["sleep", "30"], enter.EXEC_ENV),
                         (devnull, devnull, devnull))
    finally:
        entry.close()
        os.close(devnull)
    try:
        # its parent is this process, whoever forked it: waitpid and pidfds work as for a
        # fork of our own, and nothing of the server's is between
        assert _ppid(e1) == os.getpid()
    finally:
        os.kill(e1, 9)
        assert os.waitpid(e1, 0)[0] == e1


def test_killed_entry_server_is_replaced_by_the_next_entry(backend, make_spec, started):
    enter.use_entry_server()
    spec = started(make_spec())
    assert backend.exec(spec.xid, ["/bin/true"]).status == 0
    server = enter._entry_server()
    assert server is not None and server.proc is not None
    server.proc.kill()
    server.proc.wait()
    assert backend.exec(spec.xid, ["/bin/hostname"]).output.strip() == spec.name.encode()
    assert server.proc is not None and server.proc.poll() is None


def test_halt_command_runs_also_when_the_stop_waits_for_nothing(
        backend, make_spec, started, vdir):
    spec = started(make_spec())
    out = backend.stop(spec.xid, ["/bin/sh", "-c", "echo halting; touch /tmp/halted"],
                       timeout=0)
    assert out == "halting\n"
    assert (vdir / "tmp" / "halted").exists()
    assert not backend.is_running(spec.xid)


def test_pages_of_the_entering_side_are_never_charged_to_the_context(
        backend, make_spec, started, memcgs_charged_for):
    """The entry server moves itself into the context's v1 groups to clone E1 there; in
    the memory group a page it faulted meanwhile would be charged to the context and keep
    its memory cgroup, dying, after the stop. E1 moves itself into the memory group."""
    spec = started(make_spec())
    for _ in range(3):
        assert backend.exec(spec.xid, ["/bin/true"]).status == 0
    context = os.stat(backend.layout.path("memory", spec.xid)).st_ino
    server = enter._entry_server()
    outside = [os.getpid()] + ([server.proc.pid] if server is not None and server.proc else [])
    for pid in outside:
        assert context not in memcgs_charged_for(pid)
    # a process that entered is charged there
    r = backend.exec(spec.xid, ["/bin/sh", "-c", "sleep 30 & echo $!"])
    inside = [p for p in backend.layout.pids(spec.xid)
              if Path(f"/proc/{p}/comm").read_text().strip() == "sleep"]
    assert r.status == 0 and inside
    assert context in memcgs_charged_for(inside[0])
