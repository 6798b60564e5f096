"""Fault codes and the one exception type that carries them.

Every error a method can report is a `VcdError` with a fault code; the dispatcher is
the single place that turns it into an XML-RPC fault.
"""
from __future__ import annotations

import re
from enum import IntEnum


class Fault(IntEnum):
    MEAUTH = 100
    MEPERM = 101
    MENOUSER = 102
    MEINVAL = 200
    MEEXIST = 201
    MENOVPS = 202
    MENOVG = 203
    MESTOPPED = 300
    MERUNNING = 301
    MEBUSY = 302
    MEVXDB = 400
    MECONF = 401
    MESYS = 500
    MEEXEC = 1000
    # XML-RPC interoperability codes (specs.xmlrpc-epi.sourceforge.net/specs/rfc.fault_codes.php)
    PARSE_ERROR = -32700
    METHOD_NOT_FOUND = -32601


TEXT: dict[int, str] = {
    Fault.MEAUTH: "Unauthorized",
    Fault.MEPERM: "Operation not permitted",
    Fault.MENOUSER: "User does not exist",
    Fault.MEINVAL: "Invalid argument",
    Fault.MEEXIST: "An object already exists",
    Fault.MENOVPS: "Virtual server does not exist",
    Fault.MENOVG: "Virtual server group does not exist",
    Fault.MESTOPPED: "Virtual server not running",
    Fault.MERUNNING: "Virtual server still/already running",
    Fault.MEBUSY: "Operation still in progress",
    Fault.MEVXDB: "Low-level database error",
    Fault.MECONF: "Invalid configuration file",
    Fault.MESYS: "System call or library call failed",
    Fault.MEEXEC: "Command execution failed",
    Fault.PARSE_ERROR: "Parse error: not well formed",
    Fault.METHOD_NOT_FOUND: "method not found",  # DESIGN.md's text
}


class VcdError(Exception):
    """An error with a fault code; str() is the fault string sent to the client."""

    def __init__(self, code: int, detail: str | None = None, *, text: str | None = None):
        self.code = int(code)
        base = TEXT.get(self.code, TEXT[Fault.MEEXEC] if self.code > 1000 else "Error")
        if text is not None:
            message = text
        elif detail:
            message = f"{base}: {detail}"
        else:
            message = base
        super().__init__(message)
        self.message = message


class MustWait(BaseException):
    """Raised by a call answered on a worker's event loop (`quick`) that found it has
    to wait after all: a failed login to record in VXDB, whose write lock a long
    vx.create or vx.remove may hold for a while. The server serves the call again in a
    thread (vcd.server.SlowLane). A BaseException, so no `except Exception` of a method
    or of system.multicall turns it into a fault."""


def exec_failed(status: int, output: str, reason: str | None = None) -> VcdError:
    """Fault 1000+N of a command that exited N: the standard text, the exit status (or
    `reason`), then the command's combined output, e.g.
    "Command execution failed: exit status 7: failing\n"."""
    detail = reason if reason is not None else f"exit status {status}"
    return VcdError(Fault.MEEXEC + status, f"{detail}: {output}" if output else detail)


_EXEC_PREFIX = re.compile(re.escape(TEXT[Fault.MEEXEC]) + r": (exit status \d+(: |$))?")


def exec_output(fault_string: str) -> str:
    """What follows the standard text and exit status of a 1000+N fault string: the
    command's output (after a reason such as a timeout, with that reason)."""
    return _EXEC_PREFIX.sub("", fault_string, count=1)


def invalid(detail: str) -> VcdError:
    return VcdError(Fault.MEINVAL, detail)


def no_vps(name: str) -> VcdError:
    return VcdError(Fault.MENOVPS, name)
