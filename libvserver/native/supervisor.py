"""The one long-lived process that is the parent of every context's init.

Why it exists: reboot(2) inside a PID namespace ends that namespace's init
with SIGHUP (reboot) or SIGINT (halt/poweroff), and only the parent learns
how a process ended.  So one supervisor, started on demand and detached from
the daemon, forks every init (through spawn.py), is child subreaper for them,
reaps them, records why each ended, removes the context's cgroups and runs
``notify_argv + [action, xid]`` — the helper.restart / helper.shutdown calls
vshelper makes on a Linux-VServer kernel.  It also keeps each context's load
average.  It is single-threaded and never unshares, and everything it knows
can be rebuilt from cgroups and /proc when it is restarted: contexts it did
not fork are watched through a pidfd.  It keeps each context's namespaces and
start spec for everyone who enters it later (handles.py: bind mounts under
<state_dir>/ns in its own, the host's, mount namespace).

Requests arrive as one JSON line per connection on ``<state_dir>/supervisor.sock``.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import logging
import os
import select
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..api import AlreadyRunning, ContextSpec, StartError
from . import handles, limits, namespaces, seccomp, spawn
from .cgroups import Layout

log = logging.getLogger("libvserver.supervisor")

# Kernel load average fixed point (include/linux/sched/loadavg.h).
FSHIFT = 11
FIXED_1 = 1 << FSHIFT
EXP = (1884, 2014, 2037)  # 1/exp(5s/1min), 1/exp(5s/5min), 1/exp(5s/15min)
LOAD_INTERVAL = 5.0
START_TIMEOUT = 60.0


def calc_load(load: int, exp: int, active: int) -> int:
    """One step of the kernel's calc_load() (with its rounding)."""
    newload = load * exp + active * (FIXED_1 - exp)
    if active >= load:
        newload += FIXED_1 - 1
    return newload // FIXED_1


def actions_for(reason: str) -> list[str]:
    return ["restart", "shutdown"] if reason == "reboot" else ["shutdown"]


def reason_from_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        # reboot(2) in a PID namespace: LINUX_REBOOT_CMD_RESTART → SIGHUP, HALT/POWER_OFF → SIGINT
        return {signal.SIGHUP: "reboot", signal.SIGINT: "halt"}.get(sig, f"signal {sig}")
    return f"exit {os.WEXITSTATUS(status)}"


def is_init(pid: int) -> bool:
    """pid is PID 1 of a PID namespace exactly one level below ours: a context's init.
    A guest's own nested PID namespaces are deeper (NSpid has three or more entries), so
    none of its processes can pass for init."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    ns = line.split()[1:]
                    return len(ns) == 2 and ns[1] == "1"
    except OSError:
        pass
    return False


def init_pid_of(pids: list[int]) -> int | None:
    """The process of the list that is a context's init (see is_init)."""
    return next((pid for pid in pids if is_init(pid)), None)


@dataclass
class Ctx:
    xid: int
    pid: int
    child: bool                 # forked by this supervisor (else adopted, watched by pidfd)
    pidfd: int | None = None
    load: list[int] = field(default_factory=lambda: [0, 0, 0])


class Supervisor:
    def __init__(self, state_dir: Path, cgroup_parent: str, notify_argv: list[str] | None,
                 net_tag: str, load_interval: float = LOAD_INTERVAL) -> None:
        self.state_dir = state_dir
        self.load_interval = load_interval
        self.layout = Layout(cgroup_parent)
        self.notify_argv = notify_argv
        self.net_tag = net_tag
        self.ctxs: dict[int, Ctx] = {}
        self.notify_queue: dict[int, list[list[str]]] = {}
        self.notify_running: dict[int, int] = {}  # pid → xid
        self.sel = selectors.DefaultSelector()
        self.stopping = False
        self.next_sample = time.monotonic() + load_interval
        # our own namespaces, to return to after unsharing for a child
        self.own_ns = {n: os.open(f"/proc/self/ns/{n}", os.O_RDONLY | os.O_CLOEXEC)
                       for n in ("pid", "time") if os.path.exists(f"/proc/self/ns/{n}")}
        # init loads the filter right before exec: compile both variants now, once
        try:
            seccomp.prepare_all()
        except Exception:   # starts that need it fail, naming the reason
            log.exception("cannot build the seccomp filter")

    # --- files ----------------------------------------------------------------------------

    def _write_state(self, name: str, data: dict) -> None:
        tmp = self.state_dir / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.rename(tmp, self.state_dir / name)

    # --- start ----------------------------------------------------------------------------

    def start(self, spec: ContextSpec, image: str | None) -> int:
        self.reap()
        xid = spec.xid
        # A killed init leaves its cgroups before it becomes a zombie we can reap: when the
        # groups are empty, wait a moment for the exit to reach us instead of refusing.
        deadline = time.monotonic() + 2.0
        while xid in self.ctxs and not self.layout.pids(xid) and time.monotonic() < deadline:
            time.sleep(0.001)
            self.reap()
        if xid in self.ctxs or self.layout.pids(xid):
            raise AlreadyRunning(f"context {xid} is already running")
        if self.layout.exists(xid) and not self.layout.remove(xid, wait=0.5):
            raise StartError(f"stale cgroups of context {xid} cannot be removed")
        for stale in ("exit", "load"):
            (self.state_dir / f"{xid}.{stale}").unlink(missing_ok=True)
        loopfd = None
        netplan = None
        gpid = None
        self._pipes: list[int] = []
        try:
            new_net = bool(spec.addresses) or "HIDE_NETIF" in spec.flags
            if spec.addresses:
                from . import netns
                netplan = netns.plan(xid, self.net_tag, spec.addresses, spec.broadcast)
            loopdev = None
            if image:
                from . import quota
                loopfd, loopdev = quota.attach(Path(image))
            plan = spawn.Plan(
                spec=spec, netplan=netplan, new_net=new_net,
                new_time="VIRT_UPTIME" in spec.flags and namespaces.has_time_namespace(),
                loopdev=loopdev, rlimits=limits.rlimit_plan(spec), ipc=limits.ipc_sysctls(spec),
                keep_caps=spawn.keep_caps(spec))
            if netplan is not None:
                from . import netns
                netns.create_host_side(netplan)
            gpid = self._fork_init(plan)
            err = self._finish_start(plan, gpid)
            if err:
                raise _error_from(err)
        except BaseException:
            if gpid:
                _kill_wait(gpid)
            self.layout.kill_all(xid)
            self.layout.remove(xid)
            if netplan is not None:
                from . import netns
                netns.delete_host_side(netplan.host_if)
            raise
        finally:
            for fd in self._pipes:
                os.close(fd)
            self._pipes = []
            if loopfd is not None:
                os.close(loopfd)  # the mount holds the device now; autoclear does the rest
        self.ctxs[xid] = Ctx(xid, gpid, child=True)
        self.keep_handles(spec, gpid)
        if "SCHED_PAUSE" in spec.flags:
            self.layout.freeze(xid, True)  # the vserver flag unschedules the whole context
        log.info("context %d started, init pid %d", xid, gpid)
        return gpid

    def _fork_init(self, plan: spawn.Plan) -> int:
        """Fork G into new PID (and time) namespaces; this process stays in its own."""
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self._pipes = [ready_r, go_w, err_r]
        flags = spawn.parent_flags(plan)
        try:
            namespaces.unshare(flags)
            if plan.new_time:
                with open("/proc/self/timens_offsets", "w") as f:
                    f.write(spawn.time_offsets())
            pid = os.fork()
            if pid == 0:
                for fd in self._pipes:
                    os.close(fd)
                spawn.run_init(plan, ready_w, go_r, err_w)
        finally:
            # pid_for_children/time_for_children back to ours (allowed: single-threaded)
            namespaces.setns(self.own_ns["pid"], namespaces.CLONE_NEWPID)
            if plan.new_time:
                namespaces.setns(self.own_ns["time"], namespaces.CLONE_NEWTIME)
            for fd in (ready_w, go_r, err_w):
                os.close(fd)
        return pid

    def _finish_start(self, plan: spawn.Plan, gpid: int) -> str:
        """Cgroups and veth for G while it mounts, then "go"; returns G's error or ''."""
        ready_r, go_w, err_r = self._pipes
        # made while G already works on its namespaces and mounts: off the critical path
        self.layout.create(plan.spec.xid)
        limits.apply_cgroup_limits(self.layout, plan.spec)
        ready = _read_all(ready_r, START_TIMEOUT, limit=1)
        if ready != b"r":
            return _read_all(err_r, START_TIMEOUT).decode(errors="replace").strip() or \
                f"context {plan.spec.xid}: init process died during setup"
        try:
            self.layout.join(plan.spec.xid, gpid)
            if plan.netplan is not None:
                from . import netns
                netns.move_peer(plan.netplan, gpid)
        except OSError:
            # G may have died on its own meanwhile: its own reason is the better message
            _kill_wait(gpid)
            err = _read_all(err_r, 5.0).decode(errors="replace").strip()
            if err:
                return err
            raise
        try:
            os.write(go_w, b"g")
        except BrokenPipeError:
            pass  # G failed already: its error is on err_r
        return _read_all(err_r, START_TIMEOUT).decode(errors="replace").strip()

    def keep_handles(self, spec: ContextSpec, pid: int) -> None:
        """Keep the namespaces made at start and the spec (handles.py) for everyone who
        enters the context later; a context that cannot be kept is not left running."""
        try:
            handles.keep(self.state_dir, spec, pid)
        except OSError as e:
            self.ctxs.pop(spec.xid, None)
            _kill_wait(pid)
            self.layout.kill_all(spec.xid)
            self.layout.remove(spec.xid)
            handles.drop(self.state_dir, spec.xid)
            raise StartError(f"context {spec.xid}: cannot keep its namespaces: {e}") from None

    # --- exits ----------------------------------------------------------------------------

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.notify_running:
                xid = self.notify_running.pop(pid)
                self._next_notify(xid)
                continue
            for ctx in list(self.ctxs.values()):
                if ctx.child and ctx.pid == pid:
                    self.context_ended(ctx, reason_from_status(status), status)
            # anything else: an orphan of a context or of an exec helper, just reaped

    def context_ended(self, ctx: Ctx, reason: str, status: int | None) -> None:
        self.ctxs.pop(ctx.xid, None)
        if ctx.pidfd is not None:
            self.sel.unregister(ctx.pidfd)
            os.close(ctx.pidfd)
        # Processes still in the group (exec helpers outside the PID namespace) go too, so
        # the groups can be removed before the daemon hears "shutdown" and maybe restarts.
        if self.layout.pids(ctx.xid):
            self.layout.kill_all(ctx.xid)
        self.layout.remove(ctx.xid)
        try:
            handles.drop(self.state_dir, ctx.xid)
        except OSError as e:
            log.warning("context %d: cannot remove its namespace handles: %s", ctx.xid, e)
        if self.net_tag is not None:
            from . import netns
            ifname = netns.host_ifname(ctx.xid, self.net_tag)
            if os.path.exists(f"/sys/class/net/{ifname}"):
                netns.delete_host_side(ifname)
        self._write_state(f"{ctx.xid}.exit", {"reason": reason, "status": status,
                                              "time": time.time()})
        (self.state_dir / f"{ctx.xid}.load").unlink(missing_ok=True)
        log.info("context %d ended: %s", ctx.xid, reason)
        if self.notify_argv:
            self.notify_queue.setdefault(ctx.xid, []).extend(
                self.notify_argv + [a, str(ctx.xid)] for a in actions_for(reason))
            if ctx.xid not in self.notify_running.values():
                self._next_notify(ctx.xid)

    def _next_notify(self, xid: int) -> None:
        queue = self.notify_queue.get(xid)
        if not queue:
            self.notify_queue.pop(xid, None)
            return
        argv = queue.pop(0)
        try:
            # posix_spawn, not Popen: reap() owns every child status of this process.
            pid = os.posix_spawnp(argv[0], argv, dict(os.environ), setsid=True, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, 1, 2)])
        except OSError as e:
            log.error("notify %s failed: %s", argv, e)
            self._next_notify(xid)
            return
        self.notify_running[pid] = xid

    def adopt(self) -> None:
        """Watch contexts that are running but were started by an earlier supervisor."""
        for xid in self.layout.xids():
            pids = self.layout.pids(xid)
            if not pids:
                self.layout.remove(xid, wait=0)
                continue
            kept = handles.load(self.state_dir, xid)
            pid = kept.init_pid if kept is not None and kept.init_pid in pids and \
                is_init(kept.init_pid) else init_pid_of(pids)
            if pid is None:
                continue
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue
            ctx = Ctx(xid, pid, child=False, pidfd=pidfd)
            self.ctxs[xid] = ctx
            self.sel.register(pidfd, selectors.EVENT_READ, ("pidfd", ctx))
            log.info("adopted running context %d (init %d)", xid, pid)

    # --- load average ---------------------------------------------------------------------

    def sample_loads(self) -> None:
        now = time.time()
        for ctx in self.ctxs.values():
            active = 0
            for tid in self.layout.tids(ctx.xid):
                try:
                    with open(f"/proc/{tid}/stat", "rb") as f:
                        st = f.read()
                except OSError:
                    continue
                state = st[st.rfind(b")") + 2:st.rfind(b")") + 3]
                if state in (b"R", b"D"):
                    active += 1
            ctx.load = [calc_load(ld, e, active * FIXED_1) for ld, e in zip(ctx.load, EXP)]
            self._write_state(f"{ctx.xid}.load", {"load": [x / FIXED_1 for x in ctx.load],
                                                  "time": now})

    # --- requests -------------------------------------------------------------------------

    def handle(self, req: dict) -> dict:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "contexts": sorted(self.ctxs)}
        if op == "start":
            spec = ContextSpec.from_dict(req["spec"])
            t = time.perf_counter()
            pid = self.start(spec, req.get("image"))
            return {"ok": True, "pid": pid, "seconds": time.perf_counter() - t}
        if op == "reap":
            self.reap()
            return {"ok": True, "contexts": sorted(self.ctxs)}
        if op == "quit":
            self.stopping = True
            return {"ok": True}
        return {"ok": False, "kind": "LibvserverError", "error": f"unknown request {op!r}"}

    def serve_client(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            buf = b""
            while not buf.endswith(b"\n") and len(buf) < 1 << 20:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                buf += chunk
            if not buf.strip():
                return  # a liveness probe: connect and close
            try:
                resp = self.handle(json.loads(buf))
            except Exception as e:  # every failure goes back to the caller, typed
                resp = {"ok": False, "kind": type(e).__name__, "error": str(e)}
                if not isinstance(e, (StartError, AlreadyRunning)):
                    log.exception("request failed")
            conn.sendall(json.dumps(resp).encode() + b"\n")
        except OSError as e:
            log.warning("client connection: %s", e)
        finally:
            conn.close()

    def run(self, listener: socket.socket) -> None:
        sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(sig_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.sel.register(listener, selectors.EVENT_READ, ("listen", None))
        self.sel.register(sig_r, selectors.EVENT_READ, ("signal", None))
        self.adopt()
        self.reap()
        while not self.stopping:
            timeout = max(0.0, self.next_sample - time.monotonic())
            for key, _ in self.sel.select(timeout):
                kind, obj = key.data
                if kind == "listen":
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(True)
                    self.serve_client(conn)
                elif kind == "signal":
                    try:
                        while os.read(sig_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                elif kind == "pidfd":
                    self.context_ended(obj, "unknown (ended while another supervisor ran)", None)
            self.reap()
            if time.monotonic() >= self.next_sample:
                self.next_sample += self.load_interval
                if self.next_sample < time.monotonic():
                    self.next_sample = time.monotonic() + self.load_interval
                self.sample_loads()


def _read_all(fd: int, timeout: float, limit: int | None = None) -> bytes:
    deadline = time.monotonic() + timeout
    out = b""
    while limit is None or len(out) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StartError("timed out waiting for the context's setup")
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 65536 if limit is None else limit - len(out))
        if not chunk:
            return out
        out += chunk
    return out


def _kill_wait(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _error_from(line: str) -> StartError:
    from .. import api
    kind, _, msg = line.partition(": ")
    cls = getattr(api, kind, None)
    if isinstance(cls, type) and issubclass(cls, StartError):
        return cls(msg)
    return StartError(line)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="libvserver-supervisor")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--cgroup-parent", required=True)
    ap.add_argument("--notify", default="null", help="JSON list: argv prefix of the callback")
    ap.add_argument("--net-tag", default="")
    ap.add_argument("--load-interval", type=float, default=LOAD_INTERVAL)
    ap.add_argument("--foreground", action="store_true")
    args = ap.parse_args(argv)
    state = Path(args.state_dir)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    lockfd = os.open(state / "supervisor.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            sys.exit(0)  # another supervisor owns this state dir: the client just connects
        raise
    if not args.foreground:
        # Detach: new session, parent returns to the spawner once the socket is ready.
        ready_r, ready_w = os.pipe()
        if os.fork() > 0:
            os.close(ready_w)
            os.read(ready_r, 1)
            os._exit(0)
        os.close(ready_r)
        os.setsid()
    else:
        ready_w = None
    logging.basicConfig(filename=str(state / "supervisor.log"), level=logging.INFO,
                        format="%(asctime)s %(process)d %(levelname)s %(message)s")
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    if not args.foreground:
        os.dup2(null, 1)
        logfd = os.open(state / "supervisor.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(logfd, 2)
        os.close(logfd)
    os.close(null)
    os.chdir("/")
    namespaces.set_subreaper()
    os.ftruncate(lockfd, 0)
    os.write(lockfd, f"{os.getpid()}\n".encode())
    sock_path = state / "supervisor.sock"
    sock_path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o077)
    listener.bind(str(sock_path))
    os.umask(old)
    listener.listen(64)
    listener.setblocking(False)
    sup = Supervisor(state, args.cgroup_parent, json.loads(args.notify), args.net_tag,
                     args.load_interval)
    if ready_w is not None:
        os.write(ready_w, b"1")
        os.close(ready_w)
    log.info("supervisor %d serving %s", os.getpid(), sock_path)
    try:
        sup.run(listener)
    finally:
        sock_path.unlink(missing_ok=True)
        log.info("supervisor %d exits; %d contexts keep running", os.getpid(), len(sup.ctxs))


if __name__ == "__main__":
    main()
