"""The init forker: a small fresh interpreter that clones each context's PID 1 (G) for
the supervisor, as the entry server (entercore.serve) forks entering processes for a
daemon worker.

Why: the supervisor is a large process (tens of MiB with its contexts, pyroute2 once a
network was made).  Forking G from it cost most of a millisecond in clone3 (page
tables), half a millisecond of Python's after-fork hooks in G, and hundreds of
copy-on-write faults on both sides while G's setup and the supervisor's own work ran
in parallel (measured ~540 in the supervisor and ~670 in G per start), and tearing the
copy down again at execve.  This process imports only what G's code needs
(spawn.run_init's modules, no pyroute2, no libseccomp: the supervisor passes its
compiled seccomp programs along) and clones G with CLONE_PARENT: G is the
*supervisor's* child (its waitpid, its reaping, its /proc/<pid>/uid_map writes, the
"m"/"go" pipes), only the process image G's Python runs in changes.

What G starts with is the same as from the supervisor: a new user and PID namespace,
born in the context's cgroup2 group (CLONE_INTO_CGROUP), the mount namespace without
kept handles the supervisor made (``base``: setns there for the clone and back after,
as the supervisor did), a new time namespace for VIRT_UPTIME (unshared for the clone
only: time_for_children, set back after), the same pipes, socket and console, and the
supervisor's ignored signals, rlimits and stdio (posix_spawn passes them on; run_init
resets what init must not inherit).  One step differs: this process never enters a
context's cgroups (a frozen freezer group would freeze it, a memory limit make it an
OOM victim, a CPU quota throttle it, and every start waits for it), so G, not its
forker, moves itself into the context's v1 groups, first thing (descriptors of their
``tasks`` opened by the supervisor: the permission check is the opener's; a thread
moving itself takes no global lock).  Contexts with a veth pair (netlink in G: pyroute2
is not imported here), privileged ones and those whose seccomp filter is not the
default one (see serves()) keep the in-process fork (supervisor._fork_init), and so does
every start while the forker cannot answer.

The forker runs under the default seccomp filter itself (loaded before its first clone),
so every G it clones is born under that one filter and loads no copy of its own: a
filter is a BPF program of 5-8 KiB of kernel memory (its vmalloc'd image, the original
kept for checkpoint/restore, the JIT's), which 500 running vservers paid 500 times.
Nothing the forker or G's set-up calls is on the deny list.

Request (one SOCK_SEQPACKET datagram with SCM_RIGHTS): pickle of (plan, slots,
programs) where slots names the position of each passed descriptor; answer: marshal of
G's pid or an error string.  The forker exits when the supervisor closes its end or
dies (end of file, and a parent death signal: the supervisor is single-threaded).
Started as ``python -I -S <this file> --serve <fd> <supervisor pid>``.
"""

from __future__ import annotations

import marshal
import os
import pickle
import socket
import sys

REQUEST_MAX = 1 << 20       # a plan is a few KiB (a spec, its mounts)
FDS_MAX = 64
REPLY_TIMEOUT = 10.0        # seconds; a forker that does not answer is replaced


def serves(spec) -> bool:
    """Whether the forker may clone the G of ``spec`` (a ContextSpec; an unprivileged
    context without a veth pair is the supervisor's check): its processes get the
    default filter (seccomp on, SYSLOG not granted), the one the forker runs under."""
    return bool(spec.seccomp) and "SYSLOG" not in spec.bcaps


class ForkerError(Exception):
    """The forker could not be asked or did not answer: fork in-process instead."""


class InitForker:
    """Supervisor side: the forker process, started once and replaced when it died."""

    def __init__(self) -> None:
        self.pid = 0
        self.sock: socket.socket | None = None
        self.served = 0     # inits cloned by this forker process

    def alive(self) -> bool:
        return self.sock is not None

    def spawn(self) -> None:
        """Start the forker (returns at once: it imports while the next start is
        prepared; a request sent meanwhile waits in the socket)."""
        from . import entercore

        def start(fd: int) -> int:
            os.set_inheritable(fd, True)
            # posix_spawn: no fork of this (large) process, no Python code in a child
            return os.posix_spawn(sys.executable, [
                sys.executable, "-I", "-S", os.path.abspath(__file__), "--serve", str(fd),
                str(os.getpid())], {})
        self.sock, self.pid = entercore.start_server(start)
        self.served = 0

    def close(self) -> None:
        """Drop the forker (it exits on the end of file; the supervisor reaps it)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def clone(self, plan, fds: dict[str, int | list[int]], programs: dict[bool, bytes]) -> int:
        """Have G cloned: ``fds`` maps run_init's descriptors by name (ready_w, go_r,
        err_w, sock, console, memcg, join, cgroup, base) to this process's numbers.
        Returns G's pid (our child). Raises ForkerError (the forker is dropped)."""
        from . import entercore
        if self.sock is None:
            raise ForkerError("no init forker")
        order: list[int] = []
        slots: dict[str, int | list[int]] = {}
        for name, fd in fds.items():
            if isinstance(fd, list):
                slots[name] = list(range(len(order), len(order) + len(fd)))
                order += fd
            else:
                slots[name] = len(order)
                order.append(fd)
        try:
            data = pickle.dumps((plan, slots, programs), protocol=pickle.HIGHEST_PROTOCOL)
            socket.send_fds(self.sock, [data], order)
            if not entercore.readable(self.sock.fileno(), REPLY_TIMEOUT):
                raise ForkerError(f"no answer in {REPLY_TIMEOUT:g} s")
            reply = self.sock.recv(4096)
            if not reply:
                raise ForkerError("the init forker exited")
            answer = marshal.loads(reply)
        except ForkerError:
            self.close()
            raise
        except (OSError, ValueError, EOFError, pickle.PicklingError) as e:
            self.close()
            raise ForkerError(f"{type(e).__name__}: {e}") from None
        if isinstance(answer, int) and answer > 0:
            self.served += 1
            return answer
        raise ForkerError(str(answer))


# --- the forker process -----------------------------------------------------------------

def _clone_g(spawn, creds, namespaces, plan, fds: dict, sock: socket.socket,
             own: dict[str, int]) -> int:
    """Clone G (our caller's child) in the base mount namespace and, for VIRT_UPTIME, a
    new time namespace (ours stays: only time_for_children changes, and back), and write
    its id maps; returns G's pid (never returns in G)."""
    # G waits for its maps on this pipe, not for our answer to reach the supervisor and
    # the supervisor's "m"
    mapped_r, mapped_w = os.pipe2(os.O_CLOEXEC)
    plan.mapped_r = mapped_r
    try:
        pid = _clone(spawn, creds, namespaces, plan, fds.get("base"), fds.get("cgroup"), own)
        if pid == 0:
            try:    # G: never back into the serving loop
                os.close(mapped_w)
                sock.close()
                for fd in own.values():
                    os.close(fd)
                for name in ("base", "cgroup"):
                    if fds.get(name) is not None:
                        os.close(fds[name])
                spawn.run_init(plan, fds["ready_w"], fds["go_r"], fds["err_w"],
                               socket.socket(fileno=fds["sock"]))
            finally:
                os._exit(127)
        os.close(mapped_r)
        mapped_r = -1
        # as its privileged parent would (setgroups stays "allow"); on failure G reads the
        # end of file and gives up, the supervisor forks it itself and reports what fails
        spawn.idmap.write_maps(pid, plan.ids)
        os.write(mapped_w, b"m")
        return pid
    finally:
        for fd in (mapped_r, mapped_w):
            if fd >= 0:
                os.close(fd)


def _clone(spawn, creds, namespaces, plan, base: int | None, cgroup: int | None,
           own: dict[str, int]) -> int:
    flags = creds.CLONE_PARENT | spawn.clone_flags(plan)
    pid = -1
    try:
        if plan.new_time:
            namespaces.unshare(namespaces.CLONE_NEWTIME)
            with open("/proc/self/timens_offsets", "w") as f:
                f.write(spawn.time_offsets())
        if base is not None:
            creds.setns(base, namespaces.CLONE_NEWNS)
        pid = creds.clone(flags, cgroup)
    finally:
        if pid != 0:
            if base is not None:
                creds.setns(own["mnt"], namespaces.CLONE_NEWNS)
            if plan.new_time:
                creds.setns(own["time"], namespaces.CLONE_NEWTIME)
    return pid


def serve(sock_fd: int, supervisor: int) -> None:
    import gc
    import signal
    import types
    here = os.path.dirname(os.path.abspath(__file__))
    # the packages without their __init__ (libvserver.native's imports the whole backend)
    for name, path in (("libvserver", os.path.dirname(here)), ("libvserver.native", here)):
        mod = types.ModuleType(name)
        mod.__path__ = [path]
        sys.modules[name] = mod
    from libvserver.native import creds, entercore, namespaces, seccomp, spawn
    # what G imports late (loopback_up): with the guest's ids it may not read the host's
    # Python files, and a search of sys.path from inside took milliseconds
    import fcntl, struct  # noqa: E401,F401
    from libvserver.native import netns  # noqa: F401
    creds.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != supervisor:
        os._exit(0)     # the supervisor died before the signal was set
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sock = socket.socket(fileno=sock_fd)
    own = {n: os.open(f"/proc/self/ns/{n}", os.O_RDONLY | os.O_CLOEXEC)
           for n in ("mnt", "time") if os.path.exists(f"/proc/self/ns/{n}")}
    # what is imported now stays: no collection walks (and so copies) it in each G
    gc.freeze()
    filtered = False    # whether the default seccomp filter is loaded here (serves())
    while True:
        data, got = entercore.next_request(sock, REQUEST_MAX, FDS_MAX)
        reply: int | str
        fds: dict = {}
        try:
            for fd in got:
                # SCM_RIGHTS gives them without close-on-exec: the error pipe must end
                # at init's exec, as it does when G is forked by the supervisor
                os.set_inheritable(fd, False)
            plan, slots, programs = pickle.loads(data)
            fds = {name: ([got[i] for i in at] if isinstance(at, list) else got[at])
                   for name, at in slots.items()}
            plan.console_fd = fds.get("console")
            plan.memcg_tasks_fd = fds.get("memcg")
            plan.join_tasks_fds = fds.get("join", [])
            seccomp.adopt(programs)
            if not serves(plan.spec):
                raise ValueError("not a vserver of the default seccomp filter")
            if not filtered:
                seccomp.program(False).load()
                filtered = True
            plan.seccomp_inherited = True
            reply = _clone_g(spawn, creds, namespaces, plan, fds, sock, own)
        except Exception as e:
            reply = f"{type(e).__name__}: {e}"
        finally:
            for fd in got:
                try:
                    os.close(fd)
                except OSError:
                    pass
        try:
            sock.send(marshal.dumps(reply))
        except OSError:
            os._exit(0)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        try:
            serve(int(sys.argv[2]), int(sys.argv[3]))
        except BaseException:
            os._exit(1)
    os._exit(2)
