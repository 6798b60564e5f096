"""The one long-lived process that is the parent of every context's init.

Why it exists: reboot(2) inside a PID namespace ends that namespace's init
with SIGHUP (reboot) or SIGINT (halt/poweroff), and only the parent learns
how a process ended.  So one supervisor, started on demand and detached from
the daemon, forks every init (through spawn.py; an unprivileged one is cloned as its
child by a small init forker, vsinit.c or initforker.py), is child subreaper for them,
reaps them, records why each ended, removes the context's cgroups and runs
``notify_argv + [action, xid]`` — the helper.restart / helper.shutdown calls
vshelper makes on a Linux-VServer kernel.  It also keeps each context's load
average.  It is single-threaded and never unshares.

Surviving its own restart.  Only a process's parent learns how it ended (a pidfd
says *that* it ended, not how), and a parent cannot be replaced: a new process
can never adopt the inits of one that was killed.  So the supervisor is two
processes.  The *keeper* (`Keeper`, the process `main` starts, holding
``supervisor.lock`` and the listening socket) does nothing but fork the
*worker* (`Supervisor`, the one that serves requests and forks the inits) and
wait: when the worker dies (killed, crashed, SIGTERM) its inits are reparented
to the keeper, a child subreaper and their nearest living ancestor; the keeper
reaps each, writes its wait status to ``reaped/<pid>.json`` and forks a new
worker at once (the socket stays bound, so no request is refused meanwhile).
The new worker adopts the running contexts (cgroups and ``<xid>.init``), watches
their inits by pidfd and, when one ends, takes the real wait status from the
keeper's record: a reboot from inside is a reboot, however often the worker was
replaced.  What else it knows lives in files too: the load averages
(``<xid>.load``) and callbacks not yet run (``<xid>.notify``).  Only when keeper
and worker are killed at once is an end seen without its status ("unknown": then
only shutdown is reported); a worker that outlives its keeper becomes the keeper
(`become_keeper`) and forks a new worker.  ``quit`` (and SIGTERM to the keeper) stops both;
contexts keep running either way.

Callbacks run with their output in ``<xid>.callback``; one that fails is logged
with that output in ``supervisor.log`` and appended as a JSON line to
``callbacks.failed``, which vcd follows into its own log (past
CALLBACKS_FAILED_CAP the file moves to ``callbacks.failed.1``).

It keeps each context's namespaces and start spec for everyone who enters it
later (handles.py: bind mounts under <state_dir>/ns in its own, the host's, mount
namespace).

Requests arrive as one JSON line per connection on ``<state_dir>/supervisor.sock``.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import gc
import json
import logging
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..api import AlreadyRunning, ContextSpec, StartError
# netns: imported here once, not by every init that brings its loopback up
from . import console, entercore, handles, idmap, limits, namespaces, netns, seccomp, spawn, stat, \
    statedir
from ..logline import OneLineFormatter
from .cappedlog import CappedFileHandler
from .initforker import ForkerError, InitForker, NativeForker
from .initforker import serves as forker_serves
from .cgroups import Layout
from .phases import Phases

log = logging.getLogger("libvserver.supervisor")

# Kernel load average fixed point (include/linux/sched/loadavg.h).
FSHIFT = 11
FIXED_1 = 1 << FSHIFT
EXP = (1884, 2014, 2037)  # 1/exp(5s/1min), 1/exp(5s/5min), 1/exp(5s/15min)
LOAD_INTERVAL = 5.0
START_TIMEOUT = 60.0
BASE_NS_AGE = 10.0     # seconds a mount namespace to fork inits in is used (_base_ns)
FORKER_RETRY = 10.0    # seconds between attempts to start an init forker that failed
# "0": fork every init here (to compare, bench/start_phases.py; VCD_NATIVE=0: no C forker)
FORKER_ENV = "VCD_INIT_FORKER"
EXIT_QUIT = 0          # the worker was asked to quit: the keeper stops too
EXIT_RESTART = 75      # SIGTERM: the keeper starts a new worker
CALLBACK_OUTPUT_MAX = 4096
REAPED_WAIT = 10.0     # how long a worker waits for the keeper's record of an init's end
CALLBACKS_FAILED = "callbacks.failed"
# bytes of callbacks.failed before it moves to callbacks.failed.1, as supervisor.log's
# cap (cappedlog.py): a guest that fails its reboots adds up to 4 KiB for each
CALLBACKS_FAILED_CAP = 1 << 20
NOTIFY_BATCH = 16       # sd_notify datagrams read per wake-up of the selector


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


def start_time_of(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (clock ticks after boot): with the pid, it names one
    process for good, since pids are reused."""
    fields = stat.stat_fields(pid)
    return int(fields[19]) if fields else None


def parent_of(pid: int) -> int | None:
    fields = stat.stat_fields(pid)
    return int(fields[1]) if fields else None


def is_init(pid: int) -> bool:
    """pid is PID 1 of a PID namespace exactly one level below ours: a context's init.
    A guest's own nested PID namespaces are deeper (NSpid has three or more entries), so
    none of its processes can pass for init."""
    ns = stat.nspids(pid)
    return len(ns) == 2 and ns[1] == 1


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
    start_time: int | None = None
    keeper_reaps: bool = False  # adopted, and its parent is our keeper: it records the status
    console_fd: int | None = None           # the pty master; None for an adopted context
    console_log: console.ConsoleLog | None = None
    # our own hold of the slave: a guest's init (systemd) closes and reopens /dev/console,
    # and a master whose slave nobody holds a moment reads EIO and would be lost for good
    console_slave: int | None = None
    notify_sock: socket.socket | None = None  # NOTIFY_SOCKET of a ``ready = "notify"`` init


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
        self.notify_running: dict[int, tuple[int, list[str]]] = {}  # pid → (xid, argv)
        self.sel = selectors.DefaultSelector()
        self.stopping = False       # asked to quit: the keeper stops too
        self.terminated = False     # SIGTERM: the keeper starts a new worker
        self.orphaned = False       # the keeper died: become one
        self.keeper = 0
        self.next_sample = time.monotonic() + load_interval
        self.ph = Phases()          # the timings of the last start (when asked for)
        self.after_answer: list[Callable[[], None]] = []   # run once a request is answered
        self.unrecorded = 0         # records _keep_state could not write since the last one
        # our own namespaces, to return to after unsharing for a child
        self.own_ns = {n: os.open(f"/proc/self/ns/{n}", os.O_RDONLY | os.O_CLOEXEC)
                       for n in ("pid", "mnt") if os.path.exists(f"/proc/self/ns/{n}")}
        self.base_ns: int | None = None     # where inits are forked (handles.without_handles)
        self.base_made = 0.0
        # clone unprivileged inits out of small processes (initforker.py): the C one
        # (vsinit.c) for the common plans, started now; the Python one for the rest,
        # started when first needed (it costs ~16 MiB), or now when it is the only one
        self.forkers: list[InitForker] = []
        if os.environ.get(FORKER_ENV, "1") != "0":
            if NativeForker.available():
                self.forkers.append(NativeForker())
            self.forkers.append(InitForker())
            self._spawn_forker(self.forkers[0])
        # init loads the filter right before exec: compile both variants now, once
        try:
            seccomp.prepare_all()
        except Exception:   # starts that need it fail, naming the reason
            log.exception("cannot build the seccomp filter")

    # --- files ----------------------------------------------------------------------------

    def _write_state(self, name: str, data: dict) -> None:
        _write_json(self.state_dir, name, data)

    def _keep_state(self, name: str, data: dict) -> bool:
        """_write_state for a record this worker can go on without (a load sample, why
        a context ended, ...); False when it could not be written. The state directory
        is a tmpfs of bounded size (statedir.py): a full one must not end the worker,
        whose successor would fail again on its first record (adopt) and serve nobody,
        reap nothing and run no callback while the tmpfs stays full."""
        try:
            self._write_state(name, data)
        except OSError as e:
            if not self.unrecorded:
                log.error("cannot record %s in %s: %s; carrying on without it (and without "
                          "a message for each further one until a record is written again)",
                          name, self.state_dir, e)
            self.unrecorded += 1
            return False
        if self.unrecorded:
            log.warning("records written again; %d could not be", self.unrecorded)
            self.unrecorded = 0
        return True

    # --- start ----------------------------------------------------------------------------

    def start(self, spec: ContextSpec, image: str | None, ids: idmap.IdRange | None = None,
              overlay: dict | None = None, phases: bool = False) -> int:
        """Start context spec.xid; ``ids`` is its host id range (None: privileged, no user
        namespace), ``overlay`` the {lower, upper, work} of a shared template; ``phases``:
        record the timings of this start (and init's) in self.ph (phases.py)."""
        ph = self.ph = Phases(phases)
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
        for stale in ("exit", "load", "ready"):
            (self.state_dir / f"{xid}.{stale}").unlink(missing_ok=True)
        ph.mark("supervisor: reap, checks")
        loopfd = None
        netplan = None
        gpid = None
        self._pipes: list[int] = []
        self._sock: socket.socket | None = None
        self._kept = False      # namespace handles kept during the start
        self._record = b""      # their handles.record(), published once init was exec'd
        self._log: console.ConsoleLog | None = None   # made while init execs
        self._start_time: int | None = None
        self._back: list[Path] = []   # our own v1 groups while we are in a context's
        self._forked_by_forker = False  # G cloned (and its ids mapped) by the init forker
        # the guest's root owns its console, so it can reopen /dev/console
        master, slave = console.open_pty(*((ids.host, ids.host) if ids is not None else (None, None)))
        notify_sock = None
        ph.mark("supervisor: console pty")
        try:
            if spec.ready == "notify":
                notify_sock = self._notify_socket(xid, ids)
            new_net = bool(spec.addresses) or "HIDE_NETIF" in spec.flags
            if spec.addresses:
                netplan = netns.plan(xid, self.net_tag, spec.addresses, spec.broadcast)
            loopdev = None
            if image:
                from . import quota
                loopfd, loopdev = quota.attach(Path(image))
            plan = spawn.Plan(
                spec=spec, netplan=netplan, new_net=new_net,
                new_time="VIRT_UPTIME" in spec.flags and namespaces.has_time_namespace(),
                loopdev=loopdev, rlimits=limits.rlimit_plan(spec), ipc=limits.ipc_sysctls(spec),
                keep_caps=spawn.keep_caps(spec), ids=ids, overlay=overlay, console_fd=slave,
                notify_path=str(self._notify_path(xid)) if notify_sock is not None else None,
                phases=phases)
            ph.mark("supervisor: plan")
            if netplan is not None:
                # a leftover of a context that died with its supervisor; and G is forked
                # with the netlink code imported: with the guest's ids it cannot read
                # the host's Python files
                netns.delete_host_side(netplan.host_if)
                ph.mark("supervisor: leftover veth pair")
            self.layout.create(xid, cpuset=spec.cpuset is not None)
            ph.mark("supervisor: cgroup mkdir (every hierarchy)")
            gpid = self._fork_init(plan)
            ph.mark("supervisor: clone (user, pid namespaces)" +
                    (" into the cgroups" if plan.in_cgroups else ""))
            err = self._finish_start(plan, gpid)
            if err:
                raise _error_from(err)
            if self._kept:
                # init was exec'd: only now may anyone enter (handles.keep, publish)
                try:
                    handles.publish(self.state_dir, xid, self._record)
                except OSError as e:
                    raise StartError(f"context {xid}: cannot keep its namespaces: {e}") from None
                ph.mark("supervisor: publish the handles")
        except BaseException:
            self._leave_context_groups()  # before kill_all, which reads the groups' members
            os.close(master)
            os.close(slave)
            if notify_sock is not None:
                notify_sock.close()
                self._notify_path(xid).unlink(missing_ok=True)
            (self.state_dir / f"{xid}.init").unlink(missing_ok=True)
            if self._log is not None:
                self._log.close()
            if gpid:
                _kill_wait(gpid)
            self.layout.kill_all(xid)
            self.layout.remove(xid)
            try:
                handles.drop(self.state_dir, xid)
            except OSError:
                pass
            if netplan is not None:
                netns.delete_host_side(netplan.host_if)
            raise
        finally:
            self._leave_context_groups()
            self._drop_channels()
            if loopfd is not None:
                os.close(loopfd)  # the mount holds the device now; autoclear does the rest
        ctx = self.ctxs[xid] = Ctx(xid, gpid, child=True, console_slave=slave,
                                   start_time=self._start_time)
        if not self._kept:
            self.keep_handles(spec, gpid)
            ph.mark("supervisor: keep namespace handles")
        self._attach_console(ctx, master, self._log)
        if notify_sock is not None:
            ctx.notify_sock = notify_sock
            self.sel.register(notify_sock, selectors.EVENT_READ, ("notify", ctx))
        if "SCHED_PAUSE" in spec.flags:
            self.layout.freeze(xid, True)  # the vserver flag unschedules the whole context
        ph.mark("supervisor: console log")
        # logged once the caller has its answer (serve_client): the start's last step
        self.after_answer.append(lambda: log.info("context %d started, init pid %d", xid, gpid))
        return gpid

    def _attach_console(self, ctx: Ctx, master: int, log_: console.ConsoleLog) -> None:
        os.set_blocking(master, False)
        ctx.console_fd = master
        ctx.console_log = log_
        self.sel.register(master, selectors.EVENT_READ, ("console", ctx))

    # --- readiness (sd_notify) -------------------------------------------------------------

    def _notify_path(self, xid: int) -> Path:
        return self.state_dir / "sd-notify" / str(xid)

    def _notify_socket(self, xid: int, ids: idmap.IdRange | None) -> socket.socket:
        """The datagram socket init sends READY=1 to (systemd's sd_notify protocol), bound
        at sd-notify/<xid> in the state dir and writable for the guest's (mapped) root
        only; G binds it onto /run/host/notify as systemd-nspawn does."""
        d = self.state_dir / "sd-notify"
        d.mkdir(mode=0o700, exist_ok=True)
        path = self._notify_path(xid)
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC |
                             socket.SOCK_NONBLOCK)
        dfd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # by the directory's fd: a long state dir would overflow sun_path (108 bytes)
            sock.bind(f"/proc/self/fd/{dfd}/{xid}")
            os.chmod(f"/proc/self/fd/{dfd}/{xid}", 0o600)
            if ids is not None:
                os.chown(f"/proc/self/fd/{dfd}/{xid}", ids.host, ids.host)
        except BaseException:
            sock.close()
            raise
        finally:
            os.close(dfd)
        return sock

    def _read_notify(self, ctx: Ctx) -> None:
        """Datagrams of newline-separated KEY=VALUE; READY=1 writes <xid>.ready, which the
        daemon's start waits for (never this process: it serves everybody). Readiness is
        all vcd asks for: after READY=1 the socket is closed (sd_notify ignores that), and
        a guest that floods it gets NOTIFY_BATCH datagrams read per turn of the loop."""
        for _ in range(NOTIFY_BATCH):
            if ctx.notify_sock is None:
                return
            try:
                data = ctx.notify_sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("notify socket of context %d: %s", ctx.xid, e)
                return
            fields = data.split(b"\n")
            if b"READY=1" in fields:
                status = next((f[7:].decode(errors="replace") for f in fields
                               if f.startswith(b"STATUS=")), "")
                self._keep_state(f"{ctx.xid}.ready", {"time": time.time(), "status": status})
                log.info("context %d is ready (READY=1)", ctx.xid)
                self._close_notify(ctx)

    def _close_notify(self, ctx: Ctx) -> None:
        if ctx.notify_sock is not None:
            self.sel.unregister(ctx.notify_sock)
            ctx.notify_sock.close()
            ctx.notify_sock = None
        self._notify_path(ctx.xid).unlink(missing_ok=True)

    def _detach_console(self, ctx: Ctx) -> None:
        if ctx.console_slave is not None:
            os.close(ctx.console_slave)
            ctx.console_slave = None
        if ctx.console_fd is None:
            return
        # what init wrote last (e.g. why it died) belongs in the log too
        while console.pump(ctx.console_fd, ctx.console_log):
            try:
                if not entercore.readable(ctx.console_fd, 0):
                    break
            except OSError:
                break
        self.sel.unregister(ctx.console_fd)
        os.close(ctx.console_fd)
        ctx.console_fd = None
        ctx.console_log.close()

    def _pump_console(self, ctx: Ctx) -> None:
        try:
            alive = console.pump(ctx.console_fd, ctx.console_log)
        except OSError as e:
            log.warning("console of context %d: %s", ctx.xid, e)
            alive = False
        if not alive:
            # nobody holds the slave any more; keep the log, stop polling the master
            self.sel.unregister(ctx.console_fd)
            os.close(ctx.console_fd)
            ctx.console_fd = None
            ctx.console_log.close()

    def _start_channels(self, plan: spawn.Plan) -> tuple[int, int, int, socket.socket | None]:
        """The pipes (ready, go, error) and, with a user namespace, the socket between
        this process and G: ours in self._pipes and self._sock, G's ends returned."""
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self._pipes = [ready_r, go_w, err_r]
        theirs = None
        if plan.ids is not None:
            self._sock, theirs = socket.socketpair(socket.AF_UNIX,
                                                   socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        return ready_w, go_r, err_w, theirs

    def _drop_channels(self) -> None:
        for fd in self._pipes:
            os.close(fd)
        self._pipes = []
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _spawn_forker(self, forker: InitForker) -> None:
        forker.tried = time.monotonic()
        try:
            forker.spawn()
        except OSError as e:
            log.warning("cannot start the init forker (%s); inits are forked here", e)

    def _clone_by_forker(self, plan: spawn.Plan) -> int | None:
        """G cloned by the init forker (initforker.py) for an unprivileged context: our
        child as if forked here, born in the context's cgroup2 group; it joins the v1
        groups itself. None (nothing left behind) when the forker cannot: the caller
        forks G here."""
        spec = plan.spec
        if plan.ids is None or plan.netplan is not None or not forker_serves(spec) or \
                False not in seccomp.prepared():
            # the in-process fork's cases (see initforker.py): the forker carries the
            # default filter, which no process can shed
            return None
        xid = spec.xid
        memory = self.layout.by_ctrl.get("memory")
        opened: list[int] = []
        fds: dict[str, int | list[int]] = {"join": []}
        try:
            for h in self.layout.hierarchies:
                if h.version == 1:
                    fd = os.open(self.layout.group(h, xid) / "tasks", os.O_WRONLY | os.O_CLOEXEC)
                    opened.append(fd)
                    if h is memory:
                        fds["memcg"] = fd
                    else:
                        fds["join"].append(fd)  # type: ignore[union-attr]
            cgfd = self.layout.open_v2(xid)
            if cgfd is not None:
                opened.append(cgfd)
                fds["cgroup"] = cgfd
        except OSError as e:
            for fd in opened:
                os.close(fd)
            log.warning("context %d: cannot open its cgroups for the init forker (%s)", xid, e)
            return None
        # the C forker clones into the cgroup2 group only (CLONE_INTO_CGROUP)
        forker = next((f for f in self.forkers if f.takes(plan) and
                       ("cgroup" in fds or not isinstance(f, NativeForker))), None)
        if forker is not None and not forker.alive():
            if time.monotonic() - forker.tried >= FORKER_RETRY:
                self._spawn_forker(forker)
            if not forker.alive():
                forker = None
        if forker is None:
            for fd in opened:
                os.close(fd)
            return None
        ready_w, go_r, err_w, theirs = self._start_channels(plan)
        fds.update(ready_w=ready_w, go_r=go_r, err_w=err_w, sock=theirs.fileno())
        if plan.console_fd is not None:
            fds["console"] = plan.console_fd
        base = self._base_ns()
        if base is not None:
            fds["base"] = base
        plan.in_cgroups = True
        self.ph.mark("supervisor: fork plan")
        try:
            pid = forker.clone(plan, fds, seccomp.prepared())
        except ForkerError as e:
            log.warning("context %d: the init forker failed (%s); its init is forked here",
                        xid, e)
            plan.in_cgroups = False
            self._drop_channels()   # a G cloned before the failure sees its pipes end
            if forker.served and not forker.alive():
                # it worked before (killed since?): a new one now; one that never
                # worked is tried again only after FORKER_RETRY
                self._spawn_forker(forker)
            return None
        finally:
            for fd in (*opened, ready_w, go_r, err_w):
                os.close(fd)
            theirs.close()
        self.ph.mark("supervisor: clone by the init forker, id maps")
        self.ph.items += forker.phases
        self._forked_by_forker = True
        return pid

    def _fork_init(self, plan: spawn.Plan) -> int:
        """Fork G into a new PID namespace, and a new user namespace unless the
        context is privileged; this process stays in its own. The init forker clones
        it where it can (_clone_by_forker)."""
        pid = self._clone_by_forker(plan)
        if pid is not None:
            return pid
        ready_w, go_r, err_w, theirs = self._start_channels(plan)
        mine = self._sock
        flags = spawn.parent_flags(plan)
        try:
            if flags:
                namespaces.unshare(flags)
            cflags = spawn.clone_flags(plan)
            pid = self._clone_into_cgroups(plan, cflags)
            if pid is None:
                pid = self._fork_in_base(cflags, None) if cflags else os.fork()
            if pid == 0:
                for fd in self._pipes:
                    os.close(fd)
                if mine is not None:
                    mine.close()
                spawn.run_init(plan, ready_w, go_r, err_w, theirs)
        finally:
            # pid_for_children back to ours (allowed: single-threaded)
            if flags & namespaces.CLONE_NEWPID:
                namespaces.setns(self.own_ns["pid"], namespaces.CLONE_NEWPID)
            for fd in (ready_w, go_r, err_w):
                os.close(fd)
            if theirs is not None:
                theirs.close()
        return pid

    def _base_ns(self) -> int | None:
        """The mount namespace G is forked in: ours without the kept handles, made again
        when older than BASE_NS_AGE (mounts the host does not share reach it only so);
        None (fork in ours) if it cannot be made."""
        if self.base_ns is not None and time.monotonic() - self.base_made < BASE_NS_AGE:
            return self.base_ns
        if self.base_ns is not None:
            os.close(self.base_ns)
            self.base_ns = None
        try:
            self.base_ns = handles.without_handles()
            self.base_made = time.monotonic()
        except OSError as e:
            log.warning("inits are forked beside the namespace handles (%s)", e)
        return self.base_ns

    def _fork_in_base(self, cflags: int, cgfd: int | None) -> int:
        """fork_into, the child in the mount namespace of _base_ns (an unprivileged G
        only: its host lookups are the state dir and /dev/pts, its root comes as a mount
        descriptor). Returns 0 in the child."""
        base = self._base_ns() if cflags & namespaces.CLONE_NEWUSER else None
        if base is None:
            return namespaces.fork_into(cflags, cgfd)
        namespaces.setns(base, namespaces.CLONE_NEWNS)
        pid = -1
        try:
            pid = namespaces.fork_into(cflags, cgfd)
        finally:
            if pid != 0:
                namespaces.setns(self.own_ns["mnt"], namespaces.CLONE_NEWNS)
        return pid

    def _clone_into_cgroups(self, plan: spawn.Plan, cflags: int) -> int | None:
        """Fork G born in the context's cgroups: this thread moves itself into its v1
        groups (no RCU grace period: see Layout.move_self) and back once G is forked,
        clone3 puts G into the cgroup2 group. Migrating G afterwards would wait for a grace
        period, most of a start. None (plan.in_cgroups False) if that cannot be done here:
        the caller forks and migrates G the old way."""
        xid = plan.spec.xid
        try:
            own = self.layout.own_groups()
            cgfd = self.layout.open_v2(xid)
        except OSError as e:
            log.warning("context %d: cannot fork into its cgroups (%s); migrating", xid, e)
            return None
        # Not into a v1 memory group: a page this process faults while in there (every
        # copy-on-write of its heap after the fork) would be charged to the context, pin its
        # memory cgroup after the stop (a dying memcg kept until this process exits, with its
        # per-superblock shrinker arrays: ~70 KiB a start/stop cycle) and count against the
        # context's limit. G moves itself in instead, as its first step (spawn.run_init).
        memory = self.layout.by_ctrl.get("memory")
        mem_v1 = memory is not None and memory.version == 1
        hier = [h for h in self.layout.hierarchies
                if h.version == 1 and not (mem_v1 and h is memory)]
        v1 = [self.layout.group(h, xid) for h in hier]
        back = [own[h.path] for h in hier if h.path in own]
        if len(back) != len(v1):
            if cgfd is not None:
                os.close(cgfd)
            return None
        if mem_v1:
            try:
                plan.memcg_tasks_fd = os.open(self.layout.group(memory, xid) / "tasks",
                                              os.O_WRONLY | os.O_CLOEXEC)
            except OSError as e:
                if cgfd is not None:
                    os.close(cgfd)
                log.warning("context %d: cannot open its memory group (%s); migrating", xid, e)
                return None
        plan.in_cgroups = True
        self._back = back
        pid = None
        try:
            self.ph.mark("supervisor: fork plan")
            self.layout.move_self(v1)
            self.ph.mark("supervisor: move itself into the v1 groups")
            pid = self._fork_in_base(cflags, cgfd)
            if pid:
                self.ph.mark("supervisor: clone3")
            return pid
        except OSError as e:
            log.warning("context %d: cannot fork into its cgroups (%s); migrating", xid, e)
            plan.in_cgroups = False
            self._leave_context_groups()
            return None
        finally:
            if cgfd is not None:
                os.close(cgfd)
            if plan.memcg_tasks_fd is not None and pid != 0:
                os.close(plan.memcg_tasks_fd)   # G (pid 0 here) has its own copy
                plan.memcg_tasks_fd = None

    def _leave_context_groups(self) -> None:
        """Back into our own v1 groups after forking G into the context's: before its
        limits are set (a memory limit must never make us an OOM victim of the context)
        and in every error path (start's finally)."""
        if self._back:
            back, self._back = self._back, []
            self.layout.move_self(back)

    def _map_ids(self, plan: spawn.Plan, gpid: int) -> None:
        """G's uid/gid maps (the init forker wrote them for a G it cloned), then its
        detached idmapped root (and /sys) over the socket."""
        if not self._forked_by_forker:
            idmap.write_maps(gpid, plan.ids)
            os.write(self._pipes[1], b"m")
            self.ph.mark("supervisor: write uid/gid maps")
        ufd = os.open(f"/proc/{gpid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        try:
            fds = spawn.host_mounts(plan, ufd)
        finally:
            os.close(ufd)
        self.ph.mark("supervisor: idmapped root (open_tree, mount_setattr)")
        try:
            spawn.send_fds(self._sock, fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _finish_start(self, plan: spawn.Plan, gpid: int) -> str:
        """Cgroups and veth for G while it mounts, then "go"; returns G's error or ''."""
        ready_r, go_w, err_r = self._pipes
        xid = plan.spec.xid
        try:
            if plan.ids is not None:
                self._map_ids(plan, gpid)
            # the move is off G's path: G waits for nothing more of ours until "go"
            self._leave_context_groups()
            self.ph.mark("supervisor: move itself back into its own groups")
            # made while G already works on its namespaces and mounts: off the critical path
            ph = self.ph
            if plan.ids is not None:
                self.layout.delegate(xid, plan.ids.host, plan.ids.host)
                if not plan.in_cgroups:
                    # membership does not wait for G's namespaces: the (slow) migration
                    # runs while G mounts; G unshares its cgroup namespace after "go"
                    self.layout.join(xid, gpid)
                ph.mark("supervisor: cgroup delegate" +
                        ("" if plan.in_cgroups else ", join (every hierarchy)"))
            limits.apply_cgroup_limits(self.layout, plan.spec)
            ph.mark("supervisor: cgroup limits")
            ready = _read_all(ready_r, START_TIMEOUT, limit=1)
            ph.mark("supervisor: wait for init's ready")
            if ready != b"r":
                return _read_all(err_r, START_TIMEOUT).decode(errors="replace").strip() or \
                    f"context {xid}: init process died during setup"
            if plan.ids is None and not plan.in_cgroups:
                self.layout.join(xid, gpid)
                ph.mark("supervisor: cgroup join (every hierarchy)")
            if plan.netplan is not None:
                netns.create_pair(plan.netplan, gpid)
                ph.mark("supervisor: veth pair, the peer made in the netns")
            if plan.in_cgroups or plan.ids is None:
                # every namespace of G exists now (its cgroup namespace too): keep them
                # while G builds its mounts
                try:
                    # entered only after init's exec: until its pivot_root this mount
                    # namespace's root is the host's (handles.keep)
                    handles.keep(self.state_dir, plan.spec, gpid)
                except OSError as e:
                    # G may have failed meanwhile (its namespaces go with it; a G of the
                    # C forker gets there first): its own reason is the one to report
                    _kill_wait(gpid)
                    err = _read_all(err_r, 5.0).decode(errors="replace").strip()
                    return err or f"context {xid}: cannot keep its namespaces: {e}"
                self._kept = True
                ph.mark("supervisor: keep namespace handles")
        except OSError as e:
            # G may have died on its own meanwhile: its own reason is the better message
            _kill_wait(gpid)
            err = _read_all(err_r, 5.0).decode(errors="replace").strip()
            if err:
                return err
            if isinstance(e, (BrokenPipeError, ConnectionError)):
                return f"context {xid}: init process died during setup"
            raise
        try:
            os.write(go_w, b"g")
        except BrokenPipeError:
            pass  # G failed already: its error is on err_r
        ph.skip()
        try:
            # while G execs: what is kept of a running context (G waited for "go" while
            # it was written before, once G's own setup took less time than ours)
            self._start_time = start_time_of(gpid)
            self._write_state(f"{xid}.init", {"pid": gpid, "start_time": self._start_time})
            if self._kept:
                self._record = handles.record(plan.spec, gpid)   # published after exec
            self._log = console.ConsoleLog(self.state_dir, xid)
            self._log.reset()
        except OSError as e:
            _kill_wait(gpid)
            return f"context {xid}: cannot record it in {self.state_dir}: {e.strerror or e}"
        ph.mark("supervisor: record init, console log; spec for publishing")
        out = _read_all(err_r, START_TIMEOUT).decode(errors="replace").strip()
        if out.startswith(spawn.PHASES_PREFIX):
            line, _, out = out.partition("\n")
            try:
                ph.items += json.loads(line[len(spawn.PHASES_PREFIX):])
                ph.last = max(ph.last, ph.items[-1][2])
            except ValueError:
                pass
            ph.mark("init: execve (until the error pipe closes)")
        else:
            ph.mark("supervisor: wait for init's exec")
        return out.strip()

    def keep_handles(self, spec: ContextSpec, pid: int) -> None:
        """Keep the namespaces made at start and the spec (handles.py) for everyone who
        enters the context later; a context that cannot be kept is not left running."""
        try:
            handles.keep(self.state_dir, spec, pid)
            handles.publish(self.state_dir, spec.xid, handles.record(spec, pid))
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
                xid, argv = self.notify_running.pop(pid)
                self._callback_done(xid, argv, status)
                self._next_notify(xid)
                continue
            for ctx in list(self.ctxs.values()):
                if ctx.child and ctx.pid == pid:
                    self.context_ended(ctx, reason_from_status(status), status)
            # anything else: an orphan of a context or of an exec helper, just reaped

    def context_ended(self, ctx: Ctx, reason: str, status: int | None) -> None:
        self.ctxs.pop(ctx.xid, None)
        self._detach_console(ctx)
        self._close_notify(ctx)
        (self.state_dir / f"{ctx.xid}.ready").unlink(missing_ok=True)
        if ctx.pidfd is not None:
            self.sel.unregister(ctx.pidfd)
            os.close(ctx.pidfd)
        # Processes still in the group (exec helpers outside the PID namespace) go too, so
        # the groups can be removed before the daemon hears "shutdown" and maybe restarts.
        if self.layout.pids(ctx.xid):
            self.layout.kill_all(ctx.xid)
        self.layout.remove(ctx.xid)
        # before the answer to a stop: the kept mount namespace holds the vserver's mounts
        # (a disk-limit image stays busy), the network namespace its veth pair
        try:
            handles.drop(self.state_dir, ctx.xid)
        except OSError as e:
            log.warning("context %d: cannot remove its namespace handles: %s", ctx.xid, e)
        if self.net_tag is not None:
            ifname = netns.host_ifname(ctx.xid, self.net_tag)
            if os.path.exists(f"/sys/class/net/{ifname}"):
                netns.delete_host_side(ifname)
        # the callbacks below are what matters: a reboot from inside is a restart
        self._keep_state(f"{ctx.xid}.exit", {"reason": reason, "status": status,
                                             "time": time.time()})
        (self.state_dir / f"{ctx.xid}.load").unlink(missing_ok=True)
        (self.state_dir / f"{ctx.xid}.init").unlink(missing_ok=True)
        log.info("context %d ended: %s", ctx.xid, reason)
        if self.notify_argv:
            self.notify_queue.setdefault(ctx.xid, []).extend(
                self.notify_argv + [a, str(ctx.xid)] for a in actions_for(reason))
            self._save_queue(ctx.xid)
            if ctx.xid not in (x for x, _ in self.notify_running.values()):
                self._next_notify(ctx.xid)

    def _save_queue(self, xid: int) -> None:
        """The callbacks not yet run, so a new worker runs them after this one died."""
        queue = self.notify_queue.get(xid)
        if queue:
            self._keep_state(f"{xid}.notify", {"queue": queue})
        else:
            (self.state_dir / f"{xid}.notify").unlink(missing_ok=True)

    def _next_notify(self, xid: int) -> None:
        queue = self.notify_queue.get(xid)
        if not queue:
            self.notify_queue.pop(xid, None)
            self._save_queue(xid)
            return
        argv = queue.pop(0)
        self._save_queue(xid)
        out = str(self.state_dir / f"{xid}.callback")
        try:
            # posix_spawn, not Popen: reap() owns every child status of this process.
            # The output goes to a file, not /dev/null: a failing callback is logged with it.
            pid = os.posix_spawnp(argv[0], argv, dict(os.environ), setsid=True, file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                (os.POSIX_SPAWN_DUP2, 1, 2)])
        except OSError as e:
            self._callback_failed(xid, argv, f"cannot run it: {e}", "")
            self._next_notify(xid)
            return
        self.notify_running[pid] = (xid, argv)

    def _callback_done(self, xid: int, argv: list[str], status: int) -> None:
        if status == 0:
            return
        try:
            with open(self.state_dir / f"{xid}.callback", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - CALLBACK_OUTPUT_MAX))
                output = f.read().decode(errors="replace").strip()
        except OSError:
            output = ""
        how = reason_from_status(status) if os.WIFSIGNALED(status) else \
            f"exit status {os.WEXITSTATUS(status)}"
        self._callback_failed(xid, argv, how, output)

    def _callback_failed(self, xid: int, argv: list[str], how: str, output: str) -> None:
        action = argv[-2] if len(argv) >= 2 else "?"
        log.error("callback %s for context %d failed (%s): %s; output: %s", action, xid, how,
                  " ".join(argv), output or "(none)")
        record = {"time": time.time(), "xid": xid, "action": action, "argv": argv,
                  "how": how, "output": output}
        path = self.state_dir / CALLBACKS_FAILED
        try:
            # bounded: a tenant whose vserver fails every reboot from inside (an init
            # that exits at once on the boot after), and vx.start again, appends a
            # record a turn for as long as it likes to a memory filesystem. Moved
            # whole, not emptied in place: vcd's follower (vcd/callbacklog.py) starts
            # over on a file smaller than what it read
            if path.stat().st_size > CALLBACKS_FAILED_CAP:
                os.replace(path, path.with_name(f"{CALLBACKS_FAILED}.1"))
        except OSError:
            pass    # none yet, or a full tmpfs: the append below says so
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:    # a full state tmpfs: the log line above is what is left
            log.error("cannot append to %s: %s", CALLBACKS_FAILED, e)

    def set_notify(self, argv: list[str] | None) -> None:
        """The callback as the daemon now names it (its config may have moved since this
        supervisor started); kept in notify.json for the workers that come after."""
        if argv is not None and not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise ValueError("notify must be a list of strings")
        if argv != self.notify_argv:
            self.notify_argv = argv
            self._keep_state("notify.json", {"argv": argv})

    def _remember(self, ctx: Ctx) -> None:
        """<xid>.init: which process is the context's init, for a worker that comes after."""
        if ctx.start_time is None:
            ctx.start_time = start_time_of(ctx.pid)
        self._keep_state(f"{ctx.xid}.init", {"pid": ctx.pid, "start_time": ctx.start_time})

    def _read_json(self, name: str) -> dict | None:
        try:
            data = json.loads((self.state_dir / name).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def reaped_status(self, pid: int, start_time: int | None, wait: float) -> int | None:
        """The wait status the keeper recorded for init `pid` (None if it has none within
        `wait` seconds); the record is consumed."""
        path = self.state_dir / "reaped" / f"{pid}.json"
        deadline = time.monotonic() + wait
        while True:
            record = self._read_json(f"reaped/{pid}.json")
            if record is not None and (start_time is None or record.get("start_time") == start_time):
                path.unlink(missing_ok=True)
                return int(record["status"])
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def adopted_ended(self, ctx: Ctx) -> None:
        """An adopted init ended (its pidfd fired): the keeper reaps it and knows why."""
        status = None
        if ctx.keeper_reaps:
            status = self.reaped_status(ctx.pid, ctx.start_time, REAPED_WAIT)
        if status is None:
            self.context_ended(ctx, "unknown (ended while another supervisor ran)", None)
        else:
            self.context_ended(ctx, reason_from_status(status), status)

    def adopt(self) -> None:
        """Watch contexts that are running but were started by an earlier worker, finish
        those whose init ended while no worker watched, and pick up what it left."""
        keeper = os.getppid()
        saved = self._read_json("notify.json")
        if saved is not None and "argv" in saved:
            self.notify_argv = saved["argv"]
        inits: dict[int, dict] = {}
        for path in self.state_dir.glob("*.init"):
            record = self._read_json(path.name)
            if path.stem.isdigit() and record is not None:
                inits[int(path.stem)] = record
        for xid in sorted(set(self.layout.xids()) | set(inits)):
            if xid in self.ctxs:
                continue
            pids = self.layout.pids(xid)
            kept = handles.load(self.state_dir, xid)
            pid = kept.init_pid if kept is not None and kept.init_pid in pids and \
                is_init(kept.init_pid) else (init_pid_of(pids) if pids else None)
            known = inits.get(xid)
            if known is not None and pid != known.get("pid"):
                # its init is gone: ended while no worker watched (the keeper has its status)
                gone = Ctx(xid, int(known["pid"]), child=False, start_time=known.get("start_time"))
                zombie = parent_of(gone.pid) == keeper
                status = self.reaped_status(gone.pid, gone.start_time, REAPED_WAIT if zombie else 0)
                if pid is None:
                    self.context_ended(gone, reason_from_status(status) if status is not None
                                       else "unknown (ended while no supervisor ran)", status)
                    continue
            if pid is None:
                if not pids:
                    self.layout.remove(xid, wait=0)
                continue
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue
            ctx = Ctx(xid, pid, child=False, pidfd=pidfd, start_time=start_time_of(pid),
                      keeper_reaps=parent_of(pid) == keeper)
            load = self._read_json(f"{xid}.load")
            if load and isinstance(load.get("load"), list) and len(load["load"]) == 3:
                ctx.load = [int(float(x) * FIXED_1) for x in load["load"]]
            self.ctxs[xid] = ctx
            self._remember(ctx)
            self.sel.register(pidfd, selectors.EVENT_READ, ("pidfd", ctx))
            log.info("adopted running context %d (init %d)", xid, pid)
        for path in self.state_dir.glob("*.notify"):
            record = self._read_json(path.name)
            if not path.stem.isdigit() or record is None:
                continue
            xid = int(path.stem)
            self.notify_queue[xid] = [list(map(str, a)) for a in record.get("queue", [])]
            if xid not in (x for x, _ in self.notify_running.values()):
                self._next_notify(xid)
        # records of inits nobody asked for (a context ended twice over, ...) don't pile up
        for path in (self.state_dir / "reaped").glob("*.json"):
            try:
                if path.stat().st_mtime < time.time() - 86400:
                    path.unlink()
            except OSError:
                pass

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
            self._keep_state(f"{ctx.xid}.load", {"load": [x / FIXED_1 for x in ctx.load],
                                                 "time": now})

    # --- requests -------------------------------------------------------------------------

    def handle(self, req: dict) -> dict:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "contexts": sorted(self.ctxs)}
        if op == "start":
            spec = ContextSpec.from_dict(req["spec"])
            ids = req.get("ids")
            t = time.perf_counter()
            if "notify" in req:
                self.set_notify(req["notify"])
            pid = self.start(spec, req.get("image"),
                             None if ids is None else idmap.IdRange(int(ids[0]), int(ids[1])),
                             req.get("overlay"), bool(req.get("phases")))
            resp = {"ok": True, "pid": pid, "seconds": time.perf_counter() - t}
            if self.ph.on:
                resp["phases"] = self.ph.items
            return resp
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
            while self.after_answer:
                self.after_answer.pop(0)()

    def run(self, listener: socket.socket) -> None:
        sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(sig_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "terminated", True))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.sel.register(listener, selectors.EVENT_READ, ("listen", None))
        self.sel.register(sig_r, selectors.EVENT_READ, ("signal", None))
        self.keeper = os.getppid()
        self.adopt()
        self.reap()
        # what exists now lives as long as this worker: out of the collector's reach, its
        # pages stay shared with every init forked from here (fewer copy-on-write faults)
        gc.freeze()
        while not self.stopping and not self.terminated:
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
                elif kind == "console":
                    self._pump_console(obj)
                elif kind == "notify":
                    self._read_notify(obj)
                elif kind == "pidfd":
                    self.adopted_ended(obj)
            self.reap()
            if os.getppid() != self.keeper:
                # our keeper was killed: we become the keeper ourselves (Keeper.spawn)
                log.warning("supervisor keeper %d is gone; this worker takes its place",
                            self.keeper)
                self.orphaned = True
                break
            if time.monotonic() >= self.next_sample:
                self.next_sample += self.load_interval
                if self.next_sample < time.monotonic():
                    self.next_sample = time.monotonic() + self.load_interval
                self.sample_loads()


def become_keeper(lockfd: int, listener: socket.socket) -> None:
    """A worker whose keeper was killed turns into a keeper itself: it execs the
    supervisor program again, in the foreground (it is detached already), handing on
    the locked supervisor.lock and the bound socket, so no other supervisor can start
    meanwhile and no client is refused. Its inits stay its children across exec: the
    keeper it becomes reaps them and records how they end, and the worker it forks
    adopts them, so no context loses its reboot."""
    logging.shutdown()
    os.set_inheritable(lockfd, True)
    os.set_inheritable(listener.fileno(), True)
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip or a in ("--foreground", "--inherit"):
            skip = a == "--inherit"
            continue
        args.append(a)
    os.execv(sys.executable, [sys.executable, "-m", "libvserver.native.supervisor", *args,
                              "--foreground", "--inherit", f"{lockfd},{listener.fileno()}"])


def _read_all(fd: int, timeout: float, limit: int | None = None) -> bytes:
    deadline = time.monotonic() + timeout
    out = b""
    while limit is None or len(out) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StartError("timed out waiting for the context's setup")
        if not entercore.readable(fd, left):
            continue
        chunk = os.read(fd, 65536 if limit is None else limit - len(out))
        if not chunk:
            return out
        out += chunk
    return out


def _write_json(directory: Path, name: str, data: dict) -> None:
    """directory/name := data as JSON, replaced whole (a reader never sees half of it).
    Raises OSError; what was written of the temporary file is removed then."""
    statedir.write_whole(directory / name, json.dumps(data).encode())


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


class Keeper:
    """The process that outlives workers: forks one `Supervisor` at a time, reaps the inits
    a dead worker leaves behind and records how each ended (see the module docstring)."""

    RESPAWN_PAUSE = 1.0   # after a worker that died within a second of its start
    RECORD_RETRY = 1.0    # seconds between attempts to write a record that failed

    def __init__(self, state_dir: Path, listener: socket.socket, make: Callable[[], "Supervisor"],
                 lockfd: int) -> None:
        self.state_dir = state_dir
        self.listener = listener
        self.make = make
        self.lockfd = lockfd
        self.worker: int | None = None
        self.started = 0.0
        self.stopping = False
        self.pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        (state_dir / "reaped").mkdir(mode=0o700, exist_ok=True)
        # pid -> record that could not be written yet (a full state tmpfs): the keeper
        # must outlive that, it is the only one that knows how those inits ended
        self.unwritten: dict[int, dict] = {}

    def spawn(self) -> None:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM})
        try:
            pid = os.fork()
            if pid == 0:
                code = 70
                try:
                    for fd in self.pipe:
                        os.close(fd)
                    signal.set_wakeup_fd(-1)
                    for sig in (signal.SIGCHLD, signal.SIGTERM):
                        signal.signal(sig, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_SETMASK, old)
                    # lockfd stays open here: a worker orphaned by a killed keeper still
                    # owns the state dir, and no second supervisor starts beside it
                    namespaces.set_subreaper()  # not inherited across fork
                    sup = self.make()
                    sup.run(self.listener)
                    if sup.orphaned:
                        become_keeper(self.lockfd, self.listener)
                    code = EXIT_QUIT if sup.stopping else EXIT_RESTART
                    log.info("supervisor worker %d exits (%s); %d contexts keep running",
                             os.getpid(), "quit" if sup.stopping else "SIGTERM", len(sup.ctxs))
                except BaseException:
                    log.exception("supervisor worker failed")
                finally:
                    logging.shutdown()
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self.worker = pid
        self.started = time.monotonic()
        log.info("supervisor worker %d started", pid)

    def record(self, pid: int) -> None:
        """Reap `pid` (a zombie child); an init's wait status goes to reaped/<pid>.json."""
        init = is_init(pid)
        start_time = start_time_of(pid) if init else None
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return
        if pid == self.worker:
            self.worker_exited(status)
            return
        if not init:
            return  # an orphan of a callback or of a dead worker's helper
        log.info("keeper reaped init %d of a dead worker: %s", pid, reason_from_status(status))
        self.unwritten[pid] = {"pid": pid, "start_time": start_time, "status": status,
                               "time": time.time()}
        self.write_records(report=True)

    def write_records(self, report: bool = False) -> None:
        """Write the records not written yet (reaped/<pid>.json); those that still
        cannot be are tried again at the keeper's next turn (RECORD_RETRY)."""
        for pid, record in list(self.unwritten.items()):
            try:
                _write_json(self.state_dir / "reaped", f"{pid}.json", record)
            except OSError as e:
                if report:
                    log.error("cannot record how init %d ended (%s); kept until it can be",
                              pid, e)
                return
            del self.unwritten[pid]

    def worker_exited(self, status: int) -> None:
        self.worker = None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        if code == EXIT_QUIT:
            log.info("supervisor worker quit; the keeper stops too")
            self.stopping = True
            return
        if self.stopping:
            log.info("supervisor worker stopped (%s)", reason_from_status(status))
            return
        log.warning("supervisor worker %s; starting a new one", reason_from_status(status))
        if time.monotonic() - self.started < 1.0:
            time.sleep(self.RESPAWN_PAUSE)  # failing at start: no tight fork loop

    def reap(self) -> None:
        while True:
            try:
                # WNOWAIT: look first (is it an init? when did it start?), reap in record()
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == 0:
                return
            self.record(info.si_pid)

    def run(self, ready_w: int | None) -> None:
        sig_r, sig_w = self.pipe
        signal.set_wakeup_fd(sig_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.spawn()
        if ready_w is not None:
            os.write(ready_w, b"1")
            os.close(ready_w)
        while True:
            self.reap()
            if self.stopping:
                break
            if self.worker is None:
                self.spawn()
            self.write_records()
            try:
                # (a worker turned keeper has many descriptors: no select())
                entercore.readable(sig_r, self.RECORD_RETRY if self.unwritten else None)
            except InterruptedError:
                pass
            try:
                while os.read(sig_r, 512):
                    pass
            except BlockingIOError:
                pass
        if self.worker is not None:
            # SIGTERM to the keeper: the worker stops too (contexts keep running); it is
            # waited for, so its inits come to us and are recorded rather than lost
            try:
                os.kill(self.worker, signal.SIGTERM)
            except ProcessLookupError:
                pass
            while self.worker is not None:
                try:
                    info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
                except ChildProcessError:
                    break
                if info is not None:
                    self.record(info.si_pid)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="libvserver-supervisor")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--cgroup-parent", required=True)
    ap.add_argument("--notify", default="null", help="JSON list: argv prefix of the callback")
    ap.add_argument("--net-tag", default="")
    ap.add_argument("--load-interval", type=float, default=LOAD_INTERVAL)
    ap.add_argument("--foreground", action="store_true")
    ap.add_argument("--inherit", help=argparse.SUPPRESS)  # LOCKFD,LISTENFD (become_keeper)
    args = ap.parse_args(argv)
    state = Path(args.state_dir)
    # before the first file of ours in it (the lock): a tmpfs, unless on one already
    mounted = statedir.prepare(state)
    inherited = None
    if args.inherit:
        lockfd, listen_fd = map(int, args.inherit.split(","))
        os.set_inheritable(lockfd, False)
        inherited = socket.socket(fileno=listen_fd)
        inherited.set_inheritable(False)
    else:
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
    # capped: every start, end and callback adds lines, on a tmpfs (cappedlog.py)
    handler = CappedFileHandler(state / "supervisor.log")
    # one line a message: callback output and start errors carry a guest's console lines
    handler.setFormatter(OneLineFormatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
    logging.basicConfig(handlers=[handler], level=logging.INFO)
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
    keeper_pid = os.getpid()
    os.ftruncate(lockfd, 0)
    os.pwrite(lockfd, f"{os.getpid()}\n".encode(), 0)
    sock_path = state / "supervisor.sock"
    if inherited is not None:
        listener = inherited
    else:
        sock_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o077)
        listener.bind(str(sock_path))
        os.umask(old)
        listener.listen(64)
    listener.setblocking(False)
    notify = json.loads(args.notify)
    keeper = Keeper(state, listener, lambda: Supervisor(state, args.cgroup_parent, notify,
                                                        args.net_tag, args.load_interval),
                    lockfd)
    if mounted:
        log.info("state directory %s: on a tmpfs of its own (statedir.py)", state)
    log.info("supervisor keeper %d serving %s", os.getpid(), sock_path)
    try:
        keeper.run(ready_w)
    finally:
        if os.getpid() == keeper_pid:
            sock_path.unlink(missing_ok=True)
            log.info("supervisor keeper %d exits", os.getpid())


if __name__ == "__main__":
    main()
