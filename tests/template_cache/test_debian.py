"""The Debian builder (debootstrap minbase + BusyBox init). Needs a reachable Debian mirror."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from templates import debian
from templates.errors import BuildError
from templates.fsutil import mount, mounts_under, umount
from templates.metadata import TemplateMeta
from templates.store import TemplateStore

REPO = Path(__file__).resolve().parents[2]
MS_BIND = 4096


def _mirror_or_skip() -> str:
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root")
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed")
    mirror = debian.host_mirror()
    try:
        debian.check_mirror(mirror, "bookworm", timeout=10)
    except BuildError as e:
        pytest.skip(f"no Debian mirror reachable: {e}")
    return mirror


pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def deb_cache(tmp_path_factory) -> Path:
    """Downloaded .debs, shared by this module's builds so only the first one downloads."""
    return tmp_path_factory.mktemp("debcache")


@pytest.fixture(scope="module")
def deb_store(tmp_path_factory, deb_cache) -> TemplateStore:
    _mirror_or_skip()
    td = tmp_path_factory.mktemp("debtemplates")
    t0 = time.monotonic()
    lines: list[str] = []
    debian.build("deb", td, suite="bookworm", fmt="zst", cache_dir=deb_cache, progress=lines.append,
                 init="busybox")
    print(f"debian build {time.monotonic() - t0:.1f}s")
    assert any("debootstrap" in ln for ln in lines)
    return TemplateStore(td)


@pytest.fixture(scope="module")
def deb_vdir(deb_store, tmp_path_factory) -> Path:
    vdir = tmp_path_factory.mktemp("debvs") / "d1"
    t0 = time.monotonic()
    deb_store.populate("deb", vdir)
    print(f"debian populate {time.monotonic() - t0:.1f}s")
    return vdir


def test_debian_template_is_a_tar_zst_with_metadata(deb_store):
    info = deb_store.get("deb")
    assert info.path.name == "deb.tar.zst" and info.kind == "tarball"
    assert 15e6 < info.path.stat().st_size < 120e6
    meta = TemplateMeta.load(deb_store.templatedir / "deb.conf")
    assert "Debian bookworm" in meta.description and meta.init == "/sbin/init"


def test_debian_root_has_busybox_init_halt_reboot_and_no_devices_or_kernel(deb_vdir):
    for applet in ("init", "halt", "reboot"):
        assert os.readlink(deb_vdir / "usr/sbin" / applet) == "/bin/busybox"
    assert (deb_vdir / "usr/bin/busybox").is_file()
    assert "::sysinit:/etc/vcd/rc.boot" in (deb_vdir / "etc/inittab").read_text()
    assert os.listdir(deb_vdir / "dev") == []
    status = (deb_vdir / "var/lib/dpkg/status").read_text()
    packages = {ln.split()[1] for ln in status.splitlines() if ln.startswith("Package: ")}
    assert "apt" in packages and "busybox-static" in packages
    assert not {p for p in packages if p.startswith(("linux-image", "udev", "systemd-sysv"))}
    for dirpath, _, files in os.walk(deb_vdir):
        for n in files:
            m = os.lstat(os.path.join(dirpath, n)).st_mode
            assert not (stat.S_ISCHR(m) or stat.S_ISBLK(m)), os.path.join(dirpath, n)
    assert stat.S_IMODE(os.lstat(deb_vdir / "usr/bin/passwd").st_mode) & stat.S_ISUID


def test_apt_get_runs_inside_the_debian_root(deb_vdir):
    r = subprocess.run(["chroot", str(deb_vdir), "apt-get", "--version"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("apt "), r.stderr


def test_apt_inside_fetches_package_lists_from_the_configured_sources(deb_vdir):
    """With network (here: the host's, through chroot) apt's sources, keys and dirs work as shipped."""
    _mirror_or_skip()
    resolv = deb_vdir / "etc/resolv.conf"
    null = deb_vdir / "dev/null"
    null.touch()
    mount("/dev/null", null, "none", "", MS_BIND)
    try:
        resolv.write_text(Path("/etc/resolv.conf").read_text())
        r = subprocess.run(["chroot", str(deb_vdir), "apt-get", "-q", "update"], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "bookworm-security" in r.stdout
        r = subprocess.run(["chroot", str(deb_vdir), "apt-cache", "policy", "less"],
                           capture_output=True, text=True, timeout=30)
        assert "Candidate:" in r.stdout and "(none)" not in r.stdout.split("Candidate:")[1].split()[0]
    finally:
        umount(null)
        null.unlink()
        resolv.write_text("")
        for p in (deb_vdir / "var/lib/apt/lists").glob("*_*"):
            p.unlink()


def test_debian_init_boots_as_pid1_and_reboot_ends_it(deb_vdir):
    proc = subprocess.Popen(["unshare", "--fork", "--pid", "--uts", "--mount",
                             f"--mount-proc={deb_vdir}/proc", "chroot", str(deb_vdir), "/sbin/init"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        init_pid = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and init_pid is None:
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            if kids and Path(f"/proc/{kids[0]}/comm").read_text().strip() == "init":
                init_pid = int(kids[0])
            time.sleep(0.05)
        assert init_pid, "init did not start"
        ns = ["nsenter", "-t", str(init_pid), "-p", "-u", "-m", "chroot", str(deb_vdir)]
        # rc.boot names the vserver: then init has run its boot (it respawns nothing
        # whose appearance would say so)
        deadline = time.monotonic() + 15
        while True:
            r = subprocess.run(ns + ["/bin/sh", "-c", "hostname; cat /proc/1/comm"],
                               capture_output=True, text=True, timeout=10)
            if r.stdout.split() == ["vserver", "init"]:
                break
            assert time.monotonic() < deadline, r.stdout + r.stderr
            time.sleep(0.1)
        subprocess.run(ns + ["/sbin/reboot"], timeout=10, check=True)
        out, _ = proc.communicate(timeout=20)
        assert b"Requesting system reboot" in out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if os.path.ismount(deb_vdir / "proc"):
            subprocess.run(["umount", "-l", str(deb_vdir / "proc")])


def test_interrupted_debian_build_leaves_no_files_and_no_mounts(tmp_path, deb_cache):
    _mirror_or_skip()
    td = tmp_path / "t"
    proc = subprocess.Popen([sys.executable, "-m", "templates.cli", "--templatedir", str(td),
                             "build", "deb", "--from", "debian", "--cache-dir", str(deb_cache)],
                            cwd=REPO,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            seen.append(line)
            # dpkg runs inside the target from here on, with /proc mounted there
            if "Installing core packages" in line or "Unpacking required" in line:
                break
        else:
            pytest.fail("build ended before the install phase:\n" + "".join(seen))
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=90)
        rest = proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 130, rest
    assert "interrupted" in rest
    assert mounts_under(td) == []
    assert list(td.iterdir()) == []
    assert list(deb_cache.glob("*.deb")), "the cache outside the template dir is kept"




@pytest.fixture
def native_backend(tmp_path):
    """A libvserver backend with its own state dir and cgroup parent, torn down completely."""
    libvserver = pytest.importorskip("libvserver")
    from libvserver.native.cgroups import discover
    if not discover():
        pytest.skip("no cgroup hierarchy is mounted")
    b = libvserver.get_backend(state_dir=tmp_path / "state", cgroup_parent=f"vcdtpl-{os.getpid()}",
                               image_dir=tmp_path / "images")
    yield b
    layout = getattr(b, "layout", None)
    if layout is None:
        return
    for xid in layout.xids():
        try:
            layout.kill_all(xid)
        except OSError:
            pass
    try:
        b.client.call({"op": "quit"}, timeout=10)
    except Exception:
        pass
    for xid in layout.xids():
        layout.remove(xid, wait=5)
    layout.remove_parent()


def test_debian_vserver_sharing_the_template_starts_and_runs_apt(deb_store, native_backend, tmp_path):
    from libvserver import ContextSpec
    if "deb-dir" not in {t.name for t in deb_store.list()}:
        deb_store.unpack("deb", "deb-dir")
    template = deb_store.get("deb-dir")
    vdir = tmp_path / "vs" / "deb1"
    deb_store.populate("deb-dir", vdir, copy=False)
    deb_store.release(vdir)  # as after a host reboot: the runtime re-mounts before start
    assert deb_store.ensure_mounted(vdir)
    xid = 30000 + os.getpid() % 5000
    meta = template.meta
    spec = ContextSpec(xid=xid, name="deb1", vdir=vdir, init=[meta.init], bcaps=set(meta.bcaps))
    native_backend.start(spec)
    try:
        r = native_backend.exec(xid, ["apt-get", "--version"], timeout=30)
        assert r.status == 0 and r.output.startswith(b"apt "), r.output
        r = native_backend.exec(xid, ["/bin/sh", "-c", "cat /proc/1/comm; hostname"], timeout=30)
        assert r.output.decode().split()[0] == "init"
        native_backend.stop(xid, [meta.halt], timeout=15)
        assert not native_backend.is_running(xid)
    finally:
        if native_backend.is_running(xid):
            native_backend.stop(xid, ["/sbin/halt"], timeout=5)
    # whatever the runtime made inside (/dev nodes, pid files) went to the upper layer
    assert os.listdir(template.path / "dev") == []
    deb_store.remove_tree(vdir, tmp_path / "vs")
    assert deb_store.users("deb-dir") == []
