"""Unprivileged vservers (issue 11, start path): own user namespace with a 65536-id host
range, idmapped root, own cgroup namespace, masked /proc and /sys — tried from inside."""

from __future__ import annotations

import os
import shutil
import time

from libvserver import DiskLimit, Limit


def default_bcaps_and(make_spec, *extra: str) -> set[str]:
    return set(make_spec().bcaps) | set(extra)


def test_guest_root_is_an_unprivileged_host_range(backend, run_sh, make_spec, started):
    spec = started(make_spec())
    ids = backend.id_range(spec.xid)
    _, out = run_sh(spec.xid, "cat /proc/self/uid_map /proc/self/gid_map; id -u")
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["0", str(ids.host), "65536"]
    assert lines[1] == ["0", str(ids.host), "65536"]
    assert lines[2] == ["0"]
    assert ids.host >= 131072
    init = backend.init_pid(spec.xid)
    with open(f"/proc/{init}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    assert uids == [str(ids.host)] * 4


def test_idmapped_root_keeps_files_owned_as_on_disk(backend, run_sh, make_spec, started, vdir):
    spec = started(make_spec())
    status, out = run_sh(spec.xid, "touch /made-by-root && chown 1000:1000 /made-by-root "
                     "&& touch /mine && ls -ln /etc/passwd")
    assert status == 0, out
    assert out.split()[2:4] == ["0", "0"]  # the template's files: root inside
    # on disk the template stays 0, and guest ids land as themselves (idmapped mount)
    assert os.stat(vdir / "etc/passwd").st_uid == 0
    assert os.stat(vdir / "mine").st_uid == 0
    assert os.stat(vdir / "made-by-root").st_uid == 1000


def test_setuid_drop_and_setgroups_work_inside(backend, run_sh, make_spec, started):
    spec = started(make_spec())
    status, out = run_sh(spec.xid, "cat /proc/self/setgroups; "
                     "su -s /bin/sh nobody -c 'id -u; id -G'")
    assert status == 0, out
    assert out.split() == ["allow", "65534", "65534"]


def test_no_sysctl_outside_proc_sys_net_is_writable(backend, run_sh, make_spec, started):
    # NET_ADMIN: writing net sysctls needs it in the network namespace's user namespace
    spec = started(make_spec(flags={"VIRT_UPTIME", "HIDE_NETIF"},
                             bcaps=default_bcaps_and(make_spec, "NET_ADMIN")))
    script = ("n=0; for f in $(busybox find /proc/sys -type f -perm -200 "
              "! -path '/proc/sys/net/*'); "
              "do v=$(cat $f 2>/dev/null) || continue; "
              "if (echo \"$v\" > $f) 2>/dev/null; then echo WROTE $f; fi; n=$((n+1)); done; "
              "echo tried $n")
    status, out = run_sh(spec.xid, script, timeout=180)
    assert "WROTE" not in out, out
    assert int(out.split("tried")[-1]) > 50
    status, out = run_sh(spec.xid, "echo '|/tmp/evil' > /proc/sys/kernel/core_pattern")
    assert status != 0
    assert not open("/proc/sys/kernel/core_pattern").read().startswith("|/tmp/evil")
    # its own network namespace's sysctls stay writable
    status, out = run_sh(spec.xid, "echo 1 > /proc/sys/net/ipv4/ip_forward && "
                     "cat /proc/sys/net/ipv4/ip_forward")
    assert status == 0 and out.strip() == "1", out


def test_host_wide_proc_and_sys_files_are_masked(backend, run_sh, make_spec, started):
    spec = started(make_spec())
    status, out = run_sh(spec.xid, "echo h > /proc/sysrq-trigger; echo rc=$?; "
                     "wc -c < /proc/keys; ls /sys/firmware | wc -l; "
                     "touch /sys/kernel/x; echo rc=$?; grep ' /sys ' /proc/self/mountinfo")
    lines = out.splitlines()
    assert "rc=0" not in lines, out
    assert "0" in [x.strip() for x in lines], out   # /proc/keys empty
    assert any(x.strip() == "0" for x in lines[2:4]), out  # /sys/firmware empty
    assert " ro," in lines[-1] or " ro " in lines[-1], out
    if os.path.exists("/proc/kcore"):
        status, out = run_sh(spec.xid, "head -c 16 /proc/kcore | wc -c")
        assert out.strip() == "0"


def test_guest_sees_its_own_cgroup_as_root(backend, run_sh, make_spec, started):
    spec = started(make_spec())
    _, out = run_sh(spec.xid, "cat /proc/self/cgroup")
    assert "0::/" in out.splitlines()
    assert all(line.endswith(":/") for line in out.splitlines()), out


def test_masked_directories_are_one_removed_directory_root_inside_cannot_lift_or_fill(
        backend, run_sh, make_spec, started):
    """Each masked directory is a read-only bind of an empty directory of the context's
    /dev tmpfs that was removed once bound: no tmpfs of its own, nothing left in /dev,
    and root inside (without SYS_ADMIN) can neither unmount, remount nor write into it."""
    spec = started(make_spec())
    script = ("for d in /sys/firmware /sys/kernel/debug; do "
              "[ \"$(stat -c %d $d)\" = \"$(stat -c %d /dev)\" ] && echo SAMEDEV; "
              "echo N $(ls -A $d | wc -l); "
              "touch $d/x 2>/dev/null && echo WROTE; mkdir $d/y 2>/dev/null && echo WROTE; "
              "umount $d 2>/dev/null && echo LIFTED; umount -l $d 2>/dev/null && echo LIFTED; "
              "mount -o remount,rw,bind $d 2>/dev/null && echo REMOUNTED; "
              "echo N $(ls -A $d | wc -l); done; "
              "ls -A /dev | grep -c vcd-mask; grep -c ' /sys/firmware ' /proc/self/mountinfo")
    status, out = run_sh(spec.xid, script)
    lines = out.split("\n")
    assert out.count("SAMEDEV") == 2, out
    assert out.count("N 0") == 4, out
    assert not any(w in out for w in ("WROTE", "LIFTED", "REMOUNTED")), out
    assert lines[-3:-1] == ["0", "1"], out
    assert os.listdir("/sys/firmware")     # the host's own stays what it is
    # with SYS_ADMIN kept the mask can be made writable: the removed directory still
    # takes no entry
    spec = started(make_spec(bcaps=default_bcaps_and(make_spec, "SYS_ADMIN")))
    status, out = run_sh(spec.xid, "mount -o remount,rw,bind /sys/firmware && echo RW; "
                         "touch /sys/firmware/x 2>/dev/null && echo WROTE; "
                         "mkdir /sys/firmware/y 2>/dev/null && echo WROTE; ls -A /sys/firmware")
    assert out.split() == ["RW"], out


def test_guest_cgroup_mounts_cannot_raise_host_v1_limits(backend, run_sh, make_spec, started):
    # SYS_ADMIN inside: the guest's cgroup namespace belongs to its user namespace, so it
    # can mount the v1 hierarchies itself (rooted at its own groups), as issue 11 did
    spec = started(make_spec(bcaps=default_bcaps_and(make_spec, "SYS_ADMIN"),
                             limits=[Limit("NPROC", None, 77), Limit("RSS", None, 65536)]))
    lay = backend.layout
    script = ("mkdir -p /tmp/cg; for c in pids memory; do "
              "mount -t cgroup -o $c none /tmp/cg || continue; "
              "echo MOUNTED $c $(cat /tmp/cg/pids.max /tmp/cg/memory.limit_in_bytes 2>/dev/null); "
              "echo max > /tmp/cg/pids.max 2>/dev/null && echo RAISED; "
              "echo -1 > /tmp/cg/memory.limit_in_bytes 2>/dev/null && echo RAISED; "
              "mkdir /tmp/cg/sub 2>/dev/null && echo MADE; "
              "umount /tmp/cg; done; "
              # and from a user namespace of its own below it
              "unshare -U -r -m sh -c 'mount -t cgroup -o pids none /tmp/cg && "
              "echo max > /tmp/cg/pids.max && echo RAISED'; true")
    status, out = run_sh(spec.xid, script)
    assert "RAISED" not in out and "MADE" not in out, out
    # the hierarchies really were mounted, rooted at the vserver's own groups
    assert "MOUNTED pids 77" in out and "MOUNTED memory 67108864" in out, out
    assert lay.read("pids", spec.xid, "pids.max") == "77\n"
    assert int(lay.read("memory", spec.xid, "memory.limit_in_bytes")) == 65536 * 1024


def test_process_in_a_guest_child_cgroup_counts_and_dies_on_stop(backend, run_sh, make_spec,
                                                                 started):
    spec = started(make_spec(bcaps=default_bcaps_and(make_spec, "SYS_ADMIN")))
    status, out = run_sh(spec.xid, "mkdir -p /tmp/cg && mount -t cgroup2 none /tmp/cg && "
                     "mkdir /tmp/cg/hide && (sleep 1000 >/dev/null 2>&1 & echo $! > "
                     "/tmp/cg/hide/cgroup.procs) && cat /tmp/cg/hide/cgroup.procs")
    assert status == 0, out
    lay = backend.layout
    sub = lay.group(lay.primary, spec.xid) / "hide"
    hidden = [int(p) for p in (sub / "cgroup.procs").read_text().split()]
    assert hidden
    assert set(hidden) <= set(lay.pids(spec.xid))
    assert backend.stat(spec.xid).nproc >= 2
    backend.stop(spec.xid, ["/bin/false"], timeout=3)
    assert not backend.is_running(spec.xid)
    end = time.monotonic() + 10
    while lay.exists(spec.xid) and time.monotonic() < end:
        time.sleep(0.05)
    assert not lay.exists(spec.xid)
    backend.start(spec)  # no "File exists" from leftover child groups
    assert backend.is_running(spec.xid)


def test_disk_limit_vserver_is_writable_by_guest_root(backend, run_sh, make_spec, started):
    spec = started(make_spec(disk_limit=DiskLimit(space_kib=65536, inodes=4096)))
    status, out = run_sh(spec.xid, "echo hi > /root-file && mkdir -p /var/x && "
                     "touch /var/x/y && cat /root-file && stat -c %u /etc/passwd")
    assert status == 0, out
    assert out.split() == ["hi", "0"]


def test_shared_template_vserver_writes_into_its_range(backend, run_sh, make_spec, started,
                                                       rootfs, tmp_path):
    from templates.store import TemplateStore, overlay_state_dir
    tdir = tmp_path / "templates"
    tdir.mkdir()
    shutil.copytree(rootfs, tdir / "bb", symlinks=True)
    store = TemplateStore(tdir)
    vdir = tmp_path / "shared"
    store.populate("bb", vdir, copy=False)
    try:
        upper = overlay_state_dir(vdir) / "upper"
        assert os.stat(upper).st_uid == 0  # made as before user namespaces: migrated at start
        spec = started(make_spec(vdir=vdir))
        ids = backend.id_range(spec.xid)
        status, out = run_sh(spec.xid, "echo x > /etc/newfile && rm /bin/true && "
                         "echo y >> /etc/passwd && stat -c %u /etc/newfile")
        assert status == 0, out
        assert out.strip() == "0"
        assert os.stat(upper / "etc/newfile").st_uid == ids.host
        assert os.stat(upper).st_uid == ids.host
        assert os.path.exists(tdir / "bb/bin/true")          # the template is untouched
        assert os.stat(tdir / "bb/etc/passwd").st_uid == 0
        backend.stop(spec.xid, ["/bin/false"], timeout=3)
        # the host's view, mounted again by the store, agrees with what the guest did
        assert store.ensure_mounted(vdir)
        assert (vdir / "etc/newfile").read_text() == "x\n"
        assert not os.path.lexists(vdir / "bin/true")
        backend.start(spec)  # a second start (no migration left to do) works too
        status, out = run_sh(spec.xid, "cat /etc/newfile")
        assert (status, out) == (0, "x\n")
        backend.stop(spec.xid, ["/bin/false"], timeout=3)
    finally:
        store.remove_tree(vdir, tmp_path)


def test_privileged_vserver_has_no_user_namespace(backend, run_sh, make_spec, started):
    spec = started(make_spec(privileged=True))
    _, out = run_sh(spec.xid, "cat /proc/self/uid_map")
    assert out.split() == ["0", "0", "4294967295"]
    rep = backend.enforcement(spec)
    assert rep["security:userns"].startswith("not enforced")
    assert backend.enforcement(make_spec())["security:userns"] == "enforced"


def test_device_binds_sit_on_links_of_one_file_and_work_inside(backend, run_sh, make_spec,
                                                               started):
    """An unprivileged /dev gets the host's device nodes (and its console, the pty
    slave) bound onto hard links of one empty file (a mount sits on a name; a tmpfs inode each would cost ~750 bytes of
    unreclaimable kernel memory): readdir shows the inode below the mounts."""
    from libvserver.native.rootfs import DEVICES
    spec = started(make_spec())
    init = backend.init_pid(spec.xid)
    with os.scandir(f"/proc/{init}/root/dev") as it:
        below = {e.name: e.inode() for e in it
                 if e.name in {d[0] for d in DEVICES} | {"console"}}
    assert len(below) == len(DEVICES) + 1 and len(set(below.values())) == 1, below
    status, out = run_sh(spec.xid, "for d in null zero full random urandom tty; do "
                         "[ -c /dev/$d ] && echo C$d; done; head -c 4 /dev/zero | wc -c; "
                         "echo x > /dev/null && echo W; head -c 8 /dev/urandom | wc -c; "
                         "[ -c /dev/console ] && echo Cconsole")
    assert status == 0, out
    assert out.split() == ["Cnull", "Czero", "Cfull", "Crandom", "Curandom", "Ctty", "4", "W",
                           "8", "Cconsole"], out
