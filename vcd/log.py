"""Logging for the daemon: one handler on the `vcd` logger, reopened on SIGHUP.

Every process of the daemon (supervisor and workers) logs through the `vcd` logger
tree. Workers inherit the handler across fork; the file is opened with O_APPEND so
lines written by several processes don't overwrite each other.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import IO

LOGGER_NAME = "vcd"
FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO,
          "warning": logging.WARNING, "error": logging.ERROR}
LOGFILE_MODE = 0o640  # the log names users and peers; not for everyone to read

_handler: logging.Handler | None = None

# line breaks and terminal controls (C0 but tab, DEL, C1, U+2028/9): what a guest wrote
# to its console comes back in faults logged here (a failed start's last console lines,
# a failed callback's output), and must not make lines of its own in the log
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r"}


def one_line(text: str) -> str:
    """text with its control characters escaped (\\n, \\r, \\xNN, \\uNNNN): one log line."""
    return _CONTROLS.sub(lambda m: _NAMED.get(m.group()) or (
        f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"),
        text)


class OneLineFormatter(logging.Formatter):
    """The daemon's log format, each message one line (`one_line`); a traceback that
    follows it (log.exception) is the daemon's own and keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)


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
