"""Running a command inside a running context (vx.exec, halt, reboot).

caller ──fork──▶ E1: joins the context's cgroups, setns() into all of init's
                     namespaces through a pidfd (one atomic call), forks E2
                     (the PID namespace applies to children), relays E2's status.
                 E2: new session, same rlimits and bounding set as init, exec argv.

The caller reads the combined output until E1 has exited plus a short grace:
(it also feeds `stdin` bytes through a pipe and hands each chunk to `on_output` as it
arrives, for callers that stream; an exception raised in the caller meanwhile, e.g. by
a signal handler, kills the command's session before it propagates)
a background process of the command may keep the pipe open forever, so EOF
is never awaited.  Output beyond the cap is drained and dropped so a flood
cannot block the command, and the timeout kills the command's session.
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass
from typing import Callable

from ..api import ExecResult
from . import limits, namespaces
from .cgroups import Layout
from .namespaces import (CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID,
                         CLONE_NEWTIME, CLONE_NEWUSER, CLONE_NEWUTS)

EXEC_ENV = {"PATH": "/sbin:/bin:/usr/sbin:/usr/bin", "HOME": "/root", "TERM": "dumb"}
GRACE = 0.2


def _ns_flags(init_pid: int) -> int:
    flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET
    # only enter a time namespace that differs from ours (setns needs it to be a real change
    # of time_for_children; the same one is harmless but skip the work)
    try:
        if os.stat(f"/proc/{init_pid}/ns/time").st_ino != os.stat("/proc/self/ns/time").st_ino:
            flags |= CLONE_NEWTIME
    except FileNotFoundError:
        pass
    # iso-ns (minimal, until the entry path is reworked): an unprivileged context's user
    # and cgroup namespaces too; joining the same user namespace again is refused (EINVAL)
    for name, flag in (("user", CLONE_NEWUSER), ("cgroup", CLONE_NEWCGROUP)):
        if os.stat(f"/proc/{init_pid}/ns/{name}").st_ino != os.stat(f"/proc/self/ns/{name}").st_ino:
            flags |= flag
    return flags


def _exec_child(enter_fn: Callable[[], None], argv: list[str],
                rl: list[limits.RlimitPlan], keep: set[int] | None, out_w: int,
                pid_w: int, in_r: int = -1) -> None:
    """Body of E1; never returns."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        enter_fn()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(pid_w)
                os.setsid()
                os.chdir("/")
                limits.apply_rlimits(rl)
                if keep is not None:
                    namespaces.drop_bounding_set(keep)
                for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT,
                          signal.SIGTERM, signal.SIGHUP):
                    signal.signal(s, signal.SIG_DFL)
                os.dup2(in_r if in_r >= 0 else os.open("/dev/null", os.O_RDONLY), 0)
                os.dup2(out_w, 1)
                os.dup2(out_w, 2)
                os.closerange(3, 65536)
                os.execvpe(argv[0], argv, EXEC_ENV)
            except BaseException as e:
                try:
                    os.write(2, f"vx.exec: {argv[0]}: {getattr(e, 'strerror', None) or e}\n"
                             .encode())
                finally:
                    os._exit(127)
        os.close(out_w)
        os.write(pid_w, f"{pid}\n".encode())
        os.close(pid_w)
        _, status = os.waitpid(pid, 0)
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status)
                 else 128 + os.WTERMSIG(status))
    except BaseException as e:
        try:
            os.write(out_w, f"vx.exec: cannot enter the context: {e}\n".encode())
        finally:
            os._exit(126)


@dataclass
class Entry:
    """How a new process joins a running context: vx.exec uses it, and so does an
    interactive login (which brings its own terminal handling)."""
    layout: Layout
    xid: int
    init_pid: int
    pidfd: int
    flags: int
    rlimits: list[limits.RlimitPlan]
    keep: set[int] | None

    def join(self) -> None:
        """In a child of the caller: the context's cgroups and namespaces. The PID
        namespace applies to this process's children only: fork once more after it."""
        self.layout.join(self.xid)
        namespaces.setns(self.pidfd, self.flags)
        if self.flags & CLONE_NEWUSER:
            # iso-ns (minimal): host ids are unmapped in there; become the guest's root
            os.setresgid(0, 0, 0)
            os.setgroups([])
            os.setresuid(0, 0, 0)

    def confine(self) -> None:
        """In that grandchild, before exec: init's rlimits and bounding set."""
        limits.apply_rlimits(self.rlimits)
        if self.keep is not None:
            namespaces.drop_bounding_set(self.keep)

    def close(self) -> None:
        os.close(self.pidfd)


def open_entry(layout: Layout, xid: int, init_pid: int, rlimits: list[limits.RlimitPlan],
               keep: set[int] | None) -> Entry:
    """An Entry for init_pid's namespaces (held through a pidfd, so a recycled pid can't
    redirect it); close() it when done."""
    return Entry(layout, xid, init_pid, os.pidfd_open(init_pid), _ns_flags(init_pid),
                 rlimits, keep)


OnOutput = Callable[[bytes], None]


def run(entry: Entry, argv: list[str], timeout: float, output_cap: int,
        stdin: bytes | None = None, on_output: OnOutput | None = None) -> ExecResult:
    """Run argv inside the context of entry. stdin: bytes fed to the command (None =
    /dev/null); on_output: called with each chunk of output as it arrives (only the
    chunks kept within output_cap)."""
    return run_entered(entry.join, argv, timeout, output_cap, entry.rlimits, entry.keep,
                       stdin, on_output)


def run_entered(enter_fn: Callable[[], None], argv: list[str], timeout: float,
                output_cap: int, rl: list[limits.RlimitPlan],
                keep: set[int] | None, stdin: bytes | None = None,
                on_output: OnOutput | None = None) -> ExecResult:
    """Fork E1, which calls enter_fn() and forks E2 for argv; collect E2's output."""
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    in_r, in_w = os.pipe2(os.O_CLOEXEC) if stdin is not None else (-1, -1)
    try:
        e1 = os.fork()
        if e1 == 0:
            os.close(out_r)
            os.close(pid_r)
            if in_w >= 0:
                os.close(in_w)  # else the command never sees the end of its input
            _exec_child(enter_fn, argv, rl, keep, out_w, pid_w, in_r)
        os.close(out_w)
        os.close(pid_w)
        out_w = pid_w = -1
        if in_r >= 0:
            os.close(in_r)
            in_r = -1
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
            r, w, _ = select.select(fds, writing, [], end - now)
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
            _kill_session(e1, e1fd, e2)
        raise
    if status is None:
        status = _kill_session(e1, e1fd, e2)
        timed_out = True
    return ExecResult(status=status, output=bytes(out), timed_out=timed_out,
                      truncated=truncated)


def _kill_session(e1: int, e1fd: int, e2: int | None) -> int:
    """Kill the command's whole session (it called setsid); E1 then reaps it and exits,
    so no zombie is left for the context's init. Returns E1's status."""
    if e2 is not None:
        for target in (-e2, e2):
            try:
                os.kill(target, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if e2 is None or not select.select([e1fd], [], [], 5.0)[0]:
        os.kill(e1, signal.SIGKILL)
    _, st = os.waitpid(e1, 0)
    return os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st)
