"""vg.*: groups of vservers (the group `onboot` is started with the daemon)."""
from __future__ import annotations

from typing import Any, Callable

from vcd import vxdb
from vcd.errors import Fault, VcdError
from vcd.locks import vserver_lock
from vcd.params import Param, VServerName
from vcd.registry import Call, Txn, method
from vcd.vxdb.lookup import VServer, find_vserver, is_owner, xid_of

GROUP = Param("group", VServerName, doc="group name")


def _gid(call: Call, group: str) -> int:
    row = call.db.execute("SELECT gid FROM groups WHERE name = ?", (group,)).fetchone()
    if row is None:
        raise VcdError(Fault.MENOVG, group)
    return row[0]


def members(call: Call, group: str) -> list[str]:
    """Names of a group's members (MENOVG if there is no such group)."""
    return [r[0] for r in call.db.execute(
        "SELECT v.name FROM group_members m JOIN vservers v ON v.xid = m.xid "
        "WHERE m.gid = ? ORDER BY v.name", (_gid(call, group),))]


@method("vg.add", cap="AUTH", txn=Txn.WRITE,
        params=(GROUP, Param("name", VServerName, required=False,
                             doc='vserver to add; "" only creates the group')))
def vg_add(call: Call, group: str, name: str | None) -> None:
    """Create a group if it does not exist and add a vserver to it."""
    call.db.execute("INSERT OR IGNORE INTO groups (name) VALUES (?)", (group,))
    if name is not None:
        call.db.execute("INSERT OR IGNORE INTO group_members (gid, xid) VALUES (?, ?)",
                        (_gid(call, group), xid_of(call.db, name)))


@method("vg.list", cap="AUTH", returns="array",
        params=(Param("group", VServerName, required=False, doc='"" = list the groups'),))
def vg_list(call: Call, group: str | None) -> list[str]:
    """The names of all groups, or the members of one group."""
    if group is None:
        return [r[0] for r in call.db.execute("SELECT name FROM groups ORDER BY name")]
    return members(call, group)


@method("vg.remove", cap="AUTH", txn=Txn.WRITE,
        params=(GROUP, Param("name", VServerName, required=False,
                             doc='vserver to remove from the group; "" removes the group')))
def vg_remove(call: Call, group: str, name: str | None) -> None:
    """Remove a vserver from a group, or the whole group."""
    gid = _gid(call, group)
    if name is None:
        call.db.execute("DELETE FROM groups WHERE gid = ?", (gid,))
    else:
        call.db.execute("DELETE FROM group_members WHERE gid = ? AND xid = ?",
                        (gid, xid_of(call.db, name)))


# -- acting on every member -------------------------------------------------------------

def _each(call: Call, group: str, action: Callable[[VServer], Any]) -> None:
    """Run `action` on every member under its own lock; one failure doesn't stop the
    others, and the first fault is reported after all were tried."""
    with vxdb.transaction(call.db):
        names = members(call, group)
    failures: list[str] = []
    first: VcdError | None = None
    for name in names:
        try:
            with vserver_lock(call.config.rundir, [name]):
                vserver = find_vserver(call.db, name)
                if vserver is None:
                    continue
                # a group never widens what the caller may do: members it doesn't own
                # are refused like any owner-checked call
                if not call.user.admin and not is_owner(call.db, vserver.xid, call.user.uid):
                    raise VcdError(Fault.MENOVPS, name)
                action(vserver)
            call.say(f"{name}: done")
        except VcdError as exc:
            failures.append(f"{name}: {exc}")
            call.say(f"{name}: {exc} ({exc.code})")
            first = first or exc
    if first is not None:
        raise VcdError(first.code, text=f"{first.message} ({'; '.join(failures)})")


def _group_method(verb: str, doc: str, action: Callable[[Call, VServer], Any]) -> None:
    def run(call: Call, group: str) -> None:
        _each(call, group, lambda vserver: action(call, vserver))
    method(f"vg.vx.{verb}", cap="INIT", txn=Txn.SELF, params=(GROUP,), doc=doc,
           background=True)(run)


def _start(call: Call, vs: VServer) -> None:
    if not call.runtime.is_running(vs.xid):
        call.runtime.start(call.db, vs)


def _stop(call: Call, vs: VServer) -> None:
    if call.runtime.is_running(vs.xid):
        call.runtime.stop(call.db, vs)


def _reboot(call: Call, vs: VServer) -> None:
    from vcd.methods.vx import reboot_command
    if call.runtime.is_running(vs.xid):
        call.runtime.exec(vs, reboot_command(call, vs))


def _restart(call: Call, vs: VServer) -> None:
    _stop(call, vs)
    call.runtime.start(call.db, vs)


_group_method("start", "Start every stopped member of a group.", _start)
_group_method("stop", "Stop every running member of a group.", _stop)
_group_method("reboot", "Run the reboot command in every running member of a group.", _reboot)
_group_method("restart", "Stop (if running) and start every member of a group.", _restart)
