"""Helpers shared by the templates tests (a unique module name: tests run with rootdir-relative imports)."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, chown, chroot)")


def snapshot(root: Path, skip_times: bool = True) -> dict[str, tuple]:
    """Type, mode, owner, link target and content hash of every entry below root (no symlink followed)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                extra = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            else:
                extra = None
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, extra)
    return out


def du_kib(path: Path, one_fs: bool = True) -> int:
    argv = ["du", "-s", "-k"] + (["-x"] if one_fs else []) + ["--", str(path)]
    return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[0])
