"""Failed supervisor callbacks, carried into vcd's own log.

When a context's init ends, libvserver's supervisor runs vshelper (the callback that
tells vcd "restart" or "shutdown"). If that fails (vshelper cannot read the config,
cannot reach vcd, gets a fault), vcd never hears of it, so the supervisor appends a
JSON line {time, xid, action, argv, how, output} to ``<rundir>/libvserver/callbacks.failed``
(see `libvserver.native.supervisor`). The daemon's main process follows that file and
logs each new line as an error: the operator finds a lost reboot in vcd's log, with
the callback's own output, wherever vcd logs to.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("vcd.callbacks")

FILENAME = "callbacks.failed"
MAX_READ = 1 << 20   # per poll: a runaway file never blocks the daemon's main loop


class CallbackFailures:
    """Follows the file from its size at start-up (older failures were logged then)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = self._size()

    def _size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except OSError:
            return 0

    def poll(self) -> int:
        """Log the failures appended since the last poll; returns how many."""
        size = self._size()
        if size < self.offset:
            self.offset = 0  # removed or truncated: start over
        if size == self.offset:
            return 0
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(MAX_READ)
        except OSError:
            return 0
        complete = data[:data.rfind(b"\n") + 1]
        self.offset += len(complete)
        count = 0
        for line in complete.splitlines():
            try:
                record = json.loads(line)
                log.error("callback %s for context %s failed (%s): %s; output: %s",
                          record.get("action"), record.get("xid"), record.get("how"),
                          " ".join(map(str, record.get("argv") or [])),
                          record.get("output") or "(none)")
            except (ValueError, AttributeError):
                log.error("callback failed: %s", line.decode(errors="replace")[:4096])
            count += 1
        return count
