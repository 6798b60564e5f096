"""Value vocabularies of the API (case-sensitive), and the defaults of a new vserver."""
from __future__ import annotations

# The kernel's vocabulary (capabilities in bit order, context caps, flags, limit and uname
# types) is libvserver's: it is what a backend can be asked for.
from libvserver.api import (BCAPS, CCAPS, FLAGS, LIMIT_TYPES as LIMITS,  # noqa: F401
                            MEMORY_LIMIT_TYPES as MEMORY_LIMITS, UNAME_TYPES as UNAMES)

__all__ = ["BCAPS", "CCAPS", "FLAGS", "LIMITS", "MEMORY_LIMITS", "UNAMES", "USER_CAPS",
           "DEFAULT_BCAPS", "DEFAULT_CCAPS", "DEFAULT_FLAGS", "DEFAULT_INIT", "DEFAULT_HALT",
           "DEFAULT_REBOOT", "DEFAULT_TIMEOUT", "DEFAULT_NETMASK", "UINT64_MAX"]

USER_CAPS: tuple[str, ...] = (
    "AUTH", "DLIM", "INIT", "MOUNT", "NET", "BCAP", "CCAP", "CFLAG", "RLIM", "SCHED",
    "UNAME", "CREATE", "EXEC", "INFO", "HELPER",
)

DEFAULT_BCAPS: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "NET_BIND_SERVICE", "SYS_CHROOT", "SYS_PTRACE", "SYS_BOOT",
    "SYS_TTY_CONFIG", "LEASE",
)
DEFAULT_CCAPS: tuple[str, ...] = ("SET_UTSNAME", "RAW_ICMP")
DEFAULT_FLAGS: tuple[str, ...] = ("VIRT_MEM", "VIRT_UPTIME", "VIRT_CPU", "VIRT_LOAD", "HIDE_NETIF")

DEFAULT_INIT = "/sbin/init"
DEFAULT_HALT = "/sbin/halt"
DEFAULT_REBOOT = "/sbin/reboot"
DEFAULT_TIMEOUT = 15
DEFAULT_NETMASK = "255.255.255.0"

UINT64_MAX = 2**64 - 1
