"""A build that is interrupted or fails leaves no template and no temporary files behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from templates import busybox
from templates.errors import BuildError
from templates.metadata import TemplateMeta
from templates.pack import build_into_store
from templates.fsutil import mount
from templates.store import TemplateStore
from tpl_helpers import needs_root

REPO = Path(__file__).resolve().parents[2]


def test_interrupt_while_populating_leaves_nothing(tmp_path):
    def populate(root: Path) -> None:
        busybox.build_rootfs(root)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_into_store("bb", tmp_path, "gz", populate=populate, meta=TemplateMeta("bb"))
    assert list(tmp_path.iterdir()) == []
    assert TemplateStore(tmp_path).list() == []


@needs_root
@pytest.mark.parametrize("size, phase", [("1m", "building the root filesystem"),
                                         ("2700k", "packing")])
def test_no_space_fails_clearly_and_leaves_nothing(tmp_path, size, phase):
    """A real full file system (a small tmpfs), in each phase of a build."""
    td = tmp_path / "small"
    td.mkdir()
    mount("tmpfs", td, "tmpfs", f"size={size},mode=0755")
    with pytest.raises(BuildError, match=f"no space left on device while {phase}"):
        busybox.build("bb", td)
    assert list(td.iterdir()) == []


SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from templates import busybox, cli
    from templates.metadata import TemplateMeta
    from templates.pack import StepPrinter, build_into_store

    signal.signal(signal.SIGTERM, cli._on_sigterm)

    def populate(root):
        busybox.build_rootfs(root)
        # incompressible bulk so that packing takes a few seconds
        with open(root / "bulk", "wb") as f:
            for _ in range(160):
                f.write(os.urandom(1 << 20))

    try:
        build_into_store("big", Path(sys.argv[1]), "gz", populate=populate,
                         meta=TemplateMeta("big"), progress=StepPrinter())
    except KeyboardInterrupt:
        sys.exit(130)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_packing_leaves_nothing(tmp_path, sig):
    td = tmp_path / "templates"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(td)], cwd=REPO,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            if "packing" in line:
                break
        else:
            pytest.fail("the build never reached packing")
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 130
    assert list(td.iterdir()) == []


@needs_root
def test_debian_build_refuses_early_when_space_is_short(tmp_path):
    from templates import debian
    td = tmp_path / "small"
    td.mkdir()
    mount("tmpfs", td, "tmpfs", "size=64m,mode=0755")
    with pytest.raises(BuildError, match=r"no space: .* has \d+ MiB free"):
        debian.build("deb", td, mirror="http://127.0.0.1:9/debian")
    assert list(td.iterdir()) == []


@pytest.mark.parametrize("kw, message", [
    ({"suite": "../../etc"}, "invalid suite"),
    ({"include": ["less", "x;rm -rf /"]}, "invalid package name"),
    ({"mirror": "ftp://host/debian --no-check-gpg"}, "invalid mirror"),
])
def test_debian_build_rejects_bad_arguments_before_doing_anything(tmp_path, kw, message):
    from templates import debian
    with pytest.raises(BuildError, match=message):
        debian.build("deb", tmp_path / "t", **kw)
    assert not (tmp_path / "t").exists()
