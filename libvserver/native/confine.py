"""Path resolution that can never leave the vdir.

A guest owns the files of its vdir, so any symlink in it may point anywhere.
Every path the host mounts on, creates or writes inside a vdir is resolved
with openat2(RESOLVE_IN_ROOT): symlinks are followed as if the vdir were "/",
".." stops at the vdir, and magic links (/proc/*/fd) are refused.  Kernels
without openat2 fall back to a component walk that refuses symlinks outright.
The result is an O_PATH descriptor; mounting on ``/proc/self/fd/N`` then
targets exactly the dentry that was checked, with no second lookup to race.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

from .namespaces import SYS_OPENAT2, _libc

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_have_openat2: bool | None = None


def _openat2(dirfd: int, path: str, flags: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    while True:
        fd = _libc.syscall(SYS_OPENAT2, dirfd, path.encode(), ctypes.byref(how),
                           ctypes.sizeof(how))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EAGAIN:  # EAGAIN: a concurrent rename, retry as the man page says
            raise OSError(err, os.strerror(err), path)


def _walk(dirfd: int, path: str, flags: int) -> int:
    """Fallback: open component by component, refusing every symlink."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OSError(errno.EXDEV, "'..' in a confined path", path)
    cur = os.dup(dirfd)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            fl = (flags if last else os.O_PATH | os.O_DIRECTORY) | os.O_NOFOLLOW | os.O_CLOEXEC
            nxt = os.open(name, fl, dir_fd=cur)
            os.close(cur)
            cur = nxt
        if not parts and flags & ~os.O_PATH & ~os.O_DIRECTORY:
            raise OSError(errno.EISDIR, "empty path", path)
        return cur
    except BaseException:
        os.close(cur)
        raise


def open_in_root(rootfd: int, path: str, flags: int = os.O_PATH, mode: int = 0) -> int:
    """Open ``path`` (absolute or relative, taken relative to rootfd) confined to rootfd."""
    global _have_openat2
    rel = path.lstrip("/") or "."
    if _have_openat2 is not False:
        try:
            fd = _openat2(rootfd, rel, flags, mode)
            _have_openat2 = True
            return fd
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            _have_openat2 = False
    return _walk(rootfd, rel, flags)


def _normalize(parts: list[str]) -> list[str]:
    out: list[str] = []
    for p in parts:
        if p == "..":
            if out:
                out.pop()  # ".." at the root stays at the root, as RESOLVE_IN_ROOT does
        elif p not in ("", "."):
            out.append(p)
    return out


def ensure_dir(rootfd: int, path: str, mode: int = 0o755, _depth: int = 0) -> int:
    """O_PATH fd of directory ``path`` inside rootfd, creating missing components.

    Every prefix is resolved from rootfd, so symlinks (also dangling ones, whose
    target gets created) are followed as if rootfd were "/".
    """
    parts = _normalize(path.split("/"))
    for i in range(len(parts)):
        prefix = "/".join(parts[:i + 1])
        try:
            fd = open_in_root(rootfd, prefix, os.O_PATH | os.O_DIRECTORY)
            os.close(fd)
            continue
        except FileNotFoundError:
            pass
        parent = open_in_root(rootfd, "/".join(parts[:i]) or ".", os.O_PATH | os.O_DIRECTORY)
        try:
            os.mkdir(parts[i], mode, dir_fd=parent)
        except FileExistsError:
            # a dangling symlink: create what it points to, inside the root
            if _depth > 40:
                raise OSError(errno.ELOOP, "too many symlinks", path) from None
            target = os.readlink(parts[i], dir_fd=parent)
            base = [] if target.startswith("/") else parts[:i]
            return ensure_dir(rootfd, "/".join(base + [target] + parts[i + 1:]), mode,
                              _depth + 1)
        finally:
            os.close(parent)
    return open_in_root(rootfd, "/".join(parts) or ".", os.O_PATH | os.O_DIRECTORY)


def ensure_file(rootfd: int, path: str, mode: int = 0o644) -> int:
    """O_PATH fd of a non-directory ``path`` inside rootfd, creating an empty file if missing."""
    parts = _normalize(path.split("/"))
    if not parts:
        raise OSError(errno.EINVAL, "not a file path", path)
    try:
        return open_in_root(rootfd, "/".join(parts), os.O_PATH)
    except FileNotFoundError:
        pass
    pfd = ensure_dir(rootfd, "/".join(parts[:-1]))
    try:
        fd = os.open(parts[-1], os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=pfd)
        os.close(fd)
    finally:
        os.close(pfd)
    return open_in_root(rootfd, "/".join(parts), os.O_PATH)


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def is_dir_fd(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)
