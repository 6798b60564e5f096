"""Value vocabularies of the API (case-sensitive), and the defaults of a new vserver."""
from __future__ import annotations

import re
import signal as _signal

# The kernel's vocabulary (capabilities in bit order, context caps, flags, limit and uname
# types) is libvserver's: it is what a backend can be asked for.
from libvserver.api import (BCAPS, CCAPS, FLAGS, LIMIT_TYPES as LIMITS,  # noqa: F401
                            MEMORY_LIMIT_TYPES as MEMORY_LIMITS, UNAME_TYPES as UNAMES,
                            API_MOUNTS, READY_MODES)

__all__ = ["BCAPS", "CCAPS", "FLAGS", "LIMITS", "MEMORY_LIMITS", "UNAMES", "USER_CAPS",
           "DEFAULT_BCAPS", "DEFAULT_CCAPS", "DEFAULT_FLAGS", "DEFAULT_INIT", "DEFAULT_HALT",
           "DEFAULT_REBOOT", "DEFAULT_TIMEOUT", "DEFAULT_NETMASK", "UINT64_MAX",
           "API_MOUNTS", "READY_MODES", "SIGNAL_FORMS", "signal_number"]

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


# Init signals (vxdb.init halt_signal/reboot_signal, template metadata), like LXC's
# lxc.signal.halt: names only, so a setting means the same on every architecture.
SIGNAL_FORMS = ("a signal name as in signal(7) (SIGINT, SIGTERM, SIGPWR, SIGUSR1, ...), "
                f"SIGRTMIN, SIGRTMIN+n or SIGRTMAX-n (n 0..{_signal.SIGRTMAX - _signal.SIGRTMIN})")
_RT_RE = re.compile(r"^SIGRT(MIN|MAX)([+-])(\d{1,2})$")


def signal_number(name: str) -> int:
    """The number of signal `name` (e.g. "SIGRTMIN+3" -> 37 with glibc, systemd's halt);
    ValueError naming SIGNAL_FORMS for anything else (numbers, lower case, SIG_DFL)."""
    if name in _signal.Signals.__members__:
        return int(_signal.Signals[name])
    m = _RT_RE.match(name)
    if m is not None and (m[1], m[2]) in (("MIN", "+"), ("MAX", "-")):
        n = _signal.SIGRTMIN + int(m[3]) if m[1] == "MIN" else _signal.SIGRTMAX - int(m[3])
        if _signal.SIGRTMIN <= n <= _signal.SIGRTMAX:
            return n
    raise ValueError(f"not a signal name: {name!r}; expected {SIGNAL_FORMS}")
