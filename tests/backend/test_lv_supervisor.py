"""The supervisor: reboot/halt detection, helper callbacks, restarts, load averages, stat."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# at import (collection), while "conftest" is tests/backend's: the name is another
# directory's conftest by the time a test of the whole suite runs
from conftest import NOTIFY_SCRIPT
from libvserver.native.supervisor import EXP, FIXED_1, actions_for, calc_load, is_init


@pytest.mark.parametrize("command,reason,actions", [
    (["/sbin/reboot", "-f"], "reboot", ["restart", "shutdown"]),
    (["/sbin/halt", "-f"], "halt", ["shutdown"]),
    (["/sbin/poweroff", "-f"], "halt", ["shutdown"]),
    (["/sbin/reboot"], "reboot", ["restart", "shutdown"]),
])
def test_reboot_and_halt_inside_are_told_apart(backend, make_spec, started, wait, notified,
                                                groups_of, command, reason, actions):
    spec = started(make_spec())
    backend.exec(spec.xid, command, timeout=10)
    wait(lambda: backend.last_exit(spec.xid) is not None)
    assert backend.last_exit(spec.xid)["reason"] == reason
    # the callbacks run in order, one after the other, after the cgroups are gone
    wait(lambda: notified(spec.xid) == actions)
    assert groups_of(spec.xid) == []
    assert not backend.is_running(spec.xid)


def test_context_can_be_started_again_after_a_reboot(backend, make_spec, started, wait, run_sh):
    spec = started(make_spec())
    backend.exec(spec.xid, ["/sbin/reboot", "-f"])
    wait(lambda: backend.last_exit(spec.xid) is not None)
    started(spec)
    assert run_sh(spec.xid, "true")[0] == 0


def test_init_is_a_child_of_the_one_supervisor(backend, make_spec, started):
    a = started(make_spec())
    b = started(make_spec())
    sup = backend.supervisor_pid()
    for spec in (a, b):
        init = backend.init_pid(spec.xid)
        with open(f"/proc/{init}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        assert ppid == sup


def test_contexts_survive_the_supervisor_and_a_new_one_adopts_them(
        backend, make_spec, started, wait, notified, run_sh, groups_of):
    spec = started(make_spec())
    old = backend.supervisor_pid()
    os.kill(old, signal.SIGKILL)
    wait(lambda: not os.path.exists(f"/proc/{old}") or _is_zombie(old))
    assert backend.is_running(spec.xid)
    # the next call starts a new supervisor, which finds the context in the cgroups
    assert run_sh(spec.xid, "echo alive")[1] == "alive\n"
    new = backend.supervisor_pid()
    assert new != old
    # its end is noticed with its reason: the keeper, now the init's parent, recorded it
    backend.kill(spec.xid, 1, signal.SIGKILL)
    wait(lambda: backend.last_exit(spec.xid) is not None)
    assert backend.last_exit(spec.xid)["reason"] == "signal 9"
    wait(lambda: notified(spec.xid) == ["shutdown"])
    wait(lambda: groups_of(spec.xid) == [])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_reboot_inside_a_context_adopted_by_a_new_supervisor_is_a_reboot(
        backend, make_spec, started, wait, notified, groups_of, sig):
    spec = started(make_spec())
    old = backend.supervisor_pid()
    os.kill(old, sig)
    wait(lambda: not os.path.exists(f"/proc/{old}") or _is_zombie(old))
    new = backend.supervisor_pid()
    assert new != old
    backend.exec(spec.xid, ["/sbin/reboot", "-f"], timeout=10)
    wait(lambda: backend.last_exit(spec.xid) is not None)
    assert backend.last_exit(spec.xid)["reason"] == "reboot"
    wait(lambda: notified(spec.xid) == ["restart", "shutdown"])
    wait(lambda: groups_of(spec.xid) == [])


def test_a_reboot_while_no_supervisor_worker_runs_is_reported_by_the_next(
        backend, make_spec, started, wait, notified, groups_of):
    spec = started(make_spec())
    keeper = _parent(backend.supervisor_pid())
    # stop the keeper from starting a new worker while the context reboots
    os.kill(keeper, signal.SIGSTOP)
    try:
        old = backend.supervisor_pid()
        init = backend.init_pid(spec.xid)
        os.kill(old, signal.SIGKILL)
        wait(lambda: _parent(init) == keeper)
        backend.exec(spec.xid, ["/sbin/reboot", "-f"], timeout=10)
        wait(lambda: _is_zombie(init))
    finally:
        os.kill(keeper, signal.SIGCONT)
    wait(lambda: backend.last_exit(spec.xid) is not None)
    assert backend.last_exit(spec.xid)["reason"] == "reboot"
    wait(lambda: notified(spec.xid) == ["restart", "shutdown"])
    wait(lambda: groups_of(spec.xid) == [])


def test_a_failing_callback_is_logged_with_its_output(make_spec, vdir, tmp_path, wait):
    from libvserver.native import NativeBackend
    b = NativeBackend(state_dir=tmp_path / "state", cgroup_parent=f"vcdtest-cb-{os.getpid()}",
                      notify_argv=["/bin/sh", "-c", "echo cannot reach vcd: no config >&2; exit 3",
                                   "callback"])
    try:
        spec = make_spec()
        b.start(spec)
        b.kill(spec.xid, 1, signal.SIGKILL)
        failed = tmp_path / "state" / "callbacks.failed"
        wait(lambda: failed.exists() and failed.read_text().count("\n") >= 1)
        record = json.loads(failed.read_text().splitlines()[0])
        assert record["xid"] == spec.xid and record["action"] == "shutdown"
        assert record["how"] == "exit status 3"
        assert record["output"] == "cannot reach vcd: no config"
        log = (tmp_path / "state" / "supervisor.log").read_text()
        assert "callback shutdown for context %d failed (exit status 3)" % spec.xid in log
        assert "cannot reach vcd: no config" in log
    finally:
        b.shutdown()


def test_a_failed_callbacks_output_is_one_line_of_the_supervisors_log(
        make_spec, vdir, tmp_path, wait):
    """The output of vshelper carries a guest's console lines (a reboot whose start
    failed): they must not make lines of their own in supervisor.log."""
    from libvserver.native import NativeBackend
    forged = "2026-11-30 10:00:00,000 1 INFO context 9 ended: halt"
    b = NativeBackend(state_dir=tmp_path / "state", cgroup_parent=f"vcdtest-cb1-{os.getpid()}",
                      notify_argv=["/bin/sh", "-c", f"printf 'console:\\n{forged}\\033[2K' >&2; "
                                   "exit 3", "callback"])
    try:
        spec = make_spec()
        b.start(spec)
        b.kill(spec.xid, 1, signal.SIGKILL)
        log_path = tmp_path / "state" / "supervisor.log"
        wait(lambda: "callback shutdown for context" in log_path.read_text())
        text = log_path.read_text()
        assert f"output: console:\\n{forged}\\x1b[2K" in text, text
        assert not any(line.startswith(forged) for line in text.splitlines()), text
        assert "\x1b" not in text
    finally:
        b.shutdown()


def test_failed_callbacks_keep_their_file_below_its_cap_on_the_state_tmpfs(
        make_spec, vdir, tmp_path, wait):
    """callbacks.failed gets a record of up to 4 KiB at every end whose callback fails:
    a tenant whose guest fails each reboot, started again in a loop, grew it without
    end on the state tmpfs (statedir.py) until starts were refused. Past its cap it
    moves whole to callbacks.failed.1 and the record goes to a new file."""
    from libvserver.native import NativeBackend
    from libvserver.native.supervisor import CALLBACKS_FAILED_CAP
    b = NativeBackend(state_dir=tmp_path / "state", cgroup_parent=f"vcdtest-cbcap-{os.getpid()}",
                      notify_argv=["/bin/sh", "-c", "echo no vcd >&2; exit 3", "callback"])
    try:
        spec = make_spec()
        b.start(spec)
        failed = tmp_path / "state" / "callbacks.failed"
        # what earlier failures left: one byte past the cap, in whole records
        line = json.dumps({"xid": 0, "action": "restart", "output": "x" * 4000}) + "\n"
        earlier = line * (CALLBACKS_FAILED_CAP // len(line) + 1)
        fd = os.open(failed, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(earlier)
        b.kill(spec.xid, 1, signal.SIGKILL)
        wait(lambda: failed.exists() and '"action": "shutdown"' in failed.read_text())
        records = [json.loads(x) for x in failed.read_text().splitlines()]
        assert [(r["xid"], r["action"], r["output"]) for r in records] == \
            [(spec.xid, "shutdown", "no vcd")]
        moved = tmp_path / "state" / "callbacks.failed.1"
        assert moved.read_text() == earlier
        assert moved.stat().st_mode & 0o777 == 0o600
    finally:
        b.shutdown()


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_supervisor_is_single_threaded(backend, make_spec, started):
    started(make_spec())
    with open(f"/proc/{backend.supervisor_pid()}/status") as f:
        threads = next(line for line in f if line.startswith("Threads:"))
    assert threads.split()[1] == "1"


def test_load_average_follows_busy_processes(backend, make_spec, started, wait):
    spec = started(make_spec())
    backend.exec(spec.xid, ["/bin/sh", "-c", "(while :; do :; done) & (while :; do :; done) &"])
    st = wait(lambda: (s := backend.stat(spec.xid)).load1 > 0.3 and s)
    assert st.load1 >= st.load5 >= st.load15 > 0
    assert st.thr_running >= 1


def test_calc_load_matches_the_kernel_decay():
    load = 0
    for _ in range(12):  # one minute of 5 s samples with one runnable task
        load = calc_load(load, EXP[0], FIXED_1)
    # 1 - e^-1 = 0.632: the 1-minute average of a constant load of 1 after one minute
    assert abs(load / FIXED_1 - 0.632) < 0.01
    assert actions_for("reboot") == ["restart", "shutdown"]
    assert actions_for("halt") == ["shutdown"]
    assert actions_for("signal 9") == ["shutdown"]


def test_stat_reports_processes_memory_cpu_and_uptime(backend, make_spec, started, run_sh):
    spec = started(make_spec())
    run_sh(spec.xid, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1000 &")
    st = backend.stat(spec.xid)
    assert st.running
    assert st.nproc >= 2            # init and our background sleep
    assert st.thr_total >= st.nproc
    assert st.forks_total >= 4
    assert 0 <= st.uptime < 3600
    assert st.mem_rss > 0
    assert st.cpu_user + st.cpu_system > 0
    types = {u.type for u in st.limits}
    assert {"NPROC", "RSS"} <= types


def test_context_outlives_the_process_that_started_it(backend, make_spec, run_sh, vdir):
    """A daemon that starts a context and exits (or restarts) leaves it running."""
    spec = make_spec()
    code = (
        "import sys; from pathlib import Path\n"
        "from libvserver import ContextSpec\n"
        "from libvserver.native import NativeBackend\n"
        f"b = NativeBackend(state_dir={str(backend.state_dir)!r}, "
        f"cgroup_parent={backend.layout.parent!r})\n"
        f"b.start(ContextSpec(xid={spec.xid}, name='detached', vdir=Path({str(vdir)!r}), "
        "bcaps={'KILL', 'SYS_BOOT'}))\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)
    try:
        assert backend.is_running(spec.xid)
        assert run_sh(spec.xid, "hostname")[1] == "detached\n"
    finally:
        if backend.is_running(spec.xid):
            backend.stop(spec.xid, ["/bin/true"], timeout=0)


def test_a_start_carries_the_callback_and_later_workers_keep_it(backend, make_spec, started,
                                                                 wait, notified, tmp_path):
    """A supervisor started for an earlier configuration calls back the way the daemon
    that starts a context now says, also after its worker was replaced."""
    log = tmp_path / "moved.log"
    old_argv = backend.client.notify_argv
    script = old_argv[1]
    backend.client.notify_argv = [old_argv[0], script, str(log)]
    try:
        spec = started(make_spec())
    finally:
        backend.client.notify_argv = old_argv
    worker = backend.supervisor_pid()
    os.kill(worker, signal.SIGKILL)
    wait(lambda: not os.path.exists(f"/proc/{worker}") or _is_zombie(worker))
    assert backend.supervisor_pid() != worker
    backend.exec(spec.xid, ["/sbin/reboot", "-f"], timeout=10)
    wait(lambda: log.exists() and log.read_text().count("\n") == 2)
    assert [json.loads(line)["action"] for line in log.read_text().splitlines()] == \
        ["restart", "shutdown"]
    assert notified(spec.xid) == []
    # the next start names the session's callback again
    started(make_spec())


def test_a_worker_whose_keeper_was_killed_becomes_the_keeper_and_reboots_still_work(
        backend, make_spec, started, wait, notified, groups_of):
    spec = started(make_spec())
    worker = backend.supervisor_pid()
    keeper = _parent(worker)
    lock = backend.state_dir / "supervisor.lock"
    assert int(lock.read_text()) == keeper
    os.kill(keeper, signal.SIGKILL)
    # the worker notices (within a load interval), execs itself as the keeper and forks a
    # new worker: the init's parent, the lock and the socket stay where they were
    new = wait(lambda: (p := backend.supervisor_pid()) != worker and p)
    assert _parent(new) == worker
    assert _parent(backend.init_pid(spec.xid)) == worker
    assert int(lock.read_text()) == worker
    os.kill(new, signal.SIGKILL)
    wait(lambda: not os.path.exists(f"/proc/{new}") or _is_zombie(new))
    backend.exec(spec.xid, ["/sbin/reboot", "-f"], timeout=10)
    wait(lambda: backend.last_exit(spec.xid) is not None)
    assert backend.last_exit(spec.xid)["reason"] == "reboot"
    wait(lambda: notified(spec.xid) == ["restart", "shutdown"])
    wait(lambda: groups_of(spec.xid) == [])


def test_pages_of_the_supervisor_are_never_charged_to_a_context(backend, make_spec, started,
                                                                 run_sh, memcgs_charged_for):
    """The supervisor forks each init from inside the context's v1 groups; a page it
    faulted while in the context's memory group (each copy-on-write of its heap after the
    fork) would count against the context's limit and keep its memory cgroup alive, dying,
    after the stop, as long as the supervisor lives. Init moves itself into its memory
    group instead, and what init maps is charged there."""
    memory = backend.layout.by_ctrl["memory"]
    specs = [started(make_spec()) for _ in range(3)]
    contexts = {}
    for spec in specs:
        assert run_sh(spec.xid, "true")[0] == 0     # init is up
        contexts[spec.xid] = os.stat(backend.layout.group(memory, spec.xid)).st_ino
    supervisor = backend.supervisor_pid()
    assert not memcgs_charged_for(supervisor) & set(contexts.values())
    for spec in specs:
        init = next(p for p in backend.layout.pids(spec.xid) if is_init(p))
        assert contexts[spec.xid] in memcgs_charged_for(init)


def test_the_supervisor_keeps_its_state_on_a_tmpfs_of_its_own_and_shutdown_removes_it(
        make_spec, tmp_path, wait):
    """Every start creates files in the state directory (statedir.py): on a disk
    filesystem each is a journal transaction, so an empty one on disk gets a tmpfs; the
    records a context's exit leaves are there, and shutdown unmounts it."""
    from libvserver.native import NativeBackend, statedir
    state = tmp_path / "state"
    assert statedir.fs_type(tmp_path) not in statedir.MEMORY_FS, "this test needs a disk fs"
    b = NativeBackend(state_dir=state, cgroup_parent=f"vcdtest-sd-{os.getpid()}")
    try:
        spec = make_spec()
        b.start(spec)
        assert statedir.mount_source(state) == statedir.SOURCE
        assert statedir.fs_type(state) in statedir.MEMORY_FS
        assert os.stat(state).st_mode & 0o7777 == 0o700
        assert (state / f"{spec.xid}.spec").exists() and (state / "supervisor.sock").exists()
        b.kill(spec.xid, 1, signal.SIGKILL)
        wait(lambda: b.last_exit(spec.xid) is not None)
        assert (state / f"{spec.xid}.exit").exists()
    finally:
        b.shutdown()
    assert statedir.mount_source(state) is None
    assert list(state.iterdir()) == []      # the disk directory below was never written


def test_a_state_directory_that_holds_files_is_not_hidden_under_a_tmpfs(make_spec, tmp_path):
    """Files there may be the records of contexts that still run: a mount would hide them
    from the supervisor that adopts them."""
    from libvserver.native import NativeBackend, statedir
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "kept-by-the-admin").write_text("x")
    b = NativeBackend(state_dir=state, cgroup_parent=f"vcdtest-sd2-{os.getpid()}")
    try:
        b.start(make_spec())
        assert statedir.mount_source(state) is None
        assert (state / "kept-by-the-admin").read_text() == "x"
        assert (state / "supervisor.sock").exists()
    finally:
        b.shutdown()


def test_a_state_directory_prepared_again_gets_no_second_tmpfs(tmp_path):
    """A restarted supervisor (or one started beside it) finds the tmpfs and mounts
    nothing over the records in it."""
    from libvserver.native import statedir
    state = tmp_path / "state"
    try:
        results = [statedir.prepare(state), statedir.prepare(state)]
        assert results == [True, False]
        real = os.path.realpath(state)
        with open("/proc/self/mountinfo") as f:
            assert sum(line.split(" ")[4] == real for line in f) == 1
    finally:
        assert statedir.release(state)
    assert not statedir.release(state)


def _fill(directory: Path) -> None:
    """Write into directory until its filesystem has no room left (ENOSPC)."""
    with open(directory / "filler", "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 65536)
        except OSError as e:
            assert e.errno == 28, e
        try:
            while True:
                f.write(b"x")
        except OSError as e:
            assert e.errno == 28, e


def test_a_full_state_tmpfs_stops_no_supervisor_console_or_report_of_an_end(
        make_spec, tmp_path, wait, notify_log, notified):
    """The state directory is a tmpfs of bounded size (statedir.py): when it is full, a
    start fails naming the reason, but worker and keeper go on serving, a console goes
    on, and how an init ended (here: seen by the keeper while the worker was dead) is
    reported once there is room again. Before, every load sample crashed the worker,
    and each new one crashed adopting; the keeper died on its record of the init."""
    from libvserver import LibvserverError
    from libvserver.native import NativeBackend, statedir
    state = tmp_path / "state"
    script = tmp_path / "notify.py"
    script.write_text(NOTIFY_SCRIPT)
    b = NativeBackend(state_dir=state, cgroup_parent=f"vcdtest-full-{os.getpid()}",
                      notify_argv=[sys.executable, str(script), str(notify_log)],
                      load_interval=0.1)
    try:
        ended, console, refused = make_spec(), make_spec(), make_spec()
        b.start(ended)
        b.start(console)
        assert statedir.fs_type(state) in statedir.MEMORY_FS
        worker, keeper = b.supervisor_pid(), b._keeper_pid()
        subprocess.run(["mount", "-o", "remount,size=1m", str(state)], check=True)
        _fill(state)
        # a second of load samples, each a record that cannot be written
        b.exec(console.xid, ["/bin/sleep", "1"])
        assert (b.supervisor_pid(), b._keeper_pid()) == (worker, keeper)
        _fill(state)
        with pytest.raises(LibvserverError, match=f"in {state}: No space left on device"):
            b.start(refused)
        assert not b.is_running(refused.xid)
        # more than a page of console output is lost, the console itself is not
        b.exec(console.xid, ["/bin/sh", "-c", "head -c 20000 /dev/zero | tr '\\0' x "
                                              ">/dev/console"])
        (state / "filler").unlink()
        b.exec(console.xid, ["/bin/sh", "-c", "echo still-there >/dev/console"])
        wait(lambda: b"still-there" in b.console(console.xid)[0])
        _fill(state)
        os.kill(worker, signal.SIGKILL)
        wait(lambda: b.supervisor_pid() != worker)
        init = b.init_pid(ended.xid)
        b.kill(ended.xid, 1, signal.SIGKILL)
        wait(lambda: not os.path.exists(f"/proc/{init}"))   # reaped by the keeper
        assert b._keeper_pid() == keeper
        (state / "filler").unlink()
        wait(lambda: notified(ended.xid) == ["shutdown"])
        assert b.last_exit(ended.xid)["reason"] == f"signal {signal.SIGKILL}"
    finally:
        (state / "filler").unlink(missing_ok=True)
        b.shutdown()


def test_the_supervisor_log_stays_below_its_cap_on_the_state_tmpfs(make_spec, tmp_path, wait):
    """Every start, end and callback adds lines to supervisor.log, which lives in memory
    (statedir.py): a tenant starting and stopping in a loop, or a guest rebooting itself
    in one, would grow it without end. Past its cap its content moves to supervisor.log.1
    and the file is emptied in place (the supervisor's stderr is the same file)."""
    from libvserver.native import NativeBackend
    from libvserver.native.cappedlog import LOG_CAP
    state = tmp_path / "state"
    b = NativeBackend(state_dir=state, cgroup_parent=f"vcdtest-log-{os.getpid()}")
    try:
        spec = make_spec()
        b.start(spec)
        log_file = state / "supervisor.log"
        # logged once the caller has its answer: before the filling, not after it
        wait(lambda: f"context {spec.xid} started".encode() in log_file.read_bytes())
        with open(log_file, "a") as f:     # what a long life of starts and stops leaves
            f.write(("x" * 99 + "\n") * (LOG_CAP // 100))
        b.kill(spec.xid, 1, signal.SIGKILL)
        wait(lambda: b.last_exit(spec.xid) is not None)
        b.start(spec)
        wait(lambda: f"context {spec.xid} started".encode() in log_file.read_bytes())
        assert log_file.stat().st_size < LOG_CAP // 2
        kept = (state / "supervisor.log.1").read_bytes()
        assert len(kept) > LOG_CAP and b"x" * 99 in kept
        assert f"context {spec.xid} ended".encode() in kept
        for path in (log_file, state / "supervisor.log.1"):
            assert path.stat().st_mode & 0o777 == 0o600
    finally:
        b.shutdown()
