"""A context's console: a pty whose slave is init's stdin, stdout and stderr and the
guest's ``/dev/console``, and whose master the supervisor keeps.

What init and its children write there goes to a size-capped log,
``<state_dir>/<xid>.console``, that outlives the daemon (the supervisor writes it), as
LXC's console log and Incus' ``incus console --show-log`` do.  Offsets are absolute
byte counts since the context started: when the log is trimmed to its cap the
number of bytes dropped so far is kept in ``<xid>.console.base``, so a reader that
follows with ``offset`` never sees a byte twice and learns that it missed some.

A new start of the same xid begins a new log; :func:`forget` removes it (a removed
vserver leaves nothing for the next one that gets its xid).
"""

from __future__ import annotations

import errno
import os
import termios
import tty
from dataclasses import dataclass
from pathlib import Path

from . import statedir

LOG_CAP = 256 * 1024          # bytes kept per context; trimmed to half when exceeded
READ_CHUNK = 65536
DEFAULT_LINES = 100


def log_path(state_dir: Path, xid: int) -> Path:
    return Path(state_dir) / f"{xid}.console"


def _base_path(state_dir: Path, xid: int) -> Path:
    return Path(state_dir) / f"{xid}.console.base"


def open_pty(owner_uid: int | None = None, owner_gid: int | None = None) -> tuple[int, int]:
    """(master, slave) of a new pty in raw-ish mode (no echo of what init writes back
    into the log); the slave is chowned to the guest's root where it has a mapped one,
    so guest root can reopen /dev/console. Both close-on-exec."""
    master, slave = os.openpty()
    os.set_inheritable(master, False)
    os.set_inheritable(slave, False)
    attrs = termios.tcgetattr(slave)
    # output post-processing stays (\n -> \r\n like a real console); no local echo
    attrs[tty.LFLAG] &= ~(termios.ECHO | termios.ECHONL)
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    if owner_uid is not None:
        os.fchown(slave, owner_uid, owner_gid if owner_gid is not None else -1)
    os.fchmod(slave, 0o620)
    return master, slave


@dataclass
class ConsoleLog:
    """The writer side, one per running context, owned by the supervisor."""
    state_dir: Path
    xid: int
    cap: int = LOG_CAP
    _fd: int = -1
    _size: int = 0

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)

    def reset(self) -> None:
        """Start a new log (a new boot of the context)."""
        _base_path(self.state_dir, self.xid).unlink(missing_ok=True)
        self._open(truncate=True)

    def _open(self, truncate: bool = False) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        if truncate:
            flags |= os.O_TRUNC
        self._fd = os.open(log_path(self.state_dir, self.xid), flags, 0o600)
        self._size = os.fstat(self._fd).st_size

    def append(self, data: bytes) -> None:
        if self._fd < 0:
            self._open()
        os.write(self._fd, data)
        self._size += len(data)
        if self._size > self.cap:
            self._trim()

    def _trim(self) -> None:
        path = log_path(self.state_dir, self.xid)
        keep = self.cap // 2
        with open(path, "rb") as f:
            f.seek(max(0, self._size - keep))
            tail = f.read()
        dropped = self._size - len(tail)
        _write_base(self.state_dir, self.xid, _read_base(self.state_dir, self.xid) + dropped)
        statedir.write_whole(path, tail)
        self._open()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def pump(master: int, log: ConsoleLog) -> bool:
    """Move what is waiting on the master into the log; False once the pty is gone
    (every holder of the slave closed it: EIO)."""
    try:
        data = os.read(master, READ_CHUNK)
    except BlockingIOError:
        return True
    except OSError as e:
        if e.errno == errno.EIO:
            return False
        raise
    if not data:
        return False
    try:
        log.append(data)
    except OSError:
        # the state directory is full (a tmpfs of bounded size, statedir.py): this much
        # of the log is lost, not the console, which a closed master ends for good
        pass
    return True


def _read_base(state_dir: Path, xid: int) -> int:
    try:
        return int(_base_path(state_dir, xid).read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write_base(state_dir: Path, xid: int, base: int) -> None:
    statedir.write_whole(_base_path(state_dir, xid), str(base).encode())


def read(state_dir: Path, xid: int, lines: int | None = DEFAULT_LINES,
         offset: int | None = None, limit: int = LOG_CAP) -> tuple[bytes, int]:
    """(data, next offset) of the console log.

    With ``offset`` (an absolute byte count from an earlier answer): what came after
    it, at most ``limit`` bytes; an offset older than what is kept gives what is kept.
    Without: the last ``lines`` lines. No log at all is (b"", 0).
    """
    path = log_path(state_dir, xid)
    for _ in range(3):  # a trim renames the file between our two reads: read again
        base = _read_base(state_dir, xid)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return b"", 0
        if _read_base(state_dir, xid) == base:
            break
    end = base + len(data)
    if offset is not None:
        start = min(max(offset, base), end)
        chunk = data[start - base:start - base + limit]
        return chunk, start + len(chunk)
    n = DEFAULT_LINES if lines is None else lines
    if n <= 0:
        return b"", end
    body = data[:-1] if data.endswith(b"\n") else data
    cut = len(body)
    for _ in range(n):
        cut = body.rfind(b"\n", 0, cut)
        if cut < 0:
            break
    tail = data[cut + 1:] if cut >= 0 else data
    return tail[-limit:], end


def forget(state_dir: Path, xid: int) -> None:
    """Remove the console log of xid (the vserver was removed)."""
    for p in (log_path(state_dir, xid), _base_path(state_dir, xid)):
        p.unlink(missing_ok=True)
