"""The console: init's stdio and /dev/console are a pty the supervisor logs."""

from __future__ import annotations

from pathlib import Path

from conftest import wait_for

from libvserver.native import console


def _write_init(vdir: Path, body: str) -> None:
    init = vdir / "sbin" / "vcd-test-init"
    init.write_text("#!/bin/sh\n" + body)
    init.chmod(0o755)


def test_what_init_writes_lands_in_the_console_log(backend, make_spec, started, vdir):
    _write_init(vdir, "echo booting-$$\necho to-console > /dev/console\nexec sleep 1000\n")
    spec = started(make_spec(init=["/sbin/vcd-test-init"]))
    data = wait_for(lambda: (lambda d: d if b"to-console" in d else None)(
        backend.console(spec.xid)[0]))
    assert b"booting-1" in data


def test_console_is_a_terminal_for_init(backend, make_spec, started, vdir, run_sh):
    _write_init(vdir, "tty; [ -t 0 ] && echo stdin-is-tty\nexec sleep 1000\n")
    spec = started(make_spec(init=["/sbin/vcd-test-init"]))
    data = wait_for(lambda: (lambda d: d if b"stdin-is-tty" in d else None)(
        backend.console(spec.xid)[0]))
    assert b"/dev/" in data
    status, out = run_sh(spec.xid, "test -c /dev/console && echo char-device")
    assert "char-device" in out


def test_offset_follows_without_repeating(backend, make_spec, started, vdir, run_sh):
    _write_init(vdir, "echo first\nexec sleep 1000\n")
    spec = started(make_spec(init=["/sbin/vcd-test-init"]))
    wait_for(lambda: b"first" in backend.console(spec.xid)[0])
    _, offset = backend.console(spec.xid)
    run_sh(spec.xid, "echo second > /dev/console")
    data = wait_for(lambda: (lambda d: d if b"second" in d else None)(
        backend.console(spec.xid, offset=offset)[0]))
    assert b"first" not in data


def test_log_survives_the_end_of_the_context_and_a_new_start_resets_it(
        backend, make_spec, started, vdir):
    _write_init(vdir, "echo last-words\nexit 3\n")
    spec = make_spec(init=["/sbin/vcd-test-init"])
    started(spec)
    wait_for(lambda: not backend.is_running(spec.xid))
    wait_for(lambda: b"last-words" in backend.console(spec.xid)[0])
    _write_init(vdir, "echo second-boot\nexec sleep 1000\n")
    started(spec)
    data = wait_for(lambda: (lambda d: d if b"second-boot" in d else None)(
        backend.console(spec.xid)[0]))
    assert b"last-words" not in data
    backend.forget(spec.xid) if not backend.is_running(spec.xid) else None


def test_log_is_capped_and_offsets_stay_absolute(tmp_path):
    log = console.ConsoleLog(tmp_path, 7, cap=1000)
    log.reset()
    for i in range(300):
        log.append(f"line {i:04d}\n".encode())
    log.close()
    data, end = console.read(tmp_path, 7, lines=None, offset=0)
    assert end == 300 * 10
    assert len(data) <= 1000 and data.endswith(b"line 0299\n")
    # an old offset gives what is kept, never garbage from the middle of a line
    assert data.startswith(b"line ")
    tail, end2 = console.read(tmp_path, 7, lines=3)
    assert tail == b"line 0297\nline 0298\nline 0299\n" and end2 == end
    assert console.read(tmp_path, 7, offset=end) == (b"", end)
    console.forget(tmp_path, 7)
    assert console.read(tmp_path, 7) == (b"", 0)
