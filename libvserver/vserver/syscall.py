"""ctypes binding of ``sys_vserver(uint32_t cmd, uint32_t id, void *data)``.

The command word (manual section 3.4, util-vserver ``switch.h``): version in
bits 0-11, 4 reserved bits, command in bits 16-23, category in bits 24-29,
2 reserved bits.  Stock kernels answer ENOSYS; :func:`available` tells the
two apart without side effects (VCMD_get_version only reads).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

from ..api import SyscallError

# Syscall number of sys_vserver per architecture (the number each kernel reserved;
# on a stock kernel it is sys_ni_syscall). Keys are platform.machine() values.
SYSCALL_NUMBERS = {
    "x86_64": 236,
    "i386": 273, "i486": 273, "i586": 273, "i686": 273,
    "armv5l": 313, "armv6l": 313, "armv7l": 313, "armv8l": 313,  # 32-bit ARM (EABI)
    "ppc": 257, "ppc64": 257, "ppc64le": 257,
    "s390": 263, "s390x": 263,
    "sparc": 267, "sparc64": 267,
    "alpha": 428,
    "ia64": 1269,
    "mips": 4277, "mipsel": 4277,              # o32
    "mips64": 5236, "mips64el": 5236,          # n64
    "sh4": 273,
}


def syscall_number(machine: str | None = None) -> int | None:
    """None where the architecture never had sys_vserver (e.g. aarch64, riscv64)."""
    m = machine or platform.machine()
    if m in ("x86_64", "amd64") and struct.calcsize("P") == 4:
        return 273  # 32-bit userland on a 64-bit kernel uses the i386 table
    return SYSCALL_NUMBERS.get(m)


def vc_cmd(category: int, command: int, version: int) -> int:
    """VC_CMD(c, i, v) of switch.h."""
    return ((category & 0x3F) << 24) | ((command & 0xFF) << 16) | (version & 0xFFF)


def vc_category(cmd: int) -> int:
    return (cmd >> 24) & 0x3F


def vc_command(cmd: int) -> int:
    return (cmd >> 16) & 0xFF


def vc_version(cmd: int) -> int:
    return cmd & 0xFFF


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_probe: bool | None = None


def raw(cmd: int, xid: int, data: ctypes.Structure | ctypes.Array | None) -> int:
    """sys_vserver(cmd, xid, &data); returns the result or -errno (never raises)."""
    nr = syscall_number()
    if nr is None:
        return -errno.ENOSYS
    ptr = ctypes.byref(data) if data is not None else None
    r = _libc.syscall(ctypes.c_long(nr), ctypes.c_uint32(cmd), ctypes.c_uint32(xid & 0xFFFFFFFF),
                      ptr)
    return -ctypes.get_errno() if r == -1 else r


def call(name: str, cmd: int, xid: int, data=None) -> int:
    """sys_vserver; raises :class:`SyscallError` naming the command on failure."""
    r = raw(cmd, xid, data)
    if r < 0:
        raise SyscallError(-r, name, f"xid {xid}")
    return r


def available() -> bool:
    """True when the running kernel implements sys_vserver (a Linux-VServer kernel)."""
    global _probe
    if _probe is None:
        from .commands import VCMD_get_version
        r = raw(VCMD_get_version, 0, None)
        # ENOSYS: stock kernel. Anything else (a version, EPERM under seccomp, …) means the
        # multiplexer exists.
        _probe = r != -errno.ENOSYS
    return _probe


def version() -> tuple[int, int, int]:
    """(major, minor, patch) of the kernel's VCI version word (0x00020200 → 2.2.0)."""
    from .commands import VCMD_get_version
    v = call("get_version", VCMD_get_version, 0)
    return (v >> 16) & 0xFFFF, (v >> 8) & 0xFF, v & 0xFF


def errno_name(err: int) -> str:
    return errno.errorcode.get(err, str(err)) + ": " + os.strerror(err)
