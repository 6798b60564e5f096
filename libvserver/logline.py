"""Log lines that stay lines: vcd's log and the supervisor's.

What a guest wrote to its console reaches both inside messages (a failed start's last
console lines in a fault, a failed callback's output), and a line break in it made
lines of its own: a guest forged entries ("... vcd.auth ... admin logged in") and sent
terminal controls to whoever reads the log with cat or less. So each message is
escaped to one line, as journald's export format and Go's %q do for control bytes.
"""
from __future__ import annotations

import logging
import re

# line breaks and terminal controls: C0 but tab, DEL, C1, U+2028/9
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
