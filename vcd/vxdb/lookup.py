"""Lookups of VXDB rows that every layer needs: a vserver by name, a user's uid,
ownership. They live with VXDB so that methods, the runtime and the dispatcher
all depend downwards on them (no import circles through the dispatcher)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vcd.errors import Fault, VcdError

if TYPE_CHECKING:
    from vcd.auth import User
    from vcd.vxdb import Connection


@dataclass(frozen=True)
class VServer:
    """One row of `vservers`."""
    xid: int
    name: str
    vdir: str
    template: str | None = None
    shared: bool = False


def find_vserver(db: "Connection", name: str) -> VServer | None:
    row = db.execute("SELECT xid, name, vdir, template, shared FROM vservers WHERE name = ?",
                     (name,)).fetchone()
    if row is None:
        return None
    return VServer(row["xid"], row["name"], row["vdir"], row["template"], bool(row["shared"]))


def find_vserver_by_xid(db: "Connection", xid: int) -> VServer | None:
    row = db.execute("SELECT name FROM vservers WHERE xid = ?", (xid,)).fetchone()
    return find_vserver(db, row[0]) if row is not None else None


def xid_of(db: "Connection", name: str) -> int:
    """The xid of an existing vserver, or MENOVPS."""
    row = db.execute("SELECT xid FROM vservers WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise VcdError(Fault.MENOVPS, name)
    return row[0]


def uid_of(db: "Connection", username: str) -> int:
    """The uid of an existing user, or MENOUSER."""
    row = db.execute("SELECT uid FROM users WHERE username = ?", (username,)).fetchone()
    if row is None:
        raise VcdError(Fault.MENOUSER, username)
    return row[0]


def is_owner(db: "Connection", xid: int, uid: int) -> bool:
    return db.execute("SELECT 1 FROM owners WHERE xid = ? AND uid = ?",
                      (xid, uid)).fetchone() is not None


def may_see(db: "Connection", user: "User", xid: int) -> bool:
    """Whether a user may learn that vserver xid exists: its owners, admins, and
    vshelper's HELPER capability (the kernel's callbacks name any context)."""
    return user.admin or "HELPER" in user.caps or is_owner(db, xid, user.uid)


def security_of(db: "Connection", xid: int) -> dict[str, bool]:
    """{privileged, seccomp} of a vserver; the defaults (False, True) when never set."""
    row = db.execute("SELECT privileged, seccomp FROM vx_security WHERE xid = ?",
                     (xid,)).fetchone()
    if row is None:
        return {"privileged": False, "seccomp": True}
    return {"privileged": bool(row[0]), "seccomp": bool(row[1])}
