"""libvserver: one typed interface to the kernel for vcd, with two backends.

``get_backend()`` returns the ``vserver`` backend when ``sys_vserver`` answers
(a Linux-VServer kernel) and the ``native`` backend (namespaces, cgroups) on a
stock kernel.  The daemon never asks which one it got.
"""

from __future__ import annotations

from .api import (BCAPS, CCAPS, ENFORCED, FLAGS, LIMIT_TYPES, MEMORY_LIMIT_TYPES, UNAME_TYPES,
                  AlreadyRunning, Backend, ContextSpec, ContextStat, CpuSet, DiskLimit,
                  ExecResult, InitMissing, InvalidSpec, Limit, LimitUsage, LibvserverError,
                  Mount, MountError, NetAddr, NetCounters, NetworkError, NoSuchProcess,
                  NotRunning, QuotaError, Sched, StartError, SyscallError)


def get_backend(**options) -> Backend:
    """The backend for this kernel.

    Options (all optional): ``state_dir`` (default /run/vcd), ``cgroup_parent`` ("vcd"),
    ``notify_argv`` (argv prefix run as ``notify_argv + [action, xid]`` when a context ends),
    ``image_dir`` (/var/lib/vcd/images, for disk-limit images), ``idmap_base`` (131072: host
    id range of unprivileged contexts, see native/idmap.py).
    """
    from .vserver import syscall
    if syscall.available():
        from .vserver.backend import VserverBackend
        return VserverBackend(**options)
    from .native import NativeBackend
    return NativeBackend(**options)


__all__ = [
    "get_backend", "Backend", "ContextSpec", "ContextStat", "CpuSet", "DiskLimit", "ExecResult",
    "Limit", "LimitUsage", "Mount", "NetAddr", "NetCounters", "Sched", "LibvserverError",
    "AlreadyRunning", "NotRunning", "StartError", "InitMissing", "MountError", "QuotaError",
    "NetworkError", "InvalidSpec", "NoSuchProcess", "SyscallError", "ENFORCED", "BCAPS", "CCAPS",
    "FLAGS", "LIMIT_TYPES", "MEMORY_LIMIT_TYPES", "UNAME_TYPES",
]
