"""The supervisor's state directory, on a memory filesystem.

Every start and stop writes files there: init's record, the spec that entering reads,
the console log, the exit record, and each context's load sample every few seconds.
FHS puts such runtime state under /run, a tmpfs on Debian and every systemd host
(vcd's default rundir is /run/vcd). Where the state directory is on a disk filesystem
instead (a container whose /run is not a tmpfs, a test's temporary directory), each
file created is a journal transaction: measured 0.70 ms a create and 0.20 ms a
rename on ext4 on this project's CI machine, against 5 and 7 us on tmpfs, and a start
creates three files, one of them after init's exec, on its critical path.

So the supervisor mounts a private tmpfs on its state directory when that is on a
disk filesystem and empty (`prepare`), and NativeBackend.shutdown() unmounts it
(`release`). A state directory that holds anything is left as it is: its files may
be the records of contexts that still run, which a mount would hide from the
supervisor that adopts them. The tmpfs outlives the supervisor, like /run: a
restarted supervisor finds its records again; a reboot clears them with the contexts.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
from pathlib import Path

from .namespaces import MNT_DETACH, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, mount, \
    mountinfo_unescape, umount2

SOURCE = "vcd-state"    # the tmpfs's source name in mountinfo: what release() unmounts
# mode as the directory's; size as systemd sizes /run (mount-setup.c), an upper bound
# only: a tmpfs holds what is written (console logs are capped at 256 KiB a context)
OPTIONS = "mode=0700,size=20%"
MEMORY_FS = (0x01021994, 0x858458F6)     # TMPFS_MAGIC, RAMFS_MAGIC (linux/magic.h)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]


def fs_type(path: Path) -> int:
    """statfs(2)'s f_type of the filesystem path is on. Raises OSError."""
    buf = ctypes.create_string_buffer(256)      # struct statfs is 120 bytes on x86_64
    if _libc.statfs(os.fsencode(path), buf) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return struct.unpack_from("l", buf.raw)[0]


def prepare(state: Path) -> bool:
    """Make state (mode 0700) and, when it is empty and on a disk filesystem, mount a
    private tmpfs on it. True when it mounted one; False when state is on a memory
    filesystem already, holds files, or the mount is refused (no CAP_SYS_ADMIN: the
    state stays on disk, slower but the same). Raises OSError when state cannot be
    made."""
    state = Path(state)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    # two supervisors started at once for one state dir: one mounts, the other sees it.
    # On the parent: a descriptor of state itself would lock the directory the mount
    # hides, and one opened after the mount its tmpfs.
    parent = os.open(state.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(parent, fcntl.LOCK_EX)
        if fs_type(state) in MEMORY_FS:
            return False
        with os.scandir(state) as entries:
            if next(entries, None) is not None:
                return False
        try:
            mount(SOURCE, str(state), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, OPTIONS)
        except OSError:
            return False
        # nothing mounted below it propagates into the host's other namespaces or back
        mount(None, str(state), None, MS_PRIVATE)
        return True
    finally:
        os.close(parent)


def mount_source(path: Path) -> str | None:
    """The source of what is mounted at path (the last mount there: what path shows),
    None when path is no mount point."""
    target = os.path.realpath(path).encode()
    found = None
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields, _, tail = line.partition(b" - ")
            parts = tail.split(b" ")
            if len(parts) > 1 and mountinfo_unescape(fields.split(b" ")[4]) == target:
                found = parts[1].decode(errors="replace")
    return found


def release(state: Path) -> bool:
    """Unmount the tmpfs prepare() mounted on state, with what is below it; True when
    there was one. Only for when nothing needs the state any more (shutdown)."""
    if mount_source(state) != SOURCE:
        return False
    umount2(str(state), MNT_DETACH)
    return True


def write_whole(path: Path, data: bytes) -> None:
    """path := data, mode 0600, replaced whole (a reader never sees half of it): the
    records of the state directory. Raises OSError; a temporary file written in part
    (a full tmpfs) is removed, which gives its pages back."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
