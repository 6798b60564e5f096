"""Thin ctypes wrappers of the namespace, mount and capability system calls.

Python 3.11 has no os.unshare/os.setns; every wrapper raises OSError with the
errno and a text naming the call and its argument.
"""

from __future__ import annotations

import ctypes
import os

from . import creds

# the C library the interpreter is linked with: no ldconfig run (find_library) and none
# of the modules ctypes.util imports, in the init forker (initforker.py) neither
_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# /proc/<pid>/ns file → flag; the order is the order setns() must use when
# entering: user first (not used), then the rest; mnt last so that /proc of
# the caller stays usable while opening the others.
NS_FLAGS = {"ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS, "net": CLONE_NEWNET,
            "pid": CLONE_NEWPID, "time": CLONE_NEWTIME, "cgroup": CLONE_NEWCGROUP,
            "mnt": CLONE_NEWNS}

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_READ = 23
PR_SET_CHILD_SUBREAPER = 36

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long

SYS_PIVOT_ROOT = 155  # x86_64
SYS_OPENAT2 = 437     # same number on every architecture (new syscall table)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s.encode() if isinstance(s, str) else s


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), f"setns({nstype:#x})")


def mount(src: str | None, target: str | bytes, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_libc.mount(_b(src), _b(target), _b(fstype), flags, _b(data)),
           f"mount {src or fstype} on {target if isinstance(target, str) else target.decode()}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def mountinfo_unescape(field: bytes) -> bytes:
    """A mountinfo path: space, tab, newline and backslash come as octal escapes (no re:
    the init forker imports this module and nothing it need not)."""
    parts = field.split(b"\\")
    out = bytearray(parts[0])
    for part in parts[1:]:
        if len(part) >= 3 and all(48 <= c <= 55 for c in part[:3]):
            out.append(int(part[:3], 8))
            out += part[3:]
        else:
            out += b"\\" + part
    return bytes(out)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), "pivot_root")


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_libc.sethostname(b, len(b)), "sethostname")


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_libc.setdomainname(b, len(b)), "setdomainname")


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    return _check(_libc.prctl(option, a2, a3, a4, a5), f"prctl({option})")


def cap_last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def bounding_set() -> set[int]:
    """Capability numbers in this process's bounding set."""
    return {c for c in range(cap_last_cap() + 1) if _libc.prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1}


def set_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


def has_time_namespace() -> bool:
    return os.path.exists("/proc/self/ns/time")


def fork_into(flags: int, cgroup_fd: int | None = None) -> int:
    """fork() that puts the child into new namespaces (CLONE_NEWUSER | CLONE_NEWPID, ...)
    and, given ``cgroup_fd``, into that cgroup2 group (creds.clone).

    Unlike unshare, the child is created in them, so a PID namespace made here is owned
    by the new user namespace (reboot(2) inside needs CAP_SYS_BOOT there).  The caller
    must be single-threaded.  Returns 0 in the child."""
    return creds.clone(flags, cgroup_fd)
