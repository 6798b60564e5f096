"""The C init forker (libvserver/native/vsinit.c) against the Python path it repeats
(spawn.run_init, rootfs.setup_unprivileged, confine.ensure_dir): what a guest put into
its own vdir between two boots, or its spec's init command, must come out the same
whichever of the two made init."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from libvserver import Mount
from libvserver.api import MountError
from libvserver.native.initforker import NativeForker

# a spec mount: a plan only the Python forker takes
PYTHON_ONLY = [Mount("tmpfs", "/mnt/vcd-python-forker", "tmpfs", "size=64k")]
C_PHASE = "forker: parse the plan"
PYTHON_PHASE = "forker: unpickle the plan"


@pytest.fixture(autouse=True)
def _phases(monkeypatch):
    assert NativeForker.available(), "make setup builds libvserver/native/vsinit"
    monkeypatch.setenv("VCD_START_PHASES", "1")


def _made_by(backend) -> str:
    names = [name for name, _, _ in backend.last_phases]
    if C_PHASE in names:
        return "c"
    assert PYTHON_PHASE in names, names
    return "python"


def test_init_of_the_c_forker_gets_every_argument_of_a_long_init_command(
        backend, make_spec, started, run_sh):
    """vsinit kept 63 arguments and dropped the rest without a word."""
    args = [f"a{i}" for i in range(100)]
    init = ["/bin/sh", "-c", 'echo "$# $*" > /run-args; exec /sbin/init', "sh", *args]
    native = started(make_spec(init=init))
    assert _made_by(backend) == "c"
    status, out = run_sh(native.xid, "cat /run-args")
    assert status == 0, out
    assert out.split() == ["100", *args]


@pytest.mark.parametrize("name, target, kind", [
    ("proc", "/newproc", "proc"), ("dev", "/var/newdev", "tmpfs"),
    ("sys", "../made/by/guest/sys", "sysfs")])
def test_a_dangling_symlink_the_guest_left_at_a_kernel_mount_is_followed_by_both_forkers(
        backend, make_spec, started, run_sh, vdir, tmp_path, name, target, kind):
    """confine.ensure_dir makes the target of a dangling symlink inside the root, and
    mounts there; vsinit failed the start instead ("File exists")."""
    shutil.rmtree(vdir / name)
    os.symlink(target, vdir / name)
    other = tmp_path / "vdir-python"
    shutil.copytree(vdir, other, symlinks=True)     # each start finds the link dangling
    where = "/" + os.path.normpath(target.lstrip("./"))
    native = started(make_spec())
    assert _made_by(backend) == "c"
    python = started(make_spec(vdir=other, mounts=PYTHON_ONLY))
    assert _made_by(backend) == "python"
    for spec in (native, python):
        status, out = run_sh(spec.xid, "cat /proc/self/mountinfo")
        assert status == 0, out
        mounted = {line.split()[4]: line.split(" - ")[1].split()[0]
                   for line in out.splitlines()}
        assert mounted.get(where) == kind, mounted
        if name == "proc":
            assert mounted.get("/newproc/keys") == "devtmpfs", mounted  # masked there
        assert Path(spec.vdir, where.lstrip("/")).is_dir()


def _link(name: str, target: str):
    def make(vdir: Path) -> None:
        shutil.rmtree(vdir / name)
        os.symlink(target, vdir / name)
    return make


def _file(name: str):
    def make(vdir: Path) -> None:
        shutil.rmtree(vdir / name)
        (vdir / name).write_text("")
    return make


def _mounts_seen(backend, xid: int) -> list[str]:
    """Mount point, type and options of every mount init's namespace holds (one line
    each; without ids, device numbers and the Python-only spec mount), read from the
    host: a guest's layout may leave no /proc in sight inside."""
    seen = []
    for line in Path(f"/proc/{backend.init_pid(xid)}/mountinfo").read_text().splitlines():
        f = line.split()
        if f[4] == PYTHON_ONLY[0].dst:
            continue
        sep = f.index("-")
        seen.append(" ".join([f[4], f[5], f[sep + 1]]))
    return seen


@pytest.mark.parametrize("layout", [
    _link("proc", "dev"), _link("dev", "/proc"), _link("sys", "/proc"), _link("proc", "/proc"),
    _link("dev", "/proc/self/root"), _file("proc"), _file("dev")],
    ids=["proc->dev", "dev->/proc", "sys->/proc", "proc->itself", "dev->magic-link",
         "proc-a-file", "dev-a-file"])
def test_a_guest_symlink_or_file_at_a_kernel_mount_comes_out_the_same_from_both_forkers(
        backend, make_spec, started, vdir, tmp_path, layout):
    """The guest owns its vdir between boots: whatever it leaves at /proc, /sys or /dev
    (symlinks are followed inside the root only, magic links refused), the C forker's
    init gets the mounts, or the error, the Python forker's gets."""
    layout(vdir)
    other = tmp_path / "vdir-python"
    shutil.copytree(vdir, other, symlinks=True)
    outcome = []
    for spec in (make_spec(), make_spec(vdir=other, mounts=PYTHON_ONLY)):
        try:
            started(spec)
        except Exception as e:  # noqa: BLE001 - the kind of failure is what is compared
            assert backend.layout.pids(spec.xid) == []
            outcome.append(type(e).__name__)
            continue
        outcome.append(_mounts_seen(backend, spec.xid))
    assert outcome[0] == outcome[1]


def test_a_start_that_fails_in_init_reports_inits_own_error_whenever_init_died(
        backend, make_spec, vdir):
    """An init that fails right after "ready" (here: a magic link at /dev, refused) may
    die while the supervisor binds its namespaces: its own MountError is the reason to
    report, not the failed bind ("cannot keep its namespaces": seen with the C forker,
    whose G gets there first).  Repeated: the supervisor's side of the race is short."""
    _link("dev", "/proc/self/root")(vdir)
    errors = set()
    for _ in range(200):
        spec = make_spec()
        with pytest.raises(MountError) as failed:
            backend.start(spec)
        errors.add(str(failed.value).split(": ", 1)[1])
        assert backend.layout.pids(spec.xid) == []
        kept = f"/ns/{spec.xid}"
        assert not [m for m in Path("/proc/self/mounts").read_text().splitlines()
                    if f"{kept} " in m or f"{kept}/" in m]
        backend.layout.remove(spec.xid, wait=5)
    assert errors == {"dev: Too many levels of symbolic links"}, errors
