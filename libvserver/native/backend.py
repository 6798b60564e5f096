"""The stock-kernel backend: namespaces + cgroups + a supervisor (DESIGN.md)."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import time
from typing import Callable
from pathlib import Path

from ..api import (ENFORCED, AlreadyRunning, Backend, ContextSpec, ContextStat, ExecResult,
                   InvalidSpec, LibvserverError, NoSuchProcess, NotRunning, StartError,
                   not_enforced)
from . import console, enter, entercore, handles, idmap, limits, namespaces, quota, seccomp, stat, \
    statedir
from .cgroups import Layout
from .phases import Phases, wanted as phases_wanted
from .client import SupervisorClient
from .supervisor import init_pid_of, is_init

CCAP_WHY = {
    "SET_RLIMIT": "raising limits needs CAP_SYS_RESOURCE in the bounding set; there is no "
                  "per-context switch for it",
    "SYSLOG": "a stock kernel has no per-context syslog; the bounding set decides (SYSLOG bcap)",
    "SECURE_MOUNT": "mounting is governed by CAP_SYS_ADMIN only on a stock kernel",
    "SECURE_REMOUNT": "remounting is governed by CAP_SYS_ADMIN only on a stock kernel",
    "BINARY_MOUNT": "a stock kernel has no separate permission for binary mount data",
    "QUOTA_CTL": "quota control is governed by CAP_SYS_ADMIN only on a stock kernel",
    "ADMIN_MAPPER": "a stock kernel has no device-mapper permission per context",
    "ADMIN_CLOOP": "a stock kernel has no loop-device permission per context",
}
FLAG_WHY = {
    "INFO_PRIVATE": "no stock-kernel counterpart",
    "INFO_INIT": "the context's init is PID 1 of its PID namespace already",
    "INFO_HIDE": "no stock-kernel counterpart",
    "SCHED_HARD": "cpu quota is always hard; the flag itself changes nothing",
    "SCHED_PRIO": "no stock-kernel counterpart of priority buckets",
    "VIRT_MEM": "/proc/meminfo shows the host's memory (would need a FUSE overlay like lxcfs)",
    "VIRT_CPU": "/proc/stat shows the host's CPUs (would need a FUSE overlay like lxcfs)",
    "VIRT_LOAD": "/proc/loadavg shows the host's load (would need a FUSE overlay like lxcfs)",
    "VIRT_TIME": "a time namespace offsets only monotonic and boot time, not wall time",
    "HIDE_MOUNT": "the context sees its own mount namespace; host mounts are not listed anyway",
    "HIDE_VINFO": "no stock-kernel counterpart",
    "FORK_RSS": "no stock-kernel counterpart",
}


# How long entering waits for the handles of a context whose start is in progress; once
# they are kept but not yet published (init builds its root: handles.keep), as long as a
# start may take
HANDLES_WAIT = 5.0
HANDLES_KEPT_WAIT = 60.0    # supervisor.START_TIMEOUT
HALT_RUN_MIN = 1.0      # seconds
EXIT_RECORD_WAIT = 2.0  # seconds


class NativeBackend(Backend):
    name = "native"

    def __init__(self, state_dir: str | Path = "/run/vcd", cgroup_parent: str = "vcd",
                 notify_argv: list[str] | None = None,
                 image_dir: str | Path = "/var/lib/vcd/images",
                 load_interval: float = 5.0, idmap_base: int = idmap.DEFAULT_BASE) -> None:
        """``idmap_base``: where xid 2's host id range starts (see idmap.py); a second
        daemon on the same host (a test run) picks another so the ranges never meet."""
        self.state_dir = Path(state_dir)
        self.idmap_base = idmap.check_base(idmap_base)
        self.image_dir = Path(image_dir)
        self.layout = Layout(cgroup_parent)
        # veth names are global: a second parent (a test run) gets its own suffix
        self.net_tag = "" if cgroup_parent == "vcd" else hashlib.sha1(
            cgroup_parent.encode()).hexdigest()[:4]
        self.last_phases: list[list] = []   # of the last start, when asked for (phases.py)
        self.client = SupervisorClient(self.state_dir, cgroup_parent, notify_argv, self.net_tag,
                                       load_interval)

    # --- helpers --------------------------------------------------------------------------

    def init_pid(self, xid: int) -> int:
        pid = self._init_pid(xid, self.layout.pids(xid))
        if pid is None:
            raise NotRunning(f"context {xid} is not running")
        return pid

    def _init_pid(self, xid: int, pids: list[int]) -> int | None:
        """The context's PID 1 (see _init_pid_in)."""
        if not pids:
            return None
        return self._init_pid_in(pids, handles.load(self.state_dir, xid))

    @staticmethod
    def _init_pid_in(pids: list[int], kept: handles.Kept | None) -> int | None:
        """The context's PID 1 among its processes `pids`: the pid the supervisor
        recorded at start (`kept`) when it is still that process (in the group, PID 1 of
        the kept PID namespace), else the one process of the group that is PID 1 of a PID
        namespace one level below ours. A guest's processes in PID namespaces of its own
        (NSpid ... 1 three or more deep) never qualify."""
        if not pids:
            return None
        if kept is not None and kept.init_pid in pids and is_init(kept.init_pid):
            pidns = kept.ns.get("pid")
            try:
                if pidns is None or os.stat(pidns).st_ino == \
                        os.stat(f"/proc/{kept.init_pid}/ns/pid").st_ino:
                    return kept.init_pid
            except OSError:
                pass
        return init_pid_of(pids)

    def supervisor_pid(self) -> int:
        return int(self.client.call({"op": "ping"})["pid"])

    def shutdown(self) -> None:
        """Kill every context under this cgroup parent, stop the supervisor and remove
        the parent's cgroups and veth pairs: for tests, benchmarks and decommissioning a
        host. The daemon never calls it; contexts outlive vcd by design."""
        for xid in self.layout.xids():
            try:
                self.layout.kill_all(xid)
            except OSError:
                pass
        pids = []
        keeper = self._keeper_pid()
        try:
            # never start a supervisor only to stop it
            pids.append(int(self.client.call({"op": "ping"}, timeout=10, spawn=False)["pid"]))
            self.client.call({"op": "quit"}, timeout=10, spawn=False)
        except Exception:
            # gone already (what we want), or too busy to answer: reaping hundreds of the
            # contexts just killed and running their callbacks; SIGTERM to its keeper ends
            # keeper and worker
            if keeper is not None:
                try:
                    os.kill(keeper, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        if keeper is not None:
            pids.append(keeper)
        # its handles and records are removed only once it can no longer make new ones
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        for xid in self.layout.xids():
            self.layout.remove(xid, wait=5)
        handles.drop_all(self.state_dir)
        if not any(_alive(p) for p in pids):
            # the supervisor's tmpfs (statedir.py), with its socket, records and logs
            statedir.release(self.state_dir)
        self.layout.remove_parent()
        if self.net_tag:
            from pyroute2 import IPRoute
            with IPRoute() as ipr:
                for link in ipr.get_links():
                    name = link.get_attr("IFLA_IFNAME") or ""
                    if name.startswith("vx") and name.endswith(f"-{self.net_tag}"):
                        try:
                            ipr.link("del", index=link["index"])
                        except Exception:  # the peer's end may have taken it along
                            pass

    def _keeper_pid(self) -> int | None:
        """The supervisor keeper of this state dir (its lock file), if it still runs."""
        try:
            pid = int((self.state_dir / "supervisor.lock").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        # the pid may be somebody else's by now
        return pid if str(self.state_dir).encode() in cmdline else None

    # --- Backend --------------------------------------------------------------------------

    def start(self, spec: ContextSpec) -> None:
        """Start spec; with VCD_START_PHASES in the environment the phase timings of this
        start are left in ``last_phases`` (phases.py)."""
        ph = Phases(phases_wanted())
        spec.validate()
        if not Path(spec.vdir).is_dir():
            raise StartError(f"vdir {spec.vdir} is not a directory")
        image = None
        if spec.disk_limit is not None:
            image = quota.image_path(self.image_dir, spec.xid)
            quota.ensure_image(image, Path(spec.vdir), spec.disk_limit)
        ids = overlay = None
        if not spec.privileged:
            ids = self.id_range(spec.xid)
            clash = idmap.host_ids_in(ids)
            if clash:
                raise StartError(f"host ids {ids.host}..{ids.host + ids.count - 1} of context "
                                 f"{spec.xid} are in use on the host ({', '.join(clash[:3])}); "
                                 "choose another idmap_base")
            if image is None:
                overlay = shared_overlay(Path(spec.vdir))
                if overlay is not None:
                    migrate_overlay(overlay, ids)
                    # The vserver mounts the overlay itself; two overlays on one upper
                    # directory are undefined behaviour, so the host's goes (the template
                    # store mounts it again before the next start).
                    namespaces.umount2(os.path.realpath(spec.vdir), namespaces.MNT_DETACH)
        ph.mark("backend: checks (id range, disk image, shared template)")
        req = {"op": "start", "spec": spec.to_dict(), "image": str(image) if image else None,
               "ids": None if ids is None else [ids.host, ids.count], "overlay": overlay}
        if ph.on:
            req["phases"] = True
        resp = self.client.call(req)
        if ph.on:
            inside = resp.get("phases") or []
            if inside:
                ph.items.append(["backend: to the supervisor", ph.last, inside[0][1]])
                ph.items += inside
                ph.last = inside[-1][2]
            ph.mark("backend: from the supervisor")
            self.last_phases = ph.items

    def id_range(self, xid: int) -> idmap.IdRange:
        """The host uid/gid range of an unprivileged context xid."""
        return idmap.range_for(xid, self.idmap_base)

    def serve_long(self) -> None:
        # forked from a small helper, an entering process costs a fraction of a fork of
        # a daemon worker (enter.py)
        enter.use_entry_server()

    def exec(self, xid: int, argv: list[str], timeout: float = 30.0,
             output_cap: int = 1 << 20, stdin: bytes | None = None,
             on_output: Callable[[bytes], None] | None = None) -> ExecResult:
        r = self._exec(xid, argv, timeout, output_cap, stdin, on_output)
        if not r.entered and not self.layout.pids(xid):
            # a stop won the race between the check that it runs and entering it
            raise NotRunning(f"context {xid} is not running (it stopped as the command "
                             "was entering it)")
        return r

    def _exec(self, xid: int, argv: list[str], timeout: float, output_cap: int,
              stdin: bytes | None = None, on_output: Callable[[bytes], None] | None = None,
              kept: handles.Kept | None = None) -> ExecResult:
        if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv):
            raise InvalidSpec("argv is empty or has a NUL byte")
        entry = self.entry(xid, kept)
        try:
            r = enter.run(entry, argv, timeout, output_cap, stdin, on_output)
        finally:
            entry.close()
        if not r.entered and _ending(entry.init_pid):
            # the boot whose handles were opened ended before the command entered it (a
            # stop or a reboot: a PID namespace without its init refuses the fork, ENOMEM)
            raise NotRunning(f"context {xid} is not running (the boot it was entered in "
                             "ended as the command was entering it)")
        return r

    def entry(self, xid: int, kept: handles.Kept | None = None) -> enter.Entry:
        """What a new process needs to join context xid: the namespace handles the
        supervisor kept at start (opened), and the bounding set, rlimits and seccomp
        filter of the spec the context was started with. Caller closes it. ``kept``:
        the handles a caller loaded a moment ago and found the context's init with
        (`stop`), so they are not read twice."""
        if kept is None:
            pids = self.layout.pids(xid)
            kept = handles.load(self.state_dir, xid) if pids else None
            if self._init_pid_in(pids, kept) is None:
                raise NotRunning(f"context {xid} is not running")
            # a start in progress: init is in its cgroups before the supervisor has kept
            # its handles (it does so before it answers the start)
            begin = time.monotonic()
            while kept is None and self.layout.pids(xid) and (
                    time.monotonic() < begin + HANDLES_WAIT or
                    (time.monotonic() < begin + HANDLES_KEPT_WAIT and
                     handles.ns_dir(self.state_dir, xid).is_dir())):
                time.sleep(0.01)
                kept = handles.load(self.state_dir, xid)
            if kept is None and not self.layout.pids(xid):
                raise NotRunning(f"context {xid} is not running")
        if kept is None:
            raise LibvserverError(f"context {xid} has no recorded spec and namespaces (it was "
                                  "started by an older libvserver): restart it to enter it")
        if not handles.ALWAYS_KEPT <= set(kept.ns):
            # never enter only half: without its mount and PID namespaces the command
            # would run on the host
            raise LibvserverError(f"context {xid}: its namespace handles are not visible in "
                                  f"{handles.ns_dir(self.state_dir, xid)} (is this process in "
                                  "another mount namespace than the supervisor?)")
        try:
            program = seccomp.for_spec(kept.spec)
        except Exception as e:     # no libseccomp: never enter without the filter
            raise LibvserverError(f"context {xid}: the seccomp filter cannot be built "
                                  f"({type(e).__name__}: {e})") from None
        try:
            return enter.open_entry(self.layout, xid, kept, program)
        except FileNotFoundError:
            raise NotRunning(f"context {xid} is not running") from None

    def stop(self, xid: int, halt_argv: list[str], timeout: float = 15.0) -> str:
        pids = self.layout.pids(xid)
        kept = handles.load(self.state_dir, xid) if pids else None
        init = self._init_pid_in(pids, kept)
        if init is None:
            raise NotRunning(f"context {xid} is not running")
        try:
            init_fd: int | None = os.pidfd_open(init)
        except OSError:
            init_fd = None      # ended this very moment
        try:
            return self._stop(xid, halt_argv, timeout, kept, init_fd)
        finally:
            if init_fd is not None:
                os.close(init_fd)

    def _stop(self, xid: int, halt_argv: list[str], timeout: float, kept: handles.Kept | None,
              init_fd: int | None) -> str:
        deadline = time.monotonic() + timeout
        output = ""
        try:
            if halt_argv:  # empty: init was sent its halt signal by the caller
                # the clean entry of vx.exec, with the privileges of the spec it started
                # with; a halt command runs (at least HALT_RUN_MIN) also when the stop
                # waits for nothing after it (timeout 0)
                r = self._exec(xid, halt_argv, max(timeout, HALT_RUN_MIN), 64 * 1024,
                               kept=kept)
                output = r.output.decode(errors="replace")
        except (NotRunning, ProcessLookupError):
            pass
        except (LibvserverError, OSError) as e:
            # the context is killed all the same: a halt command that cannot be entered
            # (no descriptor left, the entry server gone) never keeps it running
            output = f"halt not run: {e}\n"
        self.layout.wait_empty(xid, max(0.0, deadline - time.monotonic()))
        self._kill_and_clean(xid, init_fd)
        return output

    def _kill_and_clean(self, xid: int, init_fd: int | None = None) -> None:
        """Kill what is left of xid, wait for it, and for the supervisor to have handled
        its init's end (`init_fd`: a pidfd of that init)."""
        end = time.monotonic() + 10
        # killing an empty (or removed) group is harmless: no read of it first
        while time.monotonic() < end:
            try:
                self.layout.kill_all(xid)
            except OSError as exc:
                # ENOENT/ENODEV: the supervisor saw init end and removed the groups meanwhile
                if exc.errno not in (errno.ENOENT, errno.ENODEV):
                    raise
                break
            # woken by the kernel when the group empties; killed again if it did not
            if self.layout.wait_empty(xid, 0.1):
                break
        # The group empties before its init is a zombie (a process leaves its cgroups
        # early in its exit; a PID namespace's init then waits for the namespace's other
        # processes to be reaped): asked too soon, the supervisor would have nothing to
        # reap yet and finish the context (its handles, veth, exit record) after the stop
        # has answered. The pidfd is readable once init is a zombie.
        if init_fd is not None:
            entercore.readable(init_fd, max(0.0, end - time.monotonic()))
        # Let the supervisor reap init and record the reason before the groups go away
        # (it removes them itself then; remove() finds what it could not).
        self.client.call({"op": "reap"})
        self.layout.remove(xid)

    def kill(self, xid: int, pid: int, sig: int) -> None:
        pids = self.layout.pids(xid)
        init = self._init_pid(xid, pids)
        if init is None:
            raise NotRunning(f"context {xid} is not running")
        if pid == 0:
            if sig == signal.SIGKILL:
                self.layout.kill_all(xid)
                return
            # every process of the context, also in PID namespaces of its own; not the
            # entering helpers in the group, which live in our PID namespace and belong to
            # a caller waiting for them
            for p in pids:
                member = self._member(xid, p)
                if member is not None:
                    fd, ns = member
                    try:
                        if len(ns) >= 2:
                            signal.pidfd_send_signal(fd, sig)
                    except ProcessLookupError:
                        pass
                    finally:
                        os.close(fd)
            return
        # the pid as the context sees it is the second NSpid entry of each of its
        # processes, also of those in PID namespaces of the guest's own
        for p in pids:
            member = self._member(xid, p)
            if member is None:
                continue
            fd, ns = member
            try:
                if len(ns) >= 2 and ns[1] == pid:
                    signal.pidfd_send_signal(fd, sig)
                    return
            except ProcessLookupError:
                return      # it ended after all: as good as signalled
            finally:
                os.close(fd)
        raise NoSuchProcess(f"no process {pid} in context {xid}")

    def _member(self, xid: int, p: int) -> tuple[int, list[int]] | None:
        """A pidfd of process ``p`` and its NSpid list when ``p`` is in the context,
        else None. The pidfd comes first and is found still alive after the reads of
        /proc/<p>, so both reads were about the process it signals: a pid read from
        cgroup.procs may have ended and been reused by a host process meanwhile."""
        try:
            fd = os.pidfd_open(p)
        except OSError:
            return None
        try:
            if self.layout.contains(xid, p):
                ns = stat.nspids(p)
                if ns and not entercore.readable(fd, 0):    # the pidfd: not ended
                    return fd, ns
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None

    def running(self) -> list[int]:
        return [x for x in self.layout.xids() if self.layout.pids(x)]

    def is_running(self, xid: int) -> bool:
        return bool(self.layout.pids(xid))

    def stat(self, xid: int, net: bool = True) -> ContextStat:
        pids = self.layout.pids(xid)
        return stat.collect(self.layout, xid, self._init_pid(xid, pids), self.state_dir,
                            net=net)

    def last_exit(self, xid: int, wait: float = 0.0) -> dict | None:
        """Why the last init of xid ended ({reason, status, time}), as the supervisor saw
        it. The supervisor records the end when it reaps init, which may be a moment after
        init left its groups (it leaves them before it is a zombie): with ``wait`` the
        supervisor is asked to reap until the record is there."""
        import json
        deadline = time.monotonic() + wait
        while True:
            try:
                return json.loads((self.state_dir / f"{xid}.exit").read_text())
            except (OSError, ValueError):
                pass
            if time.monotonic() >= deadline:
                return None
            self.client.call({"op": "reap"})
            time.sleep(0.01)

    def wait_ready(self, xid: int, timeout: float) -> float | None:
        """Seconds from start until init sent READY=1 (the supervisor writes <xid>.ready);
        StartError when init ends first or is not ready within ``timeout`` seconds (the
        context keeps running then)."""
        import json
        t0 = time.monotonic()
        ready = self.state_dir / f"{xid}.ready"
        started = (self.state_dir / f"{xid}.init")
        try:
            since = started.stat().st_mtime
        except OSError:
            since = time.time()
        while True:
            try:
                got = json.loads(ready.read_text())
                return max(0.0, float(got["time"]) - since)
            except (OSError, ValueError, KeyError, TypeError):
                pass
            if not self.layout.pids(xid):
                ended = self.last_exit(xid, wait=EXIT_RECORD_WAIT) or {}
                raise StartError(f"init ended before it was ready "
                                 f"({ended.get('reason', 'no exit status recorded')})")
            if time.monotonic() - t0 >= timeout:
                raise StartError(f"init did not report READY=1 within {timeout:g} s (the "
                                 f"init timeout); it keeps running")
            time.sleep(0.02)

    def console(self, xid: int, lines: int | None = 100,
                offset: int | None = None) -> tuple[bytes, int]:
        return console.read(self.state_dir, xid, lines, offset)

    def forget(self, xid: int) -> None:
        if self.layout.pids(xid):
            raise AlreadyRunning(f"context {xid} is running")
        image = quota.image_path(self.image_dir, xid)
        for path in (image, image.with_suffix(".new")):
            path.unlink(missing_ok=True)
        for group in self.layout.context_groups(xid):
            # groups a guest made below its own go first: rmdir needs them empty
            for below, _, _ in os.walk(group, topdown=False):
                try:
                    os.rmdir(below)
                except OSError:
                    pass
        if not self.layout.remove(xid, wait=2.0):
            raise LibvserverError(f"the cgroups of context {xid} cannot be removed")
        console.forget(self.state_dir, xid)
        for suffix in ("exit", "load"):
            (self.state_dir / f"{xid}.{suffix}").unlink(missing_ok=True)

    def enforcement(self, spec: ContextSpec) -> dict[str, str]:
        return enforcement(self.layout, spec)


def shared_overlay(vdir: Path) -> dict | None:
    """{lower, upper, work} if vdir is the host's overlay mount of a shared template
    (templates.store mounts it there), else None."""
    real = os.path.realpath(vdir)
    try:
        if os.stat(real).st_dev == os.stat(os.path.dirname(real)).st_dev:
            # the top mount on vdir (if any) is of its parent's filesystem: a bind mount
            # maybe, never an overlay (each overlay has a device number of its own), so
            # no reading of the whole mount table (thousands of lines on a busy host)
            return None
    except OSError:
        pass
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if left.split()[4] != real.replace(" ", "\\040"):
                continue
            fstype, _src, opts = (right.split() + ["", "", ""])[:3]
            found = None  # the last mount on the path is the one seen
            if fstype == "overlay":
                kv = dict(o.partition("=")[::2] for o in opts.split(","))
                if kv.get("lowerdir") and kv.get("upperdir") and kv.get("workdir") \
                        and ":" not in kv["lowerdir"]:
                    found = {"lower": kv["lowerdir"], "upper": kv["upperdir"],
                             "work": kv["workdir"]}
    return found


def migrate_overlay(overlay: dict, ids: idmap.IdRange) -> None:
    """One-time migration of a shared vserver made before user namespaces: its overlay
    upper and work directories were written by host root; the overlay is now mounted
    inside the vserver's user namespace, so they must belong to its id range (host ids
    0..65535 become ids.host + the same).  The template (lower layer) is never touched.
    Directories that were made opaque before (trusted.overlay.opaque) are not converted
    to the user.overlay.* xattrs the unprivileged overlay reads."""
    for key in ("upper", "work"):
        st = os.lstat(overlay[key])
        if not ids.contains(st.st_uid):
            idmap.shift_tree(overlay[key], ids)


def _alive(pid: int) -> bool:
    fields = stat.stat_fields(pid)
    return bool(fields) and fields[0] != b"Z"


PF_EXITING = 0x4    # linux/sched.h: the task is in do_exit()


def _ending(pid: int) -> bool:
    """Whether process pid is gone, a zombie, or exiting: an init that exits kills its
    PID namespace's processes and refuses their forks before it is a zombie."""
    fields = stat.stat_fields(pid)
    return not fields or fields[0] == b"Z" or bool(int(fields[6]) & PF_EXITING)


def enforcement(layout: Layout, spec: ContextSpec) -> dict[str, str]:
    out: dict[str, str] = {}
    if spec.privileged:
        why = ("privileged vserver (admin setting): no user namespace, guest root is host "
               "root")
        for key in ("userns", "cgroupns", "masks"):
            out[f"security:{key}"] = not_enforced(why)
    else:
        out["security:userns"] = ENFORCED
        out["security:cgroupns"] = ENFORCED
        # the masks are mounts in the vserver's own mount namespace: CAP_SYS_ADMIN in there
        # can take them off (the user namespace still keeps host-wide files unwritable)
        out["security:masks"] = ENFORCED if "SYS_ADMIN" not in spec.bcaps else not_enforced(
            "SYS_ADMIN is in the bounding set: root inside can unmount the masks of /proc "
            "and /sys (host-wide sysctls and files stay unwritable to its user namespace)")
    if spec.api_mounts:
        # a distribution's init (issue 16) with the template's extra bcaps: they are
        # capabilities over the vserver's own namespaces only inside its user namespace
        out["security:distro_init"] = ENFORCED if not spec.privileged else not_enforced(
            "privileged: the init's capabilities (SETPCAP, SYS_ADMIN, ...) are the host's; "
            "vx.start refuses it while SYS_ADMIN is in its bounding set")
    host_caps = namespaces.bounding_set()
    from ..api import CAP_NUMBERS
    for cap in sorted(spec.bcaps):
        # in a user namespace of its own a context holds its bcaps there whatever the
        # host's bounding set is (they mean capabilities over its namespaces only)
        out[f"bcap:{cap}"] = ENFORCED if not spec.privileged or CAP_NUMBERS[cap] in host_caps \
            else not_enforced(f"CAP_{cap} is not in the host's bounding set, so no "
                              "privileged context can hold it")
    new_net = bool(spec.addresses) or "HIDE_NETIF" in spec.flags
    for ccap in sorted(spec.ccaps):
        if ccap == "SET_UTSNAME":
            ok = "SYS_ADMIN" in spec.bcaps and CAP_NUMBERS["SYS_ADMIN"] in host_caps
            out["ccap:SET_UTSNAME"] = ENFORCED if ok else not_enforced(
                "setting the hostname needs CAP_SYS_ADMIN, which the bounding set lacks "
                "(a user namespace would grant it)")
        elif ccap == "RAW_ICMP":
            out["ccap:RAW_ICMP"] = ENFORCED if new_net else not_enforced(
                "ping_group_range is per network namespace and the context has none "
                "(no addresses, no HIDE_NETIF)")
        else:
            out[f"ccap:{ccap}"] = not_enforced(CCAP_WHY.get(ccap, "no stock-kernel mechanism"))
    for flag in sorted(spec.flags):
        if flag == "VIRT_UPTIME":
            out["flag:VIRT_UPTIME"] = ENFORCED if namespaces.has_time_namespace() else \
                not_enforced("this kernel has no time namespaces")
        elif flag == "HIDE_NETIF":
            out["flag:HIDE_NETIF"] = ENFORCED
        elif flag == "SCHED_PAUSE":
            has_freezer = layout.v2_freezer or layout.has("freezer")
            out["flag:SCHED_PAUSE"] = ENFORCED if has_freezer else not_enforced(
                "no cgroup freezer on this host")
        else:
            out[f"flag:{flag}"] = not_enforced(FLAG_WHY.get(flag, "no stock-kernel counterpart"))
    plans = {p.type: p for p in limits.rlimit_plan(spec)}
    for lim in spec.limits:
        key = f"limit:{lim.type}"
        if not limits.limit_is_set(lim):
            continue
        if lim.type == "NPROC":
            if not layout.has("pids"):
                out[key] = not_enforced("no pids cgroup controller")
            elif lim.hard is None:
                out[key] = not_enforced("pids.max has no soft limit; set a hard value")
            else:
                out[key] = ENFORCED
        elif lim.type in limits.MEMORY_CGROUP_TYPES:
            out[key] = ENFORCED if layout.has("memory") else not_enforced(
                "no memory cgroup controller")
        elif lim.type in limits.RLIMITS:
            p = plans.get(lim.type)
            if p is not None and p.capped:
                out[key] = not_enforced(
                    f"hard limit above the host's ({p.hard}) and CAP_SYS_RESOURCE is missing; "
                    "the host's value applies")
            else:
                out[key] = ENFORCED
        elif lim.type in limits.IPC_SYSCTLS:
            out[key] = ENFORCED if lim.hard is not None else not_enforced(
                "IPC namespace sysctls take only a hard value")
        else:
            out[key] = not_enforced(limits.NOT_MAPPED.get(lim.type, "no stock-kernel mechanism"))
    bucket = limits.sched_bucket(spec)
    if bucket is not None:
        if not layout.has("cpu"):
            out["sched"] = not_enforced("no cpu cgroup controller")
        else:
            plan = limits.cpu_plan(bucket)
            out["sched"] = ENFORCED if (plan.quota_us or plan.shares) else not_enforced(
                "neither fillrate/interval nor fillrate2/interval2 is set")
            if bucket.tokensmax:
                out["sched:tokensmax"] = ENFORCED if _burst_supported(layout) else \
                    not_enforced("this kernel has no CFS burst")
            if bucket.tokensmin:
                out["sched:tokensmin"] = not_enforced("CFS has no minimum-tokens threshold")
            if len(spec.sched) > 1:
                out["sched:cpuid"] = not_enforced("one bucket per context; per-CPU buckets "
                                                  "are not distinguished")
    if spec.cpuset is not None:
        out["cpuset"] = ENFORCED if layout.has("cpuset") else not_enforced(
            "no cpuset cgroup controller")
        if spec.cpuset.virtualize:
            out["cpuset:virtualize"] = not_enforced("/proc/cpuinfo shows every host CPU")
    for key in sorted(spec.uname):
        out[f"uname:{key}"] = ENFORCED if key in ("NODENAME", "DOMAINNAME") else not_enforced(
            f"a stock kernel reports its own {key.lower()} in every UTS namespace")
    if spec.addresses:
        out["addresses"] = ENFORCED
        if any(":" in a.addr for a in spec.addresses):
            out["addresses:ipv6"] = not_enforced(
                "IPv6 addresses are set inside, but the context has no route back to the "
                "host (no NDP proxy for the host's addresses), and IPv6 from it is not "
                "filtered by source (IPv6 has no rp_filter)")
    if spec.broadcast:
        out["broadcast"] = ENFORCED if spec.addresses else not_enforced("no address to go with")
    if spec.disk_limit is not None:
        out["disk_limit"] = ENFORCED
    if spec.mounts:
        out["mounts"] = ENFORCED
    return out


def _burst_supported(layout: Layout) -> bool:
    h = layout.by_ctrl["cpu"]
    if h.version == 1:
        return (h.path / "cpu.cfs_burst_us").exists()
    return any(h.path.glob("*/cpu.max.burst"))
