"""The daemon's side of running vservers: the spec from VXDB, and one libvserver
backend per process.

The daemon never asks which backend it has; everything kernel-facing goes through
`libvserver.get_backend()`. The kernel is the truth for "running": nothing here
caches it.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import libvserver
from libvserver import (ContextSpec, CpuSet, DiskLimit, Limit, Mount, NetAddr, Sched)
from libvserver.native import phases

from templates.errors import TemplateError
from templates.store import TemplateStore
from vcd import vocab, vxdb
from vcd.config import Config
from vcd.errors import Fault, VcdError, exec_failed
from vcd.vxdb.lookup import VServer, find_vserver, security_of

log = logging.getLogger("vcd.runtime")

_runtimes: dict[int, "Runtime"] = {}

BIND_TYPES = {"", "bind", "none", "auto"}
# How long a start that found init dead waits for the backend to record why
INIT_EXIT_WAIT = 5.0



def _limit_value(text: str) -> int | None:
    # 2^64-1 is the manual's unlimited too (an older VXDB may hold it as a number)
    return None if text == "inf" or int(text) >= vocab.UINT64_MAX else int(text)


def init_settings(db: vxdb.Connection, xid: int) -> dict[str, Any]:
    """{init, halt, reboot, timeout, halt_signal, reboot_signal} of a vserver, defaults
    filled in; a signal of "" means "run the command"."""
    row = db.execute("SELECT init, halt, reboot, timeout, halt_signal, reboot_signal "
                     "FROM init WHERE xid = ?", (xid,)).fetchone()
    init = {"init": vocab.DEFAULT_INIT, "halt": vocab.DEFAULT_HALT,
            "reboot": vocab.DEFAULT_REBOOT, "timeout": vocab.DEFAULT_TIMEOUT,
            "halt_signal": "", "reboot_signal": ""}
    if row is not None:
        # a timeout of 0 is a real value (kill at once); only empty strings mean default
        init = {k: init[k] if row[k] in (None, "") else row[k] for k in init}
    return init


def forget_restarts(db: vxdb.Connection, xids: list[int]) -> None:
    """Drop reboot requests from inside: an explicit stop supersedes them."""
    db.executemany("DELETE FROM restart WHERE xid = ?", [(x,) for x in xids])


def build_spec(db: vxdb.Connection, vserver: VServer) -> tuple[ContextSpec, dict[str, Any]]:
    """The complete context spec of a vserver from every VXDB table, plus its
    init settings (`init_settings`)."""
    xid = vserver.xid
    init = init_settings(db, xid)

    def values(sql: str) -> list[Any]:
        return db.execute(sql, (xid,)).fetchall()

    vdir = Path(vserver.vdir)
    spec = ContextSpec(
        xid=xid, name=vserver.name, vdir=vdir,
        init=shlex.split(init["init"]) or [vocab.DEFAULT_INIT],
        bcaps={r[0] for r in values("SELECT bcap FROM vx_bcaps WHERE xid = ?")},
        ccaps={r[0] for r in values("SELECT ccap FROM vx_ccaps WHERE xid = ?")},
        flags={r[0] for r in values("SELECT flag FROM vx_flags WHERE xid = ?")},
        limits=[Limit(r["type"], _limit_value(r["soft"]), _limit_value(r["max"]))
                for r in values("SELECT type, soft, max FROM vx_limit WHERE xid = ?")],
        sched=[Sched(r["cpuid"], r["interval"], r["fillrate"], r["interval2"], r["fillrate2"],
                     r["tokensmin"], r["tokensmax"])
               for r in values("SELECT * FROM vx_sched WHERE xid = ? ORDER BY cpuid")],
        uname={r["type"]: r["value"] for r in values("SELECT type, value FROM vx_uname WHERE xid = ?")},
        mounts=[_mount(vdir, r) for r in values(
            "SELECT src, dst, type, opts FROM mount WHERE xid = ? ORDER BY dst")],
        addresses=[NetAddr(r["addr"], r["netmask"]) for r in values(
            "SELECT addr, netmask FROM nx_addr WHERE xid = ? ORDER BY addr")],
    )
    security = security_of(db, xid)
    spec.privileged, spec.seccomp = security["privileged"], security["seccomp"]
    cpuset = db.execute("SELECT cpus, mems, virtualize FROM vx_cpuset WHERE xid = ?", (xid,)).fetchone()
    if cpuset is not None:
        spec.cpuset = CpuSet(cpuset["cpus"], cpuset["mems"], bool(cpuset["virtualize"]))
    broadcast = db.execute("SELECT broadcast FROM nx_broadcast WHERE xid = ?", (xid,)).fetchone()
    if broadcast is not None:
        spec.broadcast = broadcast[0]
    boot = db.execute("SELECT api_mounts, ready FROM vx_boot WHERE xid = ?", (xid,)).fetchone()
    if boot is not None:
        spec.api_mounts = boot["api_mounts"].split()
        spec.ready = boot["ready"]
    dx = db.execute("SELECT space, inodes, reserved FROM dx_limit WHERE xid = ?", (xid,)).fetchone()
    if dx is not None and dx["space"] > 0 and dx["inodes"] > 0:
        spec.disk_limit = DiskLimit(dx["space"], dx["inodes"], min(dx["reserved"], 50))
    return spec, init


def _mount(vdir: Path, row: Any) -> Mount:
    """A VXDB mount row as the backend wants it.

    The manual's `src` of a bind mount is a path *inside* the vserver; it becomes the
    path below the vdir, so no row (whoever set it, whatever its type says: bind, rbind,
    or a filesystem type with "bind" in its options) binds a host directory into it.
    """
    words = [] if row["opts"] == "defaults" else row["opts"].split(",")
    fstype = "" if row["type"] == "auto" else row["type"]
    recursive = fstype == "rbind" or "rbind" in words
    is_bind = (fstype in ("bind", "rbind") or "bind" in words or recursive
               or (fstype in BIND_TYPES and row["src"].startswith("/")))
    src = row["src"]
    if is_bind:
        # lexically below the vdir; libvserver resolves it confined to the vdir
        # (RESOLVE_IN_ROOT), so a symlink in the guest means what the guest sees
        src = os.path.join(str(vdir), os.path.normpath(src).lstrip("/"))
        words = [w for w in words if w not in ("bind", "rbind")]
        words.insert(0, "rbind" if recursive else "bind")
        fstype = ""
    return Mount(src=src, dst=row["dst"], type=fstype, opts=",".join(filter(None, words)))


# argv: MARKER_DIR VSHELPER_ARGV... ACTION XID. A marker means vcd stopped the context:
# "restart" is dropped (an explicit stop supersedes a reboot asked for from inside, as
# Runtime.stop does in VXDB) and "shutdown" consumes the marker; anything else is vshelper.
NOTIFY_FILTER = (  # one line, so the logs that quote a failing callback stay one line
    'markers=$1; shift; for arg; do action=$xid; xid=$arg; done; marker="$markers/$xid"; '
    'if [ -e "$marker" ]; then [ "$action" = shutdown ] && rm -f "$marker"; exit 0; fi; '
    'exec "$@"')


class Runtime:
    def __init__(self, config: Config):
        self.config = config
        self._backend: libvserver.Backend | None = None

    @property
    def backend(self) -> libvserver.Backend:
        if self._backend is None:
            self._backend = libvserver.get_backend(
                state_dir=self.config.supervisor_dir,
                cgroup_parent=self.config.cgroup_parent,
                image_dir=self.config.datadir / "images",
                notify_argv=self.notify_argv(), idmap_base=self.config.idmap_base)
        return self._backend

    def notify_argv(self) -> list[str]:
        """What the supervisor runs (with ACTION XID appended) when a context ends: vshelper,
        the way the kernel would call it, behind a small sh filter. A context that vcd
        stopped itself has a marker (`stop_marker`): its end is no news to vcd, so the
        filter drops the marker and skips the vshelper process. That interpreter start per
        ended context was most of the cost of stopping 200 vservers (issue 13)."""
        argv = [sys.executable, "-m", "vshelper"]
        if self.config.source is not None:
            argv += ["-c", str(self.config.source)]
        return ["/bin/sh", "-c", NOTIFY_FILTER, "vcd-notify", str(self.stop_markers)] + argv

    @property
    def stop_markers(self) -> Path:
        # beside the supervisor's records, on its tmpfs (statedir.py): one is made per stop
        return self.config.supervisor_dir / "stopping"

    def stop_marker(self, xid: int) -> Path:
        """Present while (and after) vcd stops xid, until the context's end was reported."""
        return self.stop_markers / str(xid)

    # -- state --------------------------------------------------------------------------

    def is_running(self, xid: int) -> bool:
        try:
            return self.backend.is_running(xid)
        except libvserver.LibvserverError as exc:
            raise VcdError(Fault.MESYS, str(exc)) from None

    def require_running(self, vserver: VServer) -> None:
        if not self.is_running(vserver.xid):
            raise VcdError(Fault.MESTOPPED, vserver.name)

    # -- life cycle ---------------------------------------------------------------------

    def start(self, db: vxdb.Connection, vserver: VServer) -> None:
        """Start a vserver; with VCD_START_PHASES=<file> in the daemon's environment each
        start appends its phase timings there as a JSON list of [name, begin, end]
        (libvserver.native.phases; bench/start_phases.py prints them): the request's
        steps before (vcd.dispatch), this method's, the backend's, supervisor's and
        init's."""
        ph = phases.current
        with vxdb.transaction(db):
            spec, init = build_spec(db, vserver)
        ph.mark("vcd: spec from VXDB")
        if self.is_running(vserver.xid):
            raise VcdError(Fault.MERUNNING, vserver.name)
        ph.mark("vcd: running? (cgroup.procs)")
        try:
            TemplateStore(self.config.templatedir).ensure_mounted(Path(vserver.vdir))
        except TemplateError as exc:
            raise VcdError(Fault.MESYS, f"root filesystem of {vserver.name}: {exc}") from None
        if not Path(vserver.vdir).is_dir():
            raise VcdError(Fault.MESYS, f"root directory {vserver.vdir} of {vserver.name} is missing")
        # a marker of an earlier stop must not swallow the end of this new context
        self.stop_marker(vserver.xid).unlink(missing_ok=True)
        ph.mark("vcd: template mounted?, vdir, stop marker")
        try:
            self.backend.start(spec)
        except libvserver.AlreadyRunning:
            raise VcdError(Fault.MERUNNING, vserver.name) from None
        except libvserver.InvalidSpec as exc:
            raise VcdError(Fault.MEINVAL, f"{vserver.name}: {exc}") from None
        except libvserver.LibvserverError as exc:
            raise VcdError(Fault.MESYS, f"start of {vserver.name} failed: {exc}") from None
        if ph.on:
            inner = list(getattr(self.backend, "last_phases", None) or [])
            if inner:
                ph.items += inner
                ph.last = inner[-1][2]
        if not self.is_running(vserver.xid):
            raise VcdError(Fault.MESYS, f"init of {vserver.name} died during its start: "
                                        f"{self.death_reason(vserver.xid)}"
                                        f"{self.console_tail(vserver.xid)}")
        if spec.ready:
            try:
                took = self.backend.wait_ready(vserver.xid, float(init["timeout"]))
            except libvserver.LibvserverError as exc:
                raise VcdError(Fault.MESYS, f"start of {vserver.name}: {exc}"
                                            f"{self.console_tail(vserver.xid)}") from None
            if took is not None:
                log.info("%s (xid %d) is ready %.2f s after its init started", vserver.name,
                         vserver.xid, took)
        ph.mark("vcd: running? after the start (and a readiness wait)")
        log.info("started %s (xid %d)", vserver.name, vserver.xid)
        if ph.on:
            ph.mark("vcd: log")
            with open(os.environ[phases.ENV], "a") as f:
                f.write(json.dumps(ph.items) + "\n")

    def console_tail(self, xid: int, lines: int = 20) -> str:
        """The last console lines of xid (what init said before it died), as a suffix."""
        try:
            data, _ = self.backend.console(xid, lines=lines)
        except libvserver.LibvserverError:
            return ""
        text = data.decode("utf-8", errors="replace").strip()
        return f"; last console lines:\n{text}" if text else ""

    def death_reason(self, xid: int) -> str:
        """Why the init of xid ended, as the backend recorded it (it may take a moment
        to reap it), in words a vserver owner can act on."""
        ended = self.backend.last_exit(xid, wait=INIT_EXIT_WAIT)
        if ended is None:
            return "no exit status recorded"
        reason = str(ended.get("reason", "unknown"))
        if reason == f"signal {signal.SIGKILL}":
            return (f"{reason} (SIGKILL: killed, e.g. by its memory limit; see "
                    f"vxdb.vx.limit.get)")
        return reason

    def forget(self, vserver: VServer) -> None:
        """Remove what the backend keeps for a removed vserver's xid (disk image,
        cgroups, state), so the next vserver that gets the xid starts clean."""
        try:
            self.backend.forget(vserver.xid)
        except libvserver.AlreadyRunning:
            raise VcdError(Fault.MERUNNING, vserver.name) from None
        except (libvserver.LibvserverError, OSError) as exc:
            raise VcdError(Fault.MESYS, f"leftovers of {vserver.name} (xid {vserver.xid}) "
                                        f"cannot be removed: {exc}") from None

    def stop(self, db: vxdb.Connection, vserver: VServer,
             init: dict[str, Any] | None = None) -> str:
        """Halt a running vserver: send init its halt signal, or run its halt command,
        wait up to its init timeout, kill what is left. Returns the halt command's output,
        "" when a signal was sent. `init`: its `init_settings`, read by a caller that has
        also cleared its restart request (`forget_restarts`) in its own transaction."""
        if init is None:
            with vxdb.transaction(db, immediate=True):
                init = init_settings(db, vserver.xid)
                forget_restarts(db, [vserver.xid])
        self.require_running(vserver)
        marker = self.stop_marker(vserver.xid)
        self.stop_markers.mkdir(mode=0o700, parents=True, exist_ok=True)
        marker.touch(mode=0o600)
        try:
            output = self._halt(vserver, init)
        except BaseException:
            # the end (if any) is reported through vshelper as usual
            marker.unlink(missing_ok=True)
            raise
        log.info("stopped %s (xid %d)", vserver.name, vserver.xid)
        return output

    def _halt(self, vserver: VServer, init: dict[str, Any]) -> str:
        halt_argv = shlex.split(init["halt"])
        if init["halt_signal"]:
            self.kill(vserver, 1, vocab.signal_number(init["halt_signal"]))
            halt_argv = []  # the backend only waits for the end and cleans up
        try:
            return self.backend.stop(vserver.xid, halt_argv, float(init["timeout"]))
        except libvserver.NotRunning:
            if not init["halt_signal"]:
                raise VcdError(Fault.MESTOPPED, vserver.name) from None
            return ""  # init obeyed the signal before the backend looked
        except libvserver.LibvserverError as exc:
            raise VcdError(Fault.MESYS, f"stop of {vserver.name} failed: {exc}") from None

    def reboot(self, db: vxdb.Connection, vserver: VServer) -> str:
        """Ask a running vserver's init to reboot: its reboot signal (answer ""), or its
        reboot command run inside (answer: the command's output). It comes back by itself."""
        with vxdb.transaction(db):
            init = init_settings(db, vserver.xid)
        self.require_running(vserver)
        if init["reboot_signal"]:
            self.kill(vserver, 1, vocab.signal_number(init["reboot_signal"]))
            return ""
        try:
            argv = shlex.split(init["reboot"])
        except ValueError as exc:
            raise VcdError(Fault.MEINVAL, f"reboot command of {vserver.name}: {exc}") from None
        return self.exec(vserver, argv or [vocab.DEFAULT_REBOOT])

    def exec(self, vserver: VServer, argv: list[str], timeout: float | None = None,
             stdin: bytes | None = None, raw: bool = False,
             on_output: Callable[[bytes], None] | None = None) -> str | bytes:
        """Run argv inside; its combined output (bytes when raw). timeout: seconds,
        default exec_timeout; stdin: bytes fed to it; on_output: each chunk as it comes.
        A non-zero exit N is fault 1000+N (errors.exec_failed), the output in its text."""
        self.require_running(vserver)
        seconds = self.config.exec_timeout if timeout is None else timeout
        try:
            result = self.backend.exec(vserver.xid, argv, timeout=seconds,
                                       output_cap=self.config.exec_output_cap, stdin=stdin,
                                       on_output=on_output)
        except libvserver.NotRunning:
            raise VcdError(Fault.MESTOPPED, vserver.name) from None
        except libvserver.LibvserverError as exc:
            raise VcdError(Fault.MESYS, f"exec in {vserver.name} failed: {exc}") from None
        output = result.output.decode("utf-8", errors="replace")
        if not result.entered:
            # not the command's exit status 126: it never ran (the reason is E1's line)
            why = output.strip() or "the entering process was killed before the command ran"
            raise VcdError(Fault.MESYS, f"exec in {vserver.name} failed: {why}")
        if result.timed_out:
            raise exec_failed(result.status or 137, output,
                              reason=f"command timed out after {seconds:g} s and was killed "
                                     f"(give vx.exec a 'timeout' in seconds, up to "
                                     f"exec_timeout_max = {self.config.exec_timeout_max:g}; "
                                     f"the default is exec_timeout = "
                                     f"{self.config.exec_timeout:g})")
        if result.status != 0:
            raise exec_failed(result.status, output)
        return result.output if raw else output

    def kill(self, vserver: VServer, pid: int, sig: int) -> None:
        self.require_running(vserver)
        try:
            self.backend.kill(vserver.xid, pid, sig)
        except libvserver.NotRunning:
            raise VcdError(Fault.MESTOPPED, vserver.name) from None
        except libvserver.NoSuchProcess as exc:
            raise VcdError(Fault.MEINVAL, f"'pid' {pid}: {exc}") from None
        except libvserver.LibvserverError as exc:
            raise VcdError(Fault.MESYS, str(exc)) from None

    def console(self, vserver: VServer, lines: int | None,
                offset: int | None) -> tuple[bytes, int]:
        try:
            return self.backend.console(vserver.xid, lines, offset)
        except libvserver.LibvserverError as exc:
            raise VcdError(Fault.MESYS, str(exc)) from None

    def stat(self, vserver: VServer, net: bool = False) -> libvserver.ContextStat:
        """Its counters; `net`: also those of each network interface (as many as the
        guest makes: only vx.netstatus asks, off the event loop)."""
        try:
            return self.backend.stat(vserver.xid, net=net)
        except libvserver.LibvserverError as exc:
            raise VcdError(Fault.MESYS, str(exc)) from None


def get(config: Config) -> Runtime:
    """The runtime of this process for this config (a worker keeps one backend)."""
    runtime = _runtimes.get(id(config))
    if runtime is None:
        _runtimes.clear()
        runtime = _runtimes[id(config)] = Runtime(config)
    return runtime


def boot(config: Config) -> None:
    """Start every member of the group `onboot` that is not running (vcd -b)."""
    from vcd.locks import vserver_lock
    db = vxdb.connect(config.vxdb_path)
    try:
        names = [r[0] for r in db.execute(
            "SELECT v.name FROM vservers v JOIN group_members m ON m.xid = v.xid "
            "JOIN groups g ON g.gid = m.gid WHERE g.name = 'onboot' ORDER BY v.name")]
        runtime = get(config)
        for name in names:
            try:
                with vserver_lock(config.rundir, [name]):
                    vserver = find_vserver(db, name)
                    if vserver is not None and not runtime.is_running(vserver.xid):
                        runtime.start(db, vserver)
            except VcdError as exc:
                log.error("boot: %s: %s", name, exc)
    finally:
        db.close()
