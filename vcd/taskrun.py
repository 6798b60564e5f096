"""The runner of one task: `python -m vcd.taskrun TASKDIR ID` (started by vcd.tasks).

It records its pid, runs the method through the dispatcher's request path (validation,
owner check, lock, transaction) as the user who started it, with the task's log as
the method's output, and records the result or the fault. SIGTERM (task.stop) stops
the work: vx.exec's command session is killed, other methods are interrupted where
they are (vx.create leaves its partial marker, which the next create clears).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from vcd import auth, config as config_mod, log as vcd_log
from vcd.dispatch import Dispatcher, fault_of
from vcd.errors import Fault, VcdError
from vcd.registry import REGISTRY, load_all
from vcd.tasks import Task, TaskStopped, TaskStore, process_start, stored_result


def _stopped(signum: int, frame: Any) -> NoReturn:
    raise TaskStopped()


def run(tasks: TaskStore, task: Task) -> None:
    spec = json.loads(tasks.path(task.id, "spec").read_bytes())
    config = config_mod.parse(spec["config"],
                              source=Path(spec["source"]) if spec["source"] else None)
    if config.logfile is not None:
        vcd_log.setup(config.logfile, config.loglevel)
    logfd = os.open(tasks.path(task.id, "log"), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)

    def output(chunk: bytes) -> None:
        os.write(logfd, chunk)

    dispatcher = None
    try:
        # a stop asked for before we recorded our pid left its marker
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
        if tasks.path(task.id, "stop").exists():
            raise TaskStopped()
        load_all()
        method = REGISTRY[task.method]
        dispatcher = Dispatcher(config)
        found = auth.load_user(dispatcher.db, task.user)
        if found is None:
            raise VcdError(Fault.MENOUSER, task.user)
        result = dispatcher.invoke(method, found[0], spec["values"], spec["peer"],
                                   output=output)
        task.result = stored_result(result)
    except TaskStopped:
        task.fault_code = int(Fault.MESYS)
        task.fault_string = "stopped by task.stop"
    except Exception as exc:
        if tasks.path(task.id, "stop").exists():
            # the stop killed the work before our SIGTERM handler ran (vx.exec's command
            # died first and answered 1137): it is still a stop, as task.stop documents
            task.fault_code = int(Fault.MESYS)
            task.fault_string = "stopped by task.stop"
        else:
            fault = fault_of(exc)
            if not isinstance(exc, VcdError):
                logging.getLogger("vcd.task").exception("task %s (%s) failed", task.id,
                                                        task.method)
            task.fault_code, task.fault_string = fault.code, str(fault)
    finally:
        os.close(logfd)
        if dispatcher is not None:
            dispatcher.close()
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])  # too late: record the end
    # the params (stdin may be secret) go before the task reads as ended
    tasks.path(task.id, "spec").unlink(missing_ok=True)
    task.running = False
    task.ended = int(time.time())
    tasks.save(task)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _stopped)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])  # until run() can handle it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    tasks = TaskStore(Path(argv[0]))
    task = tasks.read(argv[1])
    if task is None or not task.running or task.pid:
        return 1
    task.pid, task.pid_start = os.getpid(), process_start(os.getpid())
    tasks.save(task)
    run(tasks, task)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
