"""Creating a context: the code of its PID 1 between the supervisor's fork and init.

supervisor: makes the context's cgroups, moves
            itself into their v1 groups (a thread moving itself waits for no RCU grace
            period, a migration of another process does) and clones G into a new user
            and PID namespace and into the cgroup2 group (clone3 CLONE_INTO_CGROUP; the
            PID namespace belongs to the user namespace: reboot(2) inside needs
            CAP_SYS_BOOT there), so G is born in every group of the context; writes G's
            uid/gid maps (see idmap.py) and sends "m"; makes the host-privileged mounts
            detached (the idmapped root: vdir, the disk-limit image or the shared
            template; /sys read-only when G gets no network namespace) and passes them
            to G over a socket; moves itself back into its own groups; while G builds
            its mounts, delegates the cgroup2 group to G's root, sets the limits, keeps
            G's namespaces (handles.py; published for entering only once init was
            exec'd: until G's pivot_root its mount namespace has the host's root), makes
            the veth pair with its peer in G's netns, and sends G "go"; records init and
            resets the console log while G execs. (Where clone3 cannot, G is forked and
            migrated instead and unshares its cgroup namespace after "go".)  An
            unprivileged G is cloned by an init forker instead (vsinit.c, initforker.py:
            a small process, CLONE_PARENT, so G is still the supervisor's child), which
            never joins the context's groups: G moves itself into the v1 groups first
            thing; the rest is the same.
G:          PID 1 of the new namespaces: unshares mnt uts ipc [net] [time] cgroup (owned
            by its user namespace; its cgroup becomes "/"), takes uid/gid 0 inside, moves the
            root into place (mounts the overlay there for a shared template), mounts
            /proc /sys /dev, masks the host-wide parts of /proc and /sys, pivot_root,
            the template's API filesystems (tmpfs /run, /run/lock; the supervisor's notify
            socket on /run/host/notify), hostname, rlimits, bounding set, waits for "go",
            mounts its own cgroup2 view on /sys/fs/cgroup (api_mounts "cgroup"), loads the
            seccomp filter (unless the init forker passed it on), execs init.

A ``privileged`` context (admin-only) skips the user namespace: G is forked into a new
PID namespace only, gets no masks and no cgroup namespace, and mounts its root itself.

One fork, no cgroup migration on the way (see above), and the supervisor's work runs
beside G's. VCD_START_PHASES (phases.py) makes both report their phase timings.
Errors travel back as one line "Kind: message" on a close-on-exec pipe: EOF
without a line means init was exec'd.
"""

from __future__ import annotations

import array
import errno
import gc
import json
import os
import signal
import socket
import time
import traceback
from dataclasses import dataclass, field

from ..api import CAP_NUMBERS, ContextSpec, InitMissing, StartError
from . import creds, idmap, limits, namespaces, rootfs, seccomp
from .phases import Phases
from .namespaces import (CLONE_NEWCGROUP, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID,
                         CLONE_NEWTIME, CLONE_NEWUSER, CLONE_NEWUTS)

PHASES_PREFIX = "@phases "   # a line of init's phase timings on the error pipe
INIT_ENV = {"PATH": "/sbin:/bin:/usr/sbin:/usr/bin", "TERM": "linux", "container": "vcd"}


@dataclass
class Plan:
    """Everything decided before forking, so the children only execute."""
    spec: ContextSpec
    netplan: object | None      # netns.NetPlan
    new_net: bool
    new_time: bool
    loopdev: str | None
    rlimits: list[limits.RlimitPlan]
    ipc: dict[str, str]
    keep_caps: set[int]
    console_fd: int | None = None   # pty slave: init's stdio and the guest's /dev/console
    ids: idmap.IdRange | None = None   # None: privileged (no user namespace)
    overlay: dict | None = None        # {lower, upper, work} of a shared template
    notify_path: str | None = None     # host path of the supervisor's NOTIFY_SOCKET
    phases: bool = False               # init reports its phase timings (phases.py)
    in_cgroups: bool = False           # G is born in the context's cgroups (clone3)
    # O_WRONLY fd of the context's v1 memory group's ``tasks``, opened by the supervisor:
    # G moves itself in first thing (see Supervisor._clone_into_cgroups)
    memcg_tasks_fd: int | None = None
    # O_WRONLY fds of the other v1 groups' ``tasks``, when G was cloned by the init forker
    # (initforker.py), which never joins a context's groups: G moves itself in after memory
    join_tasks_fds: list[int] = field(default_factory=list)
    # read end of the pipe the init forker sends "m" on once it wrote G's id maps (else
    # the supervisor sends it on the go pipe)
    mapped_r: int | None = None
    # G was cloned with the default seccomp filter already on it (the init forker carries
    # it): loading it again would stack a second copy
    seccomp_inherited: bool = False

    @property
    def cgroupns(self) -> bool:
        """A cgroup namespace of its own: always with a user namespace, and for the
        cgroup view of a template's API filesystems (privileged or not)."""
        return self.ids is not None or "cgroup" in self.spec.api_mounts

    @property
    def host_sys(self) -> bool:
        """sysfs can be mounted inside a user namespace only with a network namespace of
        its own; otherwise the host's /sys comes in read-only (without its submounts)."""
        return self.ids is not None and not self.new_net


def child_flags(plan: Plan) -> int:
    """Namespaces G unshares for itself (PID comes from the supervisor's fork); G born in
    its cgroups takes its cgroup namespace at once (its cgroup becomes "/").  A time
    namespace is G's for its children only, until its execve of init moves it in (Linux
    >= 6.1, "fs/exec: switch timens when a task gets a new mm"): its clocks start at
    init's exec, and nothing is unshared in a process that clones many Gs."""
    flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC
    if plan.new_time:
        flags |= CLONE_NEWTIME
    if plan.in_cgroups and plan.cgroupns:
        flags |= CLONE_NEWCGROUP
    if plan.new_net:
        flags |= CLONE_NEWNET
    return flags


def parent_flags(plan: Plan) -> int:
    """Namespaces the supervisor unshares for its children around the fork."""
    return 0 if plan.ids is not None else CLONE_NEWPID


def clone_flags(plan: Plan) -> int:
    """Namespaces G is created in (clone); 0 means a plain fork."""
    return CLONE_NEWUSER | CLONE_NEWPID if plan.ids is not None else 0


def host_mounts(plan: Plan, userns_fd: int) -> list[int]:
    """Supervisor side: the detached mounts G needs, made with host privileges.

    [root, (sys)]: root is the idmapped vdir, disk-limit image or shared template
    (overlay lower); sys is a read-only clone of the host's /sys without submounts.
    The caller closes the fds after sending them."""
    fds: list[int] = []
    try:
        if plan.loopdev:
            fd = idmap.fsmount("ext4", plan.loopdev)
            fds.append(fd)
            idmap.idmap(fd, userns_fd)
        else:
            src = plan.overlay["lower"] if plan.overlay else str(plan.spec.vdir)
            fds.append(idmap.idmapped_tree(src, userns_fd))
        if plan.host_sys:
            fd = idmap.clone_tree("/sys")
            fds.append(fd)
            idmap.set_attrs(fd, idmap.MOUNT_ATTR_RDONLY | idmap.MOUNT_ATTR_NOSUID |
                            idmap.MOUNT_ATTR_NODEV | idmap.MOUNT_ATTR_NOEXEC)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def send_fds(sock: socket.socket, fds: list[int]) -> None:
    sock.sendmsg([b"f"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def _recv_fds(sock: socket.socket, n: int) -> list[int]:
    msg, anc, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(4 * n))
    fds = array.array("i")
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % 4])
    if msg != b"f" or len(fds) != n:
        raise StartError("the supervisor gave up on this context")
    return list(fds)


def _report(fd: int, exc: BaseException) -> None:
    kind = type(exc).__name__ if isinstance(exc, StartError) else "StartError"
    msg = str(exc) or repr(exc)
    if not isinstance(exc, (StartError, OSError)):
        msg += " | " + "".join(traceback.format_exception_only(type(exc), exc)).strip()
    try:
        os.write(fd, f"{kind}: {msg}".replace("\n", " ").encode()[:4000] + b"\n")
    except OSError:
        pass


def sysctls(plan: Plan) -> list[tuple[str, str]]:
    """(path, value) G writes in its new IPC (and network) namespace."""
    out = [(f"/proc/sys/kernel/{name}", value) for name, value in plan.ipc.items()]
    if plan.new_net and "RAW_ICMP" in plan.spec.ccaps:
        # inside a user namespace only its mapped gids are valid
        out.append(("/proc/sys/net/ipv4/ping_group_range",
                    f"0 {plan.ids.count - 1}" if plan.ids is not None else "0 2147483647"))
    return out


def time_offsets() -> str:
    """Offsets that put CLOCK_MONOTONIC and CLOCK_BOOTTIME near 0 in the new namespace."""
    mono = int(time.clock_gettime(time.CLOCK_MONOTONIC))
    boot = int(time.clock_gettime(time.CLOCK_BOOTTIME))
    # whole seconds only: the kernel refuses offsets that would make a clock negative
    return f"monotonic -{mono} 0\nboottime -{boot} 0\n"


def _wait_go(go_r: int, cgroupns: bool = False) -> None:
    """``cgroupns``: unshare the cgroup namespace once in the context's cgroups."""
    if os.read(go_r, 1) != b"g":
        raise StartError("the supervisor gave up on this context")
    os.close(go_r)
    if cgroupns:
        # in the context's cgroups now: they become "/" for the guest
        namespaces.unshare(CLONE_NEWCGROUP)


def _wait_mapped(go_r: int) -> None:
    if os.read(go_r, 1) != b"m":
        raise StartError("the supervisor gave up on this context")


def _open_host_dirs(plan: Plan) -> list[int]:
    """O_PATH fds of the vdir (and a shared template's upper and work directories),
    opened while this process still has host uid 0: their host parents (e.g. a 0700
    directory of root's) need not be searchable by the guest's mapped root."""
    paths = [str(plan.spec.vdir)]
    if plan.overlay is not None and not plan.loopdev:
        paths += [plan.overlay["upper"], plan.overlay["work"]]
    fds: list[int] = []
    try:
        for p in paths:
            fds.append(os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
    except OSError as e:
        for fd in fds:
            os.close(fd)
        raise StartError(f"cannot open {e.filename or paths[len(fds)]}: {e.strerror}") from None
    return fds


def _open_bind_sources(plan: Plan) -> dict[str, int]:
    """O_PATH fds of host bind sources (outside the vdir), opened with host uid 0 for the
    same reason; one that cannot be opened is left to spec_mount to report."""
    out: dict[str, int] = {}
    vdir = os.path.normpath(str(plan.spec.vdir))
    for m in plan.spec.mounts:
        src = os.path.normpath(m.src) if m.src and os.path.isabs(m.src) else None
        if src is None or not rootfs.is_bind(m) or m.src in out or \
                not os.path.relpath(src, vdir).startswith(".."):
            continue
        try:
            out[m.src] = os.open(src, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
    return out


def _take_root_ids() -> None:
    """Become uid/gid 0 of the user namespace (host ids are unmapped in there)."""
    os.setresgid(0, 0, 0)
    os.setgroups([])  # the host's supplementary groups mean nothing in here
    os.setresuid(0, 0, 0)


def run_init(plan: Plan, ready_w: int, go_r: int, err_w: int,
             sock: socket.socket | None = None) -> None:
    """Body of G, PID 1 of the context; execs init or reports and exits. Never returns."""
    spec = plan.spec
    # a fork of the supervisor until exec: a collection would walk (and so copy) every
    # page of objects it shares with the supervisor
    gc.disable()
    ph = Phases(plan.phases)
    try:
        if plan.memcg_tasks_fd is not None:
            # before anything else: what G allocates from here on is the context's; the
            # permission check is the opener's (the supervisor's) credentials
            os.write(plan.memcg_tasks_fd, b"0")
            os.close(plan.memcg_tasks_fd)
        for fd in plan.join_tasks_fds:
            os.write(fd, b"0")
            os.close(fd)
        if plan.join_tasks_fds:
            ph.mark("init: join the v1 groups")
        # a fork of the supervisor: its signal wake-up pipe is not ours to write to
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.setsid()
        os.umask(0)
        userns = plan.ids is not None
        if userns:
            if plan.mapped_r is not None:
                _wait_mapped(plan.mapped_r)
                os.close(plan.mapped_r)
            else:
                _wait_mapped(go_r)
        ph.mark("init: wait for the id maps")
        namespaces.unshare(child_flags(plan))
        if plan.new_time:
            # before any process is in it (the kernel's rule), with our uid still the
            # host's: CAP_SYS_TIME in the namespace's owner, our user namespace
            with open("/proc/self/timens_offsets", "w") as f:
                f.write(time_offsets())
        notify_fd = _open_notify(plan)
        ph.mark("init: unshare mnt uts ipc" + (" net" if plan.new_net else ""))
        if userns:
            host_dirs = _open_host_dirs(plan)
            host_srcs = _open_bind_sources(plan)
            _take_root_ids()
        os.write(ready_w, b"r")
        os.close(ready_w)
        for path, value in sysctls(plan):
            with open(path, "w") as f:
                f.write(value)
        namespaces.sethostname(spec.uname.get("NODENAME") or spec.name)
        if "DOMAINNAME" in spec.uname:
            namespaces.setdomainname(spec.uname["DOMAINNAME"])
        ph.mark("init: ids, sysctls, hostname")
        go_pending = True
        if plan.netplan is not None:
            # the peer arrives with "go"; netlink code may import lazily: before pivot_root
            _wait_go(go_r, plan.cgroupns and not plan.in_cgroups)
            go_pending = False
            from . import netns
            ph.mark("init: wait for go (cgroups, veth)")
            netns.configure_inside(plan.netplan)
            ph.mark("init: network inside")
        elif plan.new_net:
            from . import netns
            netns.loopback_up()
            ph.mark("init: loopback up")
        if userns:
            assert sock is not None
            fds = _recv_fds(sock, 2 if plan.host_sys else 1)
            sock.close()
            ph.mark("init: wait for the idmapped root")
            rootfs.setup_unprivileged(str(spec.vdir), spec.mounts, host_dirs, fds[0],
                                      fds[1] if plan.host_sys else None, plan.new_net,
                                      host_srcs, plan.console_fd, spec.api_mounts, notify_fd,
                                      ph.mark)
        else:
            rootfs.setup(str(spec.vdir), spec.mounts, plan.loopdev, console=plan.console_fd,
                         api_mounts=spec.api_mounts, notify_fd=notify_fd, mark=ph.mark)
        os.umask(0o022)
        limits.apply_rlimits(plan.rlimits)
        creds.drop_bounding_set(plan.keep_caps)
        ph.mark("init: rlimits, bounding set")
        # exec keeps ignored signals ignored and the mask; Python ignores PIPE and XFSZ.
        for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGTERM,
                  signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(s, signal.SIG_DFL)
        if go_pending:
            # cgroups and limits are in place
            _wait_go(go_r, plan.cgroupns and not plan.in_cgroups)
            ph.mark("init: wait for go (cgroups)")
        if "cgroup" in spec.api_mounts:
            rootfs.mount_cgroup()
        stdio = plan.console_fd if plan.console_fd is not None else os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(stdio, fd)
        creds.close_all_but({0, 1, 2, err_w})   # every number, not up to a guess
        ph.mark("init: stdio, close fds")
        if not (plan.seccomp_inherited and creds.seccomp_mode() == creds.SECCOMP_MODE_FILTER):
            seccomp.load_prepared(spec)
            ph.mark("init: seccomp load")
        if plan.phases:
            os.write(err_w, (PHASES_PREFIX + json.dumps(ph.items) + "\n").encode())
        try:
            os.execve(spec.init[0], spec.init, init_env(plan))
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR):
                raise InitMissing(f"init {spec.init[0]} cannot be executed in {spec.vdir}: "
                                  f"{e.strerror}") from None
            raise
    except BaseException as e:
        _report(err_w, e)
    os._exit(127)


def init_env(plan: Plan) -> dict[str, str]:
    """INIT_ENV, with NOTIFY_SOCKET when init reports readiness (``ready = "notify"``)."""
    if plan.notify_path is None:
        return INIT_ENV
    return {**INIT_ENV, "NOTIFY_SOCKET": "/" + rootfs.NOTIFY_PATH}


def _open_notify(plan: Plan) -> int | None:
    """O_PATH fd of the supervisor's notify socket, opened in G's new mount namespace
    (a bind needs a source of this namespace) while G still has host uid 0 (the state
    directory is root's 0700)."""
    if plan.notify_path is None:
        return None
    try:
        return os.open(plan.notify_path, os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        raise StartError(f"cannot open the notify socket {plan.notify_path}: "
                         f"{e.strerror}") from None


def keep_caps(spec: ContextSpec) -> set[int]:
    return {CAP_NUMBERS[c] for c in spec.bcaps if c in CAP_NUMBERS}
