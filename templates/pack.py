"""Template names and formats, and the common build path: temp dir, pack, rename.

A build happens in ``<templatedir>/.build-<name>.XXXX`` (a name no template can
have, on the same file system so the final rename is atomic); the template only
appears under its real name once it is complete.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from .errors import BuildError, InvalidTemplateName, TemplateExists
from .fsutil import safe_rmtree, umount_all_under
from .metadata import TemplateMeta

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")

# format name -> file suffix ("dir" is an unpacked directory template).
FORMATS: dict[str, str] = {
    "tar": ".tar", "gz": ".tar.gz", "bz2": ".tar.bz2", "xz": ".tar.xz", "zst": ".tar.zst", "dir": "",
}
DEFAULT_FORMAT = "gz"

# argv of the compressor for each packed format; None = plain tar.
_COMPRESS: dict[str, list[str] | None] = {
    "tar": None,
    "gz": ["gzip", "-6", "-n"],
    "bz2": ["bzip2", "-9"],
    "xz": ["xz", "-T0", "-6"],
    "zst": ["zstd", "-T0", "-q", "-9"],
}

Progress = Callable[[str], None]


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidTemplateName(
            f"invalid template name {name!r}: 1-64 of [A-Za-z0-9_.-], not starting with '.' or '-'")
    return name


def template_paths(templatedir: Path, name: str) -> list[Path]:
    """Every path a template called ``name`` may occupy (its caches and its directory)."""
    return [templatedir / (name + suffix) for fmt, suffix in FORMATS.items() if fmt != "dir"] + \
        [templatedir / name]


class StepPrinter:
    """Progress lines ``[  12.3s] step`` on stderr (or any stream)."""

    def __init__(self, stream=None, t0: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.monotonic() if t0 is None else t0

    def __call__(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s] {msg}", file=self.stream, flush=True)


def _no_progress(msg: str) -> None:
    pass


def _space_error(where: Path, what: str) -> BuildError:
    try:
        free = shutil.disk_usage(where).free // (1024 * 1024)
        detail = f" ({free} MiB free)"
    except OSError:
        detail = ""
    return BuildError(f"no space left on device while {what} in {where}{detail}")


def pack_tree(root: Path, out: Path, fmt: str) -> None:
    """Pack the tree ``root`` into ``out`` with GNU tar (owners numeric, xattrs kept)."""
    if fmt not in _COMPRESS:
        raise BuildError(f"unknown archive format {fmt!r} (known: {' '.join(_COMPRESS)})")
    tar = ["tar", "--create", "--file=-", f"--directory={root}", "--numeric-owner",
           "--xattrs", "--xattrs-include=*", "--sort=name", "--one-file-system", "."]
    comp = _COMPRESS[fmt]
    with open(out, "wb") as f:
        if comp is None:
            tp = subprocess.Popen(tar, stdout=f, stderr=subprocess.PIPE)
            cp = None
        else:
            tp = subprocess.Popen(tar, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            cp = subprocess.Popen(comp, stdin=tp.stdout, stdout=f, stderr=subprocess.PIPE)
            tp.stdout.close()  # so tar sees EPIPE if the compressor dies
        try:
            _, terr = tp.communicate()
            cerr = cp.communicate()[1] if cp else b""
        finally:
            for p in (tp, cp):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
    text = (terr + cerr).decode(errors="replace").strip()
    if tp.returncode != 0 or (cp is not None and cp.returncode != 0):
        if "No space left" in text:
            raise _space_error(out.parent, "packing")
        raise BuildError(f"packing {root} into {out.name} failed: {text or 'exit status ' + str(tp.returncode)}")


def build_into_store(name: str, templatedir: Path, fmt: str, *,
                     populate: Callable[[Path], None], meta: TemplateMeta,
                     progress: Progress | None = None) -> Path:
    """Run ``populate(root)`` into a temp dir, pack it as ``fmt``, rename into place.

    Interrupted (KeyboardInterrupt, SIGTERM turned into an exception by the
    CLI) or failed builds leave nothing behind in ``templatedir``.
    """
    validate_name(name)
    if fmt not in FORMATS:
        raise BuildError(f"unknown template format {fmt!r} (known: {' '.join(FORMATS)})")
    say = progress or _no_progress
    templatedir = Path(templatedir)
    templatedir.mkdir(mode=0o755, parents=True, exist_ok=True)
    existing = [p for p in template_paths(templatedir, name) if os.path.lexists(p)]
    if existing:
        # Replacing in place could pull a lower layer from under sharing
        # vservers; `template remove` first, which checks for them.
        raise TemplateExists(f"template {name!r} already exists: {existing[0]}")
    final = templatedir / (name + FORMATS[fmt])
    work = Path(tempfile.mkdtemp(prefix=f".build-{name}.", dir=templatedir))
    try:
        root = work / "root"
        root.mkdir(mode=0o755)
        say(f"building root filesystem of {name!r}")
        try:
            populate(root)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise _space_error(templatedir, "building the root filesystem") from None
            raise
        meta_tmp = work / "meta.conf"
        meta.name = name
        meta.save(meta_tmp)
        if fmt == "dir":
            staged = root
        else:
            staged = work / final.name
            say(f"packing {final.name}")
            pack_tree(root, staged, fmt)
            say(f"packed {staged.stat().st_size / 1e6:.1f} MB")
        # Metadata first, template last: the template's appearance is the
        # commit point; a lone .conf is ignored by the store and overwritten.
        os.replace(meta_tmp, templatedir / f"{name}.conf")
        os.rename(staged, final)
        say(f"template {name!r} ready: {final}")
        return final
    finally:
        umount_all_under(work)
        safe_rmtree(work, templatedir)
