"""Entering a running context cleanly (libvserver.native.enter, handles): the entering
process holds nothing of the caller, cannot be taken over from inside, and takes its
privileges and namespaces from what the context was started with, never from the guest."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from libvserver.api import CAP_NUMBERS, Limit, NotRunning
from libvserver.native import enter, entercore, handles
from libvserver.native.backend import HANDLES_WAIT
from libvserver.native.namespaces import NS_FLAGS


@pytest.fixture(autouse=True, params=["forked by the caller", "forked by the entry server",
                                      "forked by the Python entry server"])
def entry_path(request, monkeypatch):
    """Every test here three times: E1 forked by this process (a one-shot caller: vcc
    login, a task runner) and by an entry server (what a daemon worker uses): vsinit
    --enter, the C one, and the Python one it stands for (entercore.serve), which serves
    where vsinit is not built."""
    if request.param.endswith("server"):
        if "Python" in request.param:
            monkeypatch.setenv(entercore.NATIVE_ENV, "0")
        else:
            assert entercore.native_program(), "make setup builds libvserver/native/vsinit"
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
    # the guest's own boot done (/etc/init.d/rcS, whose descriptors the probe would take:
    # a start now returns before a loaded machine has run it): init alone, no respawn
    wait(lambda: len(backend.layout.pids(spec.xid)) == 1)
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
    # exited has no program left (ENOENT, or ESRCH while the kernel still tears it down);
    # before exec (the caller's Python), never
    attached = {line.split()[-1] for line in log.splitlines() if line.startswith("ATTACHED")}
    assert attached <= {"/bin/busybox", "(ENOENT)", "(ESRCH)"}, log


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


def _mounts_at_or_below(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f
                if line.split()[4] == str(path) or line.split()[4].startswith(f"{path}/")]


def test_handles_make_no_tmpfs_per_context_and_a_stop_leaves_no_mount(backend, make_spec,
                                                                     started, wait):
    """The handles of a context are binds below one bind of its directory on the shared
    tmpfs (a superblock per context grows every memory cgroup's shrinker array); one
    umount of that bind takes them all."""
    spec = started(make_spec())
    d = handles.ns_dir(backend.state_dir, spec.xid)
    assert os.stat(d).st_dev == os.stat(handles.ns_root(backend.state_dir)).st_dev
    kept = _mounts_at_or_below(d)
    assert len(kept) == 1 + len(handles.load(backend.state_dir, spec.xid).ns), kept
    assert kept[0].split()[4] == str(d) and " - tmpfs vcd-ns " in kept[0], kept
    backend.stop(spec.xid, ["/bin/true"], timeout=0)
    wait(lambda: not d.exists())
    assert _mounts_at_or_below(d) == []


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
    """[] once pid has ended (a passing process of the exec that listed it)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(line.split()[1:] for line in f if line.startswith("NSpid:"))
    except FileNotFoundError:
        return []


def test_guest_process_claiming_pid_1_of_its_own_namespace_is_not_init(
        backend, make_spec, started, wait):
    import signal
    spec = started(make_spec(bcaps={"SYS_ADMIN"} | set(make_spec().bcaps)))
    init = backend.init_pid(spec.xid)
    backend.exec(spec.xid, ["/bin/sh", "-c", "unshare -p -f sleep 1000 >/dev/null 2>&1 &"])
    # a process of the guest that is PID 1 of a PID namespace of its own
    nested = wait(lambda: [p for p in backend.layout.pids(spec.xid)
                           if len(n := _nspid(p)) == 3 and n[-1] == "1"])
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


def test_entry_into_a_frozen_context_holds_up_no_entry_into_another(
        backend, make_spec, started, rootfs, tmp_path):
    """The entering process waits in the frozen context's groups, never what forks it
    (the caller, or the entry server every entry of a daemon worker goes through)."""
    frozen = started(make_spec())
    other_vdir = tmp_path / "other-vdir"
    shutil.copytree(rootfs, other_vdir, symlinks=True)
    other = started(make_spec(vdir=other_vdir))
    layout = backend.layout
    v1_freezer = layout.by_ctrl.get("freezer")
    assert layout.freeze(frozen.xid, True)
    if v1_freezer is not None and v1_freezer.version == 1:    # frozen in both, where both are
        (layout.path("freezer", frozen.xid) / "freezer.state").write_text("FROZEN")
    results: dict = {}
    into_frozen = threading.Thread(target=lambda: results.update(
        frozen=backend.exec(frozen.xid, ["/bin/true"], timeout=60)))
    into_other = threading.Thread(target=lambda: results.update(
        other=backend.exec(other.xid, ["/bin/hostname"], timeout=60)))
    try:
        into_frozen.start()
        time.sleep(0.5)     # its entering process exists (and is frozen) by now
        into_other.start()
        into_other.join(30)
        assert not into_other.is_alive(), "an entry into another context waited for the frozen one"
        assert results["other"].output.strip() == other.name.encode()
        assert into_frozen.is_alive()
    finally:
        if v1_freezer is not None and v1_freezer.version == 1:
            (layout.path("freezer", frozen.xid) / "freezer.state").write_text("THAWED")
        layout.freeze(frozen.xid, False)
        into_frozen.join(60)
        into_other.join(60)
    assert results["frozen"].status == 0


def test_entry_server_is_no_oom_victim_of_a_context_held_at_its_memory_limit(
        backend, make_spec, started, run_sh):
    # the guest fills its memory limit with tmpfs pages, which no process of its own
    # holds: the memory cgroup's OOM killer then takes the largest process it finds in
    # the group; the entry server (it serves every tenant of the worker) must not be one
    enter.use_entry_server()
    server = enter._entry_server()
    assert server is not None and server.proc is not None
    before = server.proc.pid
    spec = started(make_spec(limits=[Limit("RSS", 48 * 1024, 48 * 1024)]))
    _, out = run_sh(spec.xid, "dd if=/dev/zero of=/dev/shm/fill bs=1M count=100; "
                              "ls -l /dev/shm/fill", timeout=30)
    assert "fill" in out, out
    for _ in range(20):
        # the entering process itself may well be killed (137) or fail to enter (126),
        # and so may the guest's init: a C entering process is smaller than init
        try:
            backend.exec(spec.xid, ["/bin/true"], timeout=10)
        except NotRunning:
            break
        finally:
            assert server.proc is not None and server.proc.pid == before
            assert server.proc.poll() is None


def test_entry_works_when_the_callers_descriptors_are_numbered_above_1024(
        backend, make_spec, started):
    # a daemon worker holds up to 1024 client connections: the pipes of a vx.exec then
    # get numbers that select()'s 1024-bit sets cannot hold
    spec = started(make_spec())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    filler: list[int] = []
    try:
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        filler.append(null)
        while filler[-1] < 1100:
            filler.append(os.dup(null))
        r = backend.exec(spec.xid, ["/bin/sh", "-c", "echo in; cat"], stdin=b"fed\n",
                         timeout=20)
        assert (r.status, r.output) == (0, b"in\nfed\n")
        r = backend.exec(spec.xid, ["/bin/sleep", "30"], timeout=1)
        assert r.timed_out and r.status == 137
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not [p for p in backend.layout.pids(spec.xid)
                if Path(f"/proc/{p}/cmdline").read_bytes() == b"/bin/sleep\x0030\x00"]


def test_entry_server_restarted_by_a_thread_outlives_that_thread(backend, make_spec, started):
    # a group method (vg.*) enters from pool threads, one of which may restart a server
    # that died; the pool's threads end with the call, the server must not end with them
    enter.use_entry_server()
    spec = started(make_spec())
    server = enter._entry_server()
    assert server is not None and server.proc is not None
    server.proc.kill()
    server.proc.wait()
    results = []
    worker = threading.Thread(
        target=lambda: results.append(backend.exec(spec.xid, ["/bin/true"]).status))
    worker.start()
    worker.join()
    assert results == [0]
    restarted = server.proc
    assert restarted is not None
    with pytest.raises(subprocess.TimeoutExpired):
        restarted.wait(timeout=2)
    assert backend.exec(spec.xid, ["/bin/hostname"]).output.strip() == spec.name.encode()
    assert server.proc is restarted


def test_entry_server_ends_when_the_process_that_started_it_is_killed():
    root = Path(__file__).resolve().parents[2]
    caller = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\n"
         f"sys.path.insert(0, {str(root)!r})\n"
         "from libvserver.native import enter\n"
         "enter.use_entry_server()\n"
         "print(enter._entry_server().proc.pid, flush=True)\n"
         "time.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        server = int(caller.stdout.readline())
        pidfd = os.pidfd_open(server)
    finally:
        caller.kill()
        caller.wait()
    try:
        # its end of file on the socket: nobody holds the caller's end any more
        assert select.select([pidfd], [], [], 30)[0], "the entry server outlived its caller"
    finally:
        os.close(pidfd)


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


# -- an entry during a start -------------------------------------------------------------

_PTRACE_SYSCALL, _PTRACE_DETACH = 24, 17
_PTRACE_SEIZE, _PTRACE_INTERRUPT, _PTRACE_GET_SYSCALL_INFO = 0x4206, 0x4207, 0x420E
_PTRACE_O_TRACESYSGOOD = 1
_PTRACE_CONT, _PTRACE_GETEVENTMSG = 7, 0x4201
# a clone/fork of a tracee stops it (PTRACE_EVENT_FORK 1, VFORK 2, CLONE 3) and the new
# process starts traced by us
_PTRACE_O_TRACEFORKS = 2 | 4 | 8
_PTRACE_EVENT_STOP = 128
_WALL = 0x40000000
# per architecture: (pivot_root, execve)
_SYSCALL_NR = {"x86_64": (155, 59), "aarch64": (41, 221)}


class _SyscallStop:
    """Hold a process (not our child) at the entry of one system call with ptrace: the
    calls, waits and the detach all come from the calling thread, as ptrace requires."""

    def __init__(self, pid: int, attached: bool = False, options: int = 0) -> None:
        """Seize ``pid`` and stop it, or (``attached``) take over one we trace already,
        stopped; ``options``: PTRACE_O_* besides TRACESYSGOOD (seized ones keep running)."""
        import ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p,
                                     ctypes.c_void_p]
        self.libc.ptrace.restype = ctypes.c_long
        self.info = ctypes.create_string_buffer(88)
        self.pid = pid
        self.detached = False
        if attached:
            return
        self._call(_PTRACE_SEIZE, None, _PTRACE_O_TRACESYSGOOD | options)
        if not options:
            self._call(_PTRACE_INTERRUPT)
            os.waitpid(pid, _WALL)      # its first stop

    def next_child(self, deadline: float) -> int | None:
        """Let this tracee (seized with _PTRACE_O_TRACEFORKS) run until it clones or
        forks: the new process's pid, stopped and traced by us; None at the deadline.
        Signals that stop it on the way are delivered."""
        import ctypes
        while time.monotonic() < deadline:
            got, status = os.waitpid(self.pid, _WALL | os.WNOHANG)
            if not got:
                time.sleep(0.0005)
                continue
            if not os.WIFSTOPPED(status):
                raise OSError(f"process {self.pid} ended: status {status:#x}")
            event = status >> 16
            if event in (1, 2, 3):
                msg = ctypes.c_ulong()
                self._call(_PTRACE_GETEVENTMSG, None, ctypes.addressof(msg))
                child = msg.value
                os.waitpid(child, _WALL)    # its first stop (PTRACE_EVENT_STOP)
                self._call(_PTRACE_CONT, None, 0)
                return child
            self._call(_PTRACE_CONT, None, 0 if event else os.WSTOPSIG(status))
        return None

    def release(self) -> None:
        """Detach a tracee that is running (a maker let go on with PTRACE_CONT): stopped
        first, as detaching wants (one already stopped is detach()ed)."""
        import signal as sig
        self.detached = True
        try:
            self._call(_PTRACE_INTERRUPT)
        except ProcessLookupError:
            return
        while True:
            _, status = os.waitpid(self.pid, _WALL)
            if not os.WIFSTOPPED(status):
                return
            event, signum = status >> 16, os.WSTOPSIG(status)
            if event == _PTRACE_EVENT_STOP or event:
                self._call(_PTRACE_DETACH, None, 0)
                return
            if signum == sig.SIGTRAP | 0x80:
                self._call(_PTRACE_DETACH, None, 0)
                return
            self._call(_PTRACE_DETACH, None, signum)    # a signal for it: delivered
            return

    def _call(self, request: int, addr=None, data=None) -> int:
        import ctypes
        r = self.libc.ptrace(request, self.pid, addr, data)
        if r == -1:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return r

    def until(self, numbers: set[int]) -> int:
        """Resume until the entry of one of ``numbers``; returns the number it stops at."""
        import signal as sig
        inject = 0
        while True:
            self._call(_PTRACE_SYSCALL, None, inject)
            inject = 0
            end = time.monotonic() + 20
            while True:
                got, status = os.waitpid(self.pid, _WALL | os.WNOHANG)
                if got:
                    break
                if time.monotonic() > end:
                    raise OSError(f"process {self.pid} made none of {numbers} in 20 s")
                time.sleep(0.001)
            if not os.WIFSTOPPED(status):
                raise OSError(f"process {self.pid} ended: status {status:#x}")
            if os.WSTOPSIG(status) == sig.SIGTRAP | 0x80:
                self._call(_PTRACE_GET_SYSCALL_INFO, 88, self.info)
                op = self.info.raw[0]
                nr = int.from_bytes(self.info.raw[24:32], "little")
                if op == 1 and nr in numbers:    # PTRACE_SYSCALL_INFO_ENTRY
                    return nr
            elif status >> 16 == 0:
                inject = os.WSTOPSIG(status)     # a signal for it: deliver it

    def detach(self) -> None:
        self.detached = True
        try:
            self._call(_PTRACE_DETACH)
        except ProcessLookupError:
            pass    # it ended meanwhile: nothing to let go


def _is_pid1(pid: int) -> bool:
    """Whether host pid ``pid`` is PID 1 of its innermost PID namespace."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return any(line.startswith("NSpid:") and line.split()[-1] == "1"
               for line in status.splitlines())


def _init_makers(backend) -> list[int]:
    """The processes that clone a context's PID 1: the supervisor (privileged contexts,
    and any it forks itself) and its init forkers."""
    sup = backend.supervisor_pid()
    out = [sup]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == sup and (b"vsinit\0--serve" in cmdline or b"initforker.py\0--serve" in cmdline):
            out.append(int(entry))
    return out


@contextlib.contextmanager
def _init_held_at_pivot_root(backend, spec):
    """Start spec in a thread and hold its PID 1 at the entry of pivot_root (it still
    has the host's root then) until the block ends; yields the holder (detach() early
    to let it go on). The start has ended when the block has, the context may run.
    PID 1 is caught as it is made: the supervisor and its init forkers are traced until
    one of them clones a PID 1 (a C init reaches its pivot_root ~1.5 ms after its
    birth, too soon to be found by looking)."""
    if platform.machine() not in _SYSCALL_NR:
        pytest.skip(f"no system call numbers for {platform.machine()}")
    pivot_root, execve = _SYSCALL_NR[platform.machine()]
    makers = [_SyscallStop(pid, options=_PTRACE_O_TRACEFORKS) for pid in _init_makers(backend)]
    starting = threading.Thread(target=backend.start, args=(spec,))
    held = None
    try:
        starting.start()
        deadline = time.monotonic() + 60
        while held is None and time.monotonic() < deadline:
            for maker in makers:
                child = maker.next_child(time.monotonic() + 0.01)
                if child is None:
                    continue
                candidate = _SyscallStop(child, attached=True)
                if _is_pid1(child):
                    held = candidate
                    break
                candidate.release()     # something else it forked
        assert held is not None, "no PID 1 was cloned"
        for maker in makers:
            maker.release()
        assert held.until({pivot_root, execve}) == pivot_root
        assert os.stat(f"/proc/{held.pid}/root").st_ino == os.stat("/").st_ino
        yield held
    finally:
        for maker in makers:
            if not maker.detached:
                maker.release()
        if held is not None and not held.detached:
            held.detach()   # stopped at a system call: detached as it is
        starting.join(60)


@pytest.mark.parametrize("privileged", [False, True], ids=["user namespace", "privileged"])
def test_no_one_enters_a_starting_context_before_its_init_left_the_hosts_root(
        backend, make_spec, vdir, privileged):
    """Handles kept while PID 1 still builds the guest's mounts (before its pivot_root)
    name a mount namespace whose root is the host's "/": a vx.exec then ran the host's
    programs on the host's files, and a directory it changed into outlived the
    pivot_root. Init is held at its pivot_root here; the command waits until init was
    exec'd (however long a start may take), then enters and sees the guest's root."""
    (vdir / "guest-root-marker").write_text("guest\n")
    spec = make_spec(privileged=privileged)
    try:
        with _init_held_at_pivot_root(backend, spec) as held:
            entered: list = []
            entering = threading.Thread(target=lambda: entered.append(
                backend.exec(spec.xid, ["/bin/cat", "/guest-root-marker"], timeout=20)))
            entering.start()
            # longer than an entry waits for handles not kept yet: kept ones it waits for
            entering.join(HANDLES_WAIT + 1)
            early = list(entered)
            unpublished = handles.load(backend.state_dir, spec.xid) is None
            held.detach()
            entering.join(60)
        assert early == [], f"entered while init was still on the host's root: {early}"
        assert unpublished
        assert entered and entered[0].status == 0 and entered[0].output == b"guest\n", entered
    finally:
        if backend.is_running(spec.xid):
            backend.stop(spec.xid, [], timeout=5)


def test_handles_loaded_before_a_restart_never_enter_the_next_boot_while_it_is_built(
        backend, make_spec, started, vdir, wait):
    """A caller that loaded the handles (vx.exec, the halt command of a stop) just
    before the context ended and started again opens them at the same paths as the next
    boot binds its own, while its init is still on the host's root: such an entry is
    refused, never run there."""
    (vdir / "guest-root-marker").write_text("guest\n")
    spec = started(make_spec())
    old = handles.load(backend.state_dir, spec.xid)
    assert old is not None
    backend.stop(spec.xid, [], timeout=5)
    results: list = []

    def enter_with_old_handles() -> None:
        try:
            results.append(backend._exec(spec.xid, ["/bin/cat", "/guest-root-marker"], 20,
                                         1 << 20, kept=old))
        except NotRunning:
            results.append(None)

    with _init_held_at_pivot_root(backend, spec) as held:
        wait(lambda: set(old.ns) <= {e.name for e in os.scandir(old.ns["mnt"].parent)})
        entering = threading.Thread(target=enter_with_old_handles)
        entering.start()
        # refused at once, or waiting for this boot to be published: never run meanwhile
        entering.join(3)
        early = list(results)
        held.detach()
        entering.join(60)
    assert early in ([], [None]), early
    assert results and (results[0] is None or results[0].output == b"guest\n"), results
