"""The template store: list, look up, populate a vdir from, and remove templates.

Used by vx.create (``populate``), vx.templates (``list``), vx.start
(``ensure_mounted``) and vx.remove (``remove_tree``).

Template caches live in ``<templatedir>`` as ``<name>.tar[.gz|.bz2|.xz|.zst]``
or as a directory ``<name>/``, with optional metadata ``<name>.conf``.

Sharing (``copy=False`` on a directory template) is an overlay mount on the
vdir: the template is the read-only lower layer, and the vserver's own changes
go to ``<vdir's parent>/.<vdir name>.overlay/{upper,work}`` (a leading dot,
which no vserver name can have, so it can never collide with another vdir).
Each sharing vdir is also registered in ``<templatedir>/.shares/<template>/``
so that ``users()`` and ``remove_template()`` know who still needs a template.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import lzma
import os
import stat
import subprocess
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import (MetadataError, PopulateError, TemplateError, TemplateExists, TemplateInUse,
                     TemplateNotFound, UnsafeArchive)
from .fsutil import is_mountpoint, mount, mounts, safe_rmtree, umount
from .metadata import TemplateMeta
from .pack import FORMATS, validate_name

log = logging.getLogger(__name__)

DEFAULT_TEMPLATEDIR = Path("/var/lib/vcd/templates")

# Lookup order when a name has several caches: a directory first (it can be
# shared), then the packed formats from the fastest to unpack.
_SUFFIXES = [".tar", ".tar.zst", ".tar.gz", ".tar.xz", ".tar.bz2"]

# Characters the overlay option string cannot carry in a path.
_OVERLAY_UNSAFE = set(",:\\\n\t ")

SHARE_FILE = "share.json"


@dataclass
class TemplateInfo:
    name: str
    description: str
    kind: str  # "tarball" or "directory"
    path: Path
    meta: TemplateMeta
    error: str | None = None  # set by list() when the metadata is invalid

    def as_struct(self) -> dict[str, str]:
        """The shape vx.templates returns."""
        return {"name": self.name, "description": self.description}


@dataclass
class ExtractReport:
    members: int = 0
    skipped_devices: list[str] = field(default_factory=list)


def canonical_vdir(vdir: Path) -> Path:
    """``vdir`` with its parent's symlinks resolved but not its own last component.

    Mount points in /proc/self/mountinfo are real paths; comparing against
    them (and keying the sharing registry) needs the same spelling.
    """
    p = os.path.abspath(vdir)
    return Path(os.path.realpath(os.path.dirname(p))) / os.path.basename(p)


def overlay_state_dir(vdir: Path) -> Path:
    vdir = canonical_vdir(vdir)
    return vdir.parent / f".{vdir.name}.overlay"


class _RootfsFilter:
    """tarfile extraction filter for a whole root filesystem.

    The stdlib "data" filter is made for data archives: it refuses absolute
    symlink targets and strips setuid bits and owners, all of which a root fs
    legitimately has. This one keeps modes and owners and allows any symlink
    *target* (the host never follows one), but refuses anything that would make
    the host write outside ``dest``: absolute names, ``..``, a member below a
    symlink or non-directory, hard links to outside or through a symlink. Device
    nodes are skipped: the runtime makes /dev at start.
    """

    def __init__(self, archive: Path, report: ExtractReport,
                 on_member: Callable[[], None] | None = None) -> None:
        self.archive = archive
        self.report = report
        self.on_member = on_member

    def _refuse(self, name: str, why: str) -> UnsafeArchive:
        return UnsafeArchive(f"{self.archive.name}: member {name!r} refused: {why}")

    def _parts(self, name: str, what: str) -> list[str]:
        if name.startswith("/"):
            raise self._refuse(name, f"absolute {what}")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self._refuse(name, f"'..' in {what}")
        if any("\x00" in p for p in parts):
            raise self._refuse(name, "NUL in name")
        return parts

    def _check_parents(self, dest: str, parts: list[str], name: str) -> None:
        cur = dest
        for comp in parts:
            cur = os.path.join(cur, comp)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                return  # tarfile creates the rest as real directories
            if stat.S_ISLNK(st.st_mode):
                raise self._refuse(name, f"its parent {os.path.relpath(cur, dest)!r} is a symlink")
            if not stat.S_ISDIR(st.st_mode):
                raise self._refuse(name, f"its parent {os.path.relpath(cur, dest)!r} is not a directory")

    def __call__(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        if self.on_member is not None:
            self.on_member()
        name = member.name
        parts = self._parts(name, "path")
        if member.ischr() or member.isblk():
            self.report.skipped_devices.append("/".join(parts))
            return None
        if not parts:
            if not member.isdir():
                raise self._refuse(name, "the archive root is not a directory")
            return member.replace(name=".", deep=False)
        self._check_parents(dest, parts[:-1], name)
        norm = "/".join(parts)
        target = os.path.join(dest, norm)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            st = None
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                if not member.isdir():
                    raise self._refuse(name, "it would replace a directory")
            else:
                # Replace, never write through: an earlier member may be a
                # symlink to a host file (GNU tar unlinks first, too).
                os.unlink(target)
        changes: dict[str, str] = {"name": norm}
        if member.islnk():
            lparts = self._parts(member.linkname, "hard link target")
            if not lparts:
                raise self._refuse(name, "hard link to the archive root")
            self._check_parents(dest, lparts[:-1], name)
            lt = os.path.join(dest, *lparts)
            try:
                lst = os.lstat(lt)
            except FileNotFoundError:
                raise self._refuse(name, f"hard link target {member.linkname!r} not extracted before it") from None
            if stat.S_ISLNK(lst.st_mode) or stat.S_ISDIR(lst.st_mode):
                raise self._refuse(name, f"hard link target {member.linkname!r} is not a file")
            changes["linkname"] = "/".join(lparts)
        self.report.members += 1
        return member.replace(**changes, deep=False)


ByteProgress = Callable[[int, int], None]   # (bytes of the archive read, its size)


def extract_tarball(archive: Path, dest: Path,
                    progress: ByteProgress | None = None) -> ExtractReport:
    """Extract a root-filesystem tarball into the existing directory ``dest``;
    ``progress(done, total)`` is told how much of the archive file was read, once per
    percent."""
    archive = Path(archive)
    dest_s = os.path.abspath(dest)
    st = os.lstat(dest_s)
    if not stat.S_ISDIR(st.st_mode):
        raise PopulateError(f"{dest_s} is not a directory")
    report = ExtractReport()
    proc = None
    raw = None
    total, shown = 0, -1

    def on_member() -> None:
        # the read position of the archive's open file: shared with zstd when it reads it
        nonlocal shown
        if progress is None or raw is None or not total:
            return
        done = os.lseek(raw.fileno(), 0, os.SEEK_CUR)
        if done * 100 // total > shown:
            shown = done * 100 // total
            progress(done, total)

    flt = _RootfsFilter(archive, report, on_member)
    try:
        raw = open(archive, "rb")
        total = os.fstat(raw.fileno()).st_size
        if archive.name.endswith(".tar.zst"):
            proc = subprocess.Popen(["zstd", "-dcq"], stdin=raw, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tf:
                tf.extractall(dest_s, numeric_owner=True, filter=flt)
        else:
            with tarfile.open(fileobj=raw, mode="r|*") as tf:
                tf.extractall(dest_s, numeric_owner=True, filter=flt)
        if progress is not None:
            progress(total, total)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as e:
        detail = str(e) or type(e).__name__
        if proc is not None:
            # tar's "empty file" or "unexpected end" hides the real cause: zstd's
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if proc.returncode:
                text = proc.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
                lines = text.replace("\r", "\n").strip().splitlines()
                detail = lines[-1].strip() if lines else f"zstd exit status {proc.returncode}"
        raise PopulateError(f"{archive.name}: not a valid archive: {detail}") from None
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise PopulateError(f"no space left on device extracting {archive.name} into {dest_s}") from None
        if e.errno is None:  # bz2 reports corrupt data as a bare OSError
            raise PopulateError(f"{archive.name}: not a valid archive: {e}") from None
        raise PopulateError(f"extracting {archive.name} into {dest_s}: {e}") from None
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()  # extraction failed: the rest of the stream is of no use
        raise
    finally:
        if proc is not None:
            # tarfile stops at the end-of-archive marker; zstd may still be writing the
            # archive's zero padding: read it off so zstd ends normally instead of being
            # killed (a kill here would read as "zstd failed")
            _, err = proc.communicate()
        if raw is not None:
            raw.close()
    if proc is not None and proc.returncode != 0:
        raise PopulateError(f"{archive.name}: zstd failed: {err.decode(errors='replace').strip()}")
    if report.skipped_devices:
        log.warning("%s: skipped %d device node(s), e.g. %s (devices are made at start)",
                    archive.name, len(report.skipped_devices), report.skipped_devices[0])
    return report


class TemplateStore:
    def __init__(self, templatedir: Path = DEFAULT_TEMPLATEDIR) -> None:
        self.templatedir = Path(templatedir)

    @contextlib.contextmanager
    def _lock(self, exclusive: bool):
        """Serialise sharing against template removal across daemon workers.

        Sharing takes it shared, remove_template exclusive, so a template can
        never be removed between "nobody uses it" and its deletion while a new
        vserver starts sharing it.
        """
        self.templatedir.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(self.templatedir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    # -- lookup ----------------------------------------------------------------

    def _meta(self, name: str) -> TemplateMeta:
        conf = self.templatedir / f"{name}.conf"
        if conf.is_file():
            return TemplateMeta.load(conf, name)
        return TemplateMeta(name=name)

    def _find(self, name: str) -> tuple[str, Path] | None:
        d = self.templatedir / name
        if d.is_dir():
            return "directory", d
        for suffix in _SUFFIXES:
            p = self.templatedir / (name + suffix)
            if p.is_file():
                return "tarball", p
        return None

    def get(self, name: str) -> TemplateInfo:
        validate_name(name)
        found = self._find(name)
        if found is None:
            raise TemplateNotFound(f"template {name!r} does not exist in {self.templatedir}")
        meta = self._meta(name)
        return TemplateInfo(name, meta.description, found[0], found[1], meta)

    def list(self) -> list[TemplateInfo]:
        names: set[str] = set()
        try:
            entries = list(os.scandir(self.templatedir))
        except FileNotFoundError:
            return []
        for e in entries:
            n = e.name
            if n.startswith("."):
                continue
            if e.is_dir():
                cand = n
            else:
                cand = next((n[: -len(s)] for s in _SUFFIXES if n.endswith(s)), None)
            if cand:
                try:
                    names.add(validate_name(cand))
                except TemplateError:
                    continue
        out = []
        for n in sorted(names):
            found = self._find(n)
            if found is None:
                continue
            try:
                meta, error = self._meta(n), None
            except MetadataError as e:
                meta, error = TemplateMeta(name=n, description=f"(invalid metadata: {e})"), str(e)
            out.append(TemplateInfo(n, meta.description, found[0], found[1], meta, error))
        return out

    # -- populate --------------------------------------------------------------

    def populate(self, name: str, vdir: Path, copy: bool = True,
                 progress: ByteProgress | None = None) -> None:
        """Fill ``vdir`` (missing or empty) with template ``name``.

        A tarball is extracted (``copy`` makes no difference: every extraction
        is independent). A directory is copied (reflinks where the file system
        has them) with ``copy=True``, or shared through an overlay mount with
        ``copy=False``. On failure everything written is removed again.
        """
        info = self.get(name)
        vdir = canonical_vdir(vdir)
        created = False
        if os.path.lexists(vdir):
            st = os.lstat(vdir)
            if not stat.S_ISDIR(st.st_mode):
                raise PopulateError(f"{vdir} exists and is not a directory")
            # lost+found: a vdir may be a freshly made file system (dx.limit image).
            if any(e.name != "lost+found" for e in os.scandir(vdir)):
                raise PopulateError(f"{vdir} is not empty; remove it first (rebuild)")
        else:
            vdir.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            vdir.mkdir(mode=0o755)
            created = True
        try:
            if info.kind == "tarball":
                extract_tarball(info.path, vdir, progress)
            elif copy:
                self._copy_dir(info.path, vdir)
            else:
                with self._lock(exclusive=False):
                    info = self.get(name)  # it may have been removed while we waited
                    if info.kind != "directory":
                        raise PopulateError(f"template {name!r} changed while sharing it")
                    self._share(info, vdir)
        except BaseException:
            self._undo(vdir, created)
            raise

    def _undo(self, vdir: Path, created: bool) -> None:
        """Remove what a failed populate wrote into ``vdir`` (and ``vdir`` itself if it made it)."""
        try:
            if created:
                safe_rmtree(vdir, vdir.parent)
            else:
                for e in os.scandir(vdir):
                    if e.name != "lost+found":
                        safe_rmtree(Path(e.path), vdir)
        except Exception:  # the original error matters more; log this one
            log.exception("cleaning up %s after a failed populate", vdir)

    @staticmethod
    def _copy_dir(src: Path, vdir: Path) -> None:
        # cp -a keeps owners, modes, hard links, xattrs and device nodes;
        # --reflink=auto clones extents where the file system can (btrfs, XFS)
        # and copies otherwise.
        r = subprocess.run(["cp", "-a", "--reflink=auto", "--one-file-system", "--",
                            f"{src}/.", f"{vdir}/"], capture_output=True, text=True)
        if r.returncode != 0:
            msg = r.stderr.strip()
            if "No space left" in msg:
                raise PopulateError(f"no space left on device copying template into {vdir}")
            raise PopulateError(f"copying {src} into {vdir} failed: {msg}")

    # -- sharing -------------------------------------------------------------

    def _registry(self, name: str) -> Path:
        return self.templatedir / ".shares" / name

    @staticmethod
    def _key(vdir: Path) -> str:
        return hashlib.sha256(os.fsencode(vdir)).hexdigest()[:32]

    def _share(self, info: TemplateInfo, vdir: Path) -> None:
        lower = Path(os.path.realpath(info.path))
        state = overlay_state_dir(vdir)
        upper, work = state / "upper", state / "work"
        for p in (lower, upper, work):
            bad = _OVERLAY_UNSAFE.intersection(str(p))
            if bad:
                raise PopulateError(f"cannot share: path {p} contains {''.join(sorted(bad))!r}, "
                                    "which an overlay mount cannot take")
        if os.path.lexists(state):
            raise PopulateError(f"{state} already exists (left from an earlier vserver?); remove it first")
        if is_mountpoint(vdir):
            raise PopulateError(f"{vdir} is a mount point; a sharing vdir must be a plain directory")
        reg_entry = self._registry(info.name) / self._key(vdir)
        state.mkdir(mode=0o700)
        try:
            upper.mkdir()
            work.mkdir()
            # The merged root takes the upper root's attributes: make them the template's.
            lst = os.stat(lower)
            os.chown(upper, lst.st_uid, lst.st_gid)
            os.chmod(upper, stat.S_IMODE(lst.st_mode))
            record = {"template": info.name, "templatedir": str(os.path.realpath(self.templatedir)),
                      "lower": str(lower), "vdir": str(vdir)}
            (state / SHARE_FILE).write_text(json.dumps(record, indent=1) + "\n")
            reg_entry.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            reg_entry.write_text(str(vdir) + "\n")
            self._mount_overlay(lower, upper, work, vdir)
        except BaseException:
            # Only what this call made: the state dir is new (checked above).
            if _overlay_mounted(vdir):
                umount(vdir, lazy=True)
            with contextlib.suppress(FileNotFoundError):
                reg_entry.unlink()
            safe_rmtree(state, state.parent)
            raise

    @staticmethod
    def _mount_overlay(lower: Path, upper: Path, work: Path, vdir: Path) -> None:
        try:
            # userxattr: the same whiteout/opaque markers as the overlay an unprivileged
            # vserver mounts from inside its user namespace on this upper directory
            mount("overlay", vdir, "overlay",
                  f"lowerdir={lower},upperdir={upper},workdir={work},userxattr")
        except OSError as e:
            hint = ""
            if e.errno == errno.ENODEV:
                hint = " (no overlay support in this kernel: use copy=true)"
            elif e.errno == errno.EPERM:
                hint = " (mounting needs CAP_SYS_ADMIN)"
            elif e.errno == errno.EINVAL:
                hint = (" (is the vdir's parent on a file system overlayfs takes as upper layer,"
                        " e.g. ext4, XFS, btrfs, tmpfs, and not an overlay?)")
            raise PopulateError(f"overlay mount on {vdir} failed: {e.strerror}{hint}") from None

    def _forget_share(self, vdir: Path) -> None:
        rec = _read_share(vdir)
        if rec is None:
            return
        try:
            (self._registry(rec["template"]) / self._key(vdir)).unlink()
        except FileNotFoundError:
            pass

    def sharing(self, vdir: Path) -> str | None:
        """The template ``vdir`` shares, or None if it is an independent tree."""
        rec = _read_share(canonical_vdir(vdir))
        return rec["template"] if rec else None

    def users(self, name: str) -> list[Path]:
        """The vdirs that share template ``name`` (stale registrations are dropped)."""
        validate_name(name)
        reg = self._registry(name)
        out = []
        try:
            entries = list(os.scandir(reg))
        except FileNotFoundError:
            return []
        for e in entries:
            try:
                vdir = Path(Path(e.path).read_text().strip())
            except OSError:
                continue
            rec = _read_share(vdir)
            if rec is not None and rec.get("template") == name:
                out.append(vdir)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
        return sorted(out)

    def ensure_mounted(self, vdir: Path) -> bool:
        """Mount a sharing vdir's overlay if it is not (after a host reboot).

        Returns True if ``vdir`` shares a template (and is now mounted), False
        for an independent vdir. The runtime calls this before every start.
        """
        vdir = canonical_vdir(vdir)
        rec = _read_share(vdir)
        if rec is None:
            return False
        if _overlay_mounted(vdir):
            return True
        lower = Path(rec["lower"])
        if not lower.is_dir():
            raise TemplateNotFound(f"{vdir} shares template {rec['template']!r}, but {lower} is gone")
        state = overlay_state_dir(vdir)
        if not vdir.is_dir() or vdir.is_symlink():
            raise PopulateError(f"{vdir}: mount point missing or not a directory")
        self._mount_overlay(lower, state / "upper", state / "work", vdir)
        return True

    def release(self, vdir: Path) -> None:
        """Unmount a sharing vdir's overlay (before removal); a no-op otherwise."""
        vdir = canonical_vdir(vdir)
        while _overlay_mounted(vdir):
            try:
                umount(vdir)
            except OSError as e:
                if e.errno == errno.EBUSY:
                    raise TemplateError(f"{vdir} is busy (is the vserver still running?)") from None
                raise

    def remove_tree(self, vdir: Path, base: Path) -> None:
        """Remove a vserver's tree safely, with its overlay layer if it shares a template.

        ``vdir`` must lie inside ``base`` (the vbasedir); see ``fsutil.safe_rmtree``.
        """
        vdir = canonical_vdir(vdir)
        self.release(vdir)
        state = overlay_state_dir(vdir)
        safe_rmtree(vdir, base)
        if os.path.lexists(state):
            self._forget_share(vdir)
            safe_rmtree(state, base)

    def unpack(self, name: str, new_name: str) -> TemplateInfo:
        """Make directory template ``new_name`` from tarball template ``name`` (so vservers can share it).

        Extracted into a temporary directory and renamed, with a copy of the metadata.
        """
        info = self.get(name)
        validate_name(new_name)
        if self._find(new_name) is not None:
            raise TemplateExists(f"template {new_name!r} already exists")
        tmp = self.templatedir / f".unpack-{new_name}.{os.getpid()}"
        try:
            self.populate(name, tmp, copy=True)
            meta = info.meta
            meta.name = new_name
            meta.save(self.templatedir / f"{new_name}.conf")
            os.rename(tmp, self.templatedir / new_name)
        finally:
            if os.path.lexists(tmp):
                safe_rmtree(tmp, self.templatedir)
        return self.get(new_name)

    # -- removal of templates --------------------------------------------------

    def remove_template(self, name: str) -> None:
        """Remove every cache of template ``name`` and its metadata; refused while vservers share it."""
        with self._lock(exclusive=True):
            self._remove_template(name)

    def _remove_template(self, name: str) -> None:
        self.get(name)  # validates, raises TemplateNotFound
        users = self.users(name)
        if users:
            shown = ", ".join(str(u) for u in users[:5]) + (" ..." if len(users) > 5 else "")
            raise TemplateInUse(f"template {name!r} is still shared by {len(users)} vserver(s): "
                                f"{shown}; remove them first")
        for p in [self.templatedir / (name + s) for s in _SUFFIXES]:
            if os.path.lexists(p):
                p.unlink()
        d = self.templatedir / name
        if d.is_symlink():
            d.unlink()
        elif d.is_dir():
            safe_rmtree(d, self.templatedir)
        for p in (self.templatedir / f"{name}.conf",):
            if p.exists():
                p.unlink()
        reg = self._registry(name)
        if reg.is_dir():
            safe_rmtree(reg, self.templatedir)
        with contextlib.suppress(OSError):
            reg.parent.rmdir()  # .shares, once no template is shared any more


def _read_share(vdir: Path) -> dict | None:
    p = overlay_state_dir(vdir) / SHARE_FILE
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise TemplateError(f"{p}: unreadable sharing record: {e}") from None


def _overlay_mounted(vdir: Path) -> bool:
    p = str(vdir)
    return any(m == p and t == "overlay" for m, t, _ in mounts())


__all__ = ["TemplateStore", "TemplateInfo", "ExtractReport", "extract_tarball",
           "overlay_state_dir", "DEFAULT_TEMPLATEDIR", "FORMATS"]
