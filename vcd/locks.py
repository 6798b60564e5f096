"""Per-vserver locks and per-user slots shared by all worker processes.

An flock on <rundir>/locks/<name> (<rundir>/users/<uid>.<i>): the kernel drops it when
the holder exits or crashes, so a killed worker can never leave a vserver locked or a
slot taken.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from vcd.errors import Fault, VcdError

# Short operations (a vxdb write) queue behind each other; a long one (start, stop)
# makes others give up with MEBUSY after this long instead of piling up.
DEFAULT_WAIT = 3.0


@contextmanager
def vserver_lock(rundir: Path, names: list[str], wait: float = DEFAULT_WAIT) -> Iterator[None]:
    """Hold the locks of `names` (validated vserver names) for the block."""
    lockdir = rundir / "locks"
    fds: list[int] = []
    try:
        # a fixed order, so two calls locking the same pair can't deadlock
        for name in sorted(set(names)):
            try:
                fd = os.open(lockdir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                # the first lock of this rundir (every call would pay for a mkdir)
                lockdir.mkdir(parents=True, exist_ok=True, mode=0o700)
                fd = os.open(lockdir / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fds.append(fd)
            _acquire(fd, name, wait)
        yield
    finally:
        for fd in fds:
            os.close(fd)  # closing drops the flock


def _acquire(fd: int, name: str, wait: float) -> None:
    deadline = time.monotonic() + wait
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise VcdError(Fault.MEBUSY, f"another operation on {name} is in progress") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


@contextmanager
def user_slot(rundir: Path, uid: int, slots: int, setting: str) -> Iterator[None]:
    """Hold one of the `slots` slots of user `uid` for the block; MEBUSY when all are
    held (by its calls in any worker). `setting` names the config key in the fault."""
    slotdir = rundir / "users"
    for i in range(slots):
        path = slotdir / f"{uid}.{i}"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            slotdir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield
        finally:
            os.close(fd)  # closing drops the flock
        return
    raise VcdError(Fault.MEBUSY, f"{slots} calls of yours are in progress, at most {setting} "
                                 f"= {slots}; wait for one to end")
