"""vx.create / vx.remove / vx.rename / vx.templates over XML-RPC with real files."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from api_helpers import create_vserver, ensure_busybox_template, fault, fault_code, unique


@pytest.fixture
def admin(vcd_module):
    ensure_busybox_template(vcd_module.templatedir)
    return vcd_module.proxy()


def test_create_from_tarball_extracts_a_working_root_filesystem(admin, vcd_module):
    name = unique("web")
    assert admin.vx.create(name=name, template="busybox") is None
    vdir = vcd_module.vbasedir / name
    assert (vdir / "bin" / "busybox").is_file()
    assert os.path.islink(vdir / "bin" / "sh")
    assert (vdir / "sbin" / "init").exists() or os.path.islink(vdir / "sbin" / "init")
    assert admin.vxdb.vdir.get(name=name) == str(vdir)
    assert name in admin.vxdb.list()


def test_create_allocates_distinct_xids(admin, vcd_module):
    names = [create_vserver(vcd_module) for _ in range(3)]
    xids = [admin.vxdb.xid.get(name=n) for n in names]
    assert len(set(xids)) == 3 and all(2 <= x <= 65534 for x in xids)


def test_create_existing_without_rebuild_is_201_and_with_rebuild_recreates(admin, vcd_module):
    name = create_vserver(vcd_module)
    xid = admin.vxdb.xid.get(name=name)
    admin.vxdb.nx.addr.set(name=name, addr="10.0.0.9")
    marker = vcd_module.vbasedir / name / "root" / "marker"
    marker.write_text("old")
    assert fault_code(admin.vx.create, name=name, template="busybox") == 201
    assert marker.exists()
    admin.vx.create(name=name, template="busybox", force=True)   # the alias of rebuild
    assert not marker.exists()
    assert (vcd_module.vbasedir / name / "bin" / "busybox").is_file()
    assert admin.vxdb.xid.get(name=name) == xid                    # xid reused
    assert admin.vxdb.nx.addr.get(name=name)[0]["addr"] == "10.0.0.9"  # configuration kept


def test_create_with_custom_vdir(admin, vcd_module, tmp_path):
    name = unique()
    vdir = vcd_module.root / "elsewhere" / name
    admin.vx.create(name=name, template="busybox", rebuild=False, copy=False, vdir=str(vdir))
    assert (vdir / "bin" / "busybox").is_file()
    assert admin.vxdb.vdir.get(name=name) == str(vdir)
    admin.vx.remove(name=name)
    assert not vdir.exists()


@pytest.mark.parametrize("vdir", ["/", "/etc", "/usr/local/x", "/proc/1", "relative/dir", "/a/../etc"])
def test_create_refuses_dangerous_vdirs(admin, vdir):
    f = fault(admin.vx.create, name=unique(), template="busybox", vdir=vdir)
    assert f.faultCode == 200 and "vdir" in f.faultString


def test_create_refuses_a_nonempty_existing_vdir(admin, vcd_module):
    vdir = vcd_module.root / unique("full")
    vdir.mkdir()
    (vdir / "precious").write_text("keep me")
    assert fault_code(admin.vx.create, name=unique(), template="busybox", vdir=str(vdir)) == 201
    assert (vdir / "precious").read_text() == "keep me"


@pytest.mark.parametrize("template", ["", "../../etc/passwd", "no-such-template", "a/b"])
def test_create_with_bad_or_missing_template_is_200_and_leaves_nothing(admin, vcd_module, template):
    name = unique()
    f = fault(admin.vx.create, name=name, template=template)
    assert f.faultCode == 200 and "template" in f.faultString
    assert name not in admin.vxdb.list()
    assert not (vcd_module.vbasedir / name).exists()


def _hostile_tarball(path: Path, outside: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        def add(info: tarfile.TarInfo, data: bytes = b"") -> None:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
        ok = tarfile.TarInfo("bin")
        ok.type = tarfile.DIRTYPE
        add(ok)
        evil = tarfile.TarInfo("../" * 8 + str(outside).lstrip("/"))
        add(evil, b"pwned")


def test_create_from_a_tarball_with_traversal_writes_nothing_outside(admin, vcd_module, tmp_path):
    outside = tmp_path / "outside-target"
    _hostile_tarball(vcd_module.templatedir / "evil.tar.gz", outside)
    name = unique()
    code = fault_code(admin.vx.create, name=name, template="evil")
    assert code in (200, 500)
    assert not outside.exists()
    assert name not in admin.vxdb.list()
    assert not (vcd_module.vbasedir / name).exists()


def test_create_from_a_template_directory_shares_or_copies(admin, vcd_module):
    tdir = vcd_module.templatedir / "dirtpl"
    if not tdir.exists():
        from templates.busybox import build_rootfs
        build_rootfs(tdir)
    shared, copied = unique("shared"), unique("copied")
    admin.vx.create(name=shared, template="dirtpl")                  # copy=false: share
    admin.vx.create(name=copied, template="dirtpl", copy=True)
    for name in (shared, copied):
        assert (vcd_module.vbasedir / name / "bin" / "busybox").is_file()
    # a write in the sharing vserver never reaches the template or the copy
    (vcd_module.vbasedir / shared / "etc" / "motd").write_text("mine")
    assert not (tdir / "etc" / "motd").exists()
    assert not (vcd_module.vbasedir / copied / "etc" / "motd").exists()
    admin.vx.remove(name=shared)
    admin.vx.remove(name=copied)
    assert (tdir / "bin" / "busybox").is_file()                      # template intact


def test_remove_deletes_rows_and_root_filesystem(admin, vcd_module):
    name = create_vserver(vcd_module)
    admin.vxdb.vx.limit.set(name=name, limit="NPROC", max=10)
    admin.vg.add(group="rmgroup", name=name)
    xid = admin.vxdb.xid.get(name=name)
    admin.vx.remove(name=name)
    assert name not in admin.vxdb.list()
    assert not (vcd_module.vbasedir / name).exists()
    assert fault_code(admin.vxdb.name.get, xid=xid) == 202
    assert name not in admin.vg.list(group="rmgroup")
    assert fault_code(admin.vx.remove, name=name) == 202


def test_remove_never_follows_symlinks_out_of_the_vdir(admin, vcd_module, tmp_path):
    name = create_vserver(vcd_module)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "file").write_text("keep")
    os.symlink(precious, vcd_module.vbasedir / name / "root" / "link")
    admin.vx.remove(name=name)
    assert (precious / "file").read_text() == "keep"


def test_rename_keeps_configuration_and_vdir(admin, vcd_module):
    name, new = create_vserver(vcd_module), unique("renamed")
    other = create_vserver(vcd_module)
    xid = admin.vxdb.xid.get(name=name)
    admin.vxdb.nx.addr.set(name=name, addr="10.3.3.3")
    assert fault_code(admin.vx.rename, name=name, newname=other) == 201
    admin.vx.rename(name=name, newname=new)
    assert admin.vxdb.xid.get(name=new) == xid
    assert admin.vxdb.nx.addr.get(name=new)[0]["addr"] == "10.3.3.3"
    assert admin.vxdb.vdir.get(name=new) == str(vcd_module.vbasedir / name)
    assert fault_code(admin.vxdb.xid.get, name=name) == 202
    assert fault_code(admin.vx.rename, name=new, newname="../x") == 200


def test_templates_lists_name_and_description(admin, vcd_module):
    all_templates = admin.vx.templates(name="")
    busybox = [t for t in all_templates if t["name"] == "busybox"]
    assert busybox and "BusyBox" in busybox[0]["description"]
    assert admin.vx.templates(name="busybox") == busybox
    assert admin.vx.templates(name="nothing-here") == []


def test_create_after_a_crash_mid_extraction_reuses_the_name(admin, vcd_module):
    # what a SIGKILL during extraction leaves: a half-filled vdir, its marker, no VXDB row
    name = unique("crashed")
    vdir = vcd_module.vbasedir / name
    (vdir / "bin").mkdir(parents=True)
    (vdir / "bin" / "half-written").write_text("x")
    (vcd_module.vbasedir / f".{name}.vcd-partial").touch()
    admin.vx.create(name=name, template="busybox")
    assert (vdir / "bin" / "busybox").is_file()
    assert not (vdir / "bin" / "half-written").exists()
    assert not (vcd_module.vbasedir / f".{name}.vcd-partial").exists()
