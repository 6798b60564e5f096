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
import fcntl
import os
import select
import signal
import termios
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..api import ExecResult
from . import creds, limits, namespaces
from .cgroups import Layout
from .handles import Kept
from .namespaces import (CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS,
                         CLONE_NEWPID, CLONE_NEWTIME, CLONE_NEWUSER, CLONE_NEWUTS)
from .seccomp import Program
from .spawn import keep_caps

EXEC_ENV = {"PATH": "/sbin:/bin:/usr/sbin:/usr/bin", "HOME": "/root", "TERM": "dumb"}
GRACE = 0.2
NS_CLONE = {"cgroup": CLONE_NEWCGROUP, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS,
            "net": CLONE_NEWNET, "pid": CLONE_NEWPID, "time": CLONE_NEWTIME,
            "mnt": CLONE_NEWNS, "user": CLONE_NEWUSER}
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT,
                    signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP,
                    signal.SIGWINCH, signal.SIGUSR1, signal.SIGUSR2)


class Joiner(Protocol):
    """How E1 becomes a process of the context (after its descriptors are cleaned)."""
    rlimits: list[limits.RlimitPlan]

    def fds(self) -> set[int]: ...
    def join(self) -> None: ...


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
    userns: bool = field(init=False)

    def __post_init__(self) -> None:
        self.userns = any(name == "user" for name, _ in self.ns)

    def fds(self) -> set[int]:
        return {fd for _, fd in self.ns}

    def join(self) -> None:
        """In E1: cgroups, namespaces, credentials, bounding set, filter, capabilities."""
        self.layout.join(self.xid)
        for name, fd in self.ns:
            namespaces.setns(fd, NS_CLONE[name])
            os.close(fd)
        creds.become_guest_root(self.userns)
        creds.drop_bounding_set(self.keep)
        if self.seccomp is not None:
            self.seccomp.load()     # still holding CAP_SYS_ADMIN here (no NO_NEW_PRIVS)
        creds.limit_caps(self.keep)

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

    def fds(self) -> set[int]:
        return set()

    def join(self) -> None:
        self.fn()
        if self.keep is not None:
            creds.drop_bounding_set(self.keep)


def open_entry(layout: Layout, xid: int, kept: Kept, seccomp: Program | None) -> Entry:
    """An Entry for the handles the supervisor kept for xid; close() it when done."""
    ns: list[tuple[str, int]] = []
    try:
        for name, path in kept.ns.items():
            ns.append((name, os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)))
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


def spawn(joiner: Joiner, cmd: Command, stdio: tuple[int, int, int], *,
          ctty: bool = False, pid_w: int = -1) -> int:
    """Fork E1 for cmd with stdio (host descriptors of the caller) on 0-2; ``ctty`` makes
    stdin the controlling terminal of E2's new session. E1 writes E2's pid to ``pid_w``
    (when given) and exits with E2's status (128 + signal when killed, 126 when it could
    not enter, 127 when the command cannot be executed). Returns E1's pid."""
    e1 = os.fork()
    if e1 == 0:
        _e1(joiner, cmd, stdio, ctty, pid_w)
    return e1


def _e1(joiner: Joiner, cmd: Command, stdio: tuple[int, int, int], ctty: bool,
        pid_w: int) -> None:
    """Never returns."""
    err = stdio[2]
    try:
        creds.set_dumpable(False)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        keep = set(stdio) | joiner.fds() | ({pid_w} if pid_w >= 0 else set())
        creds.close_all_but(keep)
        for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        joiner.join()
        e2 = os.fork()
        if e2 == 0:
            _e2(joiner, cmd, stdio, ctty)
        for fd in set(stdio):
            os.close(fd)
        if pid_w >= 0:
            os.write(pid_w, f"{e2}\n".encode())
            os.close(pid_w)
        _, status = os.waitpid(e2, 0)
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status)
                 else 128 + os.WTERMSIG(status))
    except BaseException as e:
        try:
            os.write(err, f"cannot enter the context: {getattr(e, 'strerror', None) or e}\n"
                     .encode())
        finally:
            os._exit(126)


def _e2(joiner: Joiner, cmd: Command, stdio: tuple[int, int, int], ctty: bool) -> None:
    """Inside the context with the guest's credentials; never returns."""
    try:
        os.setsid()
        # move stdio to 0-2 without one dup2 clobbering another source
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in stdio]
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        creds.close_all_but({0, 1, 2})
        if ctty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        os.chdir("/")
        limits.apply_rlimits(joiner.rlimits)
        for s in _DEFAULT_SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        _exec(cmd)
    except BaseException as e:
        try:
            os.write(2, f"{cmd.argv[0]}: {getattr(e, 'strerror', None) or e}\n".encode())
        finally:
            os._exit(127)


def _exec(cmd: Command) -> None:
    for c in [cmd] + cmd.fallbacks:
        try:
            if c.path is None:
                os.execvpe(c.argv[0], c.argv, c.env)
            os.execve(c.path, c.argv, c.env)
        except OSError as e:
            if e.errno != errno.ENOENT or c is (cmd.fallbacks or [cmd])[-1]:
                raise


def run(joiner: Joiner, argv: list[str], timeout: float, output_cap: int) -> ExecResult:
    """Run argv inside the context: stdin /dev/null (the host's), output through a pipe."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        e1 = spawn(joiner, Command(argv, EXEC_ENV), (null, out_w, out_w), pid_w=pid_w)
        for fd in (out_w, pid_w, null):
            os.close(fd)
        out_w = pid_w = null = -1
        e1fd = os.pidfd_open(e1)
        try:
            return _collect(e1, e1fd, out_r, pid_r, timeout, output_cap)
        finally:
            os.close(e1fd)
    finally:
        for fd in (out_r, pid_r, out_w, pid_w, null):
            if fd >= 0:
                os.close(fd)


def run_entered(enter_fn: Callable[[], None], argv: list[str], timeout: float,
                output_cap: int, rl: list[limits.RlimitPlan],
                keep: set[int] | None) -> ExecResult:
    """run() for a context joined by enter_fn (the Linux-VServer kernel backend)."""
    return run(FnJoiner(enter_fn, rl, keep), argv, timeout, output_cap)


def _collect(e1: int, e1fd: int, out_r: int, pid_r: int, timeout: float,
             cap: int) -> ExecResult:
    out = bytearray()
    truncated = timed_out = False
    deadline = time.monotonic() + timeout
    grace_end: float | None = None
    e2 = None
    status = None
    pidbuf = b""
    fds = [out_r, pid_r, e1fd]
    while True:
        if status is not None and out_r not in fds:
            break
        now = time.monotonic()
        end = deadline if grace_end is None else grace_end
        if now >= end:
            break
        r, _, _ = select.select(fds, [], [], end - now)
        if out_r in r:
            chunk = os.read(out_r, 65536)
            if not chunk:
                fds.remove(out_r)
            elif len(out) < cap:
                room = cap - len(out)
                out += chunk[:room]
                truncated = truncated or len(chunk) > room
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
    if status is None:
        # Timed out: kill the command's whole session (it called setsid); E1 then reaps it
        # and exits, so no zombie is left for the context's init.
        if e2 is not None:
            for target in (-e2, e2):
                try:
                    os.kill(target, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if e2 is None or not select.select([e1fd], [], [], 5.0)[0]:
            os.kill(e1, signal.SIGKILL)
        _, st = os.waitpid(e1, 0)
        status = os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st)
        timed_out = True
    return ExecResult(status=status, output=bytes(out), timed_out=timed_out,
                      truncated=truncated)
