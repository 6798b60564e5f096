"""Logging for the daemon: one handler on the `vcd` logger, reopened on SIGHUP.

Every process of the daemon (supervisor and workers) logs through the `vcd` logger
tree. Workers inherit the handler across fork; the file is opened with O_APPEND so
lines written by several processes don't overwrite each other.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import IO

from libvserver.logline import OneLineFormatter

LOGGER_NAME = "vcd"
FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO,
          "warning": logging.WARNING, "error": logging.ERROR}
LOGFILE_MODE = 0o640  # the log names users and peers; not for everyone to read

_handler: logging.Handler | None = None


def _open_logfile(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    # os.open so a new file gets a safe mode whatever the umask; an existing one keeps its mode
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOGFILE_MODE)
    return os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="backslashreplace")


def setup(logfile: Path | None, level: str, *, debug: bool = False) -> logging.Logger:
    """(Re)configure the `vcd` logger: to `logfile`, or standard error when None.

    Called at start-up and again on SIGHUP, which reopens the file (log rotation)
    and applies a changed level. Raises OSError when the file cannot be opened; the
    previous handler is then left in place.
    """
    global _handler
    stream = _open_logfile(logfile) if logfile is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter(FORMAT))
    logger = logging.getLogger(LOGGER_NAME)
    old = _handler
    logger.addHandler(handler)
    if old is not None:
        logger.removeHandler(old)
        _close(old)
    _handler = handler
    logger.setLevel(logging.DEBUG if debug else LEVELS[level])
    logger.propagate = False
    return logger


def _close(handler: logging.Handler) -> None:
    stream = getattr(handler, "stream", None)
    handler.close()
    if stream is not None and stream not in (sys.stderr, sys.stdout, sys.__stderr__):
        try:
            stream.close()
        except OSError:
            pass


def stream() -> IO[str] | None:
    """The open log stream, so daemonizing can keep its file descriptor open."""
    return getattr(_handler, "stream", None)


def get(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
