"""Fixtures that start real contexts on this kernel and clean up everything they made.

Each session gets its own cgroup parent, state dir, image dir and veth tag, so it never
touches a running daemon's contexts, and its finalizer removes all of them even when a
test failed half-way.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import struct
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from libvserver import ContextSpec  # noqa: E402
from libvserver.native import NativeBackend  # noqa: E402
from libvserver.native.cgroups import discover  # noqa: E402
from vcdtest import build_probe  # noqa: E402

# What a new vserver gets by default (DESIGN.md).
DEFAULT_BCAPS = {"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL",
                 "SETGID", "SETUID", "NET_BIND_SERVICE", "SYS_CHROOT", "SYS_PTRACE", "SYS_BOOT",
                 "SYS_TTY_CONFIG", "LEASE"}

NOTIFY_SCRIPT = """\
import json, sys, time
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"action": sys.argv[2], "xid": int(sys.argv[3]), "t": time.time()}) + "\\n")
"""


def pytest_collection_modifyitems(config, items):
    reason = None
    if os.geteuid() != 0:
        reason = "libvserver tests start real contexts and need root"
    elif not discover():
        reason = "no cgroup hierarchy is mounted"
    if reason:
        for item in items:
            if "tests/backend" in str(item.fspath) and "vserver_syscall" not in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("libvserver")


@pytest.fixture(scope="session")
def rootfs(session_dir) -> Path:
    """A BusyBox root filesystem built once per session by the templates builder."""
    from templates.busybox import build_rootfs
    dest = session_dir / "rootfs"
    build_rootfs(dest, hostname="fromtemplate")
    return dest


@pytest.fixture(scope="session")
def notify_log(session_dir) -> Path:
    return session_dir / "notify.log"


def read_notify(log: Path, xid: int) -> list[str]:
    if not log.exists():
        return []
    return [e["action"] for e in map(json.loads, log.read_text().splitlines()) if e["xid"] == xid]


def wait_for(cond, timeout: float = 20.0, interval: float = 0.05):
    """Poll cond() until it is truthy; returns its value or fails with a clear message."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            pytest.fail(f"condition not reached within {timeout}s: {cond}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def backend(session_dir, notify_log):
    script = session_dir / "notify.py"
    script.write_text(NOTIFY_SCRIPT)
    parent = f"vcdtest-{os.getpid()}"
    b = NativeBackend(state_dir=session_dir / "state", cgroup_parent=parent,
                      notify_argv=[sys.executable, str(script), str(notify_log)],
                      image_dir=session_dir / "images", load_interval=0.5)
    yield b
    _teardown_backend(b)


def _teardown_backend(b: NativeBackend) -> None:
    b.shutdown()


_xids = itertools.count(40000 + os.getpid() % 5000)


@pytest.fixture
def vdir(rootfs, tmp_path) -> Path:
    """A private copy of the BusyBox rootfs for one test."""
    dest = tmp_path / "vdir"
    shutil.copytree(rootfs, dest, symlinks=True)
    return dest


@pytest.fixture
def make_spec(vdir):
    def make(**kw) -> ContextSpec:
        xid = kw.pop("xid", None) or next(_xids)
        base = dict(xid=xid, name=f"t{xid}", vdir=vdir, init=["/sbin/init"],
                    bcaps=set(DEFAULT_BCAPS), flags={"VIRT_UPTIME"})
        base.update(kw)
        return ContextSpec(**base)
    return make


@pytest.fixture
def started(backend):
    """start(spec) that always stops what it started, even when the test fails."""
    xids: list[int] = []

    def start(spec: ContextSpec) -> ContextSpec:
        xids.append(spec.xid)
        backend.start(spec)
        return spec

    yield start
    for xid in xids:
        if backend.layout.pids(xid):
            backend._kill_and_clean(xid)
        backend.layout.remove(xid, wait=5)


def sh(backend, xid: int, script: str, timeout: float = 20.0) -> tuple[int, str]:
    r = backend.exec(xid, ["/bin/sh", "-c", script], timeout=timeout)
    return r.status, r.output.decode(errors="replace")


@pytest.fixture
def run_sh(backend):
    return lambda xid, script, timeout=20.0: sh(backend, xid, script, timeout)


def cgroup_dirs(backend, xid: int) -> list[Path]:
    return [g for g in backend.layout.context_groups(xid) if g.exists()]


@pytest.fixture
def wait():
    return wait_for


@pytest.fixture
def notified(notify_log):
    return lambda xid: read_notify(notify_log, xid)


@pytest.fixture
def groups_of(backend):
    return lambda xid: cgroup_dirs(backend, xid)


@pytest.fixture(scope="session")
def probe(session_dir) -> Path:
    """tests/backend/probes/probe.c, compiled static once per session (gcc)."""
    out = session_dir / "probe"
    return out if out.exists() else build_probe(out)


@pytest.fixture
def probe_in(probe):
    """Copy the probe into a vdir as /bin/probe (mode 0755); returns the in-vserver path."""
    def install(vdir: Path, name: str = "probe", mode: int = 0o755) -> str:
        dest = vdir / "bin" / name
        shutil.copyfile(probe, dest)
        os.chmod(dest, mode)
        return f"/bin/{name}"
    return install


def _memcgs_charged_for(pid: int) -> set[int]:
    """Inode numbers of the memory cgroups charged for the pages pid has mapped
    (/proc/<pid>/pagemap gives each present page's frame, /proc/kpagecgroup its memcg)."""
    out: set[int] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap, \
            open("/proc/kpagecgroup", "rb") as kpagecgroup:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo >= 1 << 47:
                continue    # [vsyscall]
            pagemap.seek(lo // 4096 * 8)
            for (entry,) in struct.iter_unpack("<Q", pagemap.read((hi - lo) // 4096 * 8)):
                if entry >> 63:     # present
                    kpagecgroup.seek((entry & ((1 << 55) - 1)) * 8)
                    out.add(struct.unpack("<Q", kpagecgroup.read(8))[0])
    return out


@pytest.fixture
def memcgs_charged_for(backend):
    """memcgs_charged_for(pid): the memory cgroups (inode numbers) pid's pages are charged
    to; skips where the memory controller is not a v1 hierarchy (cgroup2's clone3 puts a
    process into its group without its parent entering it) or pages cannot be traced."""
    memory = backend.layout.by_ctrl.get("memory")
    if memory is None or memory.version != 1 or not os.path.exists("/proc/kpagecgroup"):
        pytest.skip("no v1 memory hierarchy or no /proc/kpagecgroup here")
    return _memcgs_charged_for
