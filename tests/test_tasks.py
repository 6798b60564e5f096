"""Tasks (background: true, task.*), vx.exec's timeout/stdin/encoding, and `vcc exec`
streaming, against a real daemon and real vservers."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

import pytest

from api_helpers import create_vserver, ensure_busybox_template, fault, fault_code, unique
from vcdtest import VcdDaemon, daemon_fixture, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")

BIN = Path(sys.executable).parent


td = daemon_fixture("tasks", workers=3, exec_timeout=5.0, exec_timeout_max=30.0)


@pytest.fixture
def admin(td):
    return td.proxy()


@pytest.fixture(scope="module")
def running(td):
    """One started vserver for the module's tests."""
    admin = td.proxy()
    name = create_vserver(td)
    admin.vx.start(name=name)
    yield name
    if admin.vx.status(name=name)["running"]:
        admin.vx.stop(name=name)


def wait_ended(proxy, task_id: str, timeout: float = 60.0) -> dict:
    return wait_until(lambda: (lambda t: t if not t["running"] else None)(
        proxy.task.get(id=task_id)), timeout, f"task {task_id} to end")


def read_log(proxy, task_id: str, timeout: float = 60.0) -> str:
    """The whole log, read the way a client follows it."""
    data, offset = "", 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        part = proxy.task.log(id=task_id, offset=offset)
        data += part["data"]
        offset = part["offset"]
        if part["eof"]:
            return data
        time.sleep(0.1)
    raise AssertionError(f"log of {task_id} did not end: {data!r}")


def tenant(td, admin, caps=("EXEC", "INIT", "INFO"), owns: str | None = None):
    user = unique("tenant")
    admin.vcd.user.set(username=user, password="password1", admin=False)
    for cap in caps:
        admin.vcd.user.caps.add(username=user, cap=cap)
    if owns:
        admin.vxdb.owner.add(name=owns, username=user)
    return td.proxy(user, "password1")


# -- vx.exec's own parameters -------------------------------------------------------------

def test_exec_feeds_stdin_to_the_command(admin, running):
    assert admin.vx.exec(name=running, command="cat", stdin="one\ntwo\n") == "one\ntwo\n"
    assert admin.vx.exec(name=running, command="wc -c", stdin="x" * 300000).strip() == "300000"
    # without stdin the command reads /dev/null, as before
    assert admin.vx.exec(name=running, command="cat") == ""


def test_exec_timeout_param_lets_a_command_run_longer_than_exec_timeout(admin, running):
    f = fault(admin.vx.exec, name=running, command="sleep 7")
    assert f.faultCode > 1000
    assert "timed out after 5 s" in f.faultString and "'timeout'" in f.faultString
    assert "exec_timeout_max = 30" in f.faultString and "exec_timeout = 5" in f.faultString
    assert admin.vx.exec(name=running, command="sh -c 'sleep 7; echo done'", timeout=20) == "done\n"
    started = time.monotonic()
    f = fault(admin.vx.exec, name=running, command="sleep 60", timeout=1.5)
    assert f.faultCode > 1000 and "timed out after 1.5 s" in f.faultString
    assert time.monotonic() - started < 20


def test_exec_timeout_above_the_configured_maximum_is_200(admin, running):
    f = fault(admin.vx.exec, name=running, command="true", timeout=31)
    assert f.faultCode == 200 and "exec_timeout_max = 30" in f.faultString
    assert fault_code(admin.vx.exec, name=running, command="true", timeout=0) == 200
    assert fault_code(admin.vx.exec, name=running, command="true", timeout="soon") == 200


def test_exec_base64_encoding_returns_every_byte(admin, running):
    script = "i=0; while [ $i -lt 256 ]; do printf \"\\\\$(printf %o $i)\"; i=$((i+1)); done"
    out = admin.vx.exec(name=running, command=f"sh -c '{script}'", encoding="base64")
    assert isinstance(out, xmlrpc.client.Binary) and out.data == bytes(range(256))
    assert admin.vx.exec(name=running, command="echo hi", encoding="") == "hi\n"
    assert fault_code(admin.vx.exec, name=running, command="true", encoding="hex") == 200


# -- tasks ---------------------------------------------------------------------------------

def test_background_exec_answers_a_task_id_at_once_and_its_log_grows_while_it_runs(admin, running):
    task_id = admin.vx.exec(name=running, command="sh -c 'echo first; sleep 6; echo second'",
                            timeout=25,
                            background=True)
    assert isinstance(task_id, str)
    first = wait_until(lambda: admin.task.log(id=task_id, offset=0)["data"], 30, "first line")
    assert first == "first\n"
    assert admin.task.get(id=task_id)["running"] is True   # still sleeping
    assert read_log(admin, task_id) == "first\nsecond\n"
    t = admin.task.get(id=task_id)
    assert t["running"] is False and t["fault_code"] == 0 and t["result"] == "first\nsecond\n"
    assert t["method"] == "vx.exec" and t["name"] == running and t["user"] == "admin"
    assert t["started"] <= t["ended"] <= time.time() + 1


def test_task_log_never_splits_a_utf8_character(admin, running):
    task_id = admin.vx.exec(name=running, command="sh -c 'printf \"a\\303\"; sleep 6; "
                                                  "printf \"\\251\\n\"'",
                            timeout=25, background=True)
    part = wait_until(lambda: (lambda p: p if p["data"] else None)(
        admin.task.log(id=task_id, offset=0)), 30, "first byte")
    assert part == {"data": "a", "offset": 1, "eof": False}   # the lead byte waits for the rest
    assert read_log(admin, task_id) == "a\u00e9\n"


def test_a_failing_background_exec_records_the_fault(admin, running):
    task_id = admin.vx.exec(name=running, command="sh -c 'echo partial; exit 3'", background=True)
    t = wait_ended(admin, task_id)
    assert t["fault_code"] == 1003
    assert t["fault_string"] == "Command execution failed: exit status 3: partial\n"
    assert admin.task.log(id=task_id, offset=0) == {"data": "partial\n", "offset": 8, "eof": True}
    assert admin.task.log(id=task_id, offset=8) == {"data": "", "offset": 8, "eof": True}


def test_background_exec_with_stdin_and_base64(admin, running):
    task_id = admin.vx.exec(name=running, command="cat", stdin="fed\n", encoding="base64",
                            background=True)
    t = wait_ended(admin, task_id)
    assert t["fault_code"] == 0 and t["result"].data == b"fed\n"


def test_task_stop_kills_the_command(admin, running):
    task_id = admin.vx.exec(name=running, command="sh -c 'echo up; sleep 1000'", timeout=25,
                            background=True)
    wait_until(lambda: admin.task.log(id=task_id, offset=0)["data"], 30, "first line")
    assert admin.task.stop(id=task_id) is None
    t = wait_ended(admin, task_id, 20)
    assert t["fault_code"] == 500 and "task.stop" in t["fault_string"]
    assert "sleep 1000" not in admin.vx.exec(name=running, command="ps")
    assert admin.task.stop(id=task_id) is None   # an ended task: nothing to do


def test_background_start_and_stop_run_as_tasks(td, admin):
    name = create_vserver(td)
    try:
        t = wait_ended(admin, admin.vx.start(name=name, background=True))
        assert t["fault_code"] == 0 and t["result"] == ""
        assert admin.vx.status(name=name)["running"] is True
        t = wait_ended(admin, admin.vx.start(name=name, background=True))
        assert t["fault_code"] == 301
        t = wait_ended(admin, admin.vx.restart(name=name, background=True))
        assert t["fault_code"] == 0 and f"started {name}" in read_log(admin, t["id"])
        t = wait_ended(admin, admin.vx.stop(name=name, background=True))
        assert t["fault_code"] == 0 and admin.vx.status(name=name)["running"] is False
        assert f"stopped {name}" in read_log(admin, t["id"])
    finally:
        if admin.vx.status(name=name)["running"]:
            admin.vx.stop(name=name)


def test_background_create_and_group_start(td, admin):
    name = unique()
    t = wait_ended(admin, admin.vx.create(name=name, template="busybox", background=True))
    assert t["fault_code"] == 0 and name in admin.vxdb.list()
    group = unique("grp")
    admin.vg.add(group=group, name=name)
    try:
        t = wait_ended(admin, admin.vg.vx.start(group=group, background=True))
        assert t["fault_code"] == 0 and t["name"] == group
        assert f"{name}: done" in read_log(admin, t["id"])
        assert admin.vx.status(name=name)["running"] is True
    finally:
        admin.vg.vx.stop(group=group)


def test_background_is_refused_by_methods_that_do_not_run_as_tasks(admin, running):
    f = fault(admin.vx.status, name=running, background=True)
    assert f.faultCode == 200 and "vx.exec" in f.faultString
    # false is the plain call
    assert admin.vx.exec(name=running, command="echo x", background=False) == "x\n"


def test_background_checks_the_call_before_it_answers_an_id(td, admin, running):
    assert fault_code(admin.vx.exec, name="no-such-vs", command="true", background=True) == 202
    assert fault_code(admin.vx.exec, name=running, command="true", timeout=99,
                      background=True) == 200
    other = tenant(td, admin, caps=("INFO",))
    assert fault_code(other.vx.exec, name=running, command="true", background=True) == 101


def test_another_tenant_can_neither_see_nor_stop_your_task(td, admin):
    name = create_vserver(td)
    admin.vx.start(name=name)
    try:
        owner = tenant(td, admin, owns=name)
        task_id = owner.vx.exec(name=name, command="sleep 30", timeout=25, background=True)
        stranger = tenant(td, admin)              # has EXEC, does not own the vserver
        for call in (stranger.task.get, stranger.task.stop):
            assert fault_code(call, id=task_id) == 202
        assert fault_code(stranger.task.log, id=task_id, offset=0) == 202
        assert stranger.task.list() == [] and stranger.task.list(name=name) == []
        capless = tenant(td, admin, caps=("INFO",), owns=name)   # owns it, lacks EXEC
        assert fault_code(capless.task.get, id=task_id) == 101
        assert fault_code(capless.task.stop, id=task_id) == 101
        assert owner.task.get(id=task_id)["running"] is True
        assert [t["id"] for t in owner.task.list()] == [task_id]
        assert task_id in [t["id"] for t in admin.task.list(name=name)]
        owner.task.stop(id=task_id)
        assert wait_ended(owner, task_id, 20)["fault_code"] == 500
    finally:
        admin.vx.stop(name=name)


def test_unknown_or_malformed_task_ids_are_200(admin):
    assert fault_code(admin.task.get, id="00000000-0000000000000000") == 200
    assert fault_code(admin.task.get, id="../../etc/passwd") == 200
    assert fault_code(admin.task.log, id="00000000-0000000000000000\n", offset=0) == 200


def test_task_files_are_private(td, admin, running):
    task_id = admin.vx.exec(name=running, command="echo secret", stdin="x", background=True)
    wait_ended(admin, task_id)
    taskdir = td.datadir / "tasks"
    assert stat.S_IMODE(taskdir.stat().st_mode) == 0o700
    for path in taskdir.glob(f"{task_id}.*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (taskdir / f"{task_id}.spec").exists()   # the params go when it ends


def test_a_runner_killed_without_a_result_is_reported_as_ended(td, admin, running):
    import json
    import signal
    task_id = admin.vx.exec(name=running, command="sh -c 'echo up; sleep 8'", timeout=25,
                            background=True)
    wait_until(lambda: admin.task.log(id=task_id, offset=0)["data"], 30, "first line")
    state = json.loads((td.datadir / "tasks" / f"{task_id}.json").read_text())
    os.kill(state["pid"], signal.SIGKILL)
    t = wait_ended(admin, task_id, 20)
    assert t["fault_code"] == 500 and "without a result" in t["fault_string"]
    assert read_log(admin, task_id) == "up\n"


def test_tasks_survive_a_daemon_restart(td, admin, running):
    task_id = admin.vx.exec(name=running, command="sh -c 'echo before; sleep 5; echo after'",
                            timeout=25, background=True)
    wait_until(lambda: admin.task.log(id=task_id, offset=0)["data"], 30, "first line")
    td.restart()
    admin = td.proxy()
    t = admin.task.get(id=task_id)
    assert t["id"] == task_id and t["method"] == "vx.exec"
    assert read_log(admin, task_id) == "before\nafter\n"
    assert wait_ended(admin, task_id)["fault_code"] == 0


# -- vcc exec, as a user runs it ------------------------------------------------------------

def vcc_env(td) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "VCD_PASSWORD"}
    e["HOME"] = str(td.root / "home")
    e["VCD_PASSWORD"] = td.admin_password
    return e


def vcc(td, *args: str) -> list[str]:
    return [str(BIN / "vcc"), "-p", str(td.port), *args]


def test_vcc_exec_streams_output_while_the_command_runs(td, running):
    proc = subprocess.Popen(vcc(td, "exec", "--timeout", "30", running, "sh", "-c",
                                "for i in 1 2 3; do echo $i; sleep 2; done"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=vcc_env(td))
    try:
        assert proc.stdout.readline() == b"1\n"
        assert proc.poll() is None            # the command is still sleeping
        rest, err = proc.communicate(timeout=60)
        assert rest == b"2\n3\n" and err == b"" and proc.returncode == 0
    finally:
        proc.kill()
        proc.wait()


def test_vcc_exec_forwards_stdin_and_exits_with_the_commands_status(td, running):
    r = subprocess.run(vcc(td, "exec", running, "cat"), input=b"x\n", capture_output=True,
                       env=vcc_env(td), timeout=120)
    assert r.stdout == b"x\n" and r.returncode == 0
    r = subprocess.run(vcc(td, "exec", running, "sh", "-c", "cat; exit 42"), input=b"in\n",
                       capture_output=True, env=vcc_env(td), timeout=120)
    assert r.stdout == b"in\n" and r.returncode == 42 and r.stderr == b""
    r = subprocess.run(vcc(td, "exec", "-n", running, "cat"), input=b"ignored\n",
                       capture_output=True, env=vcc_env(td), timeout=120)
    assert r.stdout == b"" and r.returncode == 0


def test_vcc_exec_timeout_option_and_the_hint_when_it_runs_out(td, running):
    r = subprocess.run(vcc(td, "exec", "--timeout", "1", running, "sh", "-c", "echo a; sleep 30"),
                       stdin=subprocess.DEVNULL, capture_output=True, env=vcc_env(td),
                       timeout=120)
    assert r.stdout == b"a\n" and r.returncode == 137
    assert b"timed out after 1 s" in r.stderr and b"exec_timeout_max" in r.stderr
    r = subprocess.run(vcc(td, "exec", "nosuchvs", "true"), stdin=subprocess.DEVNULL,
                       capture_output=True, env=vcc_env(td), timeout=120)
    assert r.returncode == 5 and b"(202)" in r.stderr


def test_vcc_exec_on_a_terminal_does_not_wait_for_stdin(td, running):
    """On a tty stdin is the user's keyboard: nothing is forwarded, nothing blocks."""
    import pty
    pid, master = pty.fork()
    if pid == 0:
        try:
            env = vcc_env(td)
            os.execve(vcc(td)[0], vcc(td, "exec", running, "sh", "-c", "echo on-a-tty"), env)
        finally:
            os._exit(127)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    assert b"on-a-tty" in output and os.waitstatus_to_exitcode(status) == 0


# -- progress bars -------------------------------------------------------------------------

def on_a_terminal(argv: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, bytes]:
    """Run argv with a sized pty as its stdin/stdout/stderr; (exit status, all output)."""
    import fcntl
    import pty
    import struct
    import termios
    pid, master = pty.fork()
    if pid == 0:
        try:
            fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    return os.waitstatus_to_exitcode(status), output


def test_vcc_create_draws_a_progress_bar_on_a_terminal_only(td, admin):
    ensure_busybox_template(td.templatedir)
    name = unique("bar")
    code, output = on_a_terminal(vcc(td, "create", name, "busybox"), vcc_env(td))
    assert code == 0, output
    assert b"extracting busybox" in output and b"100%" in output and b"\r" in output
    assert name in admin.vxdb.list()
    other = unique("bar")
    r = subprocess.run(vcc(td, "create", other, "busybox"), stdin=subprocess.DEVNULL,
                       capture_output=True, env=vcc_env(td), timeout=120)
    # no bar without a terminal, only the one-line confirmation every change prints
    assert r.returncode == 0 and r.stderr == b"" and b"\r" not in r.stdout
    assert r.stdout.decode().strip().startswith(other) and r.stdout.count(b"\n") == 1
    code, output = on_a_terminal(vcc(td, "create", other, "busybox"), vcc_env(td))
    assert code == 7 and b"(201)" in output


def test_template_build_draws_a_progress_bar_on_a_terminal_only(tmp_path):
    argv = [sys.executable, "-m", "templates.cli", "--templatedir", str(tmp_path), "build"]
    code, output = on_a_terminal(argv + ["bar", "--from", "busybox"], dict(os.environ))
    assert code == 0, output
    assert b"100%|" in output and b"3/3" in output and b"ready" in output
    r = subprocess.run(argv + ["plain", "--from", "busybox"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "%|" not in r.stdout + r.stderr
    assert r.stdout.strip().endswith("plain.tar.gz") and "packing" in r.stderr


# last: it restarts the module's daemon with other task_keep_* settings (a daemon of its own
# would share the cgroup parent, and its clean-up would stop this module's vservers)
def test_ended_tasks_are_pruned_by_count_and_age(td):
    def restart(**keys):
        td.stop()
        td.write_config(**keys)
        td.start()
        return td.proxy()

    admin = restart(task_keep_count=2, task_keep_seconds=3600)
    try:
        name = create_vserver(td)
        # creating an existing vserver ends at once (201): enough to fill the store
        ids = [admin.vx.create(name=name, template="busybox", background=True)
               for _ in range(3)]
        for task_id in ids:
            assert wait_ended(admin, task_id)["fault_code"] == 201
        # the newest two of the user's (earlier tests' tasks of other users are theirs)
        kept = [t["id"] for t in admin.task.list() if t["user"] == "admin"]
        assert len(kept) == 2 and set(kept) <= set(ids)
        (pruned,) = set(ids) - set(kept)
        assert not (td.datadir / "tasks" / f"{pruned}.json").exists()
        admin = restart(task_keep_seconds=0)
        time.sleep(1.1)
        assert admin.task.list() == []
        assert not list((td.datadir / "tasks").glob("*.log"))
    finally:
        restart(task_keep_count=None, task_keep_seconds=None)
