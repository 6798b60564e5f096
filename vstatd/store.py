"""Writing samples into ``<rrddir>/<name>/<db>.rrd``, and keeping the directories
in step with VXDB: a rename moves a vserver's directory, a removal keeps or deletes it.

Writes are batched the way rrdcached does it, in process: each file collects its
samples for up to `flush_interval` seconds and gets them in one ``rrdtool.update``
(one open, lock and header write for many values: about 5 µs instead of 35 µs per
value). Files are spread over the interval by a hash of their path, so every step
writes about the same share; everything pending is written on exit, reload,
rename and removal.

Each directory holds a small marker ``.vserver`` ({xid, created} from VXDB) naming
the vserver it belongs to, so a rename or removal that happened while vstatd was
not running is still recognised, and a new vserver that reuses a name (or an xid)
never continues someone else's history.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import rrdtool

from vstatd.layout import MAX_NET_DBS, create_args, database, valid_name, vserver_dir
from vstatd.sample import Records, Value

log = logging.getLogger("vcd.vstatd.store")

MARKER = ".vserver"
ARCHIVE = ".removed"       # not a valid vserver name, so it never clashes with one
DIR_MODE = 0o750
FILE_MODE = 0o640


@dataclass(frozen=True)
class Identity:
    """One vserver across renames: VXDB's xid and creation time (xids are reused)."""
    xid: int
    created: int


def _fmt(v: Value) -> str:
    if v is None:
        return "U"
    if isinstance(v, float):
        return repr(v) if v == v else "U"
    return str(int(v))


class Store:
    def __init__(self, rrddir: Path, step: int, on_remove: str, flush_interval: int = 0) -> None:
        self.rrddir = rrddir
        self.step = step
        self.on_remove = on_remove
        self.slots = max(1, flush_interval // step)
        self._last: dict[str, int] = {}           # rrd path -> time of its last sample
        self._pending: dict[str, list[str]] = {}  # rrd path -> samples not yet written
        self._due: list[set[str]] = [set() for _ in range(self.slots)]
        self.owner: dict[str, Identity] = {}      # directory name -> vserver it holds
        self.kept: set[str] = set()               # directories of removed vservers
        self.seen: set[Identity] = set()          # vservers VXDB listed during this run
        self._net_dbs: dict[str, int] = {}        # directory -> how many net_ files it has
        rrddir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self._scan()

    # -- directories ------------------------------------------------------------------

    def _scan(self) -> None:
        for entry in os.scandir(self.rrddir):
            if not valid_name(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            ident = read_identity(Path(entry.path))
            if ident is not None:
                self.owner[entry.name] = ident

    def reconcile(self, vservers: dict[Identity, str]) -> None:
        """Follow renames and removals in VXDB (`vservers`: identity -> current name).

        Only a vserver seen in VXDB during this run and gone since counts as removed
        for deletion: pointed at the wrong (or an empty) VXDB, vstatd keeps every file.
        """
        self.seen.update(vservers)
        for name, ident in list(self.owner.items()):
            new = vservers.get(ident)
            if new is not None and new != name and self.owner.get(name) == ident:
                self._rename(name, new, ident)
        for name, ident in list(self.owner.items()):
            if ident in vservers or name in self.kept:
                continue
            if self.on_remove == "delete" and ident in self.seen:
                self._forget(name, write=False)
                shutil.rmtree(self.rrddir / name, ignore_errors=True)
                del self.owner[name]
                log.info("vserver %s (xid %d) was removed: deleted its statistics", name,
                         ident.xid)
            else:
                self.kept.add(name)
                log.info("vserver %s (xid %d) was removed: its statistics stay in %s", name,
                         ident.xid, self.rrddir / name)

    def _rename(self, old: str, new: str, ident: Identity) -> None:
        if (self.rrddir / new).exists():
            self._archive(new)
        self._forget(old)
        if (self.rrddir / old).is_dir():  # vx.remove may have retired it meanwhile
            os.rename(self.rrddir / old, self.rrddir / new)
        del self.owner[old]
        self.kept.discard(old)
        self.owner[new] = ident
        log.info("vserver %s was renamed to %s: moved its statistics", old, new)

    def _archive(self, name: str) -> None:
        """Move a directory out of the way of a vserver that now has its name."""
        self._forget(name)
        target = archive(self.rrddir, name, self.owner.get(name))
        self.owner.pop(name, None)
        self.kept.discard(name)
        if target is not None:
            log.info("statistics of an earlier vserver named %s moved to %s", name, target)

    def claim(self, name: str, ident: Identity, t: int) -> Path:
        """The directory of a running vserver, made (or taken over) for it at step t."""
        d = vserver_dir(self.rrddir, name)
        if self.owner.get(name) == ident and d.is_dir():
            return d
        if name in self.owner or (d.exists() and read_identity(d) not in (None, ident)):
            self._archive(name)
        if d.is_symlink():
            raise OSError(f"{d} is a symbolic link; refusing to write through it")
        d.mkdir(mode=DIR_MODE, exist_ok=True)
        _write_marker(d, ident, since=t)
        self.owner[name] = ident
        self.kept.discard(name)
        return d

    def _forget(self, name: str, write: bool = True) -> None:
        """Drop what is known of a directory's files (writing what is pending first)."""
        prefix = str(self.rrddir / name) + "/"
        for path in [p for p in self._pending if p.startswith(prefix)]:
            if write:
                self._flush_file(path)
            else:
                self._pending.pop(path, None)
        for path in [p for p in self._last if p.startswith(prefix)]:
            del self._last[path]
        self._net_dbs.pop(prefix[:-1], None)

    # -- samples ----------------------------------------------------------------------

    def write(self, directory: Path, t: int, recs: Records) -> int:
        """Queue one vserver's sample of step t for every database; returns how many."""
        queued = 0
        prefix = str(directory) + "/"
        for metric, values in recs.items():
            path = f"{prefix}{metric}.rrd"
            try:
                last = self._last.get(path)
                if last is None:
                    if metric.startswith("net_") and not os.path.exists(path) \
                            and not self._room_for_net(directory):
                        continue
                    last = self._open(path, metric, t)
            except (rrdtool.OperationalError, OSError) as exc:
                log.error("%s: %s", path, exc)
                continue
            if t <= last:
                continue  # this step is in the file already (a restart within a step)
            pending = self._pending.get(path)
            if pending is None:
                pending = self._pending[path] = []
                self._due[zlib.crc32(path.encode()) % self.slots].add(path)
            pending.append(f"{t}:" + ":".join(_fmt(v) for v in values))
            self._last[path] = t
            queued += 1
        return queued

    def _room_for_net(self, directory: Path) -> bool:
        """Whether another net_ file may be made in `directory` (MAX_NET_DBS); counts it."""
        key = str(directory)
        count = self._net_dbs.get(key)
        if count is None:
            count = sum(1 for e in os.scandir(directory)
                        if e.name.startswith("net_") and e.name.endswith(".rrd"))
        if count >= MAX_NET_DBS:
            if self._net_dbs.get(key) != count:
                log.warning("%s: %d interface databases, no more are made (MAX_NET_DBS)",
                            directory, count)
            self._net_dbs[key] = count
            return False
        self._net_dbs[key] = count + 1
        return True

    def flush(self, t: int) -> int:
        """Write the files whose turn it is at step t; returns the samples written."""
        slot = self._due[(t // self.step) % self.slots]
        written = 0
        for path in list(slot):
            written += self._flush_file(path)
        return written

    def flush_all(self) -> int:
        return sum(self._flush_file(path) for path in list(self._pending))

    def _flush_file(self, path: str) -> int:
        samples = self._pending.pop(path, None)
        self._due[zlib.crc32(path.encode()) % self.slots].discard(path)
        if not samples:
            return 0
        if not os.path.exists(path):
            # vx.remove moved (or deleted) the vserver's files while these samples waited
            # for their turn: they have nowhere to go, and that is no error to report
            log.debug("%s: gone (vserver removed); %d samples dropped", path, len(samples))
            self._last.pop(path, None)
            return 0
        try:
            rrdtool.update(path, *samples)
        except rrdtool.OperationalError as exc:
            log.error("%s: %s", path, exc)
            self._last.pop(path, None)  # read back from the file next time
            return 0
        return len(samples)

    def _open(self, path: str, metric: str, t: int) -> int:
        if os.path.exists(path):
            return rrdtool.last(path)
        # aligned to the step and just before the first sample, which lands on a step
        start = t - self.step
        rrdtool.create(path, *create_args(database(metric), self.step, start))
        os.chmod(path, FILE_MODE)
        return start


def archive(rrddir: Path, name: str, ident: Identity | None) -> Path | None:
    """Move <rrddir>/<name> aside into the archive (a name no vserver can have);
    returns where it went, None when there was nothing to move."""
    tag = f"{ident.xid}-{ident.created}" if ident else time.strftime("%Y%m%dT%H%M%S")
    base = rrddir / ARCHIVE
    base.mkdir(mode=DIR_MODE, exist_ok=True)
    target = base / f"{name}.{tag}"
    n = 0
    while target.exists():
        n += 1
        target = base / f"{name}.{tag}.{n}"
    try:
        os.rename(rrddir / name, target)
    except FileNotFoundError:
        return None
    return target


def retire(rrddir: Path, name: str, ident: Identity, on_remove: str) -> None:
    """What vx.remove does to the statistics of the vserver it removes: delete them
    (on_remove = "delete") or move them into the archive ("keep"), so a later vserver
    with its name or xid starts without them. A directory that belongs to another
    vserver (its marker says so) is left alone."""
    d = vserver_dir(rrddir, name)
    if d.is_symlink() or not d.is_dir() or read_identity(d) not in (None, ident):
        return
    if on_remove == "delete":
        shutil.rmtree(d)
    else:
        archive(rrddir, name, ident)


def read_identity(d: Path) -> Identity | None:
    """The vserver a directory belongs to, from its marker."""
    try:
        data = json.loads((d / MARKER).read_text())
        return Identity(int(data["xid"]), int(data["created"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_since(d: Path) -> int | None:
    """When vstatd began recording this vserver (graphs need not show time before it)."""
    try:
        return int(json.loads((d / MARKER).read_text())["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_marker(d: Path, ident: Identity, since: int) -> None:
    tmp = d / f"{MARKER}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                  FILE_MODE)
    with os.fdopen(fd, "w") as f:
        json.dump({"xid": ident.xid, "created": ident.created, "since": since}, f)
    os.rename(tmp, d / MARKER)
