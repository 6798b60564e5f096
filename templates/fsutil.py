"""File-system helpers that must never follow a symlink out of a vserver's tree.

A vdir's contents belong to whoever is root inside the vserver, so any host
code walking it must assume hostile symlinks, mounts and names.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from pathlib import Path

from .errors import UnsafePath

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def mount(source: str, target: Path, fstype: str, data: str, flags: int = 0) -> None:
    rc = _libc.mount(source.encode(), os.fsencode(target), fstype.encode(), flags, data.encode())
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount -t {fstype} on {target} ({data}): {os.strerror(e)}")


def umount(target: Path, lazy: bool = False) -> None:
    flags = UMOUNT_NOFOLLOW | (MNT_DETACH if lazy else 0)
    rc = _libc.umount2(os.fsencode(target), flags)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"umount {target}: {os.strerror(e)}")


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every mount in this mount namespace."""
    result = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rfields = right.split()
            result.append((_unescape_mountinfo(fields[4]), rfields[0] if rfields else "",
                           rfields[2] if len(rfields) > 2 else ""))
    return result


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (lexically), deepest first."""
    p = os.path.abspath(path)
    prefix = p.rstrip("/") + "/"
    found = {m for m, _, _ in mounts() if m == p or m.startswith(prefix)}
    return sorted(found, key=lambda m: m.count("/"), reverse=True)


def is_mountpoint(path: Path) -> bool:
    p = os.path.abspath(path)
    return any(m == p for m, _, _ in mounts())


def umount_all_under(path: Path) -> None:
    """Detach every mount at or below ``path``, deepest first (cleanup of aborted builds)."""
    for m in mounts_under(path):
        try:
            umount(Path(m), lazy=True)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):
                raise


def _inside(path: str, base: str) -> bool:
    return path != base and os.path.commonpath([path, base]) == base


def safe_rmtree(path: Path, base: Path) -> None:
    """Remove ``path`` recursively, which must lie strictly inside ``base``.

    Never follows a symlink (a link is removed, not its target), never crosses
    into another file system (refuses, naming it, rather than deleting through a
    bind or overlay mount), refuses ``/``. A missing ``path`` is not an error.
    """
    path_s = os.path.abspath(path)
    base_s = os.path.realpath(base)
    if path_s == "/" or base_s == "/" and path_s.count("/") < 2:
        raise UnsafePath(f"refusing to remove {path_s}")
    # Resolve the parent only: the last component itself must not be followed.
    parent = os.path.realpath(os.path.dirname(path_s))
    name = os.path.basename(path_s)
    if name in ("", ".", ".."):
        raise UnsafePath(f"refusing to remove {path_s}")
    real = os.path.join(parent, name)
    if not _inside(real, base_s):
        raise UnsafePath(f"refusing to remove {path_s}: not inside {base_s}")
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(real)
        return
    busy = mounts_under(Path(real))
    if busy:
        raise UnsafePath(f"refusing to remove {real}: {busy[0]} is mounted inside it; unmount first")
    parent_fd = os.open(parent, _DIR_FLAGS)
    try:
        top = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        dev = os.fstat(top).st_dev
        _remove_contents(top, dev, real)
        os.rmdir(name, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)


def _remove_contents(top_fd: int, dev: int, where: str) -> None:
    """Empty the directory ``top_fd`` (consumed) iteratively, so depth is not bounded by recursion."""
    stack: list[tuple[int, str | None, object]] = [(top_fd, None, os.scandir(top_fd))]
    try:
        while stack:
            fd, _, it = stack[-1]
            descended = False
            for entry in it:  # type: ignore[attr-defined]
                if entry.is_dir(follow_symlinks=False):
                    sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                    if os.fstat(sub).st_dev != dev:
                        os.close(sub)
                        raise UnsafePath(f"refusing to remove {where}: {entry.name} is on another file system")
                    stack.append((sub, entry.name, os.scandir(sub)))
                    descended = True
                    break
                os.unlink(entry.name, dir_fd=fd)
            if descended:
                continue
            fd, name, it = stack.pop()
            it.close()  # type: ignore[attr-defined]
            os.close(fd)
            if stack:
                os.rmdir(name, dir_fd=stack[-1][0])  # type: ignore[arg-type]
    finally:
        for fd, _, it in stack:
            try:
                it.close()  # type: ignore[attr-defined]
            finally:
                os.close(fd)

