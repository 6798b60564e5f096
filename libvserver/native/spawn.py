"""Creating a context: the code of the two short-lived processes between supervisor and init.

supervisor ──fork──▶ C: joins the cgroups, builds the veth pair, unshares
                        (mnt uts ipc pid [net] [time]), forks G, reports G's pid, exits.
                     G: PID 1 of the new namespace: mounts, pivot_root, hostname,
                        rlimits, bounding set, exec init.  G is re-parented to the
                        supervisor (child subreaper) when C exits.

The supervisor never unshares anything itself, so it stays in its own
namespaces and may be as threaded as it likes.  Errors travel back as one
line "Kind: message" on a close-on-exec pipe: EOF without a line means init
was exec'd.
"""

from __future__ import annotations

import errno
import os
import signal
import time
import traceback
from dataclasses import dataclass

from ..api import CAP_NUMBERS, ContextSpec, InitMissing, StartError
from . import limits, namespaces, rootfs
from .cgroups import Layout
from .namespaces import (CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWTIME,
                         CLONE_NEWUTS)

INIT_ENV = {"PATH": "/sbin:/bin:/usr/sbin:/usr/bin", "TERM": "linux", "container": "vcd"}


@dataclass
class Plan:
    """Everything decided before forking, so the children only execute."""
    spec: ContextSpec
    layout: Layout
    netplan: object | None      # netns.NetPlan
    new_net: bool
    new_time: bool
    loopdev: str | None
    rlimits: list[limits.RlimitPlan]
    ipc: dict[str, str]
    keep_caps: set[int]


def ns_flags(plan: Plan) -> int:
    flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID
    if plan.new_net:
        flags |= CLONE_NEWNET
    if plan.new_time:
        flags |= CLONE_NEWTIME
    return flags


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


def run_intermediate(plan: Plan, info_w: int, err_w: int) -> None:
    """Body of C; never returns."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        plan.layout.join(plan.spec.xid)
        host = None
        if plan.netplan is not None:
            from . import netns
            netns.create_host_side(plan.netplan)
            host = netns.HostLink()
        namespaces.unshare(ns_flags(plan))
        if plan.new_time:
            with open("/proc/self/timens_offsets", "w") as f:
                f.write(time_offsets())
        if plan.netplan is not None:
            from . import netns
            netns.finish(plan.netplan, host)
            host.close()
        pid = os.fork()
        if pid == 0:
            os.close(info_w)
            run_init(plan, err_w)
        os.write(info_w, f"{pid}\n".encode())
        os._exit(0)
    except BaseException as e:
        _report(err_w, e)
        os._exit(1)


def run_init(plan: Plan, err_w: int) -> None:
    """Body of G, PID 1 of the context; execs init or reports and exits."""
    spec = plan.spec
    try:
        os.setsid()
        os.umask(0)
        for name, value in plan.ipc.items():
            with open(f"/proc/sys/kernel/{name}", "w") as f:
                f.write(value)
        if plan.new_net and "RAW_ICMP" in spec.ccaps:
            with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
                f.write("0 2147483647")
        namespaces.sethostname(spec.uname.get("NODENAME") or spec.name)
        if "DOMAINNAME" in spec.uname:
            namespaces.setdomainname(spec.uname["DOMAINNAME"])
        rootfs.setup(str(spec.vdir), spec.mounts, plan.loopdev)
        os.umask(0o022)
        limits.apply_rlimits(plan.rlimits)
        namespaces.drop_bounding_set(plan.keep_caps)
        # exec keeps ignored signals ignored and the mask; Python ignores PIPE and XFSZ.
        for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGTERM,
                  signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(s, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, err_w)
        os.closerange(err_w + 1, 65536)
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
