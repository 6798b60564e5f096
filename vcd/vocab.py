"""Value vocabularies of the API (case-sensitive), and the defaults of a new vserver."""
from __future__ import annotations

USER_CAPS: tuple[str, ...] = (
    "AUTH", "DLIM", "INIT", "MOUNT", "NET", "BCAP", "CCAP", "CFLAG", "RLIM", "SCHED",
    "UNAME", "CREATE", "EXEC", "INFO", "HELPER",
)

# Linux capability names without CAP_, in kernel bit order (include/uapi/linux/capability.h).
BCAPS: tuple[str, ...] = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
    "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)

CCAPS: tuple[str, ...] = (
    "SET_UTSNAME", "SET_RLIMIT", "RAW_ICMP", "SYSLOG", "SECURE_MOUNT", "SECURE_REMOUNT",
    "BINARY_MOUNT", "QUOTA_CTL", "ADMIN_MAPPER", "ADMIN_CLOOP",
)

FLAGS: tuple[str, ...] = (
    "INFO_PRIVATE", "INFO_INIT", "INFO_HIDE", "SCHED_HARD", "SCHED_PRIO", "SCHED_PAUSE",
    "VIRT_MEM", "VIRT_UPTIME", "VIRT_CPU", "VIRT_LOAD", "VIRT_TIME", "HIDE_MOUNT",
    "HIDE_NETIF", "HIDE_VINFO", "FORK_RSS",
)

LIMITS: tuple[str, ...] = (
    "CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS",
    "LOCKS", "SIGPENDING", "MSGQUEUE", "NSOCK", "OPENFD", "ANON", "SHMEM", "SEMARY",
    "NSEMS", "DENTRY", "MAPPED",
)
# Limits measured in KiB; the rest are counts.
MEMORY_LIMITS = frozenset({"RSS", "AS", "ANON", "MAPPED", "MEMLOCK", "SHMEM"})

UNAMES: tuple[str, ...] = ("SYSNAME", "NODENAME", "RELEASE", "VERSION", "MACHINE", "DOMAINNAME")

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
