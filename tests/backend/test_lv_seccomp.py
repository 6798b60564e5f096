"""The default seccomp filter: what a vserver's processes may not call, and what they
still may (libvserver.native.seccomp)."""

from __future__ import annotations

import os
import time

import pytest

from libvserver.native import seccomp

DENIED = {
    "open_by_handle_at": "EPERM", "name_to_handle_at": "ENOSYS", "keyctl": "ENOSYS",
    "add_key": "ENOSYS", "bpf": "EPERM", "perf_event_open": "EPERM", "kexec_load": "EPERM",
    "init_module": "EPERM", "finit_module": "EPERM", "userfaultfd": "EPERM",
    "io_uring_setup": "ENOSYS",
}


@pytest.fixture
def ctx(make_spec, started, vdir, probe_in):
    probe_in(vdir)
    return started(make_spec())


def _probe(backend, xid, *args) -> str:
    r = backend.exec(xid, ["/bin/probe", *args])
    return r.output.decode()


@pytest.mark.parametrize("call", sorted(DENIED))
def test_denied_call_answers_its_errno_inside(backend, ctx, call):
    assert _probe(backend, ctx.xid, call) == f"{call} {DENIED[call]}\n"


def test_32bit_system_call_abi_gets_the_same_deny_list(backend, ctx):
    # i386 number 342 through int 0x80; without the filter the kernel answers EFAULT
    assert _probe(backend, ctx.xid, "int80") == "int80_open_by_handle_at EPERM\n"


def test_mount_and_unshare_stay_allowed(backend, make_spec, started, vdir, probe_in):
    probe_in(vdir)
    ctx = started(make_spec(bcaps={"SYS_ADMIN", "SETUID", "SETGID"}))
    assert _probe(backend, ctx.xid, "mount") == "mount ok\n"
    assert _probe(backend, ctx.xid, "unshare") == "unshare ok\n"


def test_setuid_program_still_gains_its_owner_no_new_privs_is_off(backend, ctx, vdir,
                                                                      probe_in):
    probe_in(vdir, "probe-suid", 0o4755)
    out = _probe(backend, ctx.xid, "as", "1000", "/bin/probe-suid", "euid")
    assert out == "euid 0\n"
    status = backend.exec(ctx.xid, ["/bin/probe", "as", "1000", "/bin/grep", "NoNewPrivs",
                                    "/proc/self/status"]).output.decode()
    assert status.split() == ["NoNewPrivs:", "0"]


def test_init_and_entered_processes_run_under_the_filter(backend, ctx):
    r = backend.exec(ctx.xid, ["/bin/grep", "^Seccomp:", "/proc/self/status", "/proc/1/status"])
    lines = r.output.decode().split("\n")
    assert [line.split()[-1] for line in lines if line] == ["2", "2"]


def test_spec_without_seccomp_has_no_filter(backend, make_spec, started, vdir, probe_in):
    probe_in(vdir)
    ctx = started(make_spec(seccomp=False))
    r = backend.exec(ctx.xid, ["/bin/grep", "^Seccomp:", "/proc/self/status", "/proc/1/status"])
    lines = r.output.decode().split("\n")
    assert [line.split()[-1] for line in lines if line] == ["0", "0"]
    assert _probe(backend, ctx.xid, "keyctl") != "keyctl ENOSYS\n"


def test_syslog_is_denied_unless_the_spec_grants_it():
    assert seccomp.program(False).bpf != seccomp.program(True).bpf
    assert seccomp.program(False) is seccomp.program(False)   # built once, cached


def test_every_denied_call_is_documented():
    doc = seccomp.__doc__
    for name in seccomp.ENOSYS_CALLS + seccomp.EPERM_CALLS + (seccomp.SYSLOG_CALL,):
        assert name in doc, name


def test_loading_the_prepared_filter_is_cheap():
    prog = seccomp.program(False)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        t = time.perf_counter()
        prog.load()
        os.write(w, f"{time.perf_counter() - t:.6f}".encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    seconds = float(os.read(r, 64))
    os.close(r)
    print(f"seccomp filter load: {seconds * 1e6:.0f} us, {len(prog.bpf) // 8} instructions")
    assert seconds < 0.05
