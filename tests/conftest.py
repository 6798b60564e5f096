"""Shared fixtures: a real `vcd` daemon on loopback with its own temporary directories.

    def test_something(vcd):                 # a fresh daemon for this test
        admin = vcd.proxy()                  # authenticated as admin
        admin.call("vxdb.list", username="") # -> method(auth struct, {"username": ""})
        admin.vxdb.list(username="")         # the same, attribute style
        vcd.proxy("bob", "secret123").vcd.login()

    def test_other(vcd_module): ...          # one daemon shared by a module's tests

    def test_custom(make_vcd):               # a daemon with extra config keys
        d = make_vcd(timeout=2.0, workers=2)

Every daemon is stopped (SIGTERM, then SIGKILL of it and of its workers) when its
fixture ends, whether or not the test passed.
"""
from __future__ import annotations

import glob
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from vcdtest import CGROUP_PARENT, VcdDaemon, build_probe, is_test_cgroup_parent


@pytest.fixture
def make_vcd(tmp_path: Path) -> Iterator[Callable[..., VcdDaemon]]:
    """A factory: `make_vcd(**config_keys)` starts a daemon (started=False to only prepare it)."""
    daemons: list[VcdDaemon] = []

    def make(*, start: bool = True, name: str | None = None, **config: Any) -> VcdDaemon:
        root = tmp_path / (name or f"vcd{len(daemons)}")
        daemon = VcdDaemon(root, **config)
        daemons.append(daemon)
        if start:
            daemon.start()
        return daemon

    try:
        yield make
    finally:
        for daemon in daemons:
            daemon.cleanup()


@pytest.fixture
def vcd(make_vcd: Callable[..., VcdDaemon]) -> VcdDaemon:
    """A running daemon of its own for one test."""
    return make_vcd()


@pytest.fixture(scope="module")
def vcd_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VcdDaemon]:
    """One running daemon shared by the tests of a module (don't stop or reconfigure it)."""
    daemon = VcdDaemon(tmp_path_factory.mktemp("vcd_module"))
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The static in-vserver probe (tests/backend/probes/probe.c), built once per run."""
    return build_probe(tmp_path_factory.mktemp("probe") / "probe")


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_contexts() -> Iterator[None]:
    """At the end of the run: no context, supervisor or cgroup of this run is left."""
    yield
    # the supervisors of this run's daemons outlive them by design; end them now
    for proc in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            argv = Path(proc).read_bytes().split(b"\0")
        except OSError:
            continue
        if b"libvserver.native.supervisor" in b" ".join(argv) and \
                any(is_test_cgroup_parent(a.decode(errors="replace")) for a in argv):
            pid = int(proc.split("/")[2])
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    parents = [p for pattern in (f"/sys/fs/cgroup/*/{CGROUP_PARENT}*", f"/sys/fs/cgroup/unified/{CGROUP_PARENT}*")
               for p in glob.glob(pattern) if is_test_cgroup_parent(os.path.basename(p))]
    for parent in parents:
        for child in sorted(glob.glob(f"{parent}/*/"), reverse=True):
            while True:
                try:
                    os.rmdir(child)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
        try:
            os.rmdir(parent)
        except OSError:
            pass
    # a daemon that was killed leaves its cgroup-parent lock (vcd.ownership) behind
    for lock in glob.glob(f"/run/lock/vcd/cgroup-{CGROUP_PARENT}*.lock"):
        if is_test_cgroup_parent(os.path.basename(lock)[len("cgroup-"):-len(".lock")]):
            try:
                os.unlink(lock)
            except OSError:
                pass
