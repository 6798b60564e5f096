"""The audit log: one JSON line per mutating call, written before the answer is sent."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from vcd.registry import Method

MAX_VALUE = 256  # long values (a command line, a description) are cut in the log
MAX_USER = 64    # the longest valid username


def _clean(method: Method, given: Any) -> dict[str, Any]:
    if not isinstance(given, dict):
        return {}
    secret = {n for p in method.params if p.secret for n in (p.name, *p.aliases)}
    out: dict[str, Any] = {}
    for key, value in given.items():
        if not isinstance(key, str):
            continue
        if key in secret:
            out[key] = "***"
        elif isinstance(value, str) and len(value) > MAX_VALUE:
            out[key] = value[:MAX_VALUE] + "…"
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        else:
            out[key] = f"<{type(value).__name__}>"
    return out


class AuditLog:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def record(self, method: Method, user: str, peer: str, given: Any,
               fault: tuple[int, str] | None) -> None:
        params = _clean(method, given)
        if len(user) > MAX_USER:  # a claimed name of a failed login is whatever the client sent
            user = user[:MAX_USER] + "…"
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "user": user, "peer": peer,
                 "method": method.name, "vserver": params.get("name"),
                 "params": params, "result": "ok" if fault is None else "fault"}
        if fault is not None:
            entry["fault"] = {"code": fault[0], "string": fault[1][:MAX_VALUE]}
        line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode()
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o600)
        # one write with O_APPEND: concurrent workers never interleave inside a line
        os.write(self._fd, line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
