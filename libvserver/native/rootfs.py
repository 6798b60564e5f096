"""The filesystem view of a context, built by its PID 1 before init is exec'd.

Runs inside the new mount namespace (so nothing here is visible on the host)
and inside the new PID namespace (so /proc shows the context's processes).
Every mount target is resolved with :mod:`confine`, never by a path string.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Callable

from ..api import Mount, MountError
from . import confine, idmap
from .namespaces import (MNT_DETACH, MS_BIND, MS_MOVE, MS_NODEV, MS_NOEXEC, MS_NOSUID,
                         MS_RDONLY, MS_REC, MS_REMOUNT, MS_SLAVE, MS_NOATIME, MS_STRICTATIME,
                         mount, pivot_root, umount2)

DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))
DEV_LINKS = (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))

_FLAG_OPTS = {"ro": MS_RDONLY, "rw": 0, "nosuid": MS_NOSUID, "nodev": MS_NODEV,
              "noexec": MS_NOEXEC, "noatime": MS_NOATIME, "strictatime": MS_STRICTATIME,
              "bind": MS_BIND, "rbind": MS_BIND | MS_REC, "defaults": 0, "suid": 0, "dev": 0,
              "exec": 0, "auto": 0, "noauto": 0}


def parse_opts(opts: str) -> tuple[int, str]:
    flags, data = 0, []
    for o in filter(None, (x.strip() for x in opts.split(","))):
        if o in _FLAG_OPTS:
            flags |= _FLAG_OPTS[o]
        else:
            data.append(o)
    return flags, ",".join(data)


def _mount_at(rootfd: int, rel: str, src: str | None, fstype: str | None, flags: int,
              data: str | None = None, *, file: bool = False) -> None:
    fd = confine.ensure_file(rootfd, rel) if file else confine.ensure_dir(rootfd, rel)
    try:
        mount(src, confine.fd_path(fd), fstype, flags, data)
    finally:
        os.close(fd)


def _remount_ro(rootfd: int, rel: str, flags: int) -> None:
    fd = confine.open_in_root(rootfd, rel, os.O_PATH)
    try:
        mount(None, confine.fd_path(fd), None, MS_REMOUNT | MS_BIND | flags)
    finally:
        os.close(fd)


# /dev/shm is a directory of the /dev tmpfs, bound onto itself for its own flags (nosuid,
# nodev, exec allowed, as the tmpfs of its own it used to be): one superblock fewer per
# vserver. The /dev tmpfs therefore has the size a /dev/shm tmpfs gets by default (half
# of RAM); its pages are charged to the memory cgroup of the writer, the vserver.
DEV_OPTS = "mode=755"
DEVPTS_OPTS = "newinstance,ptmxmode=0666,mode=0620,gid=5"


def _make_dev(rootfd: int, bind_devices: bool = False, console: bool = False) -> None:
    """A tmpfs /dev with DEVICES; ``bind_devices``: bind them from the host's /dev (in a
    user namespace mknod is refused, as for LXC's and runc's unprivileged containers);
    ``console``: with them the mount point of /dev/console (_bind_console)."""
    _mount_at(rootfd, "dev", "tmpfs", "tmpfs", MS_NOSUID | MS_NOEXEC, DEV_OPTS)
    devfd = confine.open_in_root(rootfd, "dev", os.O_PATH | os.O_DIRECTORY)
    try:
        if bind_devices:
            # A mount sits on a name, not on an inode: the mount points are hard links of
            # one empty file, not a tmpfs inode each (~750 bytes of kernel memory that no
            # reclaim frees). All linked before the first bind: link(2) does not cross it.
            first = DEVICES[0][0]
            os.close(os.open(first, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC,
                             0o666, dir_fd=devfd))
            for name in [d[0] for d in DEVICES[1:]] + (["console"] if console else []):
                os.link(first, name, src_dir_fd=devfd, dst_dir_fd=devfd,
                        follow_symlinks=False)
            for name, _, _ in DEVICES:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=devfd)
                try:
                    mount(f"/dev/{name}", confine.fd_path(fd), None, MS_BIND)
                finally:
                    os.close(fd)
        else:
            for name, major, minor in DEVICES:
                os.mknod(name, stat.S_IFCHR | 0o666, os.makedev(major, minor), dir_fd=devfd)
        for name, target in DEV_LINKS:
            os.symlink(target, name, dir_fd=devfd)
        os.mkdir("pts", 0o755, dir_fd=devfd)
        os.mkdir("shm", dir_fd=devfd)
        os.chmod("shm", 0o1777, dir_fd=devfd)     # mkdir's mode passes the umask
    finally:
        os.close(devfd)
    _mount_at(rootfd, "dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC,
              DEVPTS_OPTS)
    _bind_self(rootfd, "dev/shm", MS_NOSUID | MS_NODEV)


def _refuse_kernel_source(rootfd: int, srcfd: int, m: Mount) -> None:
    """A bind source (a guest symlink may point anywhere inside) must not be the
    context's /proc or /sys: a plain bind of them would show them without what is
    mounted over their parts (read-only /proc/sys and friends)."""
    dev = os.fstat(srcfd).st_dev
    if dev == os.fstat(rootfd).st_dev:
        return  # the vserver's own files
    for rel in ("proc", "sys"):
        try:
            fd = confine.open_in_root(rootfd, rel, os.O_PATH)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_dev == dev:
                raise MountError(f"bind source {m.src} of {m.dst} lies in the vserver's "
                                 f"/{rel}, a kernel interface: refused")
        finally:
            os.close(fd)


def is_bind(m: Mount) -> bool:
    return bool(parse_opts(m.opts)[0] & MS_BIND) or m.type in ("bind", "rbind")


def spec_mount(rootfd: int, m: Mount, host_srcs: dict[str, int] | None = None) -> None:
    """Mount m inside rootfd; host_srcs: O_PATH fds of host bind sources opened earlier
    (a guest's mapped root may not be able to look their paths up)."""
    flags, data = parse_opts(m.opts)
    fstype = m.type or None
    is_bind = bool(flags & MS_BIND) or fstype in ("bind", "rbind")
    if fstype == "rbind":
        flags |= MS_REC
    if is_bind:
        flags |= MS_BIND
        fstype = None
        if not os.path.isabs(m.src):
            raise MountError(f"bind mount source {m.src!r} is not an absolute host path")
    srcfd = None
    src = m.src or "none"
    try:
        if is_bind:
            # A source inside the vdir belongs to the guest: resolve it confined like a target.
            vdir = os.readlink(confine.fd_path(rootfd))
            rel = os.path.relpath(os.path.normpath(m.src), vdir)
            if rel == "." or not rel.startswith(".."):
                srcfd = confine.open_in_root(rootfd, rel, os.O_PATH)
                src = confine.fd_path(srcfd)
                _refuse_kernel_source(rootfd, srcfd, m)
            elif host_srcs and m.src in host_srcs:
                src = confine.fd_path(host_srcs[m.src])
        is_file = is_bind and os.path.exists(src) and not os.path.isdir(src)
        _mount_at(rootfd, m.dst, src, fstype, flags & ~MS_RDONLY if is_bind else flags,
                  data or None, file=is_file)
        if is_bind and flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC):
            # a bind mount takes its own flags only on a remount
            _remount_ro(rootfd, m.dst, flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC))
    except OSError as e:
        raise MountError(f"mount {m.src} on {m.dst} ({m.type or 'bind'}): "
                         f"{e.strerror or e}") from None
    finally:
        if srcfd is not None:
            os.close(srcfd)


# Host-wide kernel interfaces a guest must not see or change (runc's maskedPaths and
# readonlyPaths, LXC's proc/sys masks).  Files are masked with /dev/null, directories
# with an empty read-only directory; what this kernel lacks is skipped.
MASKED = ("proc/acpi", "proc/asound", "proc/kcore", "proc/keys", "proc/key-users",
          "proc/kmsg", "proc/latency_stats", "proc/timer_list", "proc/timer_stats",
          "proc/sched_debug", "proc/scsi", "proc/kpagecount",
          "proc/kpageflags", "proc/kpagecgroup", "proc/config.gz", "proc/vmallocinfo",
          "sys/firmware", "sys/kernel/security", "sys/kernel/debug", "sys/kernel/tracing",
          "sys/devices/virtual/powercap")
READ_ONLY = ("proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger")
# where the empty directory of the masks is made on the context's /dev tmpfs, and
# removed again before init runs (the masks then show a deleted directory)
MASK_SOURCE = ".vcd-mask"


def _bind_self(rootfd: int, rel: str, flags: int = 0) -> bool:
    try:
        fd = confine.open_in_root(rootfd, rel, os.O_PATH)
    except FileNotFoundError:
        return False
    try:
        p = confine.fd_path(fd)
        mount(p, p, None, MS_BIND | MS_REC)
    finally:
        os.close(fd)
    if flags:
        _remount_ro(rootfd, rel, flags)  # looked up again: the fd names the mount below
    return True


def mask_kernel_interfaces(rootfd: int, new_net: bool) -> None:
    """Mask MASKED, make READ_ONLY read-only; /proc/sys/net stays writable when the
    context has its own network namespace (its sysctls are then per namespace).

    Every masked directory is a read-only bind of one empty directory of the context's
    /dev tmpfs (made by _make_dev before), removed once bound: a removed directory
    takes no new entry, even through a mount made writable again, and the masks cost
    no superblock of their own. (A tmpfs per vserver did: its memory, and a shrinker id
    that grows every memory cgroup's shrinker array, ~1 KiB a cgroup per 64 ids.)"""
    ro = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    devfd = confine.open_in_root(rootfd, "dev", os.O_PATH | os.O_DIRECTORY)
    empty: int | None = None    # the first mask, the bind source of the others
    made = False
    try:
        for rel in MASKED:
            try:
                fd = confine.open_in_root(rootfd, rel, os.O_PATH)
            except (FileNotFoundError, NotADirectoryError):
                continue
            try:
                p = confine.fd_path(fd)
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    mount("/dev/null", p, None, MS_BIND)
                elif empty is None:
                    os.mkdir(MASK_SOURCE, 0o555, dir_fd=devfd)
                    made = True
                    src = os.open(MASK_SOURCE, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW |
                                  os.O_CLOEXEC, dir_fd=devfd)
                    try:
                        mount(confine.fd_path(src), p, None, MS_BIND)
                    finally:
                        os.close(src)
                    _remount_ro(rootfd, rel, ro)
                    empty = confine.open_in_root(rootfd, rel, os.O_PATH)
                else:
                    # a bind copies the read-only flags of its source: no remount each
                    mount(confine.fd_path(empty), p, None, MS_BIND)
            finally:
                os.close(fd)
    finally:
        if empty is not None:
            os.close(empty)
        try:
            if made:
                os.rmdir(MASK_SOURCE, dir_fd=devfd)
        finally:
            os.close(devfd)
    if new_net:
        # a bind copies the flags of its source: take /proc/sys/net before /proc/sys goes ro
        _bind_self(rootfd, "proc/sys/net")
    for rel in READ_ONLY:
        _bind_self(rootfd, rel, ro)


def setup_unprivileged(vdir: str, mounts: list[Mount], host_dirs: list[int], root_fd: int,
                       sys_fd: int | None, new_net: bool,
                       host_srcs: dict[str, int] | None = None,
                       console: int | None = None, api_mounts: list[str] = (),
                       notify_fd: int | None = None,
                       mark: Callable[[str], None] = lambda _: None) -> None:
    """Like setup(), in a mount namespace owned by the context's user namespace.

    host_dirs: O_PATH fds of the vdir [and a shared template's upper and work dirs],
    opened with host uid 0.  root_fd is the detached idmapped root made by the
    supervisor (see idmap.py): the vdir, the disk-limit image, or for a shared template
    its lower layer, over which the overlay is mounted from in here (``userxattr``:
    trusted.* xattrs belong to host root).  sys_fd, if given, is a read-only /sys to use
    instead of a sysfs mount; host_srcs as for spec_mount; console, api_mounts and
    notify_fd as for setup().  Takes ownership of every fd passed; ``mark`` is called
    after each phase (phases.py)."""
    fds = list(host_dirs) + [root_fd] + ([sys_fd] if sys_fd is not None else []) + \
        list((host_srcs or {}).values()) + ([notify_fd] if notify_fd is not None else [])
    try:
        mount(None, "/", None, MS_REC | MS_SLAVE)
        try:
            idmap.move_into_place(root_fd, host_dirs[0])
            if len(host_dirs) == 3:
                ovl = idmap.fsmount("overlay", None, {
                    "lowerdir": confine.fd_path(root_fd), "upperdir": confine.fd_path(host_dirs[1]),
                    "workdir": confine.fd_path(host_dirs[2]), "userxattr": None})
                fds.append(ovl)
                idmap.move_into_place(ovl, root_fd)
                root_fd = ovl
        except OSError as e:
            raise MountError(f"cannot mount the root of {vdir}: {e.strerror or e}") from None
        mark("init: move the idmapped root into place")
        # the mount fd is the new root itself: no lookup of the vdir's host path needed
        rootfd = root_fd
        try:
            _mount_at(rootfd, "proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            if sys_fd is not None:
                fd = confine.ensure_dir(rootfd, "sys")
                try:
                    idmap.move_into_place(sys_fd, fd)
                finally:
                    os.close(fd)
            else:
                _mount_at(rootfd, "sys", "sysfs", "sysfs",
                          MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
            mark("init: mount /proc /sys")
            _make_dev(rootfd, bind_devices=True, console=console is not None)
            _bind_console(rootfd, console)
            mark("init: /dev, console")
            mask_kernel_interfaces(rootfd, new_net)
            mark("init: masks")
        except OSError as e:
            raise MountError(f"cannot set up /proc, /sys or /dev in {vdir}: {e}") from None
        mount_api_filesystems(rootfd, api_mounts, notify_fd)
        for m in mounts:
            spec_mount(rootfd, m, host_srcs)
        os.fchdir(rootfd)
    finally:
        for fd in fds:
            os.close(fd)
    mark("init: spec mounts")
    _pivot(vdir)
    mark("init: pivot_root, detach the old root")


def _bind_console(rootfd: int, console: int | None) -> None:
    """The pty slave the supervisor keeps the master of, as the guest's /dev/console."""
    if console is not None:
        # by name: a descriptor opened before unshare(CLONE_NEWNS) names a mount of the
        # host's namespace, which bind refuses (EINVAL)
        _mount_at(rootfd, "dev/console", os.ttyname(console), None, MS_BIND, file=True)


def setup(vdir: str, mounts: list[Mount], loopdev: str | None, sysfs: bool = True,
          console: int | None = None, api_mounts: list[str] = (),
          notify_fd: int | None = None, mark: Callable[[str], None] = lambda _: None) -> None:
    """Make vdir the root of this mount namespace with /proc, /sys, /dev and the spec mounts;
    ``console`` is the pty slave bound onto /dev/console; ``api_mounts`` and ``notify_fd``
    as for :func:`mount_api_filesystems` (the fd is closed here)."""
    # Slave: host mounts still propagate in, ours never propagate out.
    mount(None, "/", None, MS_REC | MS_SLAVE)
    if loopdev:
        try:
            mount(loopdev, vdir, "ext4", 0, None)
        except OSError as e:
            raise MountError(f"cannot mount the quota image on {vdir}: {e.strerror}") from None
    # pivot_root needs the new root to be a mount point.
    mount(vdir, vdir, None, MS_BIND | MS_REC)
    rootfd = os.open(vdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            _mount_at(rootfd, "proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            if sysfs:
                _mount_at(rootfd, "sys", "sysfs", "sysfs",
                          MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
            _make_dev(rootfd)
            _bind_console(rootfd, console)
        except OSError as e:
            raise MountError(f"cannot set up /proc, /sys or /dev in {vdir}: {e}") from None
        mount_api_filesystems(rootfd, api_mounts, notify_fd)
        mark("init: mount /proc /sys /dev")
        for m in mounts:
            spec_mount(rootfd, m)
        os.fchdir(rootfd)
    finally:
        os.close(rootfd)
        if notify_fd is not None:
            os.close(notify_fd)
    mark("init: spec mounts")
    _pivot(vdir)
    mark("init: pivot_root, detach the old root")


def _pivot(vdir: str) -> None:
    """Make the current directory (the vdir) "/" of this mount namespace."""
    try:
        # pivot_root(".", ".") stacks the old root on the new one; detaching it leaves the vdir.
        pivot_root(".", ".")
        umount2(".", MNT_DETACH)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise MountError(f"pivot_root into {vdir}: {e.strerror}") from None
        # The old root is not a mount (initramfs rootfs): move and chroot instead.
        mount(".", "/", None, MS_MOVE)
        os.chroot(".")
    os.chdir("/")


# API filesystems for a distribution's own init (ContextSpec.api_mounts), with the
# options systemd's mount-setup.c and systemd-nspawn give them: /run 0755 with a size and
# inode cap (20 % of RAM, 800k inodes), /run/lock 1777 capped at 5 MiB.
RUN_OPTS = "mode=0755,size=20%,nr_inodes=800k"
RUN_LOCK_OPTS = "mode=1777,size=5242880"
NOTIFY_PATH = "run/host/notify"   # NOTIFY_SOCKET inside, where systemd-nspawn puts it


def mount_api_filesystems(rootfd: int, api_mounts: list[str], notify_fd: int | None) -> None:
    """Mount "run" (a tmpfs /run) and "run-lock" (a tmpfs /run/lock) of ``api_mounts`` in
    the new root, and bind ``notify_fd`` (an O_PATH fd of the supervisor's notify socket,
    opened in this mount namespace) onto /run/host/notify. "cgroup" comes later
    (:func:`mount_cgroup`): it needs the context's cgroup namespace. Raises MountError."""
    try:
        if "run" in api_mounts:
            _mount_at(rootfd, "run", "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV | MS_STRICTATIME,
                      RUN_OPTS)
        if "run-lock" in api_mounts:
            _mount_at(rootfd, "run/lock", "tmpfs", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      RUN_LOCK_OPTS)
        if notify_fd is not None:
            fd = confine.ensure_dir(rootfd, "run/host")
            os.close(fd)
            _mount_at(rootfd, NOTIFY_PATH, confine.fd_path(notify_fd), None, MS_BIND, file=True)
    except OSError as e:
        raise MountError(f"cannot mount the API filesystems {' '.join(api_mounts)}: "
                         f"{e.strerror or e}") from None


def mount_cgroup() -> None:
    """The context's own cgroup2 view on /sys/fs/cgroup, read-write (as LXC's
    ``lxc.mount.auto = cgroup:rw`` and systemd-nspawn's unified mode give it): mounted
    after pivot_root and from inside the context's cgroup namespace, so its root is the
    context's delegated group and nothing of the host's hierarchies shows. The rest of
    /sys stays read-only (mounting on a directory of it writes nothing there)."""
    try:
        mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as e:
        raise MountError(f"cannot mount the cgroup2 view on /sys/fs/cgroup: "
                         f"{e.strerror or e}") from None
