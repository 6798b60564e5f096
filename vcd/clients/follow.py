"""Following a task (`background: true`) from a client: its log as it grows, then its end.

The daemon keeps the task and its log (vcd.tasks); a client polls task.log at a short
interval and task.get once the log has ended, so output appears while the work runs
(vcc exec) and an interrupted client can stop the work it started.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from vcd.clients.common import Client, ClientError

POLL_SECONDS = 0.2   # between task.log calls while nothing new came


def follow(client: Client, task_id: str, write: Callable[[str], None],
           poll: float = POLL_SECONDS) -> dict[str, Any]:
    """Hand each new piece of the task's log to `write` until it has ended; returns
    task.get's answer. Ctrl-C stops the task (task.stop) and re-raises."""
    offset = 0
    try:
        while True:
            part = client.call("task.log", {"id": task_id, "offset": offset})
            if part.get("data"):
                write(part["data"])
            moved = part.get("offset", offset) != offset
            offset = part.get("offset", offset)
            if part.get("eof"):
                return client.call("task.get", {"id": task_id})
            if not moved:
                time.sleep(poll)
    except KeyboardInterrupt:
        try:
            client.call("task.stop", {"id": task_id})
        except ClientError:
            pass
        raise
