"""One daemon per rundir and per cgroup parent: the second one refuses to start.

Two daemons with different datadirs pointed at one rundir would share one supervisor
(its socket lives in the rundir), whose callback calls the first daemon; pointed at
one cgroup parent, they hand out the same xids for different vservers and each
adopts the other's contexts. Neither can be repaired afterwards, so `claim` refuses
at start with a message naming the conflict:

* the rundir: ``<rundir>/owner.lock``, locked (flock) for as long as the daemon runs
  and holding the owner's datadir. A free lock naming another datadir is taken over
  only when that daemon's supervisor no longer answers (it would call the old daemon).
* the cgroup parent: a host-wide ``/run/lock/vcd/cgroup-<parent>.lock`` (cgroup v1
  holds no extended attributes, so the mark can't live on the cgroup directories;
  /run is cleared at boot exactly as cgroups are), locked the same way. A free lock
  naming another datadir is taken over only when no context runs under the parent.

The same datadir may always take its own marks over (a restart).
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from vcd.config import Config

LOCK_DIR = Path("/run/lock/vcd")


class Conflict(Exception):
    """Another daemon owns the rundir or the cgroup parent; the message names both."""


@dataclass
class Claim:
    """The held locks, by path; `release` at exit (the kernel drops them anyway when we
    die). Workers must not inherit `fds`: a lock held by a forked copy outlives `release`."""
    locks: dict[Path, int] = field(default_factory=dict)
    cgroup_lock: Path | None = None
    cgroup_parent: str = ""

    @property
    def fds(self) -> list[int]:
        return list(self.locks.values())

    def release(self, keep: "Claim | None" = None) -> None:
        """Drop every lock `keep` does not hold too."""
        kept = set(keep.locks) if keep is not None else set()
        if self.cgroup_lock is not None and self.cgroup_lock not in kept \
                and not _contexts_under(self.cgroup_parent):
            # nothing left to protect: don't leave a file per parent behind (safe while we
            # hold the lock: `_lock` retries when the path no longer names its file)
            try:
                self.cgroup_lock.unlink()
            except OSError:
                pass
        for path, fd in list(self.locks.items()):
            if path not in kept:
                os.close(fd)
        self.locks.clear()


def _lock(path: Path) -> tuple[int, bool]:
    """Open `path` (created 0644) and try to lock it; (fd, locked)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
            return fd, False
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, True
        os.close(fd)  # removed by its last owner meanwhile: lock the new file instead


def _owner(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()


def _mark(fd: int, datadir: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, (datadir + "\n").encode(), 0)


def _supervisor_answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.settimeout(2.0)
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _contexts_under(parent: str) -> list[int]:
    """The xids with processes under the cgroup parent (none when cgroups are missing)."""
    try:
        from libvserver.native.cgroups import Layout
        layout = Layout(parent)
        return [xid for xid in layout.xids() if layout.pids(xid)]
    except (OSError, ValueError):
        return []


def lock_path(cgroup_parent: str) -> Path:
    return LOCK_DIR / ("cgroup-" + cgroup_parent.replace("/", "%") + ".lock")


def claim(config: Config, held: Claim | None = None) -> Claim:
    """Take the rundir and the cgroup parent for `config.datadir`, or raise Conflict.

    `held`: the claim of the running configuration (a reload): its locks on the same
    paths are kept rather than taken again, which would find them taken, by us. The
    caller then calls `held.release(keep=<the new claim>)`."""
    ours = str(config.datadir)
    new = Claim()
    mine = held.locks if held is not None else {}

    def take(path: Path) -> tuple[int, str, bool]:
        if path in mine:
            new.locks[path] = mine[path]
            return mine[path], _owner(mine[path]), True
        fd, locked = _lock(path)
        new.locks[path] = fd
        return fd, _owner(fd), locked

    try:
        path = config.rundir / "owner.lock"
        fd, owner, locked = take(path)
        if not locked:
            raise Conflict(f"rundir {config.rundir} is in use by a running vcd with datadir "
                           f"{owner or '?'}; this one has datadir {ours}: give it another rundir")
        sock = config.supervisor_dir / "supervisor.sock"
        if owner and owner != ours and path not in mine and _supervisor_answers(sock):
            raise Conflict(f"rundir {config.rundir} belongs to the vcd with datadir {owner}, whose "
                           f"supervisor ({sock}) still runs and reports to that daemon; this one "
                           f"has datadir {ours}: give it another rundir")
        _mark(fd, ours)

        path = lock_path(config.cgroup_parent)
        fd, owner, locked = take(path)
        if not locked:
            raise Conflict(f"cgroup parent {config.cgroup_parent!r} is in use by a running vcd "
                           f"with datadir {owner or '?'} ({path}); this one has datadir {ours}: "
                           f"give it another cgroup_parent")
        if owner and owner != ours and path not in mine:
            running = _contexts_under(config.cgroup_parent)
            if running:
                raise Conflict(f"cgroup parent {config.cgroup_parent!r} holds running contexts "
                               f"(xid {', '.join(map(str, running[:5]))}) of the vcd with datadir "
                               f"{owner} ({path}); this one has datadir {ours}: give it another "
                               f"cgroup_parent")
        _mark(fd, ours)
        new.cgroup_lock = path
        new.cgroup_parent = config.cgroup_parent
    except BaseException:
        for p, fd in new.locks.items():
            if p not in mine:
                os.close(fd)
        raise
    return new
