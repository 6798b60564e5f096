"""vx.*: creating, removing, renaming vservers and listing templates."""
from __future__ import annotations

import os
from pathlib import Path

from templates.errors import (InvalidTemplateName, MetadataError, PopulateError, TemplateError,
                              TemplateNotFound, UnsafeArchive)
from templates.metadata import TemplateMeta
from templates.store import TemplateStore
from vcd.errors import Fault, VcdError
from vcd.params import AbsPath, Bool, Param, Pattern, VServerName
from vcd.registry import Call, Owner, Txn, method

NAME = Param("name", VServerName, doc="vserver name")

# A vdir may not be, or contain, or lie inside these: removing or rebuilding the
# vserver would otherwise delete host files.
PROTECTED = tuple(Path(p) for p in (
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/proc", "/root", "/run", "/sbin", "/sys", "/usr", "/var", "/tmp", "/opt", "/srv",
    "/mnt", "/media"))
NO_INSIDE = tuple(Path(p) for p in ("/proc", "/sys", "/dev", "/boot", "/etc", "/usr",
                                    "/bin", "/sbin", "/lib", "/lib64", "/run"))


def store(call: Call) -> TemplateStore:
    return TemplateStore(call.config.templatedir)


def template_fault(exc: TemplateError) -> VcdError:
    if isinstance(exc, (TemplateNotFound, InvalidTemplateName, MetadataError, UnsafeArchive)):
        return VcdError(Fault.MEINVAL, str(exc))
    if isinstance(exc, PopulateError):
        return VcdError(Fault.MESYS, str(exc))
    return VcdError(Fault.MESYS, str(exc))


def is_running(call: Call, xid: int) -> bool:
    return call.runtime.is_running(xid)


def check_vdir(call: Call, vdir: Path) -> None:
    """A vdir must be a place whose removal can only ever delete the vserver itself."""
    for p in PROTECTED:
        if vdir == p or p.is_relative_to(vdir):
            raise VcdError(Fault.MEINVAL, f"'vdir' must not be {vdir}: a system directory")
    for p in (*NO_INSIDE, call.config.datadir, call.config.templatedir):
        if vdir.is_relative_to(p):
            raise VcdError(Fault.MEINVAL, f"'vdir' must not lie inside {p}")
    if call.config.vbasedir.is_relative_to(vdir):
        raise VcdError(Fault.MEINVAL, f"'vdir' must not contain vbasedir {call.config.vbasedir}")
    clash = call.db.execute("SELECT name FROM vservers WHERE vdir = ?", (str(vdir),)).fetchone()
    if clash is not None:
        raise VcdError(Fault.MEEXIST, f"{vdir} is already the vdir of {clash[0]}")
    if os.path.islink(vdir):
        raise VcdError(Fault.MEINVAL, f"'vdir' {vdir} is a symbolic link")
    if vdir.exists() and any(e.name != "lost+found" for e in os.scandir(vdir)):
        raise VcdError(Fault.MEEXIST, f"{vdir} exists and is not empty")


def removal_base(call: Call, vdir: Path) -> Path:
    base = call.config.vbasedir
    return base if vdir.is_relative_to(base) and vdir != base else vdir.parent


def allocate_xid(call: Call) -> int:
    row = call.db.execute(
        "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM vservers WHERE xid = 2) THEN 2 ELSE "
        "(SELECT min(v.xid) + 1 FROM vservers v WHERE v.xid < 65534 AND NOT EXISTS "
        "(SELECT 1 FROM vservers w WHERE w.xid = v.xid + 1)) END").fetchone()
    if row[0] is None:
        raise VcdError(Fault.MEEXIST, "no free context id left (2..65534 are all in use)")
    return row[0]


def apply_defaults(call: Call, xid: int, meta: TemplateMeta) -> None:
    """A new vserver's configuration from the template's metadata (or DESIGN's defaults)."""
    db = call.db
    db.executemany("INSERT INTO vx_bcaps (xid, bcap) VALUES (?, ?)", [(xid, c) for c in meta.bcaps])
    db.executemany("INSERT INTO vx_ccaps (xid, ccap) VALUES (?, ?)", [(xid, c) for c in meta.ccaps])
    db.executemany("INSERT INTO vx_flags (xid, flag) VALUES (?, ?)", [(xid, f) for f in meta.flags])
    db.execute("INSERT INTO init (xid, init, halt, reboot, timeout) VALUES (?, ?, ?, ?, ?)",
               (xid, meta.init, meta.halt, meta.reboot, meta.timeout))
    db.executemany("INSERT INTO mount (xid, dst, src, type, opts) VALUES (?, ?, ?, ?, ?)",
                   [(xid, m.dst, m.src, m.type, m.opts) for m in meta.mounts])
    db.executemany("INSERT INTO vx_limit (xid, type, soft, max) VALUES (?, ?, ?, ?)",
                   [(xid, lim.type, _limit_text(lim.soft), _limit_text(lim.max))
                    for lim in meta.limits])


def _limit_text(value: int | str) -> str:
    return "inf" if value in ("inf", 2**64 - 1) else str(int(value))


TEMPLATE = Param("template", Pattern(VServerName.regex, "a valid template name"),
                 doc="template cache name (a tarball or directory in templatedir)")


@method("vx.create", cap="CREATE", owner=Owner.CREATE, lock=True, txn=Txn.WRITE,
        params=(NAME, TEMPLATE,
                Param("rebuild", Bool(), required=False, default=False, aliases=("force",),
                      doc="recreate the root filesystem of an existing (stopped) vserver"),
                Param("copy", Bool(), required=False, default=False,
                      doc="for a template directory: full copy instead of sharing its files"),
                Param("vdir", AbsPath(), required=False,
                      doc="root directory on the host; default <vbasedir>/<name>")))
def create(call: Call, name: str, template: str, rebuild: bool, copy: bool,
           vdir: str | None) -> None:
    """Create a vserver from a template cache (or rebuild an existing one's root
    filesystem). New names need the admin flag."""
    templates = store(call)
    try:
        info = templates.get(template)
    except TemplateError as exc:
        raise template_fault(exc) from None
    existing = call.vserver
    if existing is not None:
        if not rebuild:
            raise VcdError(Fault.MEEXIST, name)
        if is_running(call, existing.xid):
            raise VcdError(Fault.MERUNNING, name)
        xid, target = existing.xid, Path(existing.vdir)
        try:
            if os.path.lexists(target):
                templates.remove_tree(target, removal_base(call, target))
        except TemplateError as exc:
            raise template_fault(exc) from None
    else:
        xid = allocate_xid(call)
        target = Path(vdir) if vdir else call.config.vbasedir / name
        check_vdir(call, target)
        call.db.execute("INSERT INTO vservers (xid, name, vdir) VALUES (?, ?, ?)",
                        (xid, name, str(target)))
        apply_defaults(call, xid, info.meta)
    shared = info.kind == "directory" and not copy
    call.db.execute("UPDATE vservers SET template = ?, shared = ? WHERE xid = ?",
                    (template, int(shared), xid))
    try:
        templates.populate(template, target, copy=not shared)
    except TemplateError as exc:
        raise template_fault(exc) from None


@method("vx.remove", cap="CREATE", owner=Owner.OWNER, lock=True, txn=Txn.WRITE, params=(NAME,))
def remove(call: Call, name: str) -> None:
    """Remove a stopped vserver: its configuration and its root filesystem. A shared
    template stays intact."""
    vserver = call.vserver
    if is_running(call, vserver.xid):
        raise VcdError(Fault.MERUNNING, name)
    # rows first, files last: if removing files fails the transaction rolls back
    call.db.execute("DELETE FROM vservers WHERE xid = ?", (vserver.xid,))
    vdir = Path(vserver.vdir)
    try:
        if os.path.lexists(vdir):
            store(call).remove_tree(vdir, removal_base(call, vdir))
    except TemplateError as exc:
        raise template_fault(exc) from None
    if os.path.lexists(vdir):
        raise VcdError(Fault.MEEXIST, f"{vdir} still exists after removal; check it by hand")


@method("vx.rename", cap="CREATE", owner=Owner.OWNER, lock=True, txn=Txn.WRITE,
        params=(NAME, Param("newname", VServerName, doc="the new unique name")))
def rename(call: Call, name: str, newname: str) -> None:
    """Rename a stopped vserver in VXDB (its root directory is not moved)."""
    if is_running(call, call.vserver.xid):
        raise VcdError(Fault.MERUNNING, name)
    if newname == name:
        return
    if call.db.execute("SELECT 1 FROM vservers WHERE name = ?", (newname,)).fetchone():
        raise VcdError(Fault.MEEXIST, newname)
    call.db.execute("UPDATE vservers SET name = ? WHERE xid = ?", (newname, call.vserver.xid))


@method("vx.templates", cap="CREATE", returns="array",
        params=(Param("name", Pattern(VServerName.regex, "a valid template name"),
                      required=False, doc='"" = all templates'),))
def templates_list(call: Call, name: str | None) -> list[dict]:
    """Available templates as [{name, description}] ("(none)" without a description)."""
    result = []
    for info in store(call).list():
        if name is None or info.name == name:
            result.append({"name": info.name, "description": info.description or "(none)"})
    return result
