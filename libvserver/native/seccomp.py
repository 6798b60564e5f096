"""The default seccomp filter of every vserver process: a deny list, built once.

Built with libseccomp (through ``pyseccomp``, its ctypes bindings, API-compatible with
libseccomp's own Python module), exported once per process as classic BPF and cached;
a context's init and every entered process load the cached program with one
``prctl(PR_SET_SECCOMP)`` right before exec (no libseccomp work in the child;
``creds.load_seccomp``, or vsinit.c with the program's bytes).  An init cloned by an init
forker is born with the default filter instead: the forker carries it (initforker.py).

Everything not listed is allowed (the default action is ALLOW): the vserver's own
user namespace and bounding set are the boundary, the filter only removes kernel
interfaces that are not namespaced, reach the host, or are a known attack surface.
It follows the spirit of Docker's default profile (github.com/moby/profiles,
seccomp/default.json), whose allow list is not copied: mount, umount2, unshare,
setns, pivot_root, clone/clone3 with namespace flags and reboot stay allowed (inside
a user namespace they reach only the vserver; systemd needs them; reboot(2) in a PID
namespace is how a guest halts or reboots), and so do ptrace, process_vm_readv/
writev and kcmp (the user namespace confines them to the guest's own processes).

libseccomp's NO_NEW_PRIVS default is switched off (``CTL_NNP = 0``), and the program
is loaded without it, so setuid programs (su, passwd, apt's ``_apt`` drop) keep working;
loading therefore needs CAP_SYS_ADMIN in the loader's user namespace, which the
entering process and init still hold at that point.

Denied calls (errno answered; 32-bit x86 and x32 calls get the same list, any other
ABI kills the process, so a 32-bit ``int 0x80`` cannot bypass it):

========================  =======  ===========================================================
open_by_handle_at         EPERM    opens any inode of a filesystem by handle, past every
                                   mount and chroot: the host's root from inside (issue 11.1)
name_to_handle_at         ENOSYS   its companion; programs (systemd) fall back on ENOSYS
keyctl, add_key,          ENOSYS   kernel keyrings are not namespaced by anything but the
request_key                        user namespace; ENOSYS makes libkeyutils users fall back
kexec_load,               EPERM    load a new kernel
kexec_file_load
init_module, finit_module EPERM    load or remove host kernel modules; create_module,
delete_module,                     query_module and get_kernel_syms are their obsolete
create_module,                     forms
query_module,
get_kernel_syms
bpf                       EPERM    eBPF programs and maps are host-wide kernel objects
perf_event_open           EPERM    host-wide performance counters, a frequent exploit path
userfaultfd               EPERM    stalls kernel page faults at will: the classic aid to
                                   win kernel races
io_uring_setup,           ENOSYS   executes system calls the filter never sees and is a
io_uring_enter,                    leading source of kernel exploits (Docker and containerd
io_uring_register                  block it since 2023); liburing/libuv fall back on ENOSYS
iopl, ioperm              EPERM    raw I/O port access of the host's hardware
swapon, swapoff           EPERM    the host's swap space
acct                      EPERM    process accounting is host-wide
lookup_dcookie            EPERM    oprofile's host-wide dentry cookies
quotactl, quotactl_fd     EPERM    quota of host block devices; a vserver's disk limit is
                                   the host's to set (Docker denies them too)
nfsservctl                EPERM    the removed NFS server control interface
vm86, vm86old             EPERM    virtual-8086 mode (32-bit x86): kernel attack surface
uselib                    EPERM    the a.out library loader: obsolete attack surface
_sysctl                   EPERM    the removed binary sysctl interface
syslog                    EPERM    the host kernel's log, unless the spec's bcaps contain
                                   SYSLOG (as Docker allows it with CAP_SYSLOG)
personality               EPERM    only with READ_IMPLIES_EXEC or MMAP_PAGE_ZERO, which
                                   weaken the kernel's own exploit mitigations; every other
                                   persona (linux32, uname26, addr_no_randomize) is allowed
========================  =======  ===========================================================

Deliberately not in the list: clock_settime, settimeofday, stime, clock_adjtime and
adjtimex (the kernel demands CAP_SYS_TIME in the host's user namespace: never held by
an unprivileged vserver, held by a privileged one only when an admin put SYS_TIME in its
bcaps, which is Docker's rule too; a time namespace does not virtualize the wall clock);
fanotify_init, vhangup, mbind/set_mempolicy/move_pages (the kernel checks capabilities
against the host's user namespace or confines them to the caller); chroot, pivot_root,
mount and the new mount API (the guest's own mount namespace); ptrace (see above).
"""

from __future__ import annotations

import errno
import functools
import os
from dataclasses import dataclass

from ..api import ContextSpec
from . import creds

# the docstring's table says why each is denied
ENOSYS_CALLS = ("name_to_handle_at", "keyctl", "add_key", "request_key",
                "io_uring_setup", "io_uring_enter", "io_uring_register")
EPERM_CALLS = ("open_by_handle_at", "kexec_load", "kexec_file_load", "init_module",
               "finit_module", "delete_module", "create_module", "query_module",
               "get_kernel_syms", "bpf", "perf_event_open", "userfaultfd", "iopl", "ioperm",
               "swapon", "swapoff", "acct", "lookup_dcookie", "quotactl", "quotactl_fd",
               "nfsservctl", "vm86", "vm86old", "uselib", "_sysctl")
# syslog: denied unless the spec grants SYSLOG
SYSLOG_CALL = "syslog"
# personality(2) flags that switch off exploit mitigations (include/uapi/linux/personality.h)
READ_IMPLIES_EXEC = 0x0400000
MMAP_PAGE_ZERO = 0x0100000
_PERSONA_QUERY_BIT = 0x80000000  # set only in the query value 0xffffffff



@dataclass(frozen=True)
class Program:
    """A compiled filter: classic BPF, whole sock_filter instructions."""
    bpf: bytes

    def load(self) -> None:
        """Install the filter on the calling thread (inherited across fork and exec).
        Needs CAP_SYS_ADMIN in the caller's user namespace (no NO_NEW_PRIVS). Raises
        OSError naming the call."""
        creds.load_seccomp(self.bpf)


def _build(allow_syslog: bool) -> bytes:
    import pyseccomp as sc
    f = sc.SyscallFilter(sc.ALLOW)
    f.set_attr(sc.Attr.CTL_NNP, 0)
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    native = sc.system_arch()
    if native == sc.Arch.X86_64:
        # the same deny list for the 32-bit (int 0x80, sysenter) and x32 system call ABIs
        for arch in (sc.Arch.X86, sc.Arch.X32):
            f.add_arch(arch)
    rules: list[tuple[int, str]] = [(sc.ERRNO(errno.ENOSYS), n) for n in ENOSYS_CALLS]
    rules += [(sc.ERRNO(errno.EPERM), n) for n in EPERM_CALLS]
    if not allow_syslog:
        rules.append((sc.ERRNO(errno.EPERM), SYSLOG_CALL))
    for action, name in rules:
        # a name unknown to every architecture of the filter is skipped, not an error:
        # libseccomp turns calls missing on one ABI into no rule there by itself
        try:
            f.add_rule(action, name)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EFAULT, errno.EDOM):
                raise
    for flag in (READ_IMPLIES_EXEC, MMAP_PAGE_ZERO):
        f.add_rule(sc.ERRNO(errno.EPERM), "personality",
                   sc.Arg(0, sc.MASKED_EQ, flag | _PERSONA_QUERY_BIT, flag))
    fd = os.memfd_create("vcd-seccomp", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            f.export_bpf(out)
        size = os.fstat(fd).st_size
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while len(data) < size:
            chunk = os.read(fd, size - len(data))
            if not chunk:
                break
            data += chunk
        return data
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=None)
def program(allow_syslog: bool = False) -> Program:
    """The compiled default filter (cached per process and variant)."""
    if allow_syslog in _adopted:
        return _adopted[allow_syslog]
    bpf = _build(allow_syslog)
    _built.add(allow_syslog)
    if len(bpf) % 8 or not bpf:
        raise RuntimeError(f"libseccomp exported {len(bpf)} bytes, not whole BPF instructions")
    return Program(bpf)


def for_spec(spec: ContextSpec) -> Program | None:
    """The filter a process of this vserver gets, or None when the spec turns it off."""
    if not spec.seccomp:
        return None
    return program("SYSLOG" in spec.bcaps)


def prepare_all() -> None:
    """Build both variants now (a supervisor, before it forks any init). On failure
    (no libseccomp) the reason is kept for load_prepared's error, then re-raised."""
    global _build_error
    try:
        for allow_syslog in (False, True):
            program(allow_syslog)
    except Exception as e:
        _build_error = f"{type(e).__name__}: {e}"
        raise


def load_prepared(spec: ContextSpec) -> None:
    """In a forked child right before exec: load the filter prepare_all() built in the parent.
    Never builds one here (the child may already see the guest's files, and libseccomp
    is loaded lazily). Raises RuntimeError when nothing was prepared."""
    if not spec.seccomp:
        return
    allow_syslog = "SYSLOG" in spec.bcaps
    if allow_syslog not in _built:
        raise RuntimeError("the seccomp filter was not prepared before the fork"
                           + (f" ({_build_error})" if _build_error else ""))
    program(allow_syslog).load()


def prepared() -> dict[bool, bytes]:
    """The programs prepare_all() built here, by allow_syslog: for a process that forks
    inits without libseccomp (initforker.py), see adopt()."""
    return {v: program(v).bpf for v in _built}


def adopt(programs: dict[bool, bytes]) -> None:
    """Take programs another process built (prepared()) as this one's own."""
    for allow_syslog, bpf in programs.items():
        if allow_syslog not in _built:
            if len(bpf) % 8 or not bpf:
                raise RuntimeError(f"a seccomp program of {len(bpf)} bytes, not whole BPF "
                                   "instructions")
            _adopted[allow_syslog] = Program(bpf)
            _built.add(allow_syslog)


_built: set[bool] = set()
_adopted: dict[bool, Program] = {}
_build_error = ""
