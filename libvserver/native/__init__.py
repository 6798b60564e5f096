"""The stock-kernel backend: namespaces, cgroups, pyroute2 and one supervisor process.

Processes
    daemon (NativeBackend) ──unix socket──▶ supervisor keeper (one per state_dir,
    detached, child subreaper) ──fork──▶ supervisor worker (single-threaded, serves
    the socket) ──fork──▶ init of each context.  A dead worker's inits fall to the
    keeper, which records how they end and forks a new worker (supervisor.py).
    Commands run inside (exec, halt) are forked by the caller itself, or by the
    entry server a long-lived caller starts (a daemon worker: enter.py, entercore.py).

Where things are
    cgroups     <hierarchy>/<cgroup_parent>/<xid> in every mounted hierarchy
                (v1 controllers, name=systemd, cgroup2): membership is "running".
    state_dir   a tmpfs of its own when it was on a disk (statedir.py):
                supervisor.sock, supervisor.lock (the keeper's pid), supervisor.log
                (and .1: cappedlog.py), <xid>.exit (why the last init ended),
                <xid>.load (load averages), <xid>.init (which process is its init),
                <xid>.notify (callbacks not yet run), <xid>.callback (the last
                callback's output), callbacks.failed (JSON lines, followed by vcd;
                .1 past its cap),
                notify.json (the callback's argv), reaped/<pid>.json (the keeper's
                records), stopping/<xid> (vcd stops it: no news for vcd),
                <xid>.console (its console log, console.py), <xid>.spec (the spec it
                was started with, and init's pid) and ns/<xid>/<type> (its
                namespaces, kept as bind mounts below a bind of ns/<xid> on one
                private tmpfs: handles.py).
    image_dir   <xid>.img, the ext4 image of a context with a disk limit.

Modules: backend (the Backend), supervisor, spawn (a context's PID 1 before init),
rootfs (mounts, pivot_root), confine (symlink-safe paths in the vdir), cgroups,
limits (limits → cgroups/rlimits/sysctls), netns (veth), quota (loop images),
enter (exec and login inside), handles (kept namespaces and spec), creds (the
entering process's credentials), seccomp (the default filter), stat (counters),
namespaces (syscall wrappers), client.
"""

from .backend import NativeBackend

__all__ = ["NativeBackend"]
