"""Creating a context: the code of its PID 1 between the supervisor's fork and init.

supervisor: unshare(PID [TIME]) for its children only, fork G, setns back into its
            own PID and time namespaces (it is single-threaded, so it may), then,
            while G builds its mounts, moves G into the context's cgroups and the
            veth peer into G's network namespace, and sends G "go".
G:          PID 1 of the new namespace: unshares mnt uts ipc [net] for itself,
            mounts, pivot_root, hostname, rlimits, bounding set, waits for "go",
            execs init.

One fork, and the slow kernel work (cgroup migration waits for an RCU grace
period, so does detaching the old root) runs in two processes at once.
Errors travel back as one line "Kind: message" on a close-on-exec pipe: EOF
without a line means init was exec'd.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import traceback
from dataclasses import dataclass

from ..api import CAP_NUMBERS, ContextSpec, InitMissing, StartError
from . import limits, namespaces, rootfs, seccomp
from .namespaces import (CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWTIME,
                         CLONE_NEWUTS)

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


def child_flags(plan: Plan) -> int:
    """Namespaces G unshares for itself (PID and time come from the supervisor's fork)."""
    flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC
    if plan.new_net:
        flags |= CLONE_NEWNET
    return flags


def parent_flags(plan: Plan) -> int:
    """Namespaces the supervisor unshares for its children around the fork."""
    return CLONE_NEWPID | (CLONE_NEWTIME if plan.new_time else 0)


def _report(fd: int, exc: BaseException) -> None:
    kind = type(exc).__name__ if isinstance(exc, StartError) else "StartError"
    msg = str(exc) or repr(exc)
    if not isinstance(exc, (StartError, OSError)):
        msg += " | " + "".join(traceback.format_exception_only(type(exc), exc)).strip()
    try:
        os.write(fd, f"{kind}: {msg}".replace("\n", " ").encode()[:4000] + b"\n")
    except OSError:
        pass


def time_offsets() -> str:
    """Offsets that put CLOCK_MONOTONIC and CLOCK_BOOTTIME near 0 in the new namespace."""
    mono = int(time.clock_gettime(time.CLOCK_MONOTONIC))
    boot = int(time.clock_gettime(time.CLOCK_BOOTTIME))
    # whole seconds only: the kernel refuses offsets that would make a clock negative
    return f"monotonic -{mono} 0\nboottime -{boot} 0\n"


def _wait_go(go_r: int) -> None:
    if os.read(go_r, 1) != b"g":
        raise StartError("the supervisor gave up on this context")
    os.close(go_r)


def run_init(plan: Plan, ready_w: int, go_r: int, err_w: int) -> None:
    """Body of G, PID 1 of the context; execs init or reports and exits. Never returns."""
    spec = plan.spec
    try:
        # a fork of the supervisor: its signal wake-up pipe is not ours to write to
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.setsid()
        os.umask(0)
        namespaces.unshare(child_flags(plan))
        os.write(ready_w, b"r")
        os.close(ready_w)
        for name, value in plan.ipc.items():
            with open(f"/proc/sys/kernel/{name}", "w") as f:
                f.write(value)
        if plan.new_net and "RAW_ICMP" in spec.ccaps:
            with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
                f.write("0 2147483647")
        namespaces.sethostname(spec.uname.get("NODENAME") or spec.name)
        if "DOMAINNAME" in spec.uname:
            namespaces.setdomainname(spec.uname["DOMAINNAME"])
        go_pending = True
        if plan.netplan is not None:
            # the peer arrives with "go"; netlink code may import lazily: before pivot_root
            _wait_go(go_r)
            go_pending = False
            from . import netns
            netns.configure_inside(plan.netplan)
        elif plan.new_net:
            from . import netns
            netns.loopback_up()
        rootfs.setup(str(spec.vdir), spec.mounts, plan.loopdev)
        os.umask(0o022)
        limits.apply_rlimits(plan.rlimits)
        namespaces.drop_bounding_set(plan.keep_caps)
        # exec keeps ignored signals ignored and the mask; Python ignores PIPE and XFSZ.
        for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGTERM,
                  signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(s, signal.SIG_DFL)
        if go_pending:
            _wait_go(go_r)  # in the context's cgroups from here on
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, err_w)
        os.closerange(err_w + 1, 65536)
        seccomp.load_prepared(spec)
        try:
            os.execve(spec.init[0], spec.init, INIT_ENV)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR):
                raise InitMissing(f"init {spec.init[0]} cannot be executed in {spec.vdir}: "
                                  f"{e.strerror}") from None
            raise
    except BaseException as e:
        _report(err_w, e)
    os._exit(127)


def keep_caps(spec: ContextSpec) -> set[int]:
    return {CAP_NUMBERS[c] for c in spec.bcaps if c in CAP_NUMBERS}
