"""vg.*: groups of vservers (the group `onboot` is started with the daemon)."""
from __future__ import annotations

from vcd.errors import Fault, VcdError
from vcd.params import Param, VServerName
from vcd.registry import Call, Txn, method

GROUP = Param("group", VServerName, doc="group name")


def _gid(call: Call, group: str) -> int:
    row = call.db.execute("SELECT gid FROM groups WHERE name = ?", (group,)).fetchone()
    if row is None:
        raise VcdError(Fault.MENOVG, group)
    return row[0]


def _xid(call: Call, name: str) -> int:
    row = call.db.execute("SELECT xid FROM vservers WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise VcdError(Fault.MENOVPS, name)
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
                        (_gid(call, group), _xid(call, name)))


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
                        (gid, _xid(call, name)))
