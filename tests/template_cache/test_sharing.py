"""Sharing a directory template through an overlay: isolation, space, re-mount, removal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from templates import busybox
from templates.errors import PopulateError, TemplateInUse, UnsafePath
from templates.fsutil import is_mountpoint, mount, mounts_under, safe_rmtree
from templates.store import TemplateStore, overlay_state_dir
from tpl_helpers import du_kib, needs_root, snapshot

pytestmark = needs_root


@pytest.fixture
def store(tmp_path) -> TemplateStore:
    td = tmp_path / "templates"
    busybox.build("base", td, fmt="dir")
    return TemplateStore(td)


def test_write_in_one_sharing_vdir_is_invisible_in_another_and_in_the_template(store, tmp_path):
    base = tmp_path / "vs"
    template = store.get("base").path
    pristine = snapshot(template)
    a, b = base / "a", base / "b"
    store.populate("base", a, copy=False)
    store.populate("base", b, copy=False)
    assert is_mountpoint(a) and is_mountpoint(b)
    assert snapshot(a) == pristine == snapshot(b)

    # replace a binary, edit a file, add one and delete one in a
    (a / "bin/ls").unlink()
    (a / "bin/ls").write_text("#!/bin/sh\necho trojan\n")
    (a / "etc/hostname").write_text("a\n")
    (a / "root/new").write_text("only in a")
    (a / "etc/shells").unlink()
    os.chmod(a / "tmp", 0o700)

    assert (a / "etc/hostname").read_text() == "a\n"
    assert snapshot(b) == pristine
    assert snapshot(template) == pristine
    assert store.users("base") == [a, b]
    assert store.sharing(a) == "base" and store.sharing(b) == "base"


def test_sharing_vdir_survives_unmount_and_is_remounted_with_its_changes(store, tmp_path):
    vdir = tmp_path / "vs" / "a"
    store.populate("base", vdir, copy=False)
    (vdir / "etc/hostname").write_text("kept\n")
    store.release(vdir)  # what a host reboot does
    assert not is_mountpoint(vdir) and list(vdir.iterdir()) == []
    assert store.ensure_mounted(vdir) is True
    assert (vdir / "etc/hostname").read_text() == "kept\n"
    assert store.ensure_mounted(vdir) is True  # idempotent: no second mount stacked
    assert len(mounts_under(vdir)) == 1


def test_ensure_mounted_is_false_for_an_independent_vdir(store, tmp_path):
    vdir = tmp_path / "vs" / "c"
    store.populate("base", vdir, copy=True)
    assert store.ensure_mounted(vdir) is False and not is_mountpoint(vdir)


def test_ten_sharing_vdirs_take_far_less_space_than_ten_copies(store, tmp_path):
    shared, copied = tmp_path / "shared", tmp_path / "copied"
    for i in range(10):
        store.populate("base", shared / f"v{i}", copy=False)
        store.populate("base", copied / f"v{i}", copy=True)
    one = du_kib(store.get("base").path)
    # -x: count only the vbasedir's own file system, i.e. not through the overlays
    shared_kib, copied_kib = du_kib(shared), du_kib(copied)
    print(f"template {one} KiB; 10 shared {shared_kib} KiB; 10 copies {copied_kib} KiB")
    assert copied_kib >= 9 * one
    assert shared_kib < one / 2
    assert all(is_mountpoint(shared / f"v{i}") for i in range(10))


def test_remove_tree_of_a_sharing_vdir_leaves_the_template_intact(store, tmp_path):
    base = tmp_path / "vs"
    template = store.get("base").path
    pristine = snapshot(template)
    a, b = base / "a", base / "b"
    store.populate("base", a, copy=False)
    store.populate("base", b, copy=False)
    (a / "etc/hostname").write_text("a\n")
    store.remove_tree(a, base)
    assert not os.path.lexists(a) and not os.path.lexists(overlay_state_dir(a))
    assert snapshot(template) == pristine
    assert store.users("base") == [b]
    assert snapshot(b) == pristine


def test_remove_template_is_refused_while_shared_then_allowed(store, tmp_path):
    base = tmp_path / "vs"
    a = base / "a"
    store.populate("base", a, copy=False)
    with pytest.raises(TemplateInUse, match=f"still shared by 1 vserver.*{a}"):
        store.remove_template("base")
    assert store.get("base").path.is_dir()
    store.remove_tree(a, base)
    store.remove_template("base")
    assert store.list() == []
    assert set(os.listdir(store.templatedir)) <= {".lock"}  # no cache, .conf or .shares left


def test_a_tarball_template_with_copy_false_is_extracted_independently(tmp_path):
    td = tmp_path / "t"
    busybox.build("bb", td)
    store = TemplateStore(td)
    vdir = tmp_path / "vs" / "v"
    store.populate("bb", vdir, copy=False)
    assert not is_mountpoint(vdir) and store.sharing(vdir) is None
    assert (vdir / "bin/busybox").is_file()


def test_stale_overlay_state_blocks_sharing_and_is_left_alone(store, tmp_path):
    vdir = tmp_path / "vs" / "a"
    stale = overlay_state_dir(vdir)
    (stale / "upper").mkdir(parents=True)
    (stale / "upper/data").write_text("someone's files")
    with pytest.raises(PopulateError, match="already exists"):
        store.populate("base", vdir, copy=False)
    assert not os.path.lexists(vdir)
    assert (stale / "upper/data").read_text() == "someone's files"
    assert store.users("base") == []


def test_failed_overlay_mount_leaves_no_state_registration_or_vdir(store, tmp_path):
    """An overlay cannot be the upper layer of another: a vbasedir on one makes the mount fail."""
    base = tmp_path / "ovl"
    for d in ("l", "u", "w", "m"):
        (base / d).mkdir(parents=True)
    mount("overlay", base / "m", "overlay",
          f"lowerdir={base / 'l'},upperdir={base / 'u'},workdir={base / 'w'}")
    vdir = base / "m" / "vs" / "a"
    with pytest.raises(PopulateError, match="overlay mount on .* failed"):
        store.populate("base", vdir, copy=False)
    assert os.listdir(base / "m" / "vs") == []
    assert store.users("base") == []
    assert mounts_under(base) == [str(base / "m")]


class TestRemoveTree:
    def test_refuses_root_and_paths_outside_base(self, tmp_path):
        with pytest.raises(UnsafePath):
            safe_rmtree(Path("/"), Path("/"))
        (tmp_path / "base").mkdir()
        (tmp_path / "other").mkdir()
        with pytest.raises(UnsafePath, match="not inside"):
            safe_rmtree(tmp_path / "other", tmp_path / "base")
        with pytest.raises(UnsafePath, match="not inside"):
            safe_rmtree(tmp_path / "base" / ".." / "other", tmp_path / "base")
        with pytest.raises(UnsafePath, match="not inside"):
            safe_rmtree(tmp_path / "base", tmp_path / "base")
        assert (tmp_path / "other").is_dir()

    def test_never_follows_symlinks(self, tmp_path):
        base = tmp_path / "base"
        outside = tmp_path / "outside"
        (outside / "sub").mkdir(parents=True)
        (outside / "sub/keep").write_text("keep")
        v = base / "v"
        (v / "deep/er").mkdir(parents=True)
        (v / "deep/er/link").symlink_to(outside)
        (v / "deep/subl").symlink_to(outside / "sub")
        (v / "f").write_text("x")
        safe_rmtree(v, base)
        assert not os.path.lexists(v)
        assert (outside / "sub/keep").read_text() == "keep"
        # a vdir that is itself a symlink: the link goes, its target stays
        base.joinpath("l").symlink_to(outside)
        safe_rmtree(base / "l", base)
        assert (outside / "sub/keep").exists()

    def test_refuses_to_descend_into_a_mount(self, tmp_path):
        base = tmp_path / "base"
        v = base / "v"
        (v / "mnt").mkdir(parents=True)
        mount("tmpfs", v / "mnt", "tmpfs", "size=1m")
        (v / "mnt/other-fs-file").write_text("x")
        with pytest.raises(UnsafePath, match="mounted inside"):
            safe_rmtree(v, base)
        assert (v / "mnt/other-fs-file").exists()

    def test_removes_deep_trees_without_recursion_limits(self, tmp_path):
        base = tmp_path / "base"
        v = base / "v"
        v.mkdir(parents=True)
        # 1500 levels, deeper than Python's default recursion limit
        cwd = os.getcwd()
        try:
            os.chdir(v)
            for _ in range(1500):
                os.mkdir("d")
                os.chdir("d")
            Path("leaf").write_text("x")
        finally:
            os.chdir(cwd)
        safe_rmtree(v, base)
        assert not os.path.lexists(v)


def test_vdir_named_through_a_symlinked_parent_is_recognised_as_mounted(store, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    vdir = tmp_path / "alias" / "a"
    store.populate("base", vdir, copy=False)
    assert store.ensure_mounted(vdir) is True
    assert store.ensure_mounted(tmp_path / "real" / "a") is True
    assert len(mounts_under(tmp_path / "real")) == 1
    assert store.users("base") == [tmp_path / "real" / "a"]
    store.remove_tree(vdir, tmp_path / "alias")
    assert os.listdir(tmp_path / "real") == [] and store.users("base") == []
