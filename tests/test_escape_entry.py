"""Escapes through the entry path, tried from inside a vserver against a real daemon
(issue 11, items 3, 7, 8): the process that joins a vserver for vx.exec holds nothing of
the daemon, cannot be taken over, and opens nothing the guest planted."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from api_helpers import create_vserver
from vcdtest import VcdDaemon, daemon_fixture

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")



rt = daemon_fixture("escape-entry", workers=2, exec_timeout=10.0)


@pytest.fixture
def running(rt, probe):
    admin = rt.proxy()
    name = create_vserver(rt)
    shutil.copyfile(probe, rt.vbasedir / name / "bin" / "probe")
    os.chmod(rt.vbasedir / name / "bin" / "probe", 0o755)
    admin.vx.start(name=name)
    yield name
    if admin.vx.status(name=name)["running"]:
        admin.vx.stop(name=name)


def test_guest_dev_null_symlink_to_a_descriptor_reaches_nothing_of_the_daemon(rt, running):
    admin = rt.proxy()
    # In a user namespace /dev/null is a bind of the host's: a guest that may mount
    # (SYS_ADMIN in its bcaps) can still plant the symlink, on a /dev of its own.
    admin.vx.stop(name=running)
    admin.vxdb.vx.bcaps.add(name=running, bcap="SYS_ADMIN")
    admin.vx.start(name=running)
    admin.vx.exec(name=running, command="mount -t tmpfs none /dev")
    for fd in range(3, 12):
        admin.vx.exec(name=running, command=f"ln -sfn /proc/self/fd/{fd} /dev/null")
        assert admin.vx.exec(name=running, command="readlink /dev/null") == \
            f"/proc/self/fd/{fd}\n"
        out = admin.vx.exec(name=running, command="od -c -N 16")
        assert "SQLite" not in out and out.split() == ["0000000"], (fd, out)   # empty input
    # the command itself holds its stdio only (and the directory ls reads)
    assert admin.vx.exec(name=running, command="ls /proc/self/fd").split() == \
        ["0", "1", "2", "3"]


def _steal_during_execs(rt, name: str) -> tuple[list[str], set[str]]:
    """Run the probe's stealing loop inside while vx.exec runs 40 times; returns the
    links of every descriptor it took and the programs of the processes it attached to."""
    admin = rt.proxy()
    log = rt.vbasedir / name / "tmp" / "steal.log"
    # the guest's own boot script (a process of guest root like the probe) first: what
    # the probe took from it would be the guest's own, not an entering process's
    deadline = time.monotonic() + 20
    while "rcS" in admin.vx.exec(name=name,
                                 command="sh -c 'cat /proc/[0-9]*/cmdline 2>/dev/null; true'"):
        assert time.monotonic() < deadline, "the guest's boot script did not end"
        time.sleep(0.05)
    admin.vx.exec(name=name, command="sh -c '/bin/probe steal /tmp/steal.log 60 "
                                     ">/dev/null 2>&1 &'")
    deadline = time.monotonic() + 20
    while not (log.exists() and "started" in log.read_text()):
        assert time.monotonic() < deadline, "the stealing loop did not start"
        time.sleep(0.05)
    for _ in range(40):
        assert admin.vx.exec(name=name, command="true") == ""
    text = log.read_text()
    got = [line.split()[-1] for line in text.splitlines() if line.startswith("GOTFD")]
    attached = {line.split()[-1] for line in text.splitlines() if line.startswith("ATTACHED")}
    # a process it reached before exec is never a copy of the worker: the entering
    # process is then vsinit (C) or a fresh interpreter running libvserver's entercore.py
    for line in text.splitlines():
        if line.startswith("CMDLINE") and "python" in line:
            assert "entercore.py" in line, line
    # and the daemon still answers with its listening socket and VXDB its own
    assert admin.vx.status(name=name)["running"] is True
    return got, attached


def _has_user_namespace(rt, name: str) -> bool:
    uid_map = rt.proxy().vx.exec(name=name, command="cat /proc/self/uid_map").split()
    return uid_map != ["0", "0", "4294967295"]


def test_guest_never_takes_a_descriptor_of_the_worker_during_exec(rt, running):
    got, attached = _steal_during_execs(rt, running)
    if _has_user_namespace(rt, running):
        # the entering process is not dumpable and its memory is the host user
        # namespace's: guest root's CAP_SYS_PTRACE does not reach it
        assert got == [] and attached <= {"/bin/busybox", "(ENOENT)"}, (got, attached)
    else:
        # without a user namespace guest root's CAP_SYS_PTRACE is the host's: it may
        # reach the entering process before exec, which is then a fresh image holding
        # only the command's stdio, never the worker's memory, socket, log or VXDB
        assert all(link == "/dev/null" or link.startswith("pipe:") for link in got), got


def test_guest_without_sys_ptrace_cannot_touch_entering_processes(rt, running):
    admin = rt.proxy()
    admin.vx.stop(name=running)
    admin.vxdb.vx.bcaps.remove(name=running, bcap="SYS_PTRACE")
    admin.vx.start(name=running)
    got, attached = _steal_during_execs(rt, running)
    assert got == [], got
    # after exec, `true` (busybox) is a guest process like any other; before it, never
    assert attached <= {"/bin/busybox", "(ENOENT)"}, attached


def test_every_worker_enters_through_an_entry_server_of_its_own(rt, running):
    """A worker never forks itself into a vserver: each one has its small entry server
    (the backend's serve_long), which the entering processes are cloned from."""
    admin = rt.proxy()
    for _ in range(6):      # connections land on either worker
        assert admin.vx.exec(name=running, command="true") == ""
    children: dict[int, list[int]] = {}
    cmdline: dict[int, str] = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
            cmdline[int(p)] = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(p))
    # vsinit --enter (C) where make setup built it, else entercore.py --serve (Python)
    server_marks = ("entercore.py --serve", "vsinit --enter")
    workers = [p for p in children.get(rt.pid, [])
               if not any(m in cmdline.get(p, "") for m in server_marks)]
    assert len(workers) == 2, workers
    for w in workers:
        servers = [c for c in children.get(w, [])
                   if any(m in cmdline.get(c, "") for m in server_marks)]
        assert len(servers) == 1, (w, [cmdline.get(c) for c in children.get(w, [])])
