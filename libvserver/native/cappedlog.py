"""The supervisor's log file, kept below a size.

supervisor.log gets lines at every start, end and callback of every context for as
long as the host runs: a tenant that starts and stops its vserver in a loop, or a
guest that reboots itself in one, adds some for each turn. The file lives in the state
directory, a tmpfs (statedir.py, or /run's): memory that is never reclaimed, and a
full tmpfs fails the records every start needs. So once the log passes its cap its
content moves to ``supervisor.log.1`` (replacing the one before) and the file is
emptied in place, as logrotate's ``copytruncate`` does: the supervisor's standard
error is the same file, opened with O_APPEND, and goes on writing into the one that
is read rather than into a renamed or removed one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from . import statedir

LOG_CAP = 1 << 20   # bytes of supervisor.log before it moves to supervisor.log.1


class CappedFileHandler(logging.FileHandler):
    """A FileHandler (append mode, files mode 0600) whose file is moved to
    ``<name>.1`` and emptied once it holds more than ``cap`` bytes."""

    def __init__(self, path: Path, cap: int = LOG_CAP) -> None:
        self.cap = cap
        old = os.umask(0o077)
        try:
            super().__init__(str(path), mode="a", encoding="utf-8")
        finally:
            os.umask(old)

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        try:
            if self.stream is None or os.fstat(self.stream.fileno()).st_size <= self.cap:
                return
        except (OSError, ValueError):
            return
        try:
            self._move_out()
        except OSError:
            pass    # a full tmpfs: emptied all the same, which gives it room again
        try:
            os.ftruncate(self.stream.fileno(), 0)
        except (OSError, ValueError):
            pass

    def _move_out(self) -> None:
        with open(self.baseFilename, "rb") as src:
            statedir.write_whole(Path(self.baseFilename + ".1"), src.read())
