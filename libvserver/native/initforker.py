"""The init forkers: small processes that clone each unprivileged context's PID 1 (G)
for the supervisor, as the entry server (entercore.serve) forks entering processes for
a daemon worker.  Two of them: the C one (vsinit.c, NativeForker below) clones G and
runs its whole setup in C for the common plans, the Python one (this file's serve())
takes every other plan and runs spawn.run_init; what follows is the Python one's case,
which the C one's docstring takes further.

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
as the supervisor did), the same pipes, socket and console (G makes its time
namespace itself: spawn.child_flags), and the
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
Loading one also cost each start ~0.4 ms, mostly the kernel's JIT of the filter,
whatever its length.  Nothing the forker or G's set-up calls is on the deny list.

Request (one SOCK_SEQPACKET datagram with SCM_RIGHTS): pickle of (plan, slots,
programs) where slots names the position of each passed descriptor; answer: marshal of
G's pid or an error string.  The forker exits when the supervisor closes its end or
dies (end of file, and a parent death signal: the supervisor is single-threaded).
Started as ``python -I -S <this file> --serve <fd> <supervisor pid>``.
"""

from __future__ import annotations

import json
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
    """Supervisor side: the forker process, started once and replaced when it died.
    This class is the Python forker (this file's serve()), which takes every plan the
    supervisor gives a forker; NativeForker the C one (vsinit.c), for the common plans."""

    def __init__(self) -> None:
        self.pid = 0
        self.sock: socket.socket | None = None
        self.served = 0     # inits cloned by this forker process
        self.tried = 0.0    # time.monotonic() of the last spawn (supervisor.FORKER_RETRY)
        self.phases: list[list] = []    # the forker's phases of the last clone (phases.py)

    def alive(self) -> bool:
        return self.sock is not None

    def takes(self, plan) -> bool:
        """Whether this forker can clone G of ``plan`` (an unprivileged plan without a
        veth pair, with the default seccomp filter: the supervisor checks those)."""
        return True

    def _argv(self, fd: int) -> list[str]:
        return [sys.executable, "-I", "-S", os.path.abspath(__file__), "--serve", str(fd),
                str(os.getpid())]

    def spawn(self) -> None:
        """Start the forker (returns at once: it imports while the next start is
        prepared; a request sent meanwhile waits in the socket)."""
        from . import entercore

        def start(fd: int) -> int:
            os.set_inheritable(fd, True)
            # posix_spawn: no fork of this (large) process, no Python code in a child
            argv = self._argv(fd)
            return os.posix_spawn(argv[0], argv, {})
        self.sock, self.pid = entercore.start_server(start)
        self.served = 0

    def close(self) -> None:
        """Drop the forker (it exits on the end of file; the supervisor reaps it)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _encode(self, plan, slots: dict[str, int | list[int]],
                programs: dict[bool, bytes]) -> bytes:
        return pickle.dumps((plan, slots, programs), protocol=pickle.HIGHEST_PROTOCOL)

    def _decode(self, reply: bytes) -> tuple[int | str, list[list]]:
        answer = marshal.loads(reply)
        if isinstance(answer, tuple):   # (pid, the forker's phases): plan.phases
            return answer[0], answer[1]
        return answer, []

    def clone(self, plan, fds: dict[str, int | list[int]], programs: dict[bool, bytes]) -> int:
        """Have G cloned: ``fds`` maps run_init's descriptors by name (ready_w, go_r,
        err_w, sock, console, memcg, join, cgroup, base) to this process's numbers.
        Returns G's pid (our child). Raises ForkerError (the forker is dropped)."""
        from . import entercore
        if self.sock is None:
            raise ForkerError("no init forker")
        self.phases = []
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
            data = self._encode(plan, slots, programs)
            socket.send_fds(self.sock, [data], order)
            if not entercore.readable(self.sock.fileno(), REPLY_TIMEOUT):
                raise ForkerError(f"no answer in {REPLY_TIMEOUT:g} s")
            reply = self.sock.recv(65536)
            if not reply:
                raise ForkerError("the init forker exited")
            answer, self.phases = self._decode(reply)
        except ForkerError:
            self.close()
            raise
        except (OSError, ValueError, EOFError, TypeError, pickle.PicklingError) as e:
            self.close()
            raise ForkerError(f"{type(e).__name__}: {e}") from None
        if isinstance(answer, int) and answer > 0:
            self.served += 1
            return answer
        raise ForkerError(str(answer))


class NativeForker(InitForker):
    """The C init forker (vsinit.c, built by `make setup` next to this file): it clones G
    and runs G's setup in C, for the plans that need none of spawn.run_init's rarer
    parts (see takes()).  The plan travels as NUL-separated "key=value" entries; every
    list in it (masks, devices, links, rlimits, sysctls) comes from the module that owns
    it, so vsinit.c holds only the order of the steps."""

    @staticmethod
    def available() -> bool:
        from . import entercore
        return entercore.native_program() is not None

    def takes(self, plan) -> bool:
        spec = plan.spec
        return (not spec.mounts and not spec.api_mounts and plan.notify_path is None
                and plan.overlay is None)

    def _argv(self, fd: int) -> list[str]:
        from . import entercore
        return [entercore.native_program() or "vsinit", "--serve", str(fd), str(os.getpid())]

    def _encode(self, plan, slots: dict[str, int | list[int]],
                programs: dict[bool, bytes]) -> bytes:
        from . import entercore, rootfs, spawn
        spec = plan.spec
        out = [f"idmap={plan.ids.map_line()}", f"seccomp={programs[False].hex()}",
               f"unshare={spawn.child_flags(plan)}", f"new_net={int(plan.new_net)}",
               f"new_time={int(plan.new_time)}", f"loopback={int(plan.new_net)}",
               f"host_sys={int(plan.host_sys)}", f"vdir={spec.vdir}",
               f"hostname={spec.uname.get('NODENAME') or spec.name}",
               f"keep_caps={sum(1 << c for c in plan.keep_caps)}",
               f"dev_opts={rootfs.DEV_OPTS}", f"devpts_opts={rootfs.DEVPTS_OPTS}",
               f"mask_source={rootfs.MASK_SOURCE}", f"phases={int(plan.phases)}"]
        if "DOMAINNAME" in spec.uname:
            out.append(f"domainname={spec.uname['DOMAINNAME']}")
        out += [f"sysctl={path}\t{value}" for path, value in spawn.sysctls(plan)]
        out += [f"device={name}" for name, _, _ in rootfs.DEVICES]
        out += [f"link={name}\t{target}" for name, target in rootfs.DEV_LINKS]
        out += [f"mask={rel}" for rel in rootfs.MASKED]
        out += [f"ro={rel}" for rel in rootfs.READ_ONLY]
        out += [f"rlimit={r.resource}:{r.soft}:{r.hard}" for r in plan.rlimits]
        out += [f"argv={a}" for a in spec.init]
        out += [f"env={k}={v}" for k, v in spawn.init_env(plan).items()]
        for name, at in slots.items():
            out += [f"fd.{name}={i}" for i in (at if isinstance(at, list) else [at])]
        return entercore.native_entries(out)

    def _decode(self, reply: bytes) -> tuple[int | str, list[list]]:
        text = reply.decode(errors="replace")
        if text.startswith("E:"):
            return text[2:], []
        first, _, phases = text.partition("\n")
        return int(first), (json.loads(phases) if phases else [])


# --- the forker process -----------------------------------------------------------------

def _clone_g(spawn, creds, namespaces, plan, fds: dict, sock: socket.socket,
             own_mnt: int, ph) -> int:
    """Clone G (our caller's child) in the base mount namespace and write its id maps;
    returns G's pid (never returns in G)."""
    # G waits for its maps on this pipe, not for our answer to reach the supervisor and
    # the supervisor's "m"
    mapped_r, mapped_w = os.pipe2(os.O_CLOEXEC)
    plan.mapped_r = mapped_r
    try:
        pid = _clone(spawn, creds, namespaces, plan, fds.get("base"), fds.get("cgroup"),
                     own_mnt)
        if pid == 0:
            try:    # G: never back into the serving loop
                os.close(mapped_w)
                sock.close()
                os.close(own_mnt)
                for name in ("base", "cgroup"):
                    if fds.get(name) is not None:
                        os.close(fds[name])
                spawn.run_init(plan, fds["ready_w"], fds["go_r"], fds["err_w"],
                               socket.socket(fileno=fds["sock"]))
            finally:
                os._exit(127)
        ph.mark("forker: setns, clone, setns back")
        os.close(mapped_r)
        mapped_r = -1
        # as its privileged parent would (setgroups stays "allow"); on failure G reads the
        # end of file and gives up, the supervisor forks it itself and reports what fails
        spawn.idmap.write_maps(pid, plan.ids)
        os.write(mapped_w, b"m")
        ph.mark("forker: id maps")
        return pid
    finally:
        for fd in (mapped_r, mapped_w):
            if fd >= 0:
                os.close(fd)


def _clone(spawn, creds, namespaces, plan, base: int | None, cgroup: int | None,
           own_mnt: int) -> int:
    flags = creds.CLONE_PARENT | spawn.clone_flags(plan)
    pid = -1
    try:
        if base is not None:
            creds.setns(base, namespaces.CLONE_NEWNS)
        pid = creds.clone(flags, cgroup)
    finally:
        if pid != 0 and base is not None:
            creds.setns(own_mnt, namespaces.CLONE_NEWNS)
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
    from libvserver.native.phases import Phases
    # what G imports late (loopback_up): with the guest's ids it may not read the host's
    # Python files, and a search of sys.path from inside took milliseconds
    import fcntl, struct  # noqa: E401,F401
    from libvserver.native import netns  # noqa: F401
    creds.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != supervisor:
        os._exit(0)     # the supervisor died before the signal was set
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sock = socket.socket(fileno=sock_fd)
    own_mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    # what is imported now stays: no collection walks (and so copies) it in each G
    gc.freeze()
    filtered = False    # this process carries the default seccomp filter (see below)
    while True:
        data, got = entercore.next_request(sock, REQUEST_MAX, FDS_MAX)
        ph = Phases(True)
        reply: int | str | tuple
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
                # once, for good: every G is born with it (a shared copy; loading
                # one costs a start ~0.4 ms, most of it fixed: the filter's JIT)
                seccomp.program(False).load()
                filtered = True
            plan.seccomp_inherited = True
            ph.on = plan.phases
            ph.mark("forker: unpickle the plan")
            reply = _clone_g(spawn, creds, namespaces, plan, fds, sock, own_mnt, ph)
            if plan.phases:
                reply = (reply, ph.items)
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
