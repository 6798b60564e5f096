"""vsinit --enter (libvserver/native/vsinit.c), the C entry server, against the Python one
it stands for (entercore.serve, run_e1, _e2): a command must not be able to tell which
one put it into its vserver."""

from __future__ import annotations

import os
import signal
import time

import pytest

from libvserver.native import enter, entercore

VIEW = (
    "grep -E '^(Cap|Seccomp|NoNewPrivs|Uid|Gid|Groups|SigIgn|SigBlk)' /proc/self/status; "
    "echo ==; cat /proc/self/limits; echo ==; ls /proc/self/fd; echo ==; "
    "tr '\\0' '\\n' < /proc/self/environ | sort; echo ==; cat /proc/self/cgroup; echo ==; "
    "ls -l /proc/self/ns | sed 's/.*-> //'; echo ==; pwd; umask; echo ==; "
    "ps -o pid,ppid,sid,comm | grep -c .; echo ==; cut -d' ' -f1 /proc/uptime | cut -d. -f1")


def _entered_view(backend, xid: int, native: bool, monkeypatch) -> tuple[int, str]:
    enter.stop_entry_server()
    monkeypatch.setenv(entercore.NATIVE_ENV, "1" if native else "0")
    enter.use_entry_server()
    try:
        server = enter._entry_server()
        assert server is not None and bool(server.native) == native
        r = backend.exec(xid, ["/bin/sh", "-c", VIEW], stdin=b"")
        return r.status, r.output.decode()
    finally:
        enter.stop_entry_server()


def test_a_command_entered_by_the_c_entry_server_holds_what_the_python_one_gives(
        backend, make_spec, started, monkeypatch):
    assert entercore.native_program(), "make setup builds libvserver/native/vsinit"
    spec = started(make_spec())
    native = _entered_view(backend, spec.xid, True, monkeypatch)
    python = _entered_view(backend, spec.xid, False, monkeypatch)
    assert native[0] == 0, native[1]
    *parts_c, uptime_c = native[1].split("==")
    *parts_py, uptime_py = python[1].split("==")
    for part_c, part_py in zip(parts_c, parts_py, strict=True):
        assert part_c == part_py
    # the context's clock (its time namespace): the two entries are a moment apart
    assert 0 <= int(uptime_py) - int(uptime_c) <= 5


@pytest.mark.parametrize("native", [True, False], ids=["C", "Python"])
def test_entered_command_status_and_missing_program_answers_agree(
        backend, make_spec, started, monkeypatch, native):
    spec = started(make_spec())
    enter.stop_entry_server()
    monkeypatch.setenv(entercore.NATIVE_ENV, "1" if native else "0")
    enter.use_entry_server()
    try:
        assert backend.exec(spec.xid, ["/bin/sh", "-c", "exit 7"]).status == 7
        r = backend.exec(spec.xid, ["/no/such/program"])
        assert (r.status, r.output) == (127, b"/no/such/program: No such file or directory\n")
        # argv[0] looked up in the command's PATH, as os.execvpe does
        r = backend.exec(spec.xid, ["hostname"])
        assert (r.status, r.output.strip()) == (0, spec.name.encode())
        r = backend.exec(spec.xid, ["/bin/sh", "-c", "kill -KILL $$"])
        assert r.status == 128 + 9
    finally:
        enter.stop_entry_server()


def test_a_command_of_more_arguments_than_vsinit_takes_is_entered_all_the_same(
        backend, make_spec, started, monkeypatch):
    spec = started(make_spec())
    enter.stop_entry_server()
    monkeypatch.setenv(entercore.NATIVE_ENV, "1")
    enter.use_entry_server()
    try:
        for count in (100, entercore.NATIVE_ENTRIES_MAX + 500):
            r = backend.exec(spec.xid, ["/bin/sh", "-c", 'echo $#', "sh", *["a"] * count])
            assert (r.status, r.output) == (0, f"{count}\n".encode())
    finally:
        enter.stop_entry_server()


@pytest.fixture(params=[True, False], ids=["C", "Python"])
def entry_server(request, monkeypatch):
    """The daemon's way in (an entry server), the C one or the Python one."""
    enter.stop_entry_server()
    monkeypatch.setenv(entercore.NATIVE_ENV, "1" if request.param else "0")
    enter.use_entry_server()
    server = enter._entry_server()
    assert server is not None and bool(server.native) == request.param
    yield request.param
    enter.stop_entry_server()


def test_a_long_program_name_that_cannot_be_run_is_named_whole_and_nothing_else(
        backend, make_spec, started, entry_server):
    # the message was cut into a 512-byte buffer and written with its uncut length: the
    # bytes after it (the entering process's stack) went to the tenant's output
    spec = started(make_spec())
    for name, why in ((f"/no/such/{'x' * 3000}", "No such file or directory"),
                      ("y" * 5000, "File name too long")):
        r = backend.exec(spec.xid, [name])
        assert (r.status, r.output) == (127, f"{name}: {why}\n".encode())


def test_a_command_past_the_entry_servers_datagram_is_entered_all_the_same(
        backend, make_spec, started, entry_server):
    # arguments of up to 128 KiB each, up to the kernel's 2 MiB in all: not one
    # SOCK_SEQPACKET datagram of the default socket buffer (~208 KiB)
    spec = started(make_spec())
    for count in (3, 12):
        args = ["a" * 120_000] * count
        r = backend.exec(spec.xid, ["/bin/sh", "-c", 'echo $#', "sh", *args])
        assert (r.status, r.output) == (0, f"{count}\n".encode())


class _GroupGone:
    """An entry whose cgroup2 group went away between the plan and the clone (a stop)."""
    def __init__(self, entry, fresh_image):
        self.entry, self.fresh_image = entry, fresh_image

    def plan(self, *args):
        plan = self.entry.plan(*args)
        plan.cgroup_v2 = plan.cgroup_v2 + "-removed-by-a-stop"
        return plan


def test_an_entry_whose_cgroup2_group_is_gone_is_refused_not_run_outside_it(
        backend, make_spec, started, entry_server):
    spec = started(make_spec())
    entry = backend.entry(spec.xid)
    try:
        if entry.layout.v2 is None:
            pytest.skip("no cgroup2 hierarchy")
        r = enter.run(_GroupGone(entry, entry.fresh_image), ["/bin/cat", "/proc/self/cgroup"],
                      20.0, 1 << 16)
    finally:
        entry.close()
    assert (r.status, r.entered) == (126, False), r.output
    assert r.output.startswith(b"cannot enter the context: "), r.output


def _children() -> set[int]:
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids |= {int(p) for p in f.read().split()}
        except FileNotFoundError:
            pass
    return pids


def test_an_entry_interrupted_while_it_awaits_the_server_leaves_no_answer_for_the_next(
        backend, make_spec, started, entry_server):
    # a caller interrupted between its request and the answer (a signal handler that
    # raises) left that answer in the socket: the next entry took it for its own E1
    spec = started(make_spec())
    server_pid = enter._entry_server().proc.pid
    before = _children()

    class Interrupted(Exception):
        pass

    def interrupt(*_):
        os.kill(server_pid, signal.SIGCONT)
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        os.kill(server_pid, signal.SIGSTOP)     # the answer comes only after the signal
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(Interrupted):
            backend.exec(spec.xid, ["/bin/echo", "first"])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    try:
        r = backend.exec(spec.xid, ["/bin/echo", "second"])
        assert (r.status, r.output) == (0, b"second\n")
    finally:
        server = enter._entry_server()
        # the interrupted request's E1 (its command ends at its closed output)
        for pid in _children() - before - {server.proc.pid if server and server.proc else 0}:
            for _ in range(200):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
                time.sleep(0.05)


def test_entering_process_relays_the_status_when_the_caller_stopped_reading_its_pid(
        backend, make_spec, started, entry_server):
    # E1 writes E2's pid to a pipe nobody reads any more: it must go on relaying E2's
    # status (EPIPE, as the Python E1, which ignores SIGPIPE), not die of SIGPIPE and
    # leave the command unwatched
    spec = started(make_spec())
    entry = backend.entry(spec.xid)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    os.close(pid_r)
    try:
        e1 = enter.spawn(entry, enter.Command(["/bin/sh", "-c", "exit 5"], enter.EXEC_ENV),
                         (null, null, null), pid_w=pid_w)
    finally:
        for fd in (null, pid_w):
            os.close(fd)
        entry.close()
    _, status = os.waitpid(e1, 0)
    assert os.waitstatus_to_exitcode(status) == 5


@pytest.fixture
def suid_dumpable_1():
    """fs.suid_dumpable=1 (a host that debugs set-user-ID programs) while the test runs:
    every change of credentials then makes the process dumpable again."""
    path = "/proc/sys/fs/suid_dumpable"
    with open(path) as f:
        saved = f.read().strip()
    with open(path, "w") as f:
        f.write("1")
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(saved)


@pytest.mark.parametrize("server", [True, False, None], ids=["C", "Python", "caller"])
def test_entering_process_is_not_dumpable_after_it_took_the_guests_credentials(
        backend, make_spec, started, monkeypatch, server, suid_dumpable_1):
    # E1 made itself non-dumpable before setns/setresuid/capset, and each of them made
    # it dumpable again where fs.suid_dumpable is 1: E2, its copy (for a caller-forked
    # E1 a copy of the caller's memory), then sat in the guest's PID namespace, open to
    # guest root's ptrace until its exec. E1 relays the command's status meanwhile: a
    # non-dumpable process's /proc files belong to root, a dumpable one's to its euid
    spec = started(make_spec())
    enter.stop_entry_server()
    if server is not None:
        monkeypatch.setenv(entercore.NATIVE_ENV, "1" if server else "0")
        enter.use_entry_server()
    entry = backend.entry(spec.xid)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    try:
        e1 = enter.spawn(entry, enter.Command(["/bin/sleep", "30"], enter.EXEC_ENV),
                         (null, null, null), pid_w=pid_w)
        os.close(pid_w)
        pid_w = -1
        e2 = int(os.read(pid_r, 64))   # E1 has its credentials and has forked E2
        try:
            assert os.stat(f"/proc/{e1}/status").st_uid == 0
        finally:
            os.kill(e2, signal.SIGKILL)
            os.waitpid(e1, 0)
    finally:
        for fd in (null, pid_r, pid_w):
            if fd >= 0:
                os.close(fd)
        entry.close()
        enter.stop_entry_server()
