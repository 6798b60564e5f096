"""Host id ranges of unprivileged contexts, and idmapped mounts (DESIGN.md "Security model").

Every context that is not ``privileged`` runs in a user namespace of its own whose ids
0..65535 map onto 65536 host ids that belong to that context alone.

The host's 32-bit id space is cut into 65536 slots of 65536 ids; slot ``s`` holds host ids
``s << 16`` .. ``(s << 16) + 65535``.  Slots 0 and 1 (host ids below 131072) hold the host's
own users and are never given out, nor is slot 65535 (it would end at 2^32 - 1, which is
(uid_t) -1).  That leaves exactly 65533 slots, one per xid 2..65534::

    slot(xid) = 2 + ((idmap_base >> 16) - 2 + xid - 2) mod 65533

``idmap_base`` (a multiple of 65536, at least 131072; default 131072) is where xid 2's range
starts; with the default, ``slot(xid) == xid``, i.e. the range of xid N is ``N << 16`` (as
Docker's userns-remap and LXD derive ranges from one base).  Distinct xids of one daemon
always get distinct slots; two daemons on one host (a test run beside the real one) choose
bases far enough apart that the xids they use do not meet.

The root filesystem stays owned as the template made it: it reaches the context through an
idmapped mount (``open_tree(OPEN_TREE_CLONE)`` + ``mount_setattr(MOUNT_ATTR_IDMAP)``,
kernel >= 5.12), made by the supervisor with host privileges and handed to the context's
PID 1 as a detached mount, which moves it into place inside its own mount namespace.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from ..api import InvalidSpec
from .namespaces import _check, _libc

RANGE = 65536
DEFAULT_BASE = 2 * RANGE
_SLOTS = 65533          # slots 2 .. 65534

# x86_64 numbers; the new mount API has the same number on every architecture.
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_FSOPEN = 430
SYS_FSCONFIG = 431
SYS_FSMOUNT = 432
SYS_MOUNT_SETATTR = 442

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x00100000


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


@dataclass(frozen=True)
class IdRange:
    """Host ids ``host`` .. ``host + count - 1`` seen as 0 .. count - 1 inside."""
    host: int
    count: int = RANGE

    def map_line(self) -> str:
        """The text for /proc/<pid>/uid_map and gid_map."""
        return f"0 {self.host} {self.count}\n"

    def to_host(self, inside: int) -> int:
        return self.host + inside if 0 <= inside < self.count else -1

    def contains(self, host_id: int) -> bool:
        return self.host <= host_id < self.host + self.count


def check_base(base: int) -> int:
    """Validate an ``idmap_base``; raises InvalidSpec naming the accepted values."""
    if not isinstance(base, int) or base % RANGE or not DEFAULT_BASE <= base <= 65534 * RANGE:
        raise InvalidSpec(f"idmap_base {base!r} must be a multiple of 65536 between "
                          f"{DEFAULT_BASE} and {65534 * RANGE}")
    return base


def range_for(xid: int, base: int = DEFAULT_BASE) -> IdRange:
    """The host id range of context ``xid`` (2..65534) under ``base``."""
    slot = 2 + ((base >> 16) - 2 + xid - 2) % _SLOTS
    return IdRange(slot << 16)


def host_ids_in(r: IdRange, files: tuple[str, ...] = ("/etc/passwd", "/etc/group")) -> list[str]:
    """Host users/groups whose id falls inside ``r`` (which must then not be used)."""
    found = []
    for path in files:
        for name, id_ in _ids_of(path):
            if r.contains(id_):
                found.append(f"{path}:{name}")
    return found


# path -> (identity of the file when read, its [(name, id)]); every start asks
_ids_cache: dict[str, tuple[tuple[int, ...], list[tuple[str, int]]]] = {}


def _ids_of(path: str) -> list[tuple[str, int]]:
    """(name, id) of every entry of a passwd/group file; [] when it cannot be read. Read
    again whenever the file changed: useradd and vipw replace it (a new inode), an edit in
    place changes its size or times."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    cached = _ids_cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    ids = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split(":")
                if len(parts) > 2 and parts[2].isdigit():
                    ids.append((parts[0], int(parts[2])))
    except OSError:
        return []
    _ids_cache[path] = (key, ids)
    return ids


def write_maps(pid: int, r: IdRange) -> None:
    """Map ids of the user namespace of ``pid`` (written by its privileged parent, so
    setgroups stays "allow" and setuid programs inside keep working)."""
    line = r.map_line().encode()
    for name in ("uid_map", "gid_map"):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


def _setattr(fd: int, attr: _MountAttr, flags: int, what: str) -> None:
    _check(_libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH | flags, ctypes.byref(attr),
                         ctypes.sizeof(attr)), what)


def clone_tree(path: str, recursive: bool = False) -> int:
    """A detached copy of the mount at ``path`` (close-on-exec mount fd)."""
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return _check(_libc.syscall(SYS_OPEN_TREE, AT_FDCWD, path.encode(), flags),
                  f"open_tree {path}")


def set_attrs(fd: int, attrs: int, recursive: bool = False) -> None:
    """mount_setattr ``attrs`` (MOUNT_ATTR_*) on the detached mount ``fd``."""
    _setattr(fd, _MountAttr(attrs, 0, 0, 0), AT_RECURSIVE if recursive else 0,
             "mount_setattr")


def idmap(fd: int, userns_fd: int) -> None:
    """Make the detached mount ``fd`` idmapped through ``userns_fd``'s mapping."""
    _setattr(fd, _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd), 0, "mount_setattr(IDMAP)")


def idmapped_tree(path: str, userns_fd: int) -> int:
    """Detached, idmapped clone of the directory ``path`` (caller closes it)."""
    fd = clone_tree(path)
    try:
        idmap(fd, userns_fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fsmount(fstype: str, source: str | None, options: dict[str, str | None] | None = None) -> int:
    """A detached new mount of ``fstype`` from ``source`` (a block device, or None) with
    ``options`` (None as a value: a flag option such as ``userxattr``)."""
    sfd = _check(_libc.syscall(SYS_FSOPEN, fstype.encode(), FSOPEN_CLOEXEC), f"fsopen {fstype}")
    try:
        opts = dict(options or {})
        if source is not None:
            opts = {"source": source, **opts}
        for key, value in opts.items():
            _check(_libc.syscall(SYS_FSCONFIG, sfd, FSCONFIG_SET_FLAG if value is None
                                 else FSCONFIG_SET_STRING, key.encode(),
                                 None if value is None else value.encode(), 0),
                   f"{fstype} option {key}={value}")
        _check(_libc.syscall(SYS_FSCONFIG, sfd, FSCONFIG_CMD_CREATE, None, None, 0),
               f"mount {source or fstype} ({fstype})")
        return _check(_libc.syscall(SYS_FSMOUNT, sfd, FSMOUNT_CLOEXEC, 0), "fsmount")
    finally:
        os.close(sfd)


def move_into_place(fd: int, target: str | int) -> None:
    """Attach the detached mount ``fd`` on ``target`` (a path, or an O_PATH fd as
    confine.py gives) in the caller's mount namespace."""
    if isinstance(target, int):
        _check(_libc.syscall(SYS_MOVE_MOUNT, fd, b"", target, b"",
                             MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH), "move_mount")
    else:
        _check(_libc.syscall(SYS_MOVE_MOUNT, fd, b"", AT_FDCWD, target.encode(),
                             MOVE_MOUNT_F_EMPTY_PATH), f"move_mount onto {target}")


def shift_tree(path: str, r: IdRange) -> int:
    """Chown every entry of ``path`` (not following symlinks, not crossing mounts) from
    host ids 0..65535 into ``r``; ids already in ``r`` stay.  Returns how many changed.

    The one-time migration of a shared vserver's overlay upper/work directories made
    before user namespaces: their files were written by host root."""
    changed = 0
    dev = os.lstat(path).st_dev

    def fix(p: str) -> None:
        nonlocal changed
        st = os.lstat(p)
        uid, gid = st.st_uid, st.st_gid
        nu = r.to_host(uid) if uid < r.count else uid
        ng = r.to_host(gid) if gid < r.count else gid
        if (nu, ng) != (uid, gid):
            mode = st.st_mode
            os.lchown(p, nu, ng)
            if not os.path.islink(p) and mode & 0o6000:
                os.chmod(p, mode & 0o7777)  # chown clears setuid/setgid bits
            changed += 1

    fix(path)
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            p = os.path.join(root, name)
            fix(p)
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(root, d)).st_dev == dev]
    return changed
