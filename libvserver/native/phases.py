"""Per-phase timings of a context's start, for profiling (bench/start_phases.py).

Off unless asked for (the supervisor's ``start`` request with ``"phases": true``, which
NativeBackend sends when the environment has VCD_START_PHASES): a recorder that is off
costs one attribute test per phase.  A daemon that serves requests makes a recorder per
request (``begin_request``) and marks its own steps in ``current``; the code that starts
a context there adds its phases to those.  Times are wall-clock (time.time()) so that the
supervisor's and init's phases, recorded in two processes, line up; a phase is
``[name, begin, end]`` in seconds since the epoch.
"""

from __future__ import annotations

import os
import time

ENV = "VCD_START_PHASES"


def wanted() -> bool:
    """True when this process's environment asks for start phases."""
    return bool(os.environ.get(ENV))


class Phases:
    def __init__(self, on: bool = False) -> None:
        self.on = on
        self.items: list[list] = []
        self.last = time.time()

    def mark(self, name: str) -> None:
        """The phase `name` ran from the previous mark (or the recorder's creation) to now."""
        if self.on:
            now = time.time()
            self.items.append([name, self.last, now])
            self.last = now

    def skip(self) -> None:
        """Start the next phase now (the time since the last mark belongs to no phase)."""
        if self.on:
            self.last = time.time()


# The request being served (vcd's dispatcher replaces it per request); off by default
_OFF = Phases()
current = _OFF
_wanted: bool | None = None     # wanted(), asked once per process


def begin_request() -> Phases:
    """A new recorder for the request that begins now, made ``current``; on when this
    process's environment asks for start phases (else one shared recorder that is off:
    nothing made per request)."""
    global current, _wanted
    if _wanted is None:
        _wanted = wanted()
    current = Phases(True) if _wanted else _OFF
    return current
