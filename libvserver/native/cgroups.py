"""Per-context cgroups on cgroup v1, v2 or a mix of both.

A context's cgroup is ``<hierarchy>/<parent>/<xid>`` in every hierarchy this
machine has. Membership is the source of truth for "running", nproc and
kill-all, so nothing about a context is lost when a process of vcd dies.

An unprivileged context gets its cgroup2 group delegated to its root (as
systemd's "Control Group APIs and Delegation" describes): it may make child
groups and move its processes there.  So everything here that counts, kills,
freezes or removes works on the whole subtree of the context's group; the v1
groups (where the limits are) are never delegated.
Each controller is used from the hierarchy that has it: a v1 mount of it,
else the cgroup2 hierarchy when the controller is enabled there.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import time
from dataclasses import dataclass, field
from pathlib import Path

# wait_empty's re-reads of cgroup.events while it also waits for the kernel's signal (ms)
POLL_SLICE_MIN = 2
POLL_SLICE_MAX = 100

CONTROLLERS = ("pids", "memory", "cpu", "cpuacct", "cpuset", "freezer", "blkio", "devices", "io")
# v1 controllers a context needs a group of its own in: its limits. Also, only where no
# cgroup2 group does it: cpuacct (its CPU times; cgroup2 has cpu.stat) and freezer
# (cgroup2's own cgroup.freeze, Linux 5.2: V2_FREEZER). Not devices: no spec writes a
# device rule (the vserver's user namespace is what keeps it from making device nodes),
# so a group of its own would only copy the parent's rules.
PER_CONTEXT_V1 = frozenset({"pids", "memory", "cpu", "cpuset"})
# the first kernel whose cgroup2 groups (every one but the root) have cgroup.freeze
V2_FREEZER = (5, 2)
# the group shared by the contexts that pin no CPU in a v1 hierarchy of cpuset alone
# (Layout.pinned_only); not a number, so never taken for a context's (Layout.xids)
UNPINNED = "unpinned"


@dataclass(frozen=True)
class Hierarchy:
    path: Path
    version: int
    controllers: frozenset[str] = field(default_factory=frozenset)


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace(
        "\\134", "\\")


def discover(mountinfo: str = "/proc/self/mountinfo") -> list[Hierarchy]:
    """The cgroup hierarchies mounted here (first mount of each)."""
    found: list[Hierarchy] = []
    seen: set[frozenset[str] | str] = set()
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            fstype, _src, superopts = (right.split() + ["", "", ""])[:3]
            if fields[3] != "/":
                continue  # a bind of a sub-cgroup (inside a container): not a hierarchy root
            mnt = Path(_unescape(fields[4]))
            if fstype == "cgroup2":
                if "v2" in seen:
                    continue
                seen.add("v2")
                ctrl_file = mnt / "cgroup.controllers"
                ctrls = frozenset(ctrl_file.read_text().split()) if ctrl_file.exists() else frozenset()
                found.append(Hierarchy(mnt, 2, ctrls))
            elif fstype == "cgroup":
                opts = superopts.split(",")
                ctrls = frozenset(o for o in opts if o in CONTROLLERS)
                if not ctrls:
                    # Of the named hierarchies only systemd's matters: a v1-only systemd
                    # tracks (and kills) a service's processes there, so contexts must
                    # leave the daemon's unit in it too (beside cgroup2, for the shared
                    # parent group: Layout._shared_by_contexts).
                    if "name=systemd" not in opts or "name=systemd" in seen:
                        continue
                    seen.add("name=systemd")
                elif ctrls in seen:
                    continue
                else:
                    seen.add(ctrls)
                found.append(Hierarchy(mnt, 1, ctrls))
    return found


class Layout:
    """Where each controller lives, and the paths of a context's groups."""

    def __init__(self, parent: str, hierarchies: list[Hierarchy] | None = None) -> None:
        if not parent or parent.startswith("/") or ".." in parent.split("/"):
            raise ValueError(f"cgroup parent {parent!r} must be a relative path")
        self.parent = parent.strip("/")
        self.hierarchies = discover() if hierarchies is None else hierarchies
        if not self.hierarchies:
            raise OSError(errno.ENOENT, "no cgroup hierarchy is mounted")
        self.v2 = next((h for h in self.hierarchies if h.version == 2), None)
        # whether freeze() works in the context's cgroup2 group (no v1 freezer group needed)
        self.v2_freezer = self.v2 is not None and kernel_at_least(V2_FREEZER)
        # v1 hierarchies where every context shares the parent group instead of a group
        # of its own (see _shared_by_contexts)
        self.shared = frozenset(h.path for h in self.hierarchies if self._shared_by_contexts(h))
        # a v1 hierarchy of cpuset alone: a context has a group of its own there only when
        # its spec pins CPUs or memory nodes (create(cpuset=True)); the others share one
        # group, UNPINNED, whose cpus and mems a group of theirs would only have copied
        self.pinned_only = next((h.path for h in self.hierarchies if h.version == 1 and
                                 h.controllers == {"cpuset"}), None)
        self.by_ctrl: dict[str, Hierarchy] = {}
        for h in self.hierarchies:
            if h.version == 1 and h.path not in self.shared:
                for c in h.controllers:
                    self.by_ctrl[c] = h
        if self.v2 is not None:
            for c in self.v2.controllers:
                self.by_ctrl.setdefault(c, self.v2)
        # Membership from cgroup2 when it exists (cgroup.kill, populated events), else
        # from the pids or first v1 hierarchy.
        self.primary = self.v2 or self.by_ctrl.get("pids") or next(
            (h for h in self.hierarchies if h.controllers), self.hierarchies[0])
        # hierarchies whose parent group create() has made ready (see _prepare_parent)
        self._ready: set[Path] = set()

    def _shared_by_contexts(self, h: Hierarchy) -> bool:
        """A v1 hierarchy nothing needs a context's own group in: blkio (no limit of a
        spec is one), devices (no rule of a spec is one), cpuacct beside cgroup2, freezer
        beside a cgroup2 that freezes, and systemd's named hierarchy beside cgroup2 (a
        hybrid systemd tracks services there). A group costs in each hierarchy (its
        cgroup, pressure and statistics structures, a node per control file), ~7 KiB a
        context; in the shared parent a guest that mounts the hierarchy sees only its own
        processes (its PID namespace) and no other context's group, and can write none
        of its files (they are the host root's, which no vserver's user namespace maps)."""
        if h.version != 1:
            return False
        if not h.controllers:
            return self.v2 is not None
        needed = PER_CONTEXT_V1 | ({"cpuacct"} if self.v2 is None else frozenset()) | \
            (frozenset() if self.v2_freezer else {"freezer"})
        return not h.controllers & needed

    def has(self, ctrl: str) -> bool:
        return ctrl in self.by_ctrl

    def group(self, h: Hierarchy, xid: int | None = None) -> Path:
        """The parent group (xid None), or where context xid's processes are: its own
        group, the parent in a hierarchy the contexts share, or UNPINNED in the
        pinned_only one when its spec pins nothing (one access() there: the spec is not
        known here)."""
        p = h.path / self.parent
        if xid is None or h.path in self.shared:
            return p
        own = p / str(xid)
        if h.path == self.pinned_only and not os.access(own, os.F_OK):
            return p / UNPINNED
        return own

    def context_groups(self, xid: int) -> list[Path]:
        """The groups made for xid alone (what remove() removes)."""
        return [self.context_group(h, xid) for h in self.hierarchies if h.path not in self.shared]

    def context_group(self, h: Hierarchy, xid: int) -> Path:
        """The group of xid's own in h (in a pinned_only hierarchy it may not exist)."""
        return h.path / self.parent / str(xid)

    def path(self, ctrl: str, xid: int) -> Path:
        return self.group(self.by_ctrl[ctrl], xid)

    def procs_file(self, xid: int) -> Path:
        return self.group(self.primary, xid) / "cgroup.procs"

    def tasks_file(self, xid: int) -> Path:
        g = self.group(self.primary, xid)
        return g / ("cgroup.threads" if self.primary.version == 2 else "tasks")

    # --- lifecycle -------------------------------------------------------------------------

    def _prepare_parent(self, h: Hierarchy) -> None:
        """Make the parent group (each level) ready for contexts' groups. On v1 cpuset
        its cpus and mems are filled in and ``cgroup.clone_children`` is set, so that a
        new context's group is born with them (as LXC does) instead of being written
        two more files at every start."""
        parent = self.group(h)
        if not parent.is_dir():
            # One component at a time so cpuset/v2 set-up applies at each level.
            cur = h.path
            for part in self.parent.split("/"):
                cur = cur / part
                try:
                    cur.mkdir(mode=0o755)
                except FileExistsError:
                    continue
                self._init_level(h, cur)
        elif h.version == 1 and "cpuset" in h.controllers:
            self._init_level(h, parent)
        if h.version == 1 and "cpuset" in h.controllers:
            try:
                (parent / "cgroup.clone_children").write_text("1")
            except OSError:
                pass    # the context's group then gets its cpus and mems written

    def _make_unpinned(self, h: Hierarchy) -> None:
        """UNPINNED, the group of the pinned_only hierarchy every context whose spec pins
        nothing shares. Not the parent itself: the guest's cgroup namespace is rooted
        where it runs, and under the parent a guest that mounts the hierarchy would see
        the groups of the pinned contexts (their xids, their CPUs)."""
        g = h.path / self.parent / UNPINNED
        if os.access(g, os.F_OK):
            return
        try:
            g.mkdir(mode=0o755)
        except FileNotFoundError:
            self._prepare_parent(h)     # the parent was removed since
            g.mkdir(mode=0o755)
        except FileExistsError:
            return      # another supervisor's Layout made it meanwhile
        self._init_level(h, g)

    def _init_level(self, h: Hierarchy, d: Path) -> None:
        if h.version == 1 and "cpuset" in h.controllers:
            # A v1 cpuset group admits no task until cpus and mems are set.
            for f in ("cpuset.cpus", "cpuset.mems"):
                if not (d / f).read_text().strip():
                    (d / f).write_text((d.parent / f).read_text().strip() or "0")
        if h.version == 2:
            wanted = [c for c in ("cpu", "memory", "pids", "cpuset", "io") if c in h.controllers]
            for ctl_dir in (d.parent, d):
                for c in wanted:
                    try:
                        (ctl_dir / "cgroup.subtree_control").write_text(f"+{c}")
                    except OSError:
                        pass  # not delegated to us: the controller stays unused

    def create(self, xid: int, cpuset: bool = True) -> list[Path]:
        """Make the context's group in every hierarchy; returns them (undo with remove()).
        ``cpuset``: whether the context's spec pins CPUs or memory nodes (else it gets
        no group of its own in a hierarchy of cpuset alone, pinned_only: it shares
        UNPINNED). The parent groups are made ready once per Layout (a long-lived
        supervisor starts many contexts): again after any failure, and whenever a parent
        has gone."""
        made: list[Path] = []
        try:
            for h in self.hierarchies:
                if h.path not in self._ready:
                    self._prepare_parent(h)
                    self._ready.add(h.path)
                if h.path in self.shared:
                    if not os.access(self.group(h), os.F_OK):
                        self._prepare_parent(h)     # removed since (as below)
                    continue
                if h.path == self.pinned_only and not cpuset:
                    self._make_unpinned(h)
                    continue
                g = self.context_group(h, xid)
                try:
                    os.mkdir(g, 0o755)
                except FileNotFoundError:
                    # the parent was removed since (NativeBackend.shutdown, an admin)
                    self._prepare_parent(h)
                    os.mkdir(g, 0o755)
                made.append(g)
                if h.version == 1 and "cpuset" in h.controllers:
                    self._init_level(h, g)
        except BaseException:
            self._ready.clear()
            for g in reversed(made):
                _rmdir(g)
            raise
        return made

    def join(self, xid: int, pid: int = 0) -> None:
        """Move pid (0 = the caller) into the context's group of every hierarchy."""
        for h in self.hierarchies:
            (self.group(h, xid) / "cgroup.procs").write_text(str(pid or os.getpid()))

    def own_groups(self) -> dict[Path, Path]:
        """The calling process's group in each v1 hierarchy ({hierarchy root: group})."""
        lines = proc_cgroups("self")
        out: dict[Path, Path] = {}
        for h in self.hierarchies:
            if h.version != 1:
                continue
            path = _path_in(lines, h)
            if path is not None:
                out[h.path] = h.path / path.lstrip("/")
        return out

    def move_self(self, groups: list[Path]) -> None:
        """Move the calling thread into each group (v1 ``tasks``). A thread that moves
        itself (pid 0 into tasks, not cgroup.procs) skips the global threadgroup lock and
        the RCU grace period its writer waits for (milliseconds a migration otherwise);
        in a single-threaded process that moves the whole process."""
        for g in groups:
            with open(g / "tasks", "w") as f:
                f.write("0")

    def v1_groups(self, xid: int) -> list[Path]:
        return [self.group(h, xid) for h in self.hierarchies if h.version == 1]

    def open_v2(self, xid: int) -> int | None:
        """A descriptor of the context's cgroup2 group, for clone3's CLONE_INTO_CGROUP."""
        if self.v2 is None:
            return None
        return os.open(self.group(self.v2, xid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    # Files of a delegated cgroup2 group its owner may write (systemd's delegation doc);
    # the others (limits, cgroup.kill/freeze of the group itself) stay the host's.
    DELEGATE_FILES = ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")

    def delegate(self, xid: int, uid: int, gid: int) -> None:
        """Hand the context's cgroup2 group to host uid/gid (the guest's mapped root)."""
        if self.v2 is None:
            return
        g = self.group(self.v2, xid)
        os.chown(g, uid, gid)
        for name in self.DELEGATE_FILES:
            try:
                os.chown(g / name, uid, gid)
            except FileNotFoundError:
                pass

    def exists(self, xid: int) -> bool:
        return self.group(self.primary, xid).is_dir()

    def remove(self, xid: int, wait: float = 2.0) -> bool:
        """rmdir every group of xid with the child groups a guest made in it (deepest
        first); retries while exiting tasks still hold one."""
        deadline = time.monotonic() + wait
        ok = True
        for h in self.hierarchies:
            # in a shared hierarchy only a context started before it was shared (by an
            # older vcd) has a group of its own: removed all the same
            where = f"{h.path}/{self.parent}/{xid}"
            if not os.access(where, os.F_OK):
                continue    # gone already (the supervisor removes them when init ends)
            g = Path(where)
            try:
                # a directory's link count on cgroupfs is 2 + its subdirectories: a group
                # without child groups needs no walk
                subtree = [g] if os.stat(g).st_nlink <= 2 else _subtree(g)
            except FileNotFoundError:
                continue
            for g in reversed(subtree):
                while True:
                    if _rmdir(g):
                        break
                    if time.monotonic() > deadline:
                        ok = False
                        break
                    time.sleep(0.01)
        return ok

    def remove_parent(self) -> None:
        """rmdir the parent groups (with UNPINNED), where no context is left: for
        NativeBackend.shutdown. What is still busy stays."""
        for h in self.hierarchies:
            groups = [self.group(h)]
            if h.path == self.pinned_only:
                groups.insert(0, self.group(h) / UNPINNED)
            for g in groups:
                try:
                    os.rmdir(g)
                except OSError:
                    pass

    # --- reading ---------------------------------------------------------------------------

    def pids(self, xid: int) -> list[int]:
        """Processes of the context's whole subtree (a guest's own child groups too)."""
        return self._subtree_ids(xid, "cgroup.procs")

    def tids(self, xid: int) -> list[int]:
        return self._subtree_ids(xid, "cgroup.threads" if self.primary.version == 2 else "tasks")

    def _subtree_ids(self, xid: int, name: str) -> list[int]:
        # on every request's path (running?, init, stop): plain strings, few system calls
        g = f"{self.primary.path}/{self.parent}/{xid}"
        ids = _read_ids(f"{g}/{name}")
        try:
            # a directory's link count on cgroupfs is 2 + its subdirectories: child
            # groups (a guest's own, when delegated) are walked only when there are some
            if os.stat(g).st_nlink <= 2:
                return ids
        except OSError:
            return ids
        for sub in _subtree(Path(g))[1:]:
            ids += _read_ids(sub / name)
        return ids

    def contains(self, xid: int, pid: int) -> bool:
        """Whether process ``pid`` is in the context's subtree now, from its
        ``/proc/<pid>/cgroup`` line of the membership hierarchy (cgroups(7)). False when
        it is gone. A caller that holds a pidfd of ``pid`` and finds it still alive
        afterwards knows the answer was about that process, not a later one of the same
        number."""
        want = f"/{self.parent}/{xid}"
        try:
            path = _path_in(proc_cgroups(pid), self.primary)
        except OSError:
            return False
        return path is not None and (path == want or path.startswith(want + "/"))

    def xids(self) -> list[int]:
        base = self.group(self.primary)
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return []
        return sorted(int(n) for n in names if n.isdigit())

    def read(self, ctrl: str, xid: int, name: str) -> str | None:
        if ctrl not in self.by_ctrl:
            return None
        try:
            return (self.path(ctrl, xid) / name).read_text()
        except (FileNotFoundError, OSError):
            return None

    def write(self, ctrl: str, xid: int, name: str, value: str) -> None:
        (self.path(ctrl, xid) / name).write_text(value)

    def file_exists(self, ctrl: str, xid: int, name: str) -> bool:
        return ctrl in self.by_ctrl and (self.path(ctrl, xid) / name).exists()

    def wait_empty(self, xid: int, timeout: float) -> bool:
        """Wait until no process is left in the context's subtree (or timeout seconds);
        True when empty. On cgroup2 the kernel signals each change of ``populated`` in
        cgroup.events (poll POLLPRI), so no sleeping loop is needed; on v1, a 5 ms poll.

        That signal is not to be relied on alone: the kernel sends at most one per 20 ms
        (a later one waits for a timer, which removing the group cancels) and delivers it
        from a work queue; on a loaded host a stop was seen sleeping out its whole wait
        with the group long empty. So the file is read again after slices of
        POLL_SLICE_MIN, doubling up to POLL_SLICE_MAX: a missed wake-up costs little
        right after a kill, and a long wait (a graceful halt) wakes rarely."""
        deadline = time.monotonic() + timeout
        if self.v2 is not None and self.primary is self.v2:
            try:
                fd = os.open(f"{self.group(self.v2, xid)}/cgroup.events",
                             os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return True
            try:
                p = select.poll()
                p.register(fd, select.POLLPRI | select.POLLERR)
                slice_ms = POLL_SLICE_MIN
                while True:
                    if b"populated 0" in os.pread(fd, 4096, 0):
                        return True
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    p.poll(max(1, min(slice_ms, int(left * 1000))))
                    slice_ms = min(slice_ms * 2, POLL_SLICE_MAX)
            except OSError as e:
                if e.errno == errno.ENODEV:   # removed meanwhile: empty
                    return True
                raise
            finally:
                os.close(fd)
        while self.pids(xid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    # --- freezing and killing --------------------------------------------------------------

    def freeze(self, xid: int, frozen: bool) -> bool:
        """Freeze (or thaw) the context's whole subtree; False where no freezer exists.
        cgroup2's cgroup.freeze where there is one: it is the host's, not delegated
        (DELEGATE_FILES), and a child group a guest made and thaws stays frozen while
        an ancestor is (the kernel's effective freeze state counts every ancestor)."""
        if self.v2 is not None and (self.group(self.v2, xid) / "cgroup.freeze").exists():
            (self.group(self.v2, xid) / "cgroup.freeze").write_text("1" if frozen else "0")
            return True
        if "freezer" in self.by_ctrl and self.by_ctrl["freezer"].version == 1:
            (self.path("freezer", xid) / "freezer.state").write_text(
                "FROZEN" if frozen else "THAWED")
            return True
        return False

    def kill_all(self, xid: int) -> None:
        """SIGKILL every task of the group and its child groups, atomically where
        cgroup.kill exists (it kills the whole subtree)."""
        if self.v2 is not None:
            try:
                fd = os.open(f"{self.group(self.v2, xid)}/cgroup.kill", os.O_WRONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                pass    # no group, or a kernel without cgroup.kill (before 5.14)
            else:
                try:
                    os.write(fd, b"1")
                finally:
                    os.close(fd)
                return
        if not self.group(self.primary, xid).is_dir():
            return
        # Without cgroup.kill: freeze so nothing forks between reading and killing.
        frozen = self.freeze(xid, True)
        try:
            for pid in self.pids(xid):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
        finally:
            if frozen:
                self.freeze(xid, False)


def kernel_at_least(version: tuple[int, int], release: str | None = None) -> bool:
    """Whether the running kernel (or ``release``, as uname -r gives it) is at least
    version (major, minor)."""
    nums = []
    for part in (release or os.uname().release).split(".")[:2]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        nums.append(int(digits) if digits else 0)
    return tuple(nums) >= version


def proc_cgroups(pid: int | str) -> dict[frozenset[str], str]:
    """/proc/<pid>/cgroup (cgroups(7)) as {the hierarchy's controllers: the process's
    group}; cgroup2's line has no controllers. Raises OSError when the process is gone."""
    with open(f"/proc/{pid}/cgroup") as f:
        return {frozenset(filter(None, ctrls.split(","))): path
                for _, ctrls, path in (line.rstrip("\n").split(":", 2) for line in f)}


def _path_in(lines: dict[frozenset[str], str], h: Hierarchy) -> str | None:
    if h.version == 2:
        return lines.get(frozenset())
    key = h.controllers or frozenset({"name=systemd"})
    return next((p for k, p in lines.items() if k and key <= k), None)


def _subtree(g: Path) -> list[Path]:
    """g and every group below it, parents before children (empty if g is missing)."""
    if not g.is_dir():
        return []
    out = [g]
    for d in out:  # grows while iterating: breadth first
        try:
            with os.scandir(d) as it:
                out.extend(Path(e.path) for e in it if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return out


def _read_ids(p: Path | str) -> list[int]:
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = b""
            while chunk := os.read(fd, 65536):
                data += chunk
        finally:
            os.close(fd)
        return [int(x) for x in data.split()]
    except FileNotFoundError:
        return []
    except OSError as e:
        if e.errno == errno.ENODEV:  # the group is being removed right now
            return []
        raise


def _rmdir(p: Path) -> bool:
    try:
        os.rmdir(p)
        return True
    except FileNotFoundError:
        return True
    except OSError as e:
        if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
