"""Running a command inside a running context (vx.exec, halt, reboot, vcc login).

caller: opens the command's stdio on the host (/dev/null, pipes, a pty) and the
        namespace handles the supervisor kept, then forks E1.
E1:     not dumpable; closes every descriptor but stdio, the pid pipe and the
        handles; joins the context's cgroups (host side); setns() into the kept
        handles (the user namespace last); becomes the guest's root (uid/gid 0 inside
        the user namespace, no groups); the spec's bounding set; the seccomp filter;
        the spec's capabilities; forks E2 (a PID namespace applies to children only)
        and relays E2's status.  E1 stays in the host's PID namespace, where the guest
        cannot name it.
E2:     born with all of that: new session, stdio on 0-2, the spec's rlimits, exec.

E1 and E2 run entercore.py. Where the context has no user namespace and its bounding
set holds CAP_SYS_PTRACE, guest root could reach E2 before its exec whatever the
dumpable flag says, so E1 first execs a fresh interpreter (entercore.exec_fresh):
what it joins with is then the plan, never a copy of the caller's memory.

Nothing is taken from the guest: privileges come from the spec the context was
started with (handles.py), namespaces from the handles, stdio from the caller, and
no path inside the guest is resolved until the process holds only the guest's
credentials and descriptors.  Everything E1 and E2 run is imported before the fork,
so no import can read the guest's files.

The caller reads the combined output until E1 has exited plus a short grace:
a background process of the command may keep the pipe open forever, so EOF
is never awaited.  Output beyond the cap is drained and dropped so a flood
cannot block the command, and the timeout kills the command's session.
"""

from __future__ import annotations

import errno
import marshal
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..api import CAP_NUMBERS, ExecResult
from . import creds, entercore, limits
from .cgroups import Layout
from .handles import Kept
from .namespaces import (CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS,
                         CLONE_NEWPID, CLONE_NEWTIME, CLONE_NEWUSER, CLONE_NEWUTS)
from .seccomp import Program
from .spawn import keep_caps

OnOutput = Callable[[bytes], None]
EXEC_ENV = {"PATH": "/sbin:/bin:/usr/sbin:/usr/bin", "HOME": "/root", "TERM": "dumb"}
GRACE = 0.2
NS_CLONE = {"cgroup": CLONE_NEWCGROUP, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS,
            "net": CLONE_NEWNET, "pid": CLONE_NEWPID, "time": CLONE_NEWTIME,
            "mnt": CLONE_NEWNS, "user": CLONE_NEWUSER}
CAP_SYS_PTRACE = CAP_NUMBERS["SYS_PTRACE"]
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)   # root: past net.core.wmem_max


class Joiner(Protocol):
    """How a process becomes one of the context's: a plan for entercore."""

    def plan(self, cmd: "Command", stdio: tuple[int, int, int], ctty: bool,
             pid_w: int) -> entercore.Plan: ...


@dataclass
class Entry:
    """A native context to join: the kept handles (open), and what the spec says."""
    layout: Layout
    xid: int
    init_pid: int
    ns: list[tuple[str, int]]           # (type, open handle), in handles.NS_TYPES order
    keep: set[int]                      # bounding set
    rlimits: list[limits.RlimitPlan]
    seccomp: Program | None

    def plan(self, cmd: "Command", stdio: tuple[int, int, int], ctty: bool,
             pid_w: int) -> entercore.Plan:
        return entercore.Plan(
            exes=cmd.exes(), stdio=stdio, ctty=ctty, pid_w=pid_w,
            cgroup_tasks=[str(g / "tasks") for g in self.layout.v1_groups(self.xid)],
            cgroup_v2=str(self.layout.group(self.layout.v2, self.xid))
            if self.layout.v2 is not None else None,
            ns=[(NS_CLONE[name], fd) for name, fd in self.ns],
            userns=self.userns, keep=sorted(self.keep),
            rlimits=[(r.resource, r.soft, r.hard) for r in self.rlimits],
            bpf=self.seccomp.bpf if self.seccomp is not None else None)

    @property
    def userns(self) -> bool:
        return any(name == "user" for name, _ in self.ns)

    @property
    def fresh_image(self) -> bool:
        """Without a user namespace, guest root with CAP_SYS_PTRACE can reach the child
        that joins it whatever its dumpable flag: then it must not be a copy of the
        caller's memory (entercore.py)."""
        return not self.userns and CAP_SYS_PTRACE in self.keep

    def close(self) -> None:
        for _, fd in self.ns:
            try:
                os.close(fd)
            except OSError:
                pass
        self.ns = []


@dataclass
class FnJoiner:
    """Joining through a callable (the Linux-VServer kernel's own context switch)."""
    fn: Callable[[], None]
    rlimits: list[limits.RlimitPlan] = field(default_factory=list)
    keep: set[int] | None = None
    fresh_image = False

    def plan(self, cmd: "Command", stdio: tuple[int, int, int], ctty: bool,
             pid_w: int) -> entercore.Plan:
        return entercore.Plan(
            exes=cmd.exes(), stdio=stdio, ctty=ctty, pid_w=pid_w, join_fn=self.fn,
            keep=sorted(self.keep) if self.keep is not None else None,
            rlimits=[(r.resource, r.soft, r.hard) for r in self.rlimits])


def open_entry(layout: Layout, xid: int, kept: Kept, seccomp: Program | None) -> Entry:
    """An Entry for the handles the supervisor kept for xid; close() it when done."""
    ns: list[tuple[str, int]] = []
    try:
        for name, path in kept.ns.items():
            ns.append((name, os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)))
        if not kept.published():
            # the context ended or started again since kept was loaded: these handles may
            # be of a start whose init still builds its root on the host's (handles.keep)
            raise FileNotFoundError(f"the handles of context {xid} changed while opened")
    except BaseException:
        for _, fd in ns:
            os.close(fd)
        raise
    return Entry(layout, xid, kept.init_pid, ns, keep_caps(kept.spec),
                 limits.rlimit_plan(kept.spec), seccomp)


@dataclass
class Command:
    """What E2 execs: ``path`` None means argv[0] looked up in env's PATH; further
    candidates are tried in order while the file does not exist (a login's shells)."""
    argv: list[str]
    env: dict[str, str]
    path: str | None = None
    fallbacks: list["Command"] = field(default_factory=list)

    def exes(self) -> list[entercore.Exe]:
        return [entercore.Exe(c.argv, c.env, c.path) for c in [self] + self.fallbacks]


class EntryServer:
    """entercore.serve() in a child of this process: forks E1 from a small fresh
    interpreter instead of from this one. For long-lived callers that enter often (a
    daemon worker: its fork and the copy-on-write faults after it were most of a
    vx.exec and of a stop); started by ``use_entry_server()``. Thread-safe.

    Where vsinit is built (entercore.native_program) the server is vsinit --enter, the
    C twin of entercore.serve/run_e1/_e2: E1 and E2 then run no Python at all (each
    was a copy of an interpreter, with its page tables, copy-on-write faults and
    teardown at exec: most of what an entry cost).  Its E1 is never a copy of the
    caller's memory either, so it serves fresh-image plans too."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.proc: subprocess.Popen | None = None
        self.native = entercore.native_program()

    def _start(self) -> socket.socket:
        argv = [self.native, "--enter"] if self.native else \
            [sys.executable, "-I", "-S", entercore.__file__, "--serve"]
        mine, self.proc = entercore.start_server(lambda fd: subprocess.Popen(
            [*argv, str(fd)],
            pass_fds=[fd], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env={}))
        if self.native:
            # a plan is one datagram, and a datagram is cut at the sender's buffer (by
            # default ~208 KiB; a command's arguments may take 2 MiB): room for the
            # largest plan vsinit reads; what does not fit is forked here (fork_e1)
            for option in (_SO_SNDBUFFORCE, socket.SO_SNDBUF):
                try:
                    mine.setsockopt(socket.SOL_SOCKET, option, entercore.NATIVE_PLAN_MAX + 1)
                    break
                except OSError:
                    continue
        self.sock = mine
        return mine

    def fork_e1(self, plan: entercore.Plan, fresh: bool) -> int:
        """E1 for plan, a child of this process (CLONE_PARENT, entercore.serve).
        Raises OSError."""
        memfd = os.memfd_create("vcd-entry-plan", os.MFD_CLOEXEC)
        try:
            order = sorted(plan.fds())
            if self.native:
                request, passed = plan.native(order), order
            else:
                data = plan.dumps().encode()
                while data:
                    data = data[os.write(memfd, data):]
                os.lseek(memfd, 0, os.SEEK_SET)
                request, passed = marshal.dumps((order, fresh)), [memfd] + order
            with self.lock:
                for attempt in (1, 2):
                    sock = self.sock or self._start()
                    try:
                        socket.send_fds(sock, [request], passed)
                    except OSError as e:
                        if e.errno == errno.EMSGSIZE:
                            # more than the socket takes (no SO_SNDBUFFORCE): nothing
                            # was sent, the server is fine; spawn() forks E1 itself
                            raise ValueError(f"a plan of {len(request)} bytes is more "
                                             "than the entry server's socket takes") from e
                        # nothing was sent: a server that died since is replaced once
                        self.close()
                        if attempt == 2:
                            raise
                        continue
                    try:
                        answer = sock.recv(4096)
                    except BaseException:
                        # interrupted (a signal handler raised): the answer would be
                        # left for the next request, which would take it for its E1
                        self.close()
                        raise
                    break
        finally:
            os.close(memfd)
        if not answer:
            with self.lock:
                self.close()
            raise OSError("the entry server ended during a request")
        if self.native:
            text = answer.decode(errors="replace")
            if text.startswith("E:"):
                raise OSError(f"entry server: {text[2:]}")
            return int(text)
        reply = marshal.loads(answer)
        if isinstance(reply, str):
            raise OSError(f"entry server: {reply}")
        return reply

    def close(self) -> None:
        """The caller holds the lock (or is the last user)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


_server: EntryServer | None = None


def use_entry_server() -> None:
    """This process enters vservers often and lives long: fork E1 from an entry server
    (started now, so the first entry does not wait for it)."""
    global _server
    if _server is None or _server.owner != os.getpid():
        _server = EntryServer()
        with _server.lock:
            _server._start()


def stop_entry_server() -> None:
    """Back to forking E1 here; the entry server ends (it exits when its socket closes)."""
    global _server
    server, _server = _server, None
    if server is not None and server.owner == os.getpid():
        with server.lock:
            server.close()


def _entry_server() -> EntryServer | None:
    # a fork of a process that used one (a task runner, say) forks E1 itself: the
    # server is its parent's child and would make E1 its parent's too
    return _server if _server is not None and _server.owner == os.getpid() else None


def spawn(joiner: Joiner, cmd: Command, stdio: tuple[int, int, int], *,
          ctty: bool = False, pid_w: int = -1) -> int:
    """Fork E1 for cmd with stdio (host descriptors of the caller) on 0-2; ``ctty`` makes
    stdin the controlling terminal of E2's new session. E1 writes E2's pid to ``pid_w``
    (when given) and exits with E2's status (128 + signal when killed, 126 when it could
    not enter, 127 when the command cannot be executed). Returns E1's pid, a child of
    this process (also when an entry server forked it)."""
    plan = joiner.plan(cmd, stdio, ctty, pid_w)
    fresh = bool(getattr(joiner, "fresh_image", False))
    server = _entry_server()
    if server is not None and plan.join_fn is None:
        try:
            return server.fork_e1(plan, fresh)
        except ValueError:
            pass    # a plan vsinit does not take (thousands of arguments): forked here
    e1 = os.fork()
    if e1 == 0:
        try:
            creds.set_dumpable(False)
            # the caller's Python signal handlers and wake-up fd are not ours: a handler of
            # the daemon must never run in a process that has joined a vserver
            signal.set_wakeup_fd(-1)
            for sig in signal.valid_signals():
                if callable(signal.getsignal(sig)):
                    signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            creds.close_all_but(plan.fds())
            for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGHUP):
                signal.signal(s, signal.SIG_IGN)
            if fresh:
                entercore.exec_fresh(plan)
            entercore.run_e1(plan)
        except BaseException as e:
            try:
                os.write(stdio[2], f"cannot enter the context: {e}\n".encode())
            finally:
                os._exit(126)
    return e1


def run(joiner: Joiner, argv: list[str], timeout: float, output_cap: int,
        stdin: bytes | None = None, on_output: OnOutput | None = None) -> ExecResult:
    """Run argv inside the context: output through a pipe. stdin: bytes fed to the
    command through a pipe (None = the host's /dev/null); on_output: called with each
    chunk of output as it arrives (only the chunks kept within output_cap)."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    if stdin is not None:
        in_r, in_w = os.pipe2(os.O_CLOEXEC)
    else:
        in_r, in_w = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC), -1
    try:
        # E1 keeps only its stdio: the write end of stdin stays here, so the command
        # sees the end of its input when the feed is done
        e1 = spawn(joiner, Command(argv, EXEC_ENV), (in_r, out_w, out_w), pid_w=pid_w)
        for fd in (out_w, pid_w, in_r):
            os.close(fd)
        out_w = pid_w = in_r = -1
        if in_w >= 0:
            os.set_blocking(in_w, False)
        e1fd = os.pidfd_open(e1)
        try:
            feed = _Feed(in_w, stdin or b"") if in_w >= 0 else None
            in_w = -1  # the feed closes it
            return _collect(e1, e1fd, out_r, pid_r, timeout, output_cap, feed, on_output)
        finally:
            os.close(e1fd)
    finally:
        for fd in (out_r, pid_r, out_w, pid_w, in_r, in_w):
            if fd >= 0:
                os.close(fd)


def run_entered(enter_fn: Callable[[], None], argv: list[str], timeout: float,
                output_cap: int, rl: list[limits.RlimitPlan],
                keep: set[int] | None, stdin: bytes | None = None,
                on_output: OnOutput | None = None) -> ExecResult:
    """run() for a context joined by enter_fn (the Linux-VServer kernel backend)."""
    return run(FnJoiner(enter_fn, rl, keep), argv, timeout, output_cap, stdin, on_output)


@dataclass
class _Feed:
    """stdin bytes still to write to the command's pipe (non-blocking)."""
    fd: int
    data: bytes

    def write(self) -> None:
        try:
            n = os.write(self.fd, self.data[:65536])
        except BlockingIOError:
            return
        except BrokenPipeError:
            n = len(self.data)  # the command stopped reading: drop the rest
        self.data = self.data[n:]
        if not self.data:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


def _ready(readers: list[int], writers: list[int], timeout: float) -> tuple[set[int], set[int]]:
    """select.select() for descriptors of any number (seconds; the readable and the
    writable ones, an end or an error counting as ready). select()'s sets end at 1024,
    and a daemon worker's descriptors go past that with its client connections."""
    p = select.poll()
    for fd in set(readers) | set(writers):
        p.register(fd, (select.POLLIN if fd in readers else 0) |
                   (select.POLLOUT if fd in writers else 0))
    events = dict(p.poll(max(0.0, timeout) * 1000))
    return ({fd for fd in readers if events.get(fd, 0) & (select.POLLIN | _GONE)},
            {fd for fd in writers if events.get(fd, 0) & (select.POLLOUT | _GONE)})


def _collect(e1: int, e1fd: int, out_r: int, pid_r: int, timeout: float,
             cap: int, feed: _Feed | None = None,
             on_output: OnOutput | None = None) -> ExecResult:
    try:
        return _collect_loop(e1, e1fd, out_r, pid_r, timeout, cap, feed, on_output)
    finally:
        if feed is not None:
            feed.close()


def _collect_loop(e1: int, e1fd: int, out_r: int, pid_r: int, timeout: float,
                  cap: int, feed: _Feed | None, on_output: OnOutput | None) -> ExecResult:
    out = bytearray()
    truncated = timed_out = False
    deadline = time.monotonic() + timeout
    grace_end: float | None = None
    e2 = None
    status = None
    pidbuf = b""
    fds = [out_r, pid_r, e1fd]
    try:
        while True:
            if status is not None and out_r not in fds:
                break
            now = time.monotonic()
            end = deadline if grace_end is None else grace_end
            if now >= end:
                break
            writing = [feed.fd] if feed is not None and feed.fd >= 0 and status is None else []
            r, w = _ready(fds, writing, end - now)
            if w:
                feed.write()
            if out_r in r:
                chunk = os.read(out_r, 65536)
                if not chunk:
                    fds.remove(out_r)
                elif len(out) < cap:
                    room = cap - len(out)
                    out += chunk[:room]
                    truncated = truncated or len(chunk) > room
                    if on_output is not None:
                        on_output(chunk[:room])
                else:
                    truncated = True
            if pid_r in r:
                chunk = os.read(pid_r, 64)
                pidbuf += chunk
                if not chunk:
                    fds.remove(pid_r)
                    if pidbuf.strip():
                        e2 = int(pidbuf)
            if e1fd in r:
                _, st = os.waitpid(e1, 0)
                status = os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st)
                fds.remove(e1fd)
                grace_end = time.monotonic() + GRACE
    except BaseException:
        if status is None:
            _kill_session(e1, e1fd, e2 if e2 is not None else _late_pid(pid_r, pidbuf))
        raise
    if status is None:
        status = _kill_session(e1, e1fd, e2 if e2 is not None else _late_pid(pid_r, pidbuf))
        timed_out = True
    elif e2 is None:
        e2 = _late_pid(pid_r, pidbuf)   # E1 has ended: its end of the pipe is closed
    # E1 reports E2's pid once it has joined the context and forked: without it, E1's
    # status 126 is its failure to enter, not the command's own exit status, and so is
    # E1's death by a signal (a stop or reboot kills the context's cgroup2 group, E1 in
    # it) before it could fork
    entered = e2 is not None or (status != 126 and (timed_out or status < 128))
    return ExecResult(status=status, output=bytes(out), timed_out=timed_out,
                      truncated=truncated, entered=entered)


def _late_pid(pid_r: int, pidbuf: bytes, wait: float = 2.0) -> int | None:
    """E2's pid when E1 had not written it yet (E2 may print before E1 reports it): the
    session to kill is E2's, killing E1 alone would orphan the command."""
    deadline = time.monotonic() + wait
    try:
        while not pidbuf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not _ready([pid_r], [], left)[0]:
                break
            chunk = os.read(pid_r, 64)
            if not chunk:
                break
            pidbuf += chunk
    except OSError:
        pass
    return int(pidbuf) if pidbuf.strip().isdigit() else None


def _kill_session(e1: int, e1fd: int, e2: int | None) -> int:
    """Kill the command's whole session (it called setsid); E1 then reaps it and exits,
    so no zombie is left for the context's init. Returns E1's status."""
    if e2 is not None:
        for target in (-e2, e2):
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if e2 is None or not _ready([e1fd], [], 5.0)[0]:
        os.kill(e1, signal.SIGKILL)
    _, st = os.waitpid(e1, 0)
    return os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st)
