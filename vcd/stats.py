"""Daemon statistics (vcd.status), exact under concurrent requests.

Counters live in a small mmap'd file under rundir with one slot per worker. A worker
claims a slot with an fcntl lock on it (released by the kernel if the worker dies, so
a respawned worker reuses the slot and its counts), writes only its own slot, and
readers sum all slots: no shared lock a killed worker could leave held. The threads of
a worker (vcd.server.SlowLane, each with a dispatcher of its own) count in the one slot
of their process (`of_process`): SLOTS bounds processes, not threads.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import time
from pathlib import Path

COUNTERS = ("requests", "flogins", "nomethod")
SLOTS = 512
_HEADER = struct.Struct("<d")          # daemon start time
_SLOT = struct.Struct(f"<{len(COUNTERS)}q")


def _path(rundir: Path) -> Path:
    return rundir / "vcd.stats"


def reset(rundir: Path) -> None:
    """A new daemon starts counting from zero (called once, before the workers fork)."""
    rundir.mkdir(parents=True, exist_ok=True, mode=0o755)
    path = _path(rundir)
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        fh.write(_HEADER.pack(time.time()))
        fh.write(bytes(_SLOT.size * SLOTS))
    os.replace(tmp, path)


class Stats:
    def __init__(self, rundir: Path):
        path = _path(rundir)
        if not path.exists():
            reset(rundir)
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._map = mmap.mmap(self._fd, _HEADER.size + _SLOT.size * SLOTS)
        self._slot: int | None = None
        self._lock = threading.Lock()

    def _claim(self) -> int:
        # An open-file-description lock (F_OFD_SETLK), not a POSIX one: a POSIX lock is
        # dropped when the process closes *any* descriptor of the file (vcd.status opens
        # its own Stats), and another worker would then share the slot and lose counts.
        for slot in range(SLOTS):
            flock = struct.pack("hh4xqqi4x", fcntl.F_WRLCK, os.SEEK_SET,
                                self._offset(slot), 1, 0)
            try:
                fcntl.fcntl(self._fd, fcntl.F_OFD_SETLK, flock)
                return slot
            except OSError:
                continue
        raise RuntimeError("no free statistics slot")

    @staticmethod
    def _offset(slot: int) -> int:
        return _HEADER.size + slot * _SLOT.size

    def add(self, counter: str, n: int = 1) -> None:
        index = COUNTERS.index(counter)
        with self._lock:    # the threads of a worker share its slot
            if self._slot is None:
                self._slot = self._claim()
            offset = self._offset(self._slot) + index * 8
            (value,) = struct.unpack_from("<q", self._map, offset)
            struct.pack_into("<q", self._map, offset, value + n)

    def read(self) -> dict[str, float]:
        totals = [0] * len(COUNTERS)
        for slot in range(SLOTS):
            for i, v in enumerate(_SLOT.unpack_from(self._map, self._offset(slot))):
                totals[i] += v
        (started,) = _HEADER.unpack_from(self._map, 0)
        result: dict[str, float] = dict(zip(COUNTERS, totals))
        result["started"] = started
        return result

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


_of_process: dict[tuple[int, str], Stats] = {}
_of_process_guard = threading.Lock()


def of_process(rundir: Path) -> Stats:
    """The counters of this process, shared by all its threads: one slot per worker
    however many dispatchers serve in it. Kept open until the process exits (the kernel
    then frees the slot). Keyed by pid too: a forked child claims a slot of its own."""
    key = (os.getpid(), str(rundir))
    with _of_process_guard:
        found = _of_process.get(key)
        if found is None:
            found = _of_process[key] = Stats(rundir)
        return found
