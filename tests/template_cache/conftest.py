"""Fixtures for the templates tests: real builds, real mounts, every mount undone."""

from __future__ import annotations

from pathlib import Path

import pytest

from templates import busybox
from templates.fsutil import mounts_under, umount

def pytest_configure(config):
    config.addinivalue_line("markers", "slow: needs the network and ~1 minute (Debian build)")



@pytest.fixture(autouse=True)
def _unmount_everything(tmp_path):
    """Whatever a test mounted below its tmp_path is unmounted, pass or fail."""
    yield
    for m in mounts_under(tmp_path):
        umount(Path(m), lazy=True)


@pytest.fixture(scope="session")
def bb_templatedir(tmp_path_factory) -> Path:
    """One BusyBox template in every format, plus a directory template."""
    td = tmp_path_factory.mktemp("templates")
    busybox.build("bb", td, fmt="gz")
    for fmt in ("gz", "zst", "xz", "bz2", "tar", "dir"):
        busybox.build(f"bb-{fmt}", td, fmt=fmt)
    yield td
    for m in mounts_under(td):
        umount(Path(m), lazy=True)


@pytest.fixture(scope="session")
def bb_reference(tmp_path_factory) -> Path:
    """A BusyBox root fs built directly, to compare populated trees against."""
    d = tmp_path_factory.mktemp("bbref") / "root"
    busybox.build_rootfs(d)
    return d
