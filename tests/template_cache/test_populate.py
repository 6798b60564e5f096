"""Populating a vdir from each tarball format and from a directory, keeping what a root fs needs."""

from __future__ import annotations

import os
import stat

import pytest

from templates.errors import InvalidTemplateName, PopulateError, TemplateNotFound
from templates.pack import pack_tree
from templates.store import TemplateStore
from tpl_helpers import needs_root, snapshot

FORMATS = ["gz", "zst", "xz", "bz2", "tar"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_populate_from_each_tarball_format_reproduces_the_rootfs(bb_templatedir, bb_reference,
                                                                 tmp_path, fmt):
    vdir = tmp_path / "vs" / "v1"
    TemplateStore(bb_templatedir).populate(f"bb-{fmt}", vdir)
    assert snapshot(vdir) == snapshot(bb_reference)


def test_populate_copy_of_directory_template_is_independent(bb_templatedir, bb_reference, tmp_path):
    store = TemplateStore(bb_templatedir)
    vdir = tmp_path / "v1"
    store.populate("bb-dir", vdir, copy=True)
    assert snapshot(vdir) == snapshot(bb_reference)
    assert not os.path.ismount(vdir)
    (vdir / "etc/hostname").write_text("changed\n")
    assert (bb_templatedir / "bb-dir/etc/hostname").read_text() == "vserver\n"
    assert store.sharing(vdir) is None


@needs_root
@pytest.mark.parametrize("fmt", FORMATS)
def test_owners_setuid_hardlinks_fifos_and_absolute_symlinks_survive(tmp_path, fmt):
    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    su = src / "usr/bin/su"
    su.write_bytes(b"\x7fELF fake")
    os.chown(su, 0, 0)
    os.chmod(su, 0o4755)
    home = src / "home/alice"
    home.mkdir(parents=True)
    os.chown(home, 1000, 1001)
    os.chmod(home, 0o2750)
    os.link(su, src / "usr/bin/su-again")
    os.mkfifo(src / "fifo")
    os.symlink("/bin/busybox", src / "usr/bin/ls")
    (src / "tmp").mkdir()
    os.chmod(src / "tmp", 0o1777)
    td = tmp_path / "t"
    td.mkdir()
    from templates.pack import FORMATS as SUFFIX
    pack_tree(src, td / f"x{SUFFIX[fmt]}", fmt)
    vdir = tmp_path / "v"
    TemplateStore(td).populate("x", vdir)
    assert snapshot(vdir) == snapshot(src)
    st = os.lstat(vdir / "usr/bin/su")
    assert stat.S_IMODE(st.st_mode) == 0o4755 and st.st_nlink == 2
    assert os.lstat(vdir / "usr/bin/su-again").st_ino == st.st_ino
    hst = os.lstat(vdir / "home/alice")
    assert (hst.st_uid, hst.st_gid, stat.S_IMODE(hst.st_mode)) == (1000, 1001, 0o2750)
    assert os.readlink(vdir / "usr/bin/ls") == "/bin/busybox"
    assert stat.S_ISFIFO(os.lstat(vdir / "fifo").st_mode)


def test_populate_refuses_a_nonempty_vdir_and_leaves_it_alone(bb_templatedir, tmp_path):
    vdir = tmp_path / "v"
    vdir.mkdir()
    (vdir / "precious").write_text("keep")
    with pytest.raises(PopulateError, match="not empty"):
        TemplateStore(bb_templatedir).populate("bb", vdir)
    assert [p.name for p in vdir.iterdir()] == ["precious"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_extraction_removes_the_vdir_it_created(tmp_path, fmt):
    """A truncated archive of each format: a clear error, and nothing left of the new vdir."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"f{i}").write_bytes(os.urandom(4096))
    td = tmp_path / "t"
    td.mkdir()
    from templates.pack import FORMATS as SUFFIX
    whole = td / f"whole{SUFFIX[fmt]}"
    pack_tree(src, whole, fmt)
    data = whole.read_bytes()
    whole.unlink()
    (td / f"broken{SUFFIX[fmt]}").write_bytes(data[: len(data) // 2])
    vdir = tmp_path / "vs" / "v"
    with pytest.raises(PopulateError, match=f"broken{SUFFIX[fmt]}"):
        TemplateStore(td).populate("broken", vdir)
    assert not vdir.exists()
    assert list((tmp_path / "vs").iterdir()) == []


def test_failed_extraction_empties_a_vdir_that_existed(tmp_path):
    td = tmp_path / "t"
    td.mkdir()
    (td / "junk.tar.zst").write_bytes(b"this is not zstd")
    vdir = tmp_path / "v"
    vdir.mkdir()
    with pytest.raises(PopulateError, match="junk.tar.zst"):
        TemplateStore(td).populate("junk", vdir)
    assert vdir.is_dir() and list(vdir.iterdir()) == []


@pytest.mark.parametrize("name", ["", ".", "..", "../etc", "a/b", ".hidden", "-opt", "x" * 65,
                                  "sp ace", "nul\x00", "é"])
def test_invalid_template_names_are_refused(tmp_path, name):
    with pytest.raises(InvalidTemplateName):
        TemplateStore(tmp_path).get(name)


def test_missing_template_is_not_found(tmp_path):
    with pytest.raises(TemplateNotFound, match="'nope'"):
        TemplateStore(tmp_path).get("nope")


def test_list_reports_every_format_and_kind(bb_templatedir):
    rows = {t.name: t for t in TemplateStore(bb_templatedir).list()}
    assert set(rows) == {"bb", "bb-gz", "bb-zst", "bb-xz", "bb-bz2", "bb-tar", "bb-dir"}
    assert rows["bb-dir"].kind == "directory" and rows["bb-zst"].kind == "tarball"
    assert rows["bb-zst"].path.name == "bb-zst.tar.zst"
    assert rows["bb"].as_struct() == {"name": "bb", "description": rows["bb"].meta.description}
