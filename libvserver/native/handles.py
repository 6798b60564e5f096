"""What a running context was started with, kept by the supervisor for everyone who
enters it later: its namespaces and its spec.

    <state_dir>/ns/            a private tmpfs (mode 0700): nothing mounted below it
                               propagates to any other mount namespace, or from one
    <state_dir>/ns/<xid>/      a bind of itself (one umount drops every handle)
    <state_dir>/ns/<xid>/<ns>  the namespace files of init, bind-mounted right after the
                               start, for every namespace made at start (those that
                               differ from the supervisor's own): user, cgroup, ipc,
                               uts, net, pid, time, mnt; each name is a hard link of
                               <state_dir>/ns/.mountpoint, one empty file
    <state_dir>/<xid>.spec     JSON {"spec": ContextSpec.to_dict(), "init": host pid},
                               mode 0600; written (publish()) only once init was exec'd:
                               entering needs it, and until init's pivot_root the kept
                               mount namespace has the host's root as its root

A bind-mounted namespace file keeps the namespace itself, not init's current one: what
the guest's init unshares later never becomes what vx.exec, halt or login join, and a
restarted supervisor finds the handles again.  The supervisor removes both when the
context ends; NativeBackend.shutdown() removes what is left.  Inits are forked in a
namespace without any handles (without_handles()).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..api import ContextSpec
from . import statedir
from .namespaces import CLONE_NEWNS, MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, \
    MS_PRIVATE, MS_REC, MS_SLAVE, mount, mountinfo_unescape, setns, umount2, unshare

# The order entering uses: every namespace but the user namespace first (while the
# process still holds the host's capabilities, which reach namespaces owned by the
# host's user namespace and by the vserver's alike), the user namespace last, as
# nsenter(1) does; mnt is last of the rest only so that nothing after it needs a path.
NS_TYPES = ("cgroup", "ipc", "uts", "net", "pid", "time", "mnt", "user")
# made at every start (the supervisor forks init into a new PID namespace, init unshares
# its mount namespace): an entry without them would not be inside at all
ALWAYS_KEPT = frozenset({"mnt", "pid"})
NS_GET_USERNS = 0xB701      # linux/nsfs.h: _IO(0xb7, 0x1), the owning user namespace
NS_GET_PARENT = 0xB702      # _IO(0xb7, 0x2), the parent (of a user or PID namespace)


@dataclass
class Kept:
    spec: ContextSpec
    init_pid: int
    ns: dict[str, Path]     # namespace type → its handle, in NS_TYPES order
    # (path, (st_dev, st_ino, st_mtime_ns)) of the spec file this was loaded from (each
    # publish writes a new file): see published()
    source: tuple[Path, tuple[int, int, int]] | None = None

    def published(self) -> bool:
        """Whether the spec file this was loaded from is still the published one. Call
        it after opening the handles: a start that followed (a reboot) binds its new
        namespaces at the same paths before its init has left the host's root, and
        removes this file first (keep), so a False here means the descriptors may name
        that half-built context, and a True that whatever they name was exec'd."""
        if self.source is None:
            return False
        path, ident = self.source
        try:
            st = os.stat(path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino, st.st_mtime_ns) == ident


def ns_root(state_dir: Path) -> Path:
    return Path(state_dir) / "ns"


def ns_dir(state_dir: Path, xid: int) -> Path:
    return ns_root(state_dir) / str(xid)


def spec_path(state_dir: Path, xid: int) -> Path:
    return Path(state_dir) / f"{xid}.spec"


def _ensure_private_root(state_dir: Path) -> Path:
    root = ns_root(state_dir)
    root.mkdir(mode=0o700, exist_ok=True)
    if not os.path.ismount(root):
        mount(TMPFS_SOURCE, str(root), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "mode=0700,size=64k")
        mount(None, str(root), None, MS_PRIVATE)
    return root


def keep(state_dir: Path, spec: ContextSpec, pid: int) -> Kept:
    """Bind init's namespaces that differ from ours. Raises OSError (the caller then
    stops the context: it could not be entered safely).

    Nobody enters before publish(), which the caller calls once init was exec'd.
    Handles kept while PID 1 still builds the guest's mounts must not be entered yet:
    setns() into that mount namespace makes its root, still the host's "/", the
    entering process's root and working directory, and a directory it changes into
    there outlives init's pivot_root."""
    drop(state_dir, spec.xid)
    root = _ensure_private_root(state_dir)
    d = root / str(spec.xid)
    # init's time namespace is its time_for_children until its execve (spawn.py)
    sources = {name: f"/proc/{pid}/ns/{'time_for_children' if name == 'time' else name}"
               for name in NS_TYPES}
    names = []
    for name in NS_TYPES:
        try:
            if os.stat(sources[name]).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                continue    # not made at start (e.g. no time namespace)
        except FileNotFoundError:
            continue        # this kernel has no such namespace type
        names.append(name)
    d.mkdir(mode=0o700)
    # A mount sits on a name, not on an inode: every handle's mount point is a hard link
    # of one empty file, not a file of its own (a tmpfs inode, ~750 bytes of kernel
    # memory that no reclaim frees, seven per running vserver). Linked before d is bound
    # onto itself: link(2) does not cross mounts.
    for name in names:
        _link_mountpoint(root, d / name)
    # d is a mount (a bind of itself on the shared tmpfs), so that drop() detaches every
    # handle with one umount: each umount waits for an RCU grace period, eight of them
    # were most of a stop. Not a tmpfs of its own: a superblock per context costs its
    # memory and a shrinker id, which grows every memory cgroup's shrinker array.
    mount(str(d), str(d), None, MS_BIND)
    kept: dict[str, Path] = {}
    for name in names:
        target = d / name
        mount(sources[name], str(target), None, MS_BIND)
        kept[name] = target
    _check_owners(kept)
    return Kept(spec, pid, kept)


def record(spec: ContextSpec, pid: int) -> bytes:
    """What publish() writes for init ``pid`` of ``spec``: made ahead, while init execs
    (the JSON of a spec takes a while)."""
    return json.dumps({"spec": spec.to_dict(), "init": pid}).encode()


def publish(state_dir: Path, xid: int, text: bytes) -> None:
    """Make the handles keep() bound enterable (load() finds them), with record()'s
    ``text``: call once init was exec'd, never while it builds its root. Each call
    writes a new file (Kept.published tells them apart). Raises OSError."""
    statedir.write_whole(spec_path(state_dir, xid), text)


MOUNTPOINT = ".mountpoint"  # in the tmpfs of handles: what every handle's name links


def _link_mountpoint(root: Path, target: Path) -> None:
    """target := a new hard link of root/MOUNTPOINT (made when the tmpfs has none yet);
    FileExistsError when target exists."""
    src = root / MOUNTPOINT
    try:
        os.link(src, target)
    except FileNotFoundError:
        os.close(os.open(src, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
        os.link(src, target)


def _ns_ino_via(path: Path, request: int) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        other = fcntl.ioctl(fd, request)
    finally:
        os.close(fd)
    try:
        return os.fstat(other).st_ino
    finally:
        os.close(other)


def _check_owners(kept: dict[str, Path]) -> None:
    """The handles are taken right after init was exec'd, so a hostile init could have
    unshared first. With a user namespace that is caught: the vserver's user namespace
    must be a child of ours, and every other namespace owned by it or by ours; one the
    guest made would belong to a user namespace of its own. Raises OSError(EPERM)."""
    user = kept.get("user")
    if user is None:
        return
    ours = os.stat("/proc/self/ns/user").st_ino
    if _ns_ino_via(user, NS_GET_PARENT) != ours:
        raise OSError(errno.EPERM, "the user namespace of init is not the one made at start")
    allowed = {ours, os.stat(user).st_ino}
    for name, path in kept.items():
        if name != "user" and _ns_ino_via(path, NS_GET_USERNS) not in allowed:
            raise OSError(errno.EPERM, f"the {name} namespace of init is not one made at start")


def load(state_dir: Path, xid: int) -> Kept | None:
    """The recorded spec, init pid and namespace handles of xid; None when there are
    none (not running, or started by a libvserver that kept none)."""
    path = spec_path(state_dir, xid)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = json.loads(f.read())
        spec = ContextSpec.from_dict(data["spec"])
        pid = int(data["init"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    d = ns_dir(state_dir, xid)
    try:
        # one directory read, not a stat per type: on every entry and stop
        present = {e.name for e in os.scandir(d) if e.is_file(follow_symlinks=False)}
    except (FileNotFoundError, NotADirectoryError):
        present = set()
    ns = {n: d / n for n in NS_TYPES if n in present}
    return Kept(spec, pid, ns, (path, (st.st_dev, st.st_ino, st.st_mtime_ns)))


def drop(state_dir: Path, xid: int) -> None:
    """Unmount and remove the handles and the spec of xid (what exists of them)."""
    d = ns_dir(state_dir, xid)
    if d.is_dir():
        try:
            # a bind of d on its own tmpfs is a mount point os.path.ismount cannot see
            umount2(str(d), MNT_DETACH)     # the handles below it go along
        except OSError as e:
            if e.errno != errno.EINVAL:     # EINVAL: not a mount point
                raise
        for name in os.listdir(d):
            target = d / name
            if os.path.ismount(target):     # kept by a libvserver without the mount of d
                umount2(str(target), MNT_DETACH)
            target.unlink(missing_ok=True)
        os.rmdir(d)
    spec_path(state_dir, xid).unlink(missing_ok=True)


TMPFS_SOURCE = "vcd-ns"     # the source name of the tmpfs of handles (and of its binds)


def without_handles() -> int:
    """A mount namespace like the caller's as it is now, but without any kept handles
    (of any supervisor): an O_RDONLY descriptor of it; the caller stays in its own.

    Every unshare(CLONE_NEWNS) copies every mount of the namespace it starts from, and
    the handles are nine mounts per running context: a context's init forked in the
    host's namespace paid for each of them (10 ms more per start with 200 running).
    The copy is a slave of ours, so mounts the host shares (systemd makes "/" shared)
    still propagate in, unmounts too; a private host mount made or unmounted later is
    seen as it was until the supervisor makes the copy again (supervisor.BASE_NS_AGE).
    The caller must be single-threaded (setns of a mount namespace)."""
    own = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        unshare(CLONE_NEWNS)
        try:
            mount(None, "/", None, MS_REC | MS_SLAVE)
            with open("/proc/self/mountinfo", "rb") as f:
                infos = f.read().splitlines()
            for line in infos:
                fields, _, tail = line.partition(b" - ")
                fstype, _, rest = tail.partition(b" ")
                # and the host's overlays of shared templates: a copy here would keep one
                # alive beside the overlay its vserver mounts on the same upper directory
                if rest.split(b" ")[:1] != [TMPFS_SOURCE.encode()] and fstype != b"overlay":
                    continue
                target = mountinfo_unescape(fields.split(b" ")[4])
                try:
                    umount2(target, MNT_DETACH)
                except OSError:
                    pass    # below one detached already
            return os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            setns(own, CLONE_NEWNS)
    finally:
        os.close(own)



def drop_all(state_dir: Path) -> None:
    """Every context's handles and the private tmpfs itself (for shutdown())."""
    root = ns_root(state_dir)
    if not root.is_dir():
        return
    if os.path.ismount(root):
        for name in os.listdir(root):
            if name.isdigit():
                drop(state_dir, int(name))
        umount2(str(root), MNT_DETACH)
    for p in Path(state_dir).glob("*.spec"):
        p.unlink(missing_ok=True)
    try:
        os.rmdir(root)
    except OSError:
        pass
