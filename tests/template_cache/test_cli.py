"""`vcdadm template build|list|remove` through templates.cli.main."""

from __future__ import annotations

import pytest

from templates.cli import main
from templates.store import TemplateStore
from tpl_helpers import needs_root


def test_build_list_remove_busybox(tmp_path, capsys):
    td = str(tmp_path)
    assert main(["--templatedir", td, "build", "bb", "--from", "busybox"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{td}/bb.tar.gz"
    assert "packing bb.tar.gz" in err and "s]" in err  # per-step lines with elapsed time
    assert main(["--templatedir", td, "build", "bbd", "--from", "busybox", "--format", "dir"]) == 0
    capsys.readouterr()
    assert main(["--templatedir", td, "list"]) == 0
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["bb", "tarball", "bb.tar.gz"]
    assert lines[1].split()[:3] == ["bbd", "directory", "bbd"]
    assert "BusyBox" in lines[0]
    assert main(["--templatedir", td, "remove", "bb"]) == 0
    assert [t.name for t in TemplateStore(tmp_path).list()] == ["bbd"]


@pytest.mark.parametrize("argv, message", [
    (["build", "../x", "--from", "busybox"], "invalid template name"),
    (["remove", "nope"], "does not exist"),
])
def test_errors_are_one_clear_line_and_exit_1(tmp_path, capsys, argv, message):
    assert main(["--templatedir", str(tmp_path)] + argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_building_an_existing_name_is_refused(tmp_path, capsys):
    td = str(tmp_path)
    assert main(["--templatedir", td, "build", "bb", "--from", "busybox"]) == 0
    assert main(["--templatedir", td, "build", "bb", "--from", "busybox", "--format", "zst"]) == 1
    assert "already exists" in capsys.readouterr().err


@needs_root
def test_remove_refused_while_a_vserver_shares_the_template(tmp_path, capsys):
    td = tmp_path / "t"
    assert main(["--templatedir", str(td), "build", "base", "--from", "busybox", "--format", "dir"]) == 0
    store = TemplateStore(td)
    store.populate("base", tmp_path / "vs" / "web1", copy=False)
    capsys.readouterr()
    assert main(["--templatedir", str(td), "list"]) == 0
    assert "shared by 1" in capsys.readouterr().out
    assert main(["--templatedir", str(td), "remove", "base"]) == 1
    assert "still shared by 1 vserver(s)" in capsys.readouterr().err
    store.remove_tree(tmp_path / "vs" / "web1", tmp_path / "vs")
    assert main(["--templatedir", str(td), "remove", "base"]) == 0


def test_debian_build_with_unreachable_mirror_says_so(tmp_path, capsys):
    rc = main(["--templatedir", str(tmp_path), "build", "deb", "--from", "debian",
               "--mirror", "http://127.0.0.1:9/debian"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "mirror http://127.0.0.1:9/debian unreachable" in err
    assert list(tmp_path.iterdir()) == []


def test_unpack_makes_a_shareable_directory_template_with_the_same_files(tmp_path, capsys):
    td = str(tmp_path)
    assert main(["--templatedir", td, "build", "bb", "--from", "busybox", "--format", "zst"]) == 0
    assert main(["--templatedir", td, "unpack", "bb", "bbdir"]) == 0
    store = TemplateStore(tmp_path)
    info = store.get("bbdir")
    assert info.kind == "directory" and (info.path / "bin/busybox").is_file()
    assert info.meta.description == store.get("bb").meta.description
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bb.conf", "bb.tar.zst", "bbdir", "bbdir.conf"]
    assert main(["--templatedir", td, "unpack", "bb", "bbdir"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_templatedir_is_accepted_after_the_subcommand_as_vcdadm_passes_it(tmp_path, capsys):
    assert main(["build", "bb", "--from", "busybox", "--templatedir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path}/bb.tar.gz"
    assert main(["list", "--templatedir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("bb ")
