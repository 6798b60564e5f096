"""Hostile tarballs: nothing is ever written outside the vdir, and the archive is refused or neutralised."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from templates.errors import UnsafeArchive
from templates.store import TemplateStore, extract_tarball
from tpl_helpers import needs_root, snapshot


@pytest.fixture
def outside(tmp_path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret").write_text("host data\n")
    os.chmod(d / "secret", 0o600)
    os.chmod(d, 0o755)
    return d


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> None:
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT) as tf:
        for ti, data in members:
            if data is not None:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)


def _file(name: str, data: bytes = b"pwned\n", mode: int = 0o644):
    ti = tarfile.TarInfo(name)
    ti.mode = mode
    return ti, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE, mode: int = 0o777):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = target
    ti.mode = mode
    return ti, None


def _dir(name: str, mode: int = 0o755):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = mode
    return ti, None


def _populate(tmp_path: Path, members) -> tuple[TemplateStore, Path]:
    td = tmp_path / "t"
    td.mkdir(exist_ok=True)
    _tar(td / "evil.tar.gz", members)
    return TemplateStore(td), tmp_path / "vs" / "evil"


def _assert_untouched(outside: Path, before: dict) -> None:
    assert snapshot(outside) == before
    assert stat.S_IMODE(outside.stat().st_mode) == 0o755
    assert (outside / "secret").stat().st_nlink == 1


def test_absolute_member_path_is_refused(tmp_path, outside):
    before = snapshot(outside)
    store, vdir = _populate(tmp_path, [_file("etc/ok"), _file(str(outside / "pwned"))])
    with pytest.raises(UnsafeArchive, match="absolute path"):
        store.populate("evil", vdir)
    _assert_untouched(outside, before)
    assert not vdir.exists()


def test_dotdot_member_path_is_refused(tmp_path, outside):
    before = snapshot(outside)
    store, vdir = _populate(tmp_path, [_file("../../outside/pwned"), _file("a/../../x")])
    with pytest.raises(UnsafeArchive, match=r"'\.\.'"):
        store.populate("evil", vdir)
    _assert_untouched(outside, before)
    assert not vdir.exists()


@needs_root
def test_device_nodes_are_skipped_and_the_rest_extracted(tmp_path, outside):
    sda = tarfile.TarInfo("dev/sda")
    sda.type, sda.devmajor, sda.devminor, sda.mode = tarfile.BLKTYPE, 8, 0, 0o666
    mem = tarfile.TarInfo("dev/mem")
    mem.type, mem.devmajor, mem.devminor, mem.mode = tarfile.CHRTYPE, 1, 1, 0o666
    store, vdir = _populate(tmp_path, [_dir("dev"), (sda, None), (mem, None), _file("etc/ok")])
    store.populate("evil", vdir)
    assert os.listdir(vdir / "dev") == []
    assert (vdir / "etc/ok").read_bytes() == b"pwned\n"


def test_member_below_a_symlinked_parent_is_refused(tmp_path, outside):
    before = snapshot(outside)
    for target in (str(outside), "../../outside"):
        store, vdir = _populate(tmp_path, [_link("escape", target), _file("escape/pwned")])
        with pytest.raises(UnsafeArchive, match="parent 'escape' is a symlink"):
            store.populate("evil", vdir)
        _assert_untouched(outside, before)
        assert not vdir.exists()


def test_file_over_a_symlink_replaces_the_link_instead_of_writing_through(tmp_path, outside):
    before = snapshot(outside)
    store, vdir = _populate(tmp_path, [_link("x", str(outside / "secret")), _file("x", b"inside\n")])
    store.populate("evil", vdir)
    _assert_untouched(outside, before)
    assert not (vdir / "x").is_symlink() and (vdir / "x").read_bytes() == b"inside\n"


def test_directory_over_a_symlink_never_chmods_the_target(tmp_path, outside):
    before = snapshot(outside)
    store, vdir = _populate(tmp_path, [_link("d", str(outside)), _dir("d", 0o777)])
    store.populate("evil", vdir)
    _assert_untouched(outside, before)
    assert (vdir / "d").is_dir() and not (vdir / "d").is_symlink()


def test_symlink_over_a_directory_is_refused(tmp_path, outside):
    before = snapshot(outside)
    store, vdir = _populate(tmp_path, [_dir("d"), _file("d/f"), _link("d", str(outside)),
                                       _dir("d", 0o777)])
    with pytest.raises(UnsafeArchive, match="replace a directory"):
        store.populate("evil", vdir)
    _assert_untouched(outside, before)


@pytest.mark.parametrize("linkname", ["../../outside/secret", "{outside}/secret", "via/secret",
                                      "missing"])
def test_hard_link_to_outside_or_through_a_symlink_is_refused(tmp_path, outside, linkname):
    before = snapshot(outside)
    linkname = linkname.format(outside=outside)
    store, vdir = _populate(tmp_path, [_link("via", str(outside)),
                                       _link("h", linkname, kind=tarfile.LNKTYPE, mode=0o777)])
    with pytest.raises(UnsafeArchive, match="refused"):
        store.populate("evil", vdir)
    _assert_untouched(outside, before)
    assert not vdir.exists()


def test_hard_link_inside_the_tree_is_kept(tmp_path):
    store, vdir = _populate(tmp_path, [_file("bin/a", b"x"), _link("bin/b", "bin/a", kind=tarfile.LNKTYPE)])
    store.populate("evil", vdir)
    assert (vdir / "bin/a").stat().st_ino == (vdir / "bin/b").stat().st_ino


def test_symlink_targets_are_stored_verbatim_and_never_followed(tmp_path, outside):
    before = snapshot(outside)
    store, vdir = _populate(tmp_path, [_link("bin/sh", "/bin/busybox"), _link("etc/x", str(outside / "secret")),
                                       _link("up", "../../../..")])
    store.populate("evil", vdir)
    assert os.readlink(vdir / "bin/sh") == "/bin/busybox"
    assert os.readlink(vdir / "etc/x") == str(outside / "secret")
    assert os.readlink(vdir / "up") == "../../../.."
    _assert_untouched(outside, before)


def test_extract_into_a_symlinked_vdir_is_refused(tmp_path, outside):
    td = tmp_path / "t"
    td.mkdir()
    _tar(td / "a.tar.gz", [_file("f")])
    link = tmp_path / "vdir"
    link.symlink_to(outside)
    with pytest.raises(Exception, match="not a directory"):
        extract_tarball(td / "a.tar.gz", link)
    assert sorted(os.listdir(outside)) == ["secret"]
