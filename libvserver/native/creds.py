"""Credentials of a process about to become a vserver's: descriptors, dumpability,
uids, capabilities.

Every call here reads nothing from the filesystem, so it is safe after the caller has
joined a vserver's mount namespace (whose /proc the guest controls).  Wrappers raise
OSError naming the call.
"""

from __future__ import annotations

import ctypes
import errno
import os

# the C library the interpreter is linked with (no ldconfig lookup: this module also
# starts fresh entering processes, see entercore.py)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long
# the same library, called with the GIL held: a clone must not let another thread run
_pylibc = ctypes.PyDLL(None, use_errno=True)
_pylibc.syscall.restype = ctypes.c_long

PR_SET_DUMPABLE = 4
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SYS_CAPSET = 126            # x86_64
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
MAX_CAP = 63                # the kernel answers EINVAL past its last capability
FD_MAX = 0x7FFFFFFF
SYS_CLONE = 56              # x86_64
SYS_CLONE3 = 435            # every architecture
CLONE_INTO_CGROUP = 0x200000000
CLONE_PARENT = 0x00008000   # the child's parent is the caller's parent
PR_SET_PDEATHSIG = 1


class _CloneArgs(ctypes.Structure):
    """struct clone_args (linux/sched.h, CLONE_ARGS_SIZE_VER2)."""
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def set_dumpable(on: bool) -> None:
    """Not dumpable: no ptrace attach, pidfd_getfd or /proc/<pid>/mem by anyone without
    CAP_SYS_PTRACE in the user namespace this process's memory was made in."""
    _check(_libc.prctl(PR_SET_DUMPABLE, int(on), 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def close_all_but(keep: set[int]) -> None:
    """Close every descriptor except ``keep`` (close_range over the gaps)."""
    lo = 0
    for fd in sorted(keep) + [FD_MAX]:
        if fd > lo:
            os.closerange(lo, fd)
        lo = fd + 1


def drop_groups() -> None:
    """No supplementary groups; done before joining a user namespace, where setgroups()
    may be denied and the host's groups would otherwise stay (unmapped) with the process."""
    os.setgroups([])


def become_guest_root(userns: bool) -> None:
    """uid/gid 0: inside the joined user namespace (its root, mapped to an unprivileged
    host id) or, without one, the host's root. Call drop_groups() first."""
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError as e:
        where = "in the vserver's user namespace" if userns else "on the host"
        raise OSError(e.errno, f"cannot become uid/gid 0 {where}: {e.strerror}") from None


def drop_bounding_set(keep: set[int]) -> None:
    """Leave exactly ``keep`` in the bounding set (without reading /proc) and clear
    the ambient set. Needs CAP_SETPCAP."""
    for cap in range(MAX_CAP + 1):
        if cap in keep:
            continue
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err == errno.EINVAL:
                break   # past the kernel's last capability
            raise OSError(err, f"prctl(PR_CAPBSET_DROP, {cap}): {os.strerror(err)}")
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
           "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")


def limit_caps(keep: set[int]) -> None:
    """Effective, permitted and inheritable sets := ``keep`` (∩ what is held)."""
    lo = sum(1 << c for c in keep if c < 32)
    hi = sum(1 << (c - 32) for c in keep if 32 <= c < 64)
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    get = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(hdr), get), "capget")
    data = (_CapData * 2)()
    for i, mask in enumerate((lo, hi)):
        held = get[i].permitted & mask
        data[i].effective = data[i].permitted = held
        data[i].inheritable = held
    _check(_libc.syscall(SYS_CAPSET, ctypes.byref(hdr), data), "capset")


def clone(flags: int, cgroup_fd: int | None = None) -> int:
    """fork() into new namespaces (``flags``: CLONE_NEW*) and, given ``cgroup_fd`` (a
    cgroup2 directory), born in that cgroup (clone3's CLONE_INTO_CGROUP: no migration,
    so none of the RCU grace period a migration waits for).  The raw syscall runs with
    the GIL held between Python's own before/after-fork hooks, as os.fork() does; it
    skips the C library's fork handlers, so the caller must be single-threaded.
    Returns 0 in the child."""
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    if cgroup_fd is not None:
        # with CLONE_PARENT the child signals our parent as we would: clone3 wants 0 here
        args = _CloneArgs(flags=flags | CLONE_INTO_CGROUP,
                          exit_signal=0 if flags & CLONE_PARENT else 17, cgroup=cgroup_fd)
        pid = _pylibc.syscall(ctypes.c_long(SYS_CLONE3), ctypes.byref(args),
                              ctypes.c_size_t(ctypes.sizeof(args)))
    else:
        pid = _pylibc.syscall(ctypes.c_long(SYS_CLONE), ctypes.c_ulong(flags | 17),  # SIGCHLD
                              ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0),
                              ctypes.c_ulong(0))
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone({flags:#x}): {os.strerror(err)}")
    return pid


def set_parent_death_signal(sig: int) -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), f"setns({nstype:#x})")


def seccomp_mode() -> int:
    """The calling thread's seccomp mode (prctl PR_GET_SECCOMP): 0 none, 2 filter."""
    mode = _libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0)
    _check(mode, "prctl(PR_GET_SECCOMP)")
    return mode


def load_seccomp(bpf: bytes) -> None:
    """Install a classic-BPF seccomp filter (whole sock_filter instructions) on the
    calling thread, without NO_NEW_PRIVS: needs CAP_SYS_ADMIN in its user namespace."""
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.addressof(buf))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0),
           "prctl(PR_SET_SECCOMP)")
