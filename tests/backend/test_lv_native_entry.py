"""vsinit --enter (libvserver/native/vsinit.c), the C entry server, against the Python one
it stands for (entercore.serve, run_e1, _e2): a command must not be able to tell which
one put it into its vserver."""

from __future__ import annotations

import pytest

from libvserver.native import enter, entercore

VIEW = (
    "grep -E '^(Cap|Seccomp|NoNewPrivs|Uid|Gid|Groups|SigIgn|SigBlk)' /proc/self/status; "
    "echo ==; cat /proc/self/limits; echo ==; ls /proc/self/fd; echo ==; "
    "tr '\\0' '\\n' < /proc/self/environ | sort; echo ==; cat /proc/self/cgroup; echo ==; "
    "ls -l /proc/self/ns | sed 's/.*-> //'; echo ==; pwd; umask; echo ==; "
    "ps -o pid,ppid,sid,comm | grep -c .; cut -d' ' -f1 /proc/uptime | cut -d. -f1")


def _entered_view(backend, xid: int, native: bool, monkeypatch) -> tuple[int, str]:
    enter.stop_entry_server()
    monkeypatch.setenv(entercore.NATIVE_ENV, "1" if native else "0")
    enter.use_entry_server()
    try:
        server = enter._entry_server()
        assert server is not None and bool(server.native) == native
        r = backend.exec(xid, ["/bin/sh", "-c", VIEW], stdin=b"")
        return r.status, r.output.decode()
    finally:
        enter.stop_entry_server()


def test_a_command_entered_by_the_c_entry_server_holds_what_the_python_one_gives(
        backend, make_spec, started, monkeypatch):
    assert entercore.native_program(), "make setup builds libvserver/native/vsinit"
    spec = started(make_spec())
    native = _entered_view(backend, spec.xid, True, monkeypatch)
    python = _entered_view(backend, spec.xid, False, monkeypatch)
    assert native[0] == 0, native[1]
    for part_c, part_py in zip(native[1].split("=="), python[1].split("==")):
        assert part_c == part_py


@pytest.mark.parametrize("native", [True, False], ids=["C", "Python"])
def test_entered_command_status_and_missing_program_answers_agree(
        backend, make_spec, started, monkeypatch, native):
    spec = started(make_spec())
    enter.stop_entry_server()
    monkeypatch.setenv(entercore.NATIVE_ENV, "1" if native else "0")
    enter.use_entry_server()
    try:
        assert backend.exec(spec.xid, ["/bin/sh", "-c", "exit 7"]).status == 7
        r = backend.exec(spec.xid, ["/no/such/program"])
        assert (r.status, r.output) == (127, b"/no/such/program: No such file or directory\n")
        # argv[0] looked up in the command's PATH, as os.execvpe does
        r = backend.exec(spec.xid, ["hostname"])
        assert (r.status, r.output.strip()) == (0, spec.name.encode())
        r = backend.exec(spec.xid, ["/bin/sh", "-c", "kill -KILL $$"])
        assert r.status == 128 + 9
    finally:
        enter.stop_entry_server()


def test_a_command_of_more_arguments_than_vsinit_takes_is_entered_all_the_same(
        backend, make_spec, started, monkeypatch):
    spec = started(make_spec())
    enter.stop_entry_server()
    monkeypatch.setenv(entercore.NATIVE_ENV, "1")
    enter.use_entry_server()
    try:
        for count in (100, entercore.NATIVE_ENTRIES_MAX + 500):
            r = backend.exec(spec.xid, ["/bin/sh", "-c", 'echo $#', "sh", *["a"] * count])
            assert (r.status, r.output) == (0, f"{count}\n".encode())
    finally:
        enter.stop_entry_server()
