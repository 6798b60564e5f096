"""Tasks: long work run outside the workers, with an id, an owner, a state and a log.

Proxmox VE's UPID tasks are the model: a method called with `background: true`
answers a task id at once, and a detached runner process (`vcd.taskrun`, double
fork + setsid, no inherited descriptors) runs the method through the same request
path. The workers are recycled and the daemon may restart meanwhile; the runner
belongs to neither, and keeps its state and log under `<datadir>/tasks/`:

    <id>.json   the state (Task, below), replaced atomically; 0600
    <id>.log    what the work printed so far (vx.exec: the command's output); 0600
    <id>.spec   what the runner needs to start (config, params); removed when it ends
    <id>.stop   task.stop asked for it (also before the runner had started)

The directory is 0700: params (a command's stdin) and output are the caller's.
Ended tasks are pruned by age (task_keep_seconds) and count (task_keep_count, per user); one
user may have task_max_running tasks running at once (each is a process).
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import secrets
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vcd.errors import Fault, VcdError
from vcd.registry import REGISTRY, Owner, check_owner

if TYPE_CHECKING:
    from vcd.auth import User
    from vcd.config import Config
    from vcd.vxdb import Connection

ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{16}\Z")
LOG_CHUNK = 256 * 1024      # bytes task.log returns at most per call
UNSTARTED_GRACE = 60        # seconds a task may wait for its runner to record its pid


class TaskStopped(BaseException):
    """Raised in a runner by SIGTERM (task.stop); BaseException so no method's
    `except Exception` swallows it."""


@dataclass
class Task:
    """One task's state, as task.get answers it (plus the runner's identity)."""
    id: str
    method: str
    name: str
    user: str
    started: int                 # Unix seconds
    ended: int = 0               # Unix seconds, 0 while running
    running: bool = True
    fault_code: int = 0          # 0 on success
    fault_string: str = ""
    result: Any = ""             # as the method returns it ("" for none); bytes as {"base64"}
    pid: int = 0                 # the runner; 0 until it has started
    pid_start: int = 0           # its start time in clock ticks: a recycled pid is not it
    detached: bool = False       # its vserver was removed: a later one of the name is not it

    def public(self) -> dict[str, Any]:
        """The task.get answer: {id, method, name, user, started, ended, running,
        fault_code, fault_string, result}."""
        result = self.result
        if isinstance(result, dict) and set(result) == {"base64"}:
            result = base64.b64decode(result["base64"])
        return {"id": self.id, "method": self.method, "name": self.name, "user": self.user,
                "started": self.started, "ended": self.ended, "running": self.running,
                "fault_code": self.fault_code, "fault_string": self.fault_string,
                "result": result}


def stored_result(value: Any) -> Any:
    """A method's result as JSON keeps it: None as "", bytes as {"base64": ...}."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    return value


def process_start(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(stat[stat.rindex(b")") + 2:].split()[19])


class TaskStore:
    def __init__(self, taskdir: Path):
        self.dir = Path(taskdir)

    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)

    def path(self, task_id: str, suffix: str) -> Path:
        if not ID_RE.fullmatch(task_id):
            raise ValueError(f"not a task id: {task_id!r}")
        return self.dir / f"{task_id}.{suffix}"

    # -- state ---------------------------------------------------------------------------

    def write(self, task_id: str, suffix: str, data: bytes) -> None:
        """Atomically (a reader sees the old or the new file, never half of one)."""
        path = self.path(task_id, suffix)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def save(self, task: Task) -> None:
        self.write(task.id, "json", json.dumps(asdict(task)).encode())

    def read(self, task_id: str) -> Task | None:
        try:
            data = json.loads(self.path(task_id, "json").read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        known = {f.name for f in fields(Task)}
        return Task(**{k: v for k, v in data.items() if k in known})

    def load(self, task_id: str) -> Task | None:
        """The task, with a runner that vanished without a result recorded as failed."""
        task = self.read(task_id)
        if task is None or not task.running or self.runner_alive(task):
            return task
        # the runner saves its end before it exits: read again now that it is gone
        task = self.read(task_id)
        if task is not None and task.running:
            task.running = False
            task.ended = int(time.time())
            task.fault_code = int(Fault.MESYS)
            task.fault_string = "the task's runner ended without a result (killed?)"
            self.save(task)
        return task

    @staticmethod
    def runner_alive(task: Task) -> bool:
        if task.pid == 0:
            return time.time() - task.started < UNSTARTED_GRACE
        return process_start(task.pid) == task.pid_start

    def all(self) -> list[Task]:
        """Every task, newest first."""
        tasks = []
        for entry in os.scandir(self.dir) if self.dir.is_dir() else ():
            if entry.name.endswith(".json") and ID_RE.fullmatch(entry.name[:-5]):
                task = self.load(entry.name[:-5])
                if task is not None:
                    tasks.append(task)
        return sorted(tasks, key=lambda t: (t.started, t.id), reverse=True)

    def remove(self, task_id: str) -> None:
        for suffix in ("json", "log", "spec", "stop"):
            try:
                self.path(task_id, suffix).unlink()
            except FileNotFoundError:
                pass

    def prune(self, keep_seconds: int, keep_count: int,
              everything: list[Task] | None = None) -> None:
        """Remove ended tasks older than keep_seconds, and all but the newest keep_count
        ended ones of each user (of `everything`, when the caller has just read them):
        one user's many tasks never push out another's results and logs."""
        ended = sorted((t for t in (self.all() if everything is None else everything)
                        if not t.running),
                       key=lambda t: (t.ended, t.id), reverse=True)
        cutoff = time.time() - keep_seconds
        kept: Counter[str] = Counter()
        for task in ended:
            kept[task.user] += 1
            if kept[task.user] > keep_count or task.ended < cutoff:
                self.remove(task.id)

    # -- log -----------------------------------------------------------------------------

    def read_log(self, task: Task, offset: int) -> dict[str, Any]:
        """{data, offset, eof}: the text from byte `offset` on (at most LOG_CHUNK bytes,
        never ending inside a UTF-8 sequence), the offset to ask next, and whether the
        task has ended and nothing more will come."""
        running = task.running   # read before the log: an ended task wrote all of it
        try:
            with open(self.path(task.id, "log"), "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(min(offset, size))
                data = fh.read(LOG_CHUNK)
        except FileNotFoundError:
            size, data = 0, b""
        start = min(offset, size)
        complete = start + len(data) >= size
        if not (complete and not running):
            data = data[:_utf8_complete(data)]
        next_offset = start + len(data)
        return {"data": data.decode("utf-8", "replace"), "offset": next_offset,
                "eof": not running and next_offset >= size}

    # -- running -------------------------------------------------------------------------

    def create(self, config: "Config", method: str, name: str, user: str,
               values: dict[str, Any], peer: str) -> Task:
        """A new task of `user`; MEBUSY when it has task_max_running running already."""
        self.ensure()
        # counted and created under one lock: concurrent calls (threads, workers) of a
        # user cannot each see room for one more
        lock = os.open(self.dir / ".create.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            everything = self.all()
            self.prune(config.task_keep_seconds, config.task_keep_count, everything)
            running = sum(1 for t in everything if t.running and t.user == user)
            if running >= config.task_max_running:
                raise VcdError(Fault.MEBUSY, f"{user} has {running} tasks running, at most "
                                             f"task_max_running = {config.task_max_running}; "
                                             "wait for one to end or stop one (task.stop)")
            return self._create(config, method, name, user, values, peer)
        finally:
            os.close(lock)

    def _create(self, config: "Config", method: str, name: str, user: str,
                values: dict[str, Any], peer: str) -> Task:
        now = time.time()
        task = Task(id=f"{int(now):08x}-{secrets.token_hex(8)}", method=method, name=name,
                    user=user, started=int(now))
        spec = {"config": config.data(), "source": str(config.source or ""),
                "values": values, "peer": peer}
        self.write(task.id, "spec", json.dumps(spec).encode())
        fd = os.open(self.path(task.id, "log"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.close(fd)
        self.save(task)
        return task

    def follow_vserver(self, name: str, newname: str | None) -> None:
        """The tasks started for vserver `name` follow it to `newname`; None (removed):
        they stay for admins only, never for the owners of a later vserver of the name."""
        for task in self.all():
            if task.name != name or task.detached:
                continue
            if newname is None:
                task.detached = True
            else:
                task.name = newname
            self.save(task)

    def stop(self, task: Task) -> None:
        """Stop the work: a marker the runner checks when it starts, and SIGTERM to a
        runner that has started; it then stops (vx.exec: kills the command's session)
        and records the task as stopped."""
        if not task.running:
            return
        self.write(task.id, "stop", b"")
        task = self.read(task.id) or task
        if task.running and task.pid and self.runner_alive(task):
            try:
                os.kill(task.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _utf8_complete(data: bytes) -> int:
    """Length of data without a UTF-8 sequence cut off at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


def store(config: "Config") -> TaskStore:
    return TaskStore(config.taskdir)


def start(config: "Config", method: str, name: str, user: str, values: dict[str, Any],
          peer: str) -> str:
    """Record a task and start its detached runner; returns the task id at once."""
    tasks = store(config)
    task = tasks.create(config, method, name, user, values, peer)
    spawn_runner(tasks.dir, task.id)
    return task.id


def spawn_runner(taskdir: Path, task_id: str) -> None:
    """`python -m vcd.taskrun DIR ID` as a grandchild in its own session: it outlives
    this worker and the daemon, and starts with nothing of theirs (no listening
    socket, no client connection, no VXDB handle) but its arguments."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    env["PYTHONPATH"] = root
    argv = [sys.executable, "-m", "vcd.taskrun", str(taskdir), task_id]
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.chdir("/")
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))
            # an ignored signal stays ignored across exec: SIGCHLD ignored would reap
            # the command before the runner can read its status
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                        signal.SIGPIPE, signal.SIGUSR1, signal.SIGUSR2):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)


# -- who may see a task --------------------------------------------------------------------

def check(db: "Connection", user: "User", task: Task) -> None:
    """The capability and owner check of the method that started the task, applied to
    the name it was started for (101 without the capability, 202 for a vserver that is
    not the caller's). A method without an owner check (vg.vx.*): the caller's own
    tasks, all for admins."""
    if task.detached and not user.admin:
        raise VcdError(Fault.MEPERM, f"task {task.id} belonged to a removed vserver "
                                     f"{task.name}")
    method = REGISTRY.get(task.method)
    if method is None:
        raise VcdError(Fault.MEPERM, f"task {task.id} ran {task.method}, which this daemon "
                                     "no longer has")
    if method.caps and not any(cap in user.caps for cap in method.caps):
        raise VcdError(Fault.MEPERM, f"task {task.id} ran {method.name}, which needs "
                                     f"capability {method.cap_text}")
    if method.owner is Owner.NONE:
        if not user.admin and task.user != user.username:
            raise VcdError(Fault.MEPERM, f"task {task.id} is another user's")
        return
    check_owner(db, method.owner, user, task.name)


def visible(db: "Connection", user: "User", task: Task) -> bool:
    try:
        check(db, user, task)
    except VcdError:
        return False
    return True


def get_checked(config: "Config", db: "Connection", user: "User", task_id: str) -> Task:
    """The task named by a task.* call, after check(); 200 for an id that names none."""
    task = store(config).load(task_id) if ID_RE.fullmatch(task_id) else None
    if task is None:
        raise VcdError(Fault.MEINVAL, f"no task {task_id!r} (ended tasks are pruned after "
                                      f"task_keep_seconds = {config.task_keep_seconds})")
    check(db, user, task)
    return task
