"""vx.*: creating, removing, renaming vservers and listing templates."""
from __future__ import annotations

import os
import shlex
from pathlib import Path

from libvserver import MEMORY_LIMIT_TYPES
from templates.errors import (InvalidTemplateName, MetadataError, PopulateError, TemplateError,
                              TemplateNotFound, UnsafeArchive)
from templates.metadata import TemplateMeta
from templates.store import TemplateStore
from vcd import progress, tasks, vocab, vxdb
from vcd.config import ConfigError
from vcd.errors import Fault, VcdError
from vcd.limit_ranges import check_limit
from vcd.params import (AbsPath, Bool, Choice, Int, Number, Param, Pattern, Signal, Text,
                        VServerName)
from vcd.registry import Call, Owner, Txn, method
from vcd.vxdb.lookup import VServer, find_vserver, security_of
from vstatd.config import settings as vstatd_settings
from vstatd.store import Identity, retire as retire_rrd

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


def partial_marker(vdir: Path) -> Path:
    """Beside a vdir while vx.create fills it: a crash leaves it, and the next create of
    that vdir knows the tree is its own half-written work (no VXDB row refers to it)."""
    return vdir.parent / f".{vdir.name}.vcd-partial"


def clear_partial(call: Call, vdir: Path) -> None:
    marker = partial_marker(vdir)
    if not marker.exists():
        return
    if os.path.lexists(vdir):
        try:
            store(call).remove_tree(vdir, removal_base(call, vdir))
        except TemplateError as exc:
            raise template_fault(exc) from None
    marker.unlink()


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
    clear_partial(call, vdir)
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
    """A new vserver's configuration from the template's metadata (or DESIGN's defaults);
    a template's limit the kernel or init cannot live with is refused like a set."""
    db = call.db
    for lim in meta.limits:
        try:
            check_limit(lim.type, _limit_text(lim.soft), _limit_text(lim.max))
        except VcdError as exc:
            raise VcdError(Fault.MEINVAL, f"template {meta.name}: limit {lim.type}: "
                                          f"{exc.message.partition(': ')[2]}") from None
    db.executemany("INSERT INTO vx_bcaps (xid, bcap) VALUES (?, ?)", [(xid, c) for c in meta.bcaps])
    db.executemany("INSERT INTO vx_ccaps (xid, ccap) VALUES (?, ?)", [(xid, c) for c in meta.ccaps])
    db.executemany("INSERT INTO vx_flags (xid, flag) VALUES (?, ?)", [(xid, f) for f in meta.flags])
    db.execute("INSERT INTO init (xid, init, halt, reboot, timeout, halt_signal, reboot_signal) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)",
               (xid, meta.init, meta.halt, meta.reboot, meta.timeout, meta.halt_signal,
                meta.reboot_signal))
    if meta.api_mounts or meta.ready:
        db.execute("INSERT INTO vx_boot (xid, api_mounts, ready) VALUES (?, ?, ?)",
                   (xid, " ".join(meta.api_mounts), meta.ready))
    db.executemany("INSERT INTO mount (xid, dst, src, type, opts) VALUES (?, ?, ?, ?, ?)",
                   [(xid, m.dst, m.src, m.type, m.opts) for m in meta.mounts])
    db.executemany("INSERT INTO vx_limit (xid, type, soft, max) VALUES (?, ?, ?, ?)",
                   [(xid, lim.type, _limit_text(lim.soft), _limit_text(lim.max))
                    for lim in meta.limits])
    # host-protecting default: no fork bomb takes the host's pids (memory and disk stay
    # unlimited until an admin sets them)
    nproc = call.config.default_nproc
    if nproc and not any(lim.type == "NPROC" for lim in meta.limits):
        db.execute("INSERT INTO vx_limit (xid, type, soft, max) VALUES (?, 'NPROC', ?, ?)",
                   (xid, str(nproc), str(nproc)))


def _limit_text(value: int | str) -> str:
    return "inf" if value in ("inf", 2**64 - 1) else str(int(value))


TEMPLATE = Param("template", Pattern(VServerName.regex, "a valid template name"),
                 doc="template cache name (a tarball or directory in templatedir)")


@method("vx.create", cap="CREATE", owner=Owner.CREATE, lock=True, txn=Txn.SELF,
        background=True,
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
    shared = info.kind == "directory" and not copy
    with vxdb.transaction(call.db, immediate=True):
        # read again under the vserver's lock: it may have come or gone since the owner check
        existing = find_vserver(call.db, name)
        if existing is None and call.vserver is not None:
            raise VcdError(Fault.MENOVPS, name)
        if existing is None:
            # a new vserver: its rows and its tree together (no row ever names a tree
            # that is not there); new names are the admin's
            xid = allocate_xid(call)
            target = Path(vdir) if vdir else call.config.vbasedir / name
            check_vdir(call, target)
            call.db.execute("INSERT INTO vservers (xid, name, vdir) VALUES (?, ?, ?)",
                            (xid, name, str(target)))
            apply_defaults(call, xid, info.meta)
            call.db.execute("UPDATE vservers SET template = ?, shared = ? WHERE xid = ?",
                            (template, int(shared), xid))
            _populate(call, templates, template, target, shared)
            return
        if not rebuild:
            raise VcdError(Fault.MEEXIST, name)
        if is_running(call, existing.xid):
            raise VcdError(Fault.MERUNNING, name)
    # A rebuild, which a tenant may repeat at will: its tree is removed and extracted
    # outside any transaction, so VXDB's write lock is never held (and every other
    # writer of the daemon made to wait, past busy_timeout) while it runs. The
    # vserver's lock keeps vx.start, vx.remove and vx.rename out meanwhile.
    target = Path(existing.vdir)
    try:
        if os.path.lexists(target):
            templates.remove_tree(target, removal_base(call, target))
    except TemplateError as exc:
        raise template_fault(exc) from None
    _populate(call, templates, template, target, shared)
    with vxdb.transaction(call.db, immediate=True):
        call.db.execute("UPDATE vservers SET template = ?, shared = ? WHERE xid = ?",
                        (template, int(shared), existing.xid))


def _populate(call: Call, templates: TemplateStore, template: str, target: Path,
              shared: bool) -> None:
    marker = partial_marker(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)

    def report(done: int, total: int) -> None:
        call.say(progress.line(done, total, "bytes", f"extracting {template}"))

    try:
        templates.populate(template, target, copy=not shared,
                           progress=report if call.output is not None else None)
    except TemplateError as exc:
        raise template_fault(exc) from None
    finally:
        # populate cleans up its own failures; a crash before this line leaves the marker
        marker.unlink()


@method("vx.remove", cap="CREATE", owner=Owner.OWNER, lock=True, txn=Txn.WRITE, params=(NAME,),
        waits=True)
def remove(call: Call, name: str) -> None:
    """Remove a stopped vserver and everything of it: its configuration, its root
    filesystem, its disk-limit image, its cgroups and its statistics (deleted or moved
    into vstatd's archive, as [vstatd] on_remove says), so a vserver that later gets
    the same xid or name starts clean. A shared template stays intact."""
    vserver = call.vserver
    if is_running(call, vserver.xid):
        raise VcdError(Fault.MERUNNING, name)
    created = call.db.execute("SELECT created FROM vservers WHERE xid = ?",
                              (vserver.xid,)).fetchone()[0]
    # rows first (every table cascades), files last: if removing files fails the
    # transaction rolls back and the vserver is still there to remove again
    call.db.execute("DELETE FROM vservers WHERE xid = ?", (vserver.xid,))
    vdir = Path(vserver.vdir)
    try:
        if os.path.lexists(vdir):
            store(call).remove_tree(vdir, removal_base(call, vdir))
    except TemplateError as exc:
        raise template_fault(exc) from None
    if os.path.lexists(vdir):
        raise VcdError(Fault.MEEXIST, f"{vdir} still exists after removal; check it by hand")
    call.runtime.forget(vserver)
    _retire_statistics(call, vserver, created)
    tasks.store(call.config).follow_vserver(vserver.name, None)


def _retire_statistics(call: Call, vserver: VServer, created: int) -> None:
    try:
        st = vstatd_settings(call.config)
        retire_rrd(st.rrddir, vserver.name, Identity(vserver.xid, created), st.on_remove)
    except (ConfigError, OSError) as exc:
        raise VcdError(Fault.MESYS, f"statistics of {vserver.name} cannot be removed: "
                                    f"{exc}") from None


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
    tasks.store(call.config).follow_vserver(name, newname)


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


# -- running vservers ---------------------------------------------------------------------
# These run kernel work outside any VXDB transaction (Txn.SELF): a stop may wait for
# seconds, and must not hold the database's write lock meanwhile. The per-vserver lock
# still serialises them.

def _split_command(command: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise VcdError(Fault.MEINVAL, f"'command' cannot be split into words: {exc}") from None
    if not argv:
        raise VcdError(Fault.MEINVAL, "'command' is empty")
    return argv


@method("vx.start", cap="INIT", owner=Owner.OWNER, lock=True, txn=Txn.SELF, params=(NAME,),
        background=True)
def start(call: Call, name: str) -> None:
    """Start a vserver with its complete configuration; returns once its init runs."""
    call.runtime.start(call.db, call.vserver)
    call.say(f"started {name}")


@method("vx.stop", cap="INIT", owner=Owner.OWNER, lock=True, txn=Txn.SELF, params=(NAME,),
        background=True,
        returns="string")
def stop(call: Call, name: str) -> str:
    """Stop a vserver: send its init the halt signal (vxdb.init halt_signal; returns "")
    or run its halt command inside (returns the command's output), wait up to its init
    timeout, then kill what is left."""
    output = call.runtime.stop(call.db, call.vserver)
    call.say(output)
    call.say(f"stopped {name}")
    return output


@method("vx.restart", cap="INIT", owner=Owner.OWNER, lock=True, txn=Txn.SELF, params=(NAME,),
        background=True)
def restart(call: Call, name: str) -> None:
    """Stop and start a running vserver, waiting for both."""
    call.say(call.runtime.stop(call.db, call.vserver))
    call.say(f"stopped {name}")
    call.runtime.start(call.db, call.vserver)
    call.say(f"started {name}")


@method("vx.reboot", cap="INIT", owner=Owner.OWNER, lock=True, txn=Txn.SELF, params=(NAME,),
        returns="string", waits=True)
def reboot(call: Call, name: str) -> str:
    """Reboot a running vserver: send its init the reboot signal (vxdb.init reboot_signal;
    returns "") or run its reboot command inside (returns the command's output); the
    vserver comes back by itself."""
    return call.runtime.reboot(call.db, call.vserver)


def _exec_timeout(call: Call, values: dict) -> None:
    timeout = values["timeout"]
    if timeout is not None and timeout > call.config.exec_timeout_max:
        raise VcdError(Fault.MEINVAL, f"'timeout' must be at most exec_timeout_max = "
                                      f"{call.config.exec_timeout_max:g} seconds, got {timeout:g}")


@method("vx.exec", cap="EXEC", owner=Owner.OWNER, lock=False, txn=Txn.SELF, background=True,
        check=_exec_timeout,
        params=(NAME, Param("command", Text(max_len=65536),
                            doc="command line, split into words like a shell (no pipes, "
                                "no redirection)"),
                Param("timeout", Number(0.1, 7 * 86400), required=False,
                      doc="seconds before the command is killed, up to the daemon's "
                          "exec_timeout_max; default exec_timeout"),
                Param("stdin", Text(max_len=16 * 1048576), required=False, secret=True,
                      doc="text fed to the command's standard input (default: none, "
                          "/dev/null)"),
                Param("encoding", Choice(("", "base64"), "encoding"), required=False,
                      default="", doc='"" = the output as a string (invalid UTF-8 '
                                      'replaced); "base64" = every byte, as <base64>')),
        returns="string")
def exec_(call: Call, name: str, command: str, timeout: float | None, stdin: str | None,
          encoding: str) -> str | bytes:
    """Run a command inside a running vserver; returns its combined stdout and stderr.
    A non-zero exit N is fault 1000+N: "Command execution failed: exit status N: <output>".
    Run as a task (background: true), its output is the task's log as it comes."""
    return call.runtime.exec(call.vserver, _split_command(command), timeout=timeout,
                             stdin=None if stdin is None else stdin.encode("utf-8"),
                             raw=encoding == "base64", on_output=call.output)


@method("vx.kill", cap="INIT", owner=Owner.OWNER, lock=False, txn=Txn.SELF,
        params=(NAME, Param("pid", Int(0, 2**22), doc="0 = every process, 1 = init, "
                                                       "else the pid as seen inside"),
                Param("sig", Signal(), doc="signal number, see signal(7)")))
def kill(call: Call, name: str, pid: int, sig: int) -> None:
    """Send a signal to one process, the init, or every process of a vserver."""
    call.runtime.kill(call.vserver, pid, sig)


@method("vx.status", cap=("INIT", "INFO"), owner=Owner.OWNER, txn=Txn.READ, params=(NAME,),
        returns="struct")
def status(call: Call, name: str) -> dict:
    """{running, nproc, uptime} plus thr_total, thr_running, thr_unintr, thr_onhold,
    forks_total, load1m, load5m, load15m (zeros when stopped), and privileged (boolean:
    the admin-only setting of vxdb.vx.security.set)."""
    st = call.runtime.stat(call.vserver)
    privileged = security_of(call.db, call.vserver.xid)["privileged"]
    if not st.running:
        return {"running": False, "nproc": 0, "uptime": 0, "thr_total": 0, "thr_running": 0,
                "thr_unintr": 0, "thr_onhold": 0, "forks_total": 0, "load1m": "0.00",
                "load5m": "0.00", "load15m": "0.00", "privileged": privileged}
    return {"running": True, "nproc": st.nproc, "uptime": int(st.uptime),
            "thr_total": st.thr_total, "thr_running": st.thr_running,
            "thr_unintr": st.thr_unintr, "thr_onhold": st.thr_onhold,
            "forks_total": st.forks_total, "load1m": f"{st.load1:.2f}",
            "load5m": f"{st.load5:.2f}", "load15m": f"{st.load15:.2f}",
            "privileged": privileged}


def _running_stat(call: Call, net: bool = False):
    st = call.runtime.stat(call.vserver, net=net)
    if not st.running:
        raise VcdError(Fault.MESTOPPED, call.vserver.name)
    return st


@method("vx.load", cap="INFO", owner=Owner.OWNER, txn=Txn.READ, params=(NAME,), returns="struct")
def load(call: Call, name: str) -> dict:
    """Load average of a vserver (runnable + uninterruptible tasks, decayed like the
    kernel's) over 1, 5 and 15 minutes, as strings."""
    st = call.runtime.stat(call.vserver)
    return {"1m": f"{st.load1:.2f}", "5m": f"{st.load5:.2f}", "15m": f"{st.load15:.2f}"}


def _u64(value: int | None) -> str:
    return "" if value is None else str(int(value))


@method("vx.limstatus", cap="INFO", owner=Owner.OWNER, txn=Txn.READ, params=(NAME,),
        returns="array")
def limstatus(call: Call, name: str) -> list[dict]:
    """Usage of each limit the kernel counts: [{type, min, cur, max, limit, unit}]
    (decimal strings). min and max are the observed low and high watermarks as in the
    manual ("" where the kernel keeps none); limit is the configured hard limit
    (vxdb.vx.limit.set; "inf" when none); unit is "KiB" for memory limits, "" for counts."""
    st = _running_stat(call)
    configured = {r["type"]: r["max"] for r in call.db.execute(
        "SELECT type, max FROM vx_limit WHERE xid = ?", (call.vserver.xid,))}
    return [{"type": u.type, "min": _u64(u.min), "cur": _u64(u.cur), "max": _u64(u.max),
             "limit": configured.get(u.type) or "inf",
             "unit": "KiB" if u.type in MEMORY_LIMIT_TYPES else ""}
            for u in st.limits]


@method("vx.console", cap=("INIT", "INFO"), owner=Owner.OWNER, txn=Txn.READ,
        params=(NAME, Param("lines", Int(0, 100000), required=False, default=100,
                            doc="how many of the last lines (default 100)"),
                Param("offset", Int(0, 2**31 - 1), required=False, default=None,
                      doc="an offset from an earlier answer: what came after it instead")),
        returns="struct")
def console(call: Call, name: str, lines: int, offset: int | None) -> dict:
    """The console log of a vserver (what its init and /dev/console wrote, capped at
    256 KiB, kept after it stops until its next start): {data, offset}. `data` is the
    last `lines` lines, or with `offset` what came after it; `offset` is what to ask
    next time to follow it (`vcc console NAME -f`)."""
    data, end = call.runtime.console(call.vserver, lines, offset)
    return {"data": data.decode("utf-8", errors="replace"), "offset": end}


# A line of /proc/<init>/net/dev per interface of the guest's network namespace, and as
# many interfaces as root inside (NET_ADMIN) makes: read in the caller's share of a
# worker's threads (vcd/server.py SlowLane), never on the event loop that serves everybody.
@method("vx.netstatus", cap="INFO", owner=Owner.OWNER, txn=Txn.READ, params=(NAME,),
        waits=True,
        returns="array")
def netstatus(call: Call, name: str) -> list[dict]:
    """Network counters of a running vserver: [{type, recvp, recvb, sendp, sendb, failp,
    failb}] (decimal strings), one per interface of its network namespace; failb is ""
    because a stock kernel counts no failed bytes."""
    st = _running_stat(call, net=True)
    return [{"type": f"net_{key}", "recvp": str(c.rx_packets), "recvb": str(c.rx_bytes),
             "sendp": str(c.tx_packets), "sendb": str(c.tx_bytes), "failp": str(c.errors),
             "failb": ""} for key, c in sorted(st.net.items())]
