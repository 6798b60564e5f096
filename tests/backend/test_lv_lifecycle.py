"""Start, stop, running, errors on start, and that nothing is left behind."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest

from libvserver import (AlreadyRunning, InitMissing, InvalidSpec, Limit, Mount, MountError,
                        NetAddr, NotRunning, get_backend)
from libvserver.native.netns import host_ifname


def test_get_backend_picks_native_on_a_stock_kernel(tmp_path):
    b = get_backend(state_dir=tmp_path / "s", cgroup_parent=f"vcdtest-pick-{os.getpid()}")
    assert b.name == "native"


def test_started_context_runs_busybox_init_as_pid_1(backend, make_spec, started, run_sh):
    spec = started(make_spec())
    assert backend.is_running(spec.xid)
    assert spec.xid in backend.running()
    status, out = run_sh(spec.xid, "cat /proc/1/comm; echo $$")
    assert status == 0
    comm, mypid = out.split()
    assert comm == "init"
    assert int(mypid) > 1  # our shell is in the context's own PID namespace


def test_an_idle_busybox_vserver_is_its_init_alone(backend, make_spec, started, wait):
    """The BusyBox template's init supervises no idle process: once rcS has run, the
    context holds one task (host memory per vserver, issue 13), and init, with nothing
    left to reap, stays up until it is told to halt."""
    spec = started(make_spec())
    init = backend.init_pid(spec.xid)
    assert Path(f"/proc/{init}/comm").read_text().strip() == "init"

    def settled() -> bool:
        # rcS has run: init alone, without children, asleep in sigtimedwait (just after
        # its exec it is alone too, but running, on its way to fork rcS)
        state = Path(f"/proc/{init}/stat").read_text().rsplit(")", 1)[1].split()[0]
        children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
        return state == "S" and not children and backend.layout.pids(spec.xid) == [init]
    wait(settled, 60)
    assert backend.is_running(spec.xid)
    assert backend.layout.pids(spec.xid) == [init]
    backend.stop(spec.xid, ["/sbin/halt"], timeout=15)
    assert not backend.is_running(spec.xid)
    assert backend.last_exit(spec.xid)["reason"] == "halt"


def test_context_sees_only_its_own_processes(backend, make_spec, started, run_sh):
    a = started(make_spec())
    status, out = run_sh(a.xid, "ls /proc | grep -c '^[0-9]'")
    assert status == 0
    # init, the shell and grep/ls: a handful, never the host's hundreds
    assert int(out) < 10


def test_stop_runs_halt_and_removes_cgroups(backend, make_spec, started, groups_of, wait):
    spec = started(make_spec())
    assert groups_of(spec.xid)
    backend.stop(spec.xid, ["/sbin/halt"], timeout=15)
    assert not backend.is_running(spec.xid)
    assert spec.xid not in backend.running()
    assert groups_of(spec.xid) == []
    assert backend.last_exit(spec.xid)["reason"] == "halt"


def test_stop_kills_when_halt_does_nothing(backend, make_spec, started, groups_of):
    spec = started(make_spec())
    out = backend.stop(spec.xid, ["/bin/echo", "not halting"], timeout=0.5)
    assert "not halting" in out
    assert not backend.is_running(spec.xid)
    assert groups_of(spec.xid) == []


def test_stop_kills_also_when_the_halt_command_cannot_be_entered(backend, make_spec, started,
                                                               groups_of):
    # the halt command's entry fails on this side (here: no descriptor left for its
    # pipes; as well an entry server that died): the stop must not leave the context up
    spec = started(make_spec())
    entry = backend.entry(spec.xid)
    handles = len(entry.ns)
    entry.close()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = max(map(int, os.listdir("/proc/self/fd")))
    filler = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)]
    while (fd := os.dup(filler[0])) < top:
        filler.append(fd)
    os.close(fd)    # every number up to top is taken
    try:
        # room for the handles and one pipe: the next pipe fails (EMFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1 + handles + 2, hard))
        out = backend.stop(spec.xid, ["/sbin/halt"], timeout=2)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in filler:
            os.close(fd)
    assert "halt not run" in out
    assert not backend.is_running(spec.xid)
    assert groups_of(spec.xid) == []


def test_second_start_raises_already_running(backend, make_spec, started):
    spec = started(make_spec())
    with pytest.raises(AlreadyRunning):
        backend.start(spec)
    assert backend.is_running(spec.xid)


def test_operations_on_a_stopped_context_raise_not_running(backend, make_spec):
    spec = make_spec()
    with pytest.raises(NotRunning):
        backend.exec(spec.xid, ["/bin/true"])
    with pytest.raises(NotRunning):
        backend.stop(spec.xid, ["/sbin/halt"], 1)
    with pytest.raises(NotRunning):
        backend.kill(spec.xid, 0, 15)
    assert backend.stat(spec.xid).running is False


def test_missing_init_raises_init_missing_and_leaves_nothing(backend, make_spec, groups_of):
    spec = make_spec(init=["/sbin/no-such-init"])
    with pytest.raises(InitMissing, match="no-such-init"):
        backend.start(spec)
    assert not backend.is_running(spec.xid)
    assert groups_of(spec.xid) == []


def test_bad_mount_raises_mount_error_and_leaves_nothing(backend, make_spec, groups_of):
    spec = make_spec(mounts=[Mount("/nonexistent-src", "/mnt/x", "", "bind")],
                     addresses=[NetAddr("10.91.0.2", "255.255.255.0")])
    with pytest.raises(MountError, match="nonexistent-src"):
        backend.start(spec)
    assert groups_of(spec.xid) == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"vx{spec.xid}-" not in links


def test_invalid_spec_is_refused_before_anything_happens(backend, make_spec, groups_of):
    with pytest.raises(InvalidSpec, match="bcap"):
        backend.start(make_spec(bcaps={"NOT_A_CAP"}))
    with pytest.raises(InvalidSpec, match="xid"):
        backend.start(make_spec(xid=1))


def test_symlink_in_vdir_cannot_redirect_a_mount_outside(backend, make_spec, started, run_sh,
                                                        vdir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    # The guest controls its vdir: a link to a host path must resolve inside the vdir.
    os.symlink(str(outside), vdir / "mnt" / "evil")
    spec = started(make_spec(mounts=[Mount("tmpfs", "/mnt/evil/sub", "tmpfs", "size=64k")]))
    assert list(outside.iterdir()) == []  # nothing created on the host side
    status, out = run_sh(spec.xid, "grep ' tmpfs' /proc/mounts | grep -c /sub")
    assert status == 0 and out.strip() == "1"
    # the link was followed as if the vdir were "/": the mount point is <vdir><outside>/sub
    assert (vdir / str(outside).lstrip("/") / "sub").is_dir()


def test_bind_mount_from_host_is_visible_read_only(backend, make_spec, started, run_sh, tmp_path):
    src = tmp_path / "shared"
    src.mkdir()
    (src / "hello").write_text("from host\n")
    spec = started(make_spec(mounts=[Mount(str(src), "/srv/shared", "", "bind,ro")]))
    status, out = run_sh(spec.xid, "cat /srv/shared/hello; touch /srv/shared/x; echo rc=$?")
    assert "from host" in out
    assert "rc=1" in out
    assert not (src / "x").exists()


def test_proc_sys_dev_are_set_up(backend, make_spec, started, run_sh):
    spec = started(make_spec())
    status, out = run_sh(spec.xid, "ls /dev; grep -E ' /(sys|proc|dev/pts|dev/shm) ' /proc/mounts")
    for node in ("null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm"):
        assert node in out.split()
    assert "sysfs /sys sysfs ro," in out
    assert "devpts /dev/pts" in out and "newinstance" not in out or "ptmxmode=666" in out
    status, out = run_sh(spec.xid, "echo x > /sys/kernel/foo; echo rc=$?")
    assert "rc=1" in out


def test_dev_shm_is_a_world_writable_sticky_mount_of_the_dev_tmpfs(backend, make_spec,
                                                                     started, run_sh):
    """/dev/shm: mode 1777, nosuid and nodev, programs may run from it; a directory of the
    /dev tmpfs bound onto itself (no superblock of its own), as large as a tmpfs's
    default (half of RAM), not /dev's former megabyte."""
    spec = started(make_spec())
    status, out = run_sh(spec.xid, "stat -c '%a %d' /dev/shm; stat -c %d /dev; "
                         "grep ' /dev/shm ' /proc/self/mountinfo; "
                         "cp /bin/busybox /dev/shm/true && /dev/shm/true && echo RAN; "
                         "df -k /dev/shm | tail -1")
    assert status == 0, out
    lines = out.splitlines()
    mode, dev = lines[0].split()
    assert mode == "1777" and dev == lines[1].strip(), out
    opts = lines[2].split()[5].split(",")
    assert "nosuid" in opts and "nodev" in opts and "noexec" not in opts, out
    assert lines[3] == "RAN", out
    assert int(lines[4].split()[1]) > 64 * 1024, out
    # a guest's user gets a file of its own in there, not in /dev itself
    status, out = run_sh(spec.xid, "su -s /bin/sh nobody -c 'touch /dev/shm/n && echo OK; "
                         "touch /dev/n 2>/dev/null && echo DEV'")
    assert "OK" in out and "DEV" not in out, out


def test_what_a_guest_writes_to_dev_and_dev_shm_is_charged_to_it_and_stops_at_its_memory_limit(
        backend, make_spec, started, run_sh):
    """/dev (and /dev/shm, a directory of it) lost its 1 MiB cap: its pages are bounded by
    the vserver's memory limit and charged to the vserver's memory group, not the host's.
    The writer volunteers as the OOM victim (oom_score_adj), so init survives the fill."""
    limit = 32 * 1024 * 1024
    spec = started(make_spec(limits=[Limit("RSS", None, limit // 1024)]))
    memory = backend.layout.by_ctrl["memory"]
    usage = "memory.usage_in_bytes" if memory.version == 1 else "memory.current"
    for where in ("/dev/fill", "/dev/shm/fill"):
        run_sh(spec.xid, f"echo 1000 > /proc/self/oom_score_adj; "
                         f"dd if=/dev/zero of={where} bs=1M count=64", timeout=60)
        # read and removed from the host: at its limit the guest's next process may well
        # be the OOM killer's
        path = f"/proc/{backend.init_pid(spec.xid)}/root{where}"
        size = os.stat(path).st_size
        assert 0 < size <= limit, size
        charged = int(backend.layout.read("memory", spec.xid, usage))
        assert charged >= size, (where, size, charged)
        os.unlink(path)
    assert backend.is_running(spec.xid)


def test_many_start_stop_cycles_leak_nothing(backend, make_spec, groups_of):
    # only what carries this backend's own marks is counted: other daemons on a busy
    # host add and remove links and loop devices of their own meanwhile
    before_loops = _our_loops(backend)
    before_links = _our_links(backend)
    spec = make_spec(addresses=[NetAddr("10.92.0.2", "255.255.255.0")], flags={"VIRT_UPTIME"})
    ifname = host_ifname(spec.xid, backend.net_tag)
    for _ in range(15):
        backend.start(spec)
        assert ifname in _our_links(backend)
        backend.stop(spec.xid, ["/bin/true"], timeout=0)
        assert groups_of(spec.xid) == []
    assert _our_loops(backend) == before_loops
    assert _our_links(backend) == before_links
    fds = _supervisor_files(backend)
    backend.start(spec)
    backend.stop(spec.xid, ["/bin/true"], timeout=0)
    assert _supervisor_files(backend) <= fds


def _our_links(backend) -> set[str]:
    """Host-side links carrying this backend's tag (vx<xid>-<tag>)."""
    assert backend.net_tag, "the test backend's cgroup parent gives it a tag of its own"
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}
    return {n for n in names if n.startswith("vx") and n.endswith(f"-{backend.net_tag}")}


def _our_loops(backend) -> list[str]:
    """Loop devices backed by this backend's images."""
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return sorted(line for line in out.splitlines() if str(backend.image_dir) in line)


def _supervisor_files(backend) -> int:
    """Open descriptors of the supervisor, less the client connection it is answering."""
    pid = backend.supervisor_pid()
    names = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            names.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return sum(1 for n in names if not n.startswith("socket:")) + 1  # + the listener


def test_vdir_that_is_not_a_directory_is_refused(backend, make_spec, tmp_path):
    from libvserver import StartError
    with pytest.raises(StartError, match="not a directory"):
        backend.start(make_spec(vdir=Path(tmp_path / "nope")))


def test_bind_source_inside_the_vdir_cannot_be_redirected_by_a_symlink(
        backend, make_spec, started, run_sh, vdir, tmp_path):
    secret = tmp_path / "hostsecret"
    secret.mkdir()
    (secret / "key").write_text("host only\n")
    # the guest replaced the directory the admin shares with a link to a host path
    os.symlink(str(secret), vdir / "srv-data")
    spec = make_spec(mounts=[Mount(str(vdir / "srv-data"), "/mnt/data", "", "bind")])
    with pytest.raises(MountError, match="srv-data"):
        backend.start(spec)  # the link resolves inside the vdir, where nothing is
    decoy = vdir / str(secret).lstrip("/")
    decoy.mkdir(parents=True)
    (decoy / "key").write_text("guest decoy\n")
    started(spec)
    status, out = run_sh(spec.xid, "cat /mnt/data/key")
    assert out == "guest decoy\n"
