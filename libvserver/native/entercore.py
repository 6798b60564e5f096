"""The entering process itself (E1 and E2 of enter.py), on the standard library only.

Kept free of the rest of libvserver so it can also run as a fresh process image:
``python -I -S <this file> <descriptor of a memfd with the plan>``.  enter.py execs that when the context has
no user namespace and its bounding set holds CAP_SYS_PTRACE: guest root is then
ptrace-capable over every uid-0 process of its PID namespace, the non-dumpable flag no
longer protects the child that joins it, and a fork of the caller would carry a copy of
the caller's memory (a daemon worker's: requests, passwords, keys) into its reach.
A fresh image holds nothing but the plan.  Elsewhere (a user namespace, or no
CAP_SYS_PTRACE) the same code runs in the forked caller, with no exec in between.
"""

from __future__ import annotations

import errno
import fcntl
import marshal
import os
import resource
import signal
import sys
import termios
TYPE_CHECKING = False   # not typing's: importing typing costs a fresh image 5 ms
if TYPE_CHECKING:
    import socket
    from typing import Callable

if __package__:
    from . import creds
else:   # a fresh image (python -I, no package): creds.py sits beside this file
    import importlib.util
    _spec = importlib.util.spec_from_file_location(
        "vcd_entry_creds", os.path.join(os.path.dirname(os.path.abspath(__file__)), "creds.py"))
    creds = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
    _spec.loader.exec_module(creds)  # type: ignore[union-attr]

_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGINT,
                    signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGTSTP,
                    signal.SIGWINCH, signal.SIGUSR1, signal.SIGUSR2)


class Exe:
    """One program to exec: ``path`` None means argv[0] looked up in env's PATH."""
    __slots__ = ("argv", "env", "path")

    def __init__(self, argv: list[str], env: dict[str, str], path: str | None = None) -> None:
        self.argv, self.env, self.path = argv, env, path

    def __iter__(self):
        return iter((self.argv, self.env, self.path))


class Plan:
    """Everything E1 and E2 do, decided by the caller (so nothing is read inside).
    A plain class and marshal, not dataclasses and json: a fresh image imports little."""
    FIELDS = ("exes", "stdio", "ctty", "pid_w", "cgroup_tasks", "cgroup_v2", "ns", "userns",
              "keep", "rlimits", "bpf")

    def __init__(self, exes: list[Exe], stdio: tuple[int, int, int], ctty: bool = False,
                 pid_w: int = -1, cgroup_tasks: list[str] | None = None,
                 cgroup_v2: str | None = None,
                 ns: list[tuple[int, int]] | None = None, userns: bool = False,
                 keep: list[int] | None = None,
                 rlimits: list[tuple[int, int, int]] | None = None,
                 bpf: bytes | None = None,
                 join_fn: "Callable[[], None] | None" = None) -> None:
        self.exes = [Exe(*e) for e in exes]     # tried in order while the file is missing
        self.stdio = tuple(stdio)               # the caller's descriptors for 0-2
        self.ctty = ctty                        # stdin becomes the controlling terminal
        self.pid_w = pid_w                      # E1 writes E2's pid here
        self.cgroup_tasks = cgroup_tasks or []  # v1 "tasks" files to move E1 itself into
        self.cgroup_v2 = cgroup_v2              # the cgroup2 group E1 continues in
        self.ns = [tuple(x) for x in ns or []]  # (CLONE_NEW*, open handle)
        self.userns = userns
        self.keep = keep                        # bounding and capability set; None: as is
        self.rlimits = [tuple(x) for x in rlimits or []]   # (resource, soft, hard)
        self.bpf = bpf                          # the seccomp filter
        self.join_fn = join_fn                  # in-process only (not serialisable)

    def fds(self) -> set[int]:
        return set(self.stdio) | {fd for _, fd in self.ns} | (
            {self.pid_w} if self.pid_w >= 0 else set())

    def remap(self, new: "dict[int, int]") -> None:
        """Descriptors renumbered by their passage to another process (SCM_RIGHTS)."""
        self.stdio = tuple(new[fd] for fd in self.stdio)
        self.ns = [(nstype, new[fd]) for nstype, fd in self.ns]
        if self.pid_w >= 0:
            self.pid_w = new[self.pid_w]

    def native(self, order: list[int]) -> bytes:
        """The plan for vsinit --enter (vsinit.c): NUL-separated key=value entries; a
        descriptor is named by its index in ``order`` (the SCM_RIGHTS list)."""
        if self.join_fn is not None:
            raise ValueError("a join function runs in Python only")
        slot = {fd: i for i, fd in enumerate(order)}
        out = [f"fd.stdio={slot[fd]}" for fd in self.stdio]
        for n, exe in enumerate(self.exes):
            out += [f"exe.{n}.argv={a}" for a in exe.argv]
            out += [f"exe.{n}.env={k}={v}" for k, v in exe.env.items()]
            if exe.path is not None:
                out.append(f"exe.{n}.path={exe.path}")
        if self.ctty:
            out.append("ctty=1")
        if self.pid_w >= 0:
            out.append(f"fd.pid_w={slot[self.pid_w]}")
        out += [f"cgroup_tasks={path}" for path in self.cgroup_tasks]
        if self.cgroup_v2 is not None:
            out.append(f"cgroup_v2={self.cgroup_v2}")
        out += [f"ns={nstype}:{slot[fd]}" for nstype, fd in self.ns]
        out.append(f"userns={int(self.userns)}")
        if self.keep is not None:
            out.append(f"keep={sum(1 << c for c in self.keep)}")
        out += [f"rlimit={res}:{soft}:{hard}" for res, soft, hard in self.rlimits]
        if self.bpf is not None:
            out.append(f"seccomp={self.bpf.hex()}")
        return native_entries(out)

    def dumps(self) -> str:
        return marshal.dumps({k: ([tuple(e) for e in self.exes] if k == "exes" else
                                  getattr(self, k)) for k in self.FIELDS}).hex()

    @classmethod
    def loads(cls, text: str) -> "Plan":
        return cls(**marshal.loads(bytes.fromhex(text)))


def run_e1(plan: Plan) -> None:
    """E1 with its descriptors already reduced to plan.fds(); never returns."""
    err = plan.stdio[2]
    try:
        creds.set_dumpable(False)   # again: exec of a fresh image made it dumpable
        _join_cgroups(plan)
        if plan.join_fn is not None:
            plan.join_fn()
        if plan.keep is not None:
            creds.drop_groups()
        for nstype, fd in plan.ns:
            creds.setns(fd, nstype)
            os.close(fd)
        if plan.keep is not None:
            creds.become_guest_root(plan.userns)
            creds.drop_bounding_set(set(plan.keep))
        if plan.bpf is not None:
            creds.load_seccomp(plan.bpf)   # still holding CAP_SYS_ADMIN (no NO_NEW_PRIVS)
        if plan.keep is not None:
            creds.limit_caps(set(plan.keep))
        # again: each change of credentials above set the flag to fs.suid_dumpable (1
        # on a host that debugs set-user-ID programs), and E2, a copy of this process,
        # sits in the guest's PID namespace until its exec
        creds.set_dumpable(False)
        e2 = os.fork()          # a PID namespace applies to children only
        if e2 == 0:
            _e2(plan)
        for fd in set(plan.stdio):
            os.close(fd)
        if plan.pid_w >= 0:
            try:
                os.write(plan.pid_w, f"{e2}\n".encode())
            except OSError:
                pass    # the caller stopped reading: E2's status is still to be relayed
            os.close(plan.pid_w)
        _, status = os.waitpid(e2, 0)
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status)
                 else 128 + os.WTERMSIG(status))
    except BaseException as e:
        try:
            os.write(err, f"cannot enter the context: {getattr(e, 'strerror', None) or e}\n"
                     .encode())
        finally:
            os._exit(126)


def _join_cgroups(plan: Plan) -> None:
    """Into the context's cgroups without a migration's RCU grace period (milliseconds):
    E1 (single-threaded) moves itself into each v1 group (0 into ``tasks``: a thread
    moving itself takes no global lock), then forks a copy of itself born in the cgroup2
    group (clone3), which goes on as E1; this one only waits for it and passes its
    status on. Where clone3 cannot, E1 is migrated into the cgroup2 group."""
    for path in plan.cgroup_tasks:
        with open(path, "w") as f:
            f.write("0")
    if plan.cgroup_v2 is None:
        return
    fd = os.open(plan.cgroup_v2, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    relay = os.getpid()
    try:
        pid = creds.clone(0, fd)
    except OSError:
        with open(os.path.join(plan.cgroup_v2, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        return
    finally:
        os.close(fd)
    if pid == 0:
        creds.set_parent_death_signal(signal.SIGKILL)   # the caller may kill the relay
        if os.getppid() != relay:
            os._exit(126)   # the relay died before the signal was set
        return
    # the relay keeps no end of the command's pipes open
    for fd in set(plan.fds()):
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _e2(plan: Plan) -> None:
    """Inside the context with the guest's credentials; never returns."""
    try:
        if plan.pid_w >= 0:
            os.close(plan.pid_w)
        os.setsid()
        # stdio to 0-2 without one dup2 clobbering another source
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3) for fd in plan.stdio]
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        creds.close_all_but({0, 1, 2})
        if plan.ctty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        os.chdir("/")
        for res, soft, hard in plan.rlimits:
            resource.setrlimit(res, (soft, hard))
        for s in _DEFAULT_SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        for exe in plan.exes:
            try:
                if exe.path is None:
                    os.execvpe(exe.argv[0], exe.argv, exe.env)
                os.execve(exe.path, exe.argv, exe.env)
            except OSError as e:
                if e.errno != errno.ENOENT or exe is plan.exes[-1]:
                    raise
    except BaseException as e:
        try:
            os.write(2, f"{plan.exes[0].argv[0]}: {getattr(e, 'strerror', None) or e}\n"
                     .encode())
        finally:
            os._exit(127)


def exec_fresh(plan: Plan) -> None:
    """Replace this (forked) process by a fresh interpreter that runs run_e1(plan). The
    plan travels in a memfd, not in argv, which every host user can read."""
    memfd = os.memfd_create("vcd-entry-plan", 0)
    data = plan.dumps().encode()
    while data:
        data = data[os.write(memfd, data):]
    os.lseek(memfd, 0, os.SEEK_SET)
    for fd in plan.fds():
        os.set_inheritable(fd, True)
    os.execve(sys.executable, [sys.executable, "-I", "-S", os.path.abspath(__file__),
                               str(memfd)], {})


def _e1_child(plan: Plan, fresh: bool) -> None:
    """E1 as a child of the entry server: what enter.spawn does after its fork."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        creds.close_all_but(plan.fds())
        for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        if fresh:
            exec_fresh(plan)
        run_e1(plan)
    except BaseException as e:
        try:
            os.write(plan.stdio[2], f"cannot enter the context: {e}\n".encode())
        finally:
            os._exit(126)


def _clone_e1(plan: Plan) -> int:
    """E1 (CLONE_PARENT) born in plan's cgroup2 group; it joins the v1 groups itself
    (run_e1: a thread moving itself, no global lock). This process never enters a
    context's group, not even for the clone: the copy-on-write faults after it would be
    charged to the context's v1 memory group, where a guest that holds the group at its
    limit (a full tmpfs) makes this process the OOM killer's largest victim; a frozen
    freezer group would freeze it, a CPU quota throttle it; and every entry of its
    caller waits for it. Where the clone into the group cannot be done (it
    is gone, no clone3) E1 joins it as usual (and says why it cannot)."""
    if plan.cgroup_v2 is None:
        return creds.clone(creds.CLONE_PARENT)
    pid = -1
    fd = -1
    try:
        fd = os.open(plan.cgroup_v2, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        pid = creds.clone(creds.CLONE_PARENT, fd)
    except OSError:
        pid = -1
    finally:
        if fd >= 0:
            os.close(fd)
    if pid == 0:
        plan.cgroup_v2 = None
        return 0
    if pid < 0:
        return creds.clone(creds.CLONE_PARENT)
    return pid


def serve(sock_fd: int) -> None:
    """The entry server (enter.EntryServer): a small fresh interpreter that forks E1 for
    the process that started it. Forking a daemon worker (tens of MiB, and copy-on-write
    faults after) took most of an entry; a fork of this process costs a fraction.

    Request (one SOCK_SEQPACKET datagram): marshal (order, fresh) with descriptors
    [memfd of Plan.dumps(), *order]: the caller's numbers of plan.fds(), in that order.
    E1 is cloned with CLONE_PARENT, so it is the caller's child (its waitpid, its
    pidfd) and never this process's, and born in the context's cgroup2 group (no relay
    process then, _clone_e1). Answer: marshal of E1's pid, or an error string.
    The server holds nothing but the plan in hand and is not dumpable; it exits when
    its caller closes the socket or dies (the end of file on the socket; no parent death
    signal: that comes when the *thread* that started it ends, a pool thread of the
    caller's that replaced a server which had died)."""
    import socket
    creds.set_dumpable(False)
    for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    sock = socket.socket(fileno=sock_fd)
    while True:
        data, fds = next_request(sock, 4096, 256)
        reply: "int | str"
        try:
            order, fresh = marshal.loads(data)
            plan = _read_plan(fds[0])
            fds[0] = -1
            plan.remap(dict(zip(order, fds[1:])))
            pid = _clone_e1(plan)
            if pid == 0:
                sock.close()
                _e1_child(plan, fresh)
            reply = pid
        except Exception as e:
            reply = f"{type(e).__name__}: {e}"
        finally:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
        try:
            sock.send(marshal.dumps(reply))
        except OSError:
            os._exit(0)


NATIVE_ENV = "VCD_NATIVE"    # "0": neither the C init forker nor the C entry server
NATIVE_ENTRIES_MAX = 1024   # vsinit.c's ENTRIES_MAX: a longer plan is forked in Python
NATIVE_PLAN_MAX = (1 << 20) - 1     # vsinit.c's REQUEST_MAX - 1: a larger one likewise


def native_entries(entries: list[str]) -> bytes:
    """A request of vsinit (--serve and --enter): the NUL-separated "key=value" entries.
    Raises ValueError for one vsinit does not take whole (a NUL byte, text that is not
    UTF-8, more than NATIVE_ENTRIES_MAX entries or NATIVE_PLAN_MAX bytes): the caller
    then forks in Python."""
    if any("\0" in entry for entry in entries):
        raise ValueError("a NUL byte in the plan")
    if len(entries) > NATIVE_ENTRIES_MAX:
        raise ValueError(f"a plan of {len(entries)} entries, vsinit takes {NATIVE_ENTRIES_MAX}")
    data = "\0".join(entries).encode() + b"\0"
    if len(data) > NATIVE_PLAN_MAX:
        raise ValueError(f"a plan of {len(data)} bytes, vsinit takes {NATIVE_PLAN_MAX}")
    return data


def native_program() -> str | None:
    """vsinit (vsinit.c, built by `make setup` beside this file): the C init forker and
    entry server; None where it is not built or VCD_NATIVE=0."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vsinit")
    if os.environ.get(NATIVE_ENV, "1") == "0" or not os.access(path, os.X_OK):
        return None
    return path


def readable(fd: int, timeout: float | None) -> bool:
    """Whether fd can be read (or has ended; a pidfd: its process ended) within timeout
    seconds (None: waits until it can). poll(), not select(): a supervisor's and a
    worker's descriptors pass select()'s limit of 1024."""
    import select
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(None if timeout is None else max(0.0, timeout) * 1000))


def start_server(start: "Callable[[int], object]") -> "tuple[socket.socket, object]":
    """A SOCK_SEQPACKET pair for a small server process (the entry server, the init
    forker): ``start`` gets the server's end (a descriptor number) and starts the process.
    Returns our end and what ``start`` returned; our copy of the server's end is closed
    either way."""
    import socket
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        result = start(theirs.fileno())
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()
    return mine, result


def next_request(sock: "socket.socket", size: int, nfds: int) -> "tuple[bytes, list[int]]":
    """Server side: the next request datagram and the descriptors it carries. Ends this
    process when the caller is gone (end of file, or the socket failed)."""
    import socket
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, size, nfds)
        except InterruptedError:
            continue
        except OSError:
            os._exit(0)
        if not data:
            os._exit(0)     # the caller is gone
        return data, fds


def _read_plan(fd: int) -> Plan:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return Plan.loads(b"".join(chunks).decode())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]))
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        for _s in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGHUP):
            signal.signal(_s, signal.SIG_IGN)
        _plan = _read_plan(int(sys.argv[1]))
    except BaseException:
        os._exit(126)   # "could not enter", never a status the command might have given
    run_e1(_plan)
