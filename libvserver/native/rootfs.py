"""The filesystem view of a context, built by its PID 1 before init is exec'd.

Runs inside the new mount namespace (so nothing here is visible on the host)
and inside the new PID namespace (so /proc shows the context's processes).
Every mount target is resolved with :mod:`confine`, never by a path string.
"""

from __future__ import annotations

import errno
import os
import stat

from ..api import Mount, MountError
from . import confine
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


def _make_dev(rootfd: int) -> None:
    _mount_at(rootfd, "dev", "tmpfs", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=1024k")
    devfd = confine.open_in_root(rootfd, "dev", os.O_PATH | os.O_DIRECTORY)
    try:
        for name, major, minor in DEVICES:
            os.mknod(name, stat.S_IFCHR | 0o666, os.makedev(major, minor), dir_fd=devfd)
        for name, target in DEV_LINKS:
            os.symlink(target, name, dir_fd=devfd)
        os.mkdir("pts", 0o755, dir_fd=devfd)
        os.mkdir("shm", 0o1777, dir_fd=devfd)
    finally:
        os.close(devfd)
    _mount_at(rootfd, "dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620,gid=5")
    _mount_at(rootfd, "dev/shm", "shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")


def spec_mount(rootfd: int, m: Mount) -> None:
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


def setup(vdir: str, mounts: list[Mount], loopdev: str | None, sysfs: bool = True,
          console: int | None = None) -> None:
    """Make vdir the root of this mount namespace with /proc, /sys, /dev and the spec mounts;
    ``console`` is the pty slave bound onto /dev/console."""
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
            if console is not None:
                # by name: a descriptor opened before unshare(CLONE_NEWNS) names a mount of
                # the host's namespace, which bind refuses (EINVAL)
                _mount_at(rootfd, "dev/console", os.ttyname(console), None, MS_BIND, file=True)
        except OSError as e:
            raise MountError(f"cannot set up /proc, /sys or /dev in {vdir}: {e}") from None
        for m in mounts:
            spec_mount(rootfd, m)
        os.fchdir(rootfd)
    finally:
        os.close(rootfd)
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
