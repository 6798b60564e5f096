"""task.*: following and stopping work started with `background: true` (vcd.tasks).

Each is checked like the method that started the task, against the name it was
started for (registry Owner.TASK): 101 without that method's capability, 202 for a
vserver that is not the caller's.
"""
from __future__ import annotations

from typing import Any

from vcd import tasks
from vcd.params import Int, Param, Pattern, VServerName
from vcd.registry import Call, Owner, Txn, method

TASK_ID = Param("id", Pattern(tasks.ID_RE, "a task id (as background: true answered it)"),
                doc="task id")


@method("task.get", cap=None, owner=Owner.TASK, params=(TASK_ID,), returns="struct")
def get(call: Call, id: str) -> dict[str, Any]:
    """A task's state: {id, method, name, user, started, ended, running, fault_code,
    fault_string, result}. Times are Unix seconds (ended 0 while running); fault_code
    is 0 on success; result is what the method returned ("" for nothing)."""
    return call.task.public()


# reads (and prunes) the file of every task, up to task_keep_count per user: in the
# caller's share of a worker's threads, not on the event loop that serves everybody
@method("task.list", cap=None, returns="array", waits=True,
        params=(Param("name", VServerName, required=False,
                      doc='vserver (or group) name; "" = your own tasks, every task for '
                          'admins'),))
def list_(call: Call, name: str | None) -> list[dict[str, Any]]:
    """Tasks as task.get shows them, newest first: those of one vserver or group (as far
    as the caller may see them), or the caller's own (every task for an admin)."""
    tasks.store(call.config).prune(call.config.task_keep_seconds, call.config.task_keep_count)
    result = []
    for task in tasks.store(call.config).all():
        if name is not None and task.name != name:
            continue
        if name is None and not call.user.admin and task.user != call.user.username:
            continue
        if tasks.visible(call.db, call.user, task):
            result.append(task.public())
    return result


@method("task.log", cap=None, owner=Owner.TASK, returns="struct",
        params=(TASK_ID, Param("offset", Int(0, 2**31 - 1), required=False, default=0,
                               doc="byte offset to read from: 0, then the offset the last "
                                   "answer gave")))
def log(call: Call, id: str, offset: int) -> dict[str, Any]:
    """What the task printed from `offset` on: {data, offset, eof} - the text (at most
    256 KiB), the offset to ask next, and true once the task has ended and all of its
    log was returned. vx.exec's log is the command's output as it comes."""
    return tasks.store(call.config).read_log(call.task, offset)


@method("task.stop", cap=None, owner=Owner.TASK, txn=Txn.SELF, params=(TASK_ID,))
def stop(call: Call, id: str) -> None:
    """Stop a running task (vx.exec: kill the command's session); it then ends with
    fault 500 "stopped by task.stop". Stopping an ended task does nothing."""
    tasks.store(call.config).stop(call.task)
