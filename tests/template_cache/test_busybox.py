"""The BusyBox builder: an offline root fs that boots as PID 1 and halts on request."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from templates import busybox
from templates.errors import TemplateExists
from templates.metadata import TemplateMeta
from tpl_helpers import needs_root, snapshot


def _resolve_in(root: Path, rel: str) -> str:
    """Where a symlink inside ``root`` points, resolved as the vserver would see it."""
    link = root / rel
    target = os.readlink(link)
    if target.startswith("/"):
        return os.path.normpath(target.lstrip("/"))
    return os.path.normpath(os.path.join(os.path.dirname(rel), target))


def test_rootfs_has_applet_links_init_halt_reboot_and_etc(tmp_path):
    root = tmp_path / "root"
    busybox.build_rootfs(root, hostname="bbhost")
    assert (root / "bin/busybox").stat().st_mode & 0o111
    for applet in ("bin/sh", "bin/ls", "sbin/init", "sbin/halt", "sbin/reboot", "sbin/ip", "bin/sleep"):
        assert (root / applet).is_symlink(), applet
        assert _resolve_in(root, applet) == "bin/busybox", applet
    assert (root / "etc/hostname").read_text() == "bbhost\n"
    assert (root / "etc/passwd").read_text().startswith("root:x:0:0:")
    assert "root:x:0:" in (root / "etc/group").read_text()
    inittab = (root / "etc/inittab").read_text()
    assert "::sysinit:/etc/init.d/rcS" in inittab
    assert "::shutdown:" in inittab
    # no idle process to supervise: a running vserver is its init alone
    assert "::respawn:" not in inittab and "::askfirst:" not in inittab
    rcs = (root / "etc/init.d/rcS").read_text()
    assert "hostname -F /etc/hostname" in rcs and "lo up" in rcs
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "root").stat().st_mode) == 0o700
    for d in ("proc", "sys", "dev", "var"):
        assert (root / d).is_dir()
    assert list((root / "dev").iterdir()) == []


def test_rootfs_contains_no_device_nodes(tmp_path):
    root = tmp_path / "root"
    busybox.build_rootfs(root)
    kinds = {v[0] for v in snapshot(root).values()}
    assert stat.S_IFCHR not in kinds and stat.S_IFBLK not in kinds


def test_rootfs_refuses_bad_hostname_and_nonempty_dest(tmp_path):
    with pytest.raises(ValueError, match="hostname"):
        busybox.build_rootfs(tmp_path / "a", hostname="bad host;rm")
    (tmp_path / "b").mkdir()
    (tmp_path / "b/x").write_text("")
    with pytest.raises(FileExistsError):
        busybox.build_rootfs(tmp_path / "b")


@needs_root
def test_rootfs_runs_commands_under_chroot(tmp_path):
    root = tmp_path / "root"
    busybox.build_rootfs(root, hostname="inside")
    r = subprocess.run(["chroot", str(root), "/bin/sh", "-c", "echo ok; cat /etc/hostname; id -u"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "inside", "0"]


@needs_root
def test_init_boots_as_pid1_sets_hostname_and_halts(tmp_path):
    """BusyBox init runs rcS as PID 1 of a new PID+UTS namespace, and /sbin/halt stops it."""
    root = tmp_path / "root"
    busybox.build_rootfs(root, hostname="booted")
    proc = subprocess.Popen(["unshare", "--fork", "--pid", "--uts", "--mount",
                             f"--mount-proc={root}/proc", "chroot", str(root), "/sbin/init"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        init_pid = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and init_pid is None:
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if kids:
                k = kids[0]
                # rcS has run: the hostname is set and init has no child left
                hostname = subprocess.run(["nsenter", "-t", k, "-u", "hostname"],
                                          capture_output=True, text=True).stdout.strip()
                if hostname == "booted" and \
                        not Path(f"/proc/{k}/task/{k}/children").read_text().split():
                    init_pid = int(k)
            time.sleep(0.05)
        assert init_pid, "init did not run rcS"
        ns = ["nsenter", "-t", str(init_pid), "-p", "-u", "-m", "chroot", str(root)]
        r = subprocess.run(ns + ["/bin/sh", "-c", "hostname; cat /proc/1/comm"],
                           capture_output=True, text=True, timeout=10)
        assert r.stdout.split() == ["booted", "init"], r.stderr
        subprocess.run(ns + ["/sbin/halt"], timeout=10, check=True)
        out, _ = proc.communicate(timeout=15)
        assert b"Requesting system halt" in out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_build_packs_about_one_megabyte_with_metadata(tmp_path):
    out = busybox.build("bb", tmp_path)
    assert out == tmp_path / "bb.tar.gz"
    assert 0.5e6 < out.stat().st_size < 3e6
    meta = TemplateMeta.load(tmp_path / "bb.conf")
    assert meta.name == "bb" and "BusyBox" in meta.description
    assert (meta.init, meta.halt, meta.reboot) == ("/sbin/init", "/sbin/halt", "/sbin/reboot")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bb.conf", "bb.tar.gz"]


def test_build_refuses_to_overwrite_an_existing_template(tmp_path):
    busybox.build("bb", tmp_path, fmt="dir")
    before = snapshot(tmp_path)
    with pytest.raises(TemplateExists, match="already exists"):
        busybox.build("bb", tmp_path, fmt="gz")
    assert snapshot(tmp_path) == before
