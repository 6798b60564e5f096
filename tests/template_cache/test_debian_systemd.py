"""The Debian template with the distribution's own systemd (issue 16): its metadata (how
vcd runs systemd) and, with a reachable Debian mirror, a real build whose tree boots
systemd as /sbin/init. The boot itself is tested with the console and readiness work."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from templates import debian
from templates.errors import MetadataError
from templates.metadata import TemplateMeta
from templates.store import TemplateStore

REPO = Path(__file__).resolve().parents[2]


# -- metadata (no network) --------------------------------------------------------------

def test_systemd_metadata_says_how_to_run_systemd():
    meta = debian.build_meta("deb", "bookworm", "systemd")
    assert meta.init == "/sbin/init"
    assert (meta.halt_signal, meta.reboot_signal) == ("SIGRTMIN+3", "SIGINT")
    assert meta.api_mounts == ["run", "run-lock", "cgroup"] and meta.ready == "notify"
    assert {"SETPCAP", "SYS_ADMIN"} <= set(meta.bcaps)
    assert set(meta.bcaps) >= set(debian.DEFAULT_BCAPS)
    # never capabilities that reach beyond the vserver's own namespaces
    assert not {"SYS_MODULE", "SYS_RAWIO", "SYS_TIME", "MAC_ADMIN", "MAC_OVERRIDE",
                "BPF", "PERFMON"} & set(meta.bcaps)
    assert "systemd" in meta.description and "Debian bookworm" in meta.description


def test_busybox_variant_metadata_is_todays():
    meta = debian.build_meta("deb", "bookworm", "busybox")
    assert (meta.halt_signal, meta.reboot_signal, meta.api_mounts, meta.ready) == ("", "", [], "")
    assert meta.bcaps == TemplateMeta(name="x").bcaps and "BusyBox" in meta.description


def test_metadata_with_init_settings_round_trips_through_its_file(tmp_path):
    meta = debian.build_meta("sd", "bookworm", "systemd")
    meta.save(tmp_path / "sd.conf")
    again = TemplateMeta.load(tmp_path / "sd.conf")
    assert again == meta


@pytest.mark.parametrize("key,value,why", [
    ("halt_signal", "SIGNOPE", "SIGRTMIN+n"),
    ("halt_signal", 37, "must be a string"),
    ("reboot_signal", "sigint", "SIGRTMIN+n"),
    ("api_mounts", ["run", "proc"], "unknown value 'proc'"),
    ("api_mounts", "run", "must be a list"),
    ("ready", "sd_notify", "unknown readiness mode"),
])
def test_bad_init_settings_in_metadata_are_refused_naming_the_key(key, value, why):
    with pytest.raises(MetadataError) as info:
        TemplateMeta.from_dict("t", {key: value}, source="t.conf")
    assert f"key {key!r}" in str(info.value) and why in str(info.value)


def test_apt_sources_follow_the_distribution():
    deb = debian.apt_sources("bookworm", "http://deb.debian.org/debian")
    assert "deb http://deb.debian.org/debian bookworm main" in deb
    assert "debian-security bookworm-security main" in deb
    ubu = debian.apt_sources("noble", "http://archive.ubuntu.com/ubuntu")
    assert "deb http://archive.ubuntu.com/ubuntu noble main universe" in ubu
    assert "security.ubuntu.com/ubuntu noble-security" in ubu and "debian" not in ubu
    assert debian.is_ubuntu("jammy") and not debian.is_ubuntu("bookworm")


def test_cli_refuses_a_systemd_init_for_the_busybox_source(tmp_path):
    r = subprocess.run([sys.executable, "-m", "templates.cli", "--templatedir", str(tmp_path),
                        "build", "x", "--from", "busybox", "--init", "systemd"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "--init systemd needs --from debian" in r.stderr
    assert list(tmp_path.iterdir()) == []
    r = subprocess.run([sys.executable, "-m", "templates.cli", "build", "--help"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "--init {systemd,busybox}" in r.stdout


# -- a real build (needs root, debootstrap and a Debian mirror) -------------------------

def _mirror_or_skip() -> str:
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root")
    import shutil
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed")
    mirror = debian.host_mirror()
    try:
        debian.check_mirror(mirror, "bookworm", timeout=10)
    except debian.BuildError as e:
        pytest.skip(f"no Debian mirror reachable: {e}")
    return mirror


@pytest.fixture(scope="module")
def sd_daemon(tmp_path_factory):
    """A (not yet started) daemon whose templatedir holds the systemd template, built once
    for the module as tests/template_cache/test_debian.py builds its template."""
    _mirror_or_skip()
    from vcdtest import VcdDaemon
    daemon = VcdDaemon(tmp_path_factory.mktemp("sdvcd"))
    t0 = time.monotonic()
    lines: list[str] = []
    debian.build("debian-systemd", daemon.templatedir, suite="bookworm", fmt="zst",
                 cache_dir=tmp_path_factory.mktemp("sddebcache"), progress=lines.append)
    print(f"debian systemd build {time.monotonic() - t0:.1f}s")
    assert any("systemd init" in ln for ln in lines)
    try:
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture(scope="module")
def sd_root(sd_daemon, tmp_path_factory) -> Path:
    vdir = tmp_path_factory.mktemp("sdvs") / "s1"
    TemplateStore(sd_daemon.templatedir).populate("debian-systemd", vdir)
    return vdir


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_systemd_template_has_its_metadata_beside_it(sd_daemon):
    store = TemplateStore(sd_daemon.templatedir)
    info = store.get("debian-systemd")
    assert info.kind == "tarball" and info.path.name == "debian-systemd.tar.zst"
    meta = TemplateMeta.load(sd_daemon.templatedir / "debian-systemd.conf")
    assert meta == debian.build_meta("debian-systemd", "bookworm", "systemd")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_systemd_is_init_in_the_tree_and_runs(sd_root):
    init = sd_root / "sbin/init"
    assert os.readlink(init).endswith("/systemd")
    target = sd_root / os.readlink(init).lstrip("/")
    assert target.is_file() and os.access(target, os.X_OK)
    # as /sbin/init but not PID 1 systemd would be telinit: ask the binary itself
    r = subprocess.run(["chroot", str(sd_root), os.readlink(init), "--version"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("systemd "), r.stderr
    status = (sd_root / "var/lib/dpkg/status").read_text()
    packages = {ln.split()[1] for ln in status.splitlines() if ln.startswith("Package: ")}
    assert {"systemd", "systemd-sysv", "dbus", "procps", "iproute2", "apt"} <= packages
    assert not {p for p in packages if p.startswith(("linux-image", "udev", "busybox",
                                                     "ifupdown"))}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_systemd_tree_is_fit_to_be_shared_by_many_vservers(sd_root):
    # every vserver gets its own machine id at its first boot
    assert (sd_root / "etc/machine-id").read_text() == ""
    assert os.readlink(sd_root / "var/lib/dbus/machine-id") == "/etc/machine-id"
    for unit in debian.SYSTEMD_MASKED:
        assert os.readlink(sd_root / "etc/systemd/system" / unit) == "/dev/null"
    assert not list((sd_root / "etc/systemd/system").glob("*.wants/e2scrub*"))
    assert os.listdir(sd_root / "dev") == []
    for dirpath, _, files in os.walk(sd_root):
        for n in files:
            m = os.lstat(os.path.join(dirpath, n)).st_mode
            assert not (stat.S_ISCHR(m) or stat.S_ISBLK(m)), os.path.join(dirpath, n)
    assert not list((sd_root / "var/cache/apt/archives").glob("*.deb"))
    assert "bookworm-security" in (sd_root / "etc/apt/sources.list").read_text()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_vserver_created_from_it_gets_systemds_init_settings(sd_daemon):
    from vcd import vxdb
    from vcd.runtime import build_spec
    from vcd.vxdb.lookup import find_vserver
    sd_daemon.start()
    admin = sd_daemon.proxy()
    assert {"name": "debian-systemd",
            "description": "Debian bookworm (debootstrap minbase) with systemd"} \
        in admin.vx.templates()
    admin.vx.create(name="sd1", template="debian-systemd")
    try:
        got = admin.vxdb.init.get(name="sd1")
        assert (got["init"], got["halt_signal"], got["reboot_signal"]) == \
            ("/sbin/init", "SIGRTMIN+3", "SIGINT")
        assert {"SETPCAP", "SYS_ADMIN"} <= set(admin.vxdb.vx.bcaps.get(name="sd1"))
        db = vxdb.connect(sd_daemon.datadir / "vxdb")
        try:
            spec, _ = build_spec(db, find_vserver(db, "sd1"))
        finally:
            db.close()
        assert spec.api_mounts == ["run", "run-lock", "cgroup"] and spec.ready == "notify"
        assert os.readlink(sd_daemon.vbasedir / "sd1/sbin/init").endswith("/systemd")
    finally:
        admin.vx.remove(name="sd1")
