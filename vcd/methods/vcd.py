"""vcd.*: login, daemon status and host information, the user database."""
from __future__ import annotations

import os
import time
from pathlib import Path

from vcd import auth
from vcd.vxdb.lookup import uid_of
from vcd.errors import Fault, VcdError
from vcd.params import Bool, Choice, Param, Text, UserName
from vcd.registry import Call, Txn, method
from vcd.vocab import USER_CAPS

MIN_PASSWORD = 8

USERNAME = Param("username", UserName, doc="unique username")
CAP = Choice(USER_CAPS, "capability")


@method("vcd.login", cap=None)
def login(call: Call) -> None:
    """Check username and password without doing anything else (for GUIs and panels)."""


@method("vcd.whoami", cap=None, returns="struct")
def whoami(call: Call) -> dict:
    """The caller as the daemon sees it: {username, admin, caps} (caps: array of
    capability names, sorted), so a panel shows only what the caller may do."""
    return {"username": call.user.username, "admin": call.user.admin,
            "caps": sorted(call.user.caps)}


@method("vcd.status", cap="INFO", returns="struct")
def status(call: Call) -> dict:
    """Daemon statistics since it started: uptime (s), requests, failed logins
    (flogins), calls of unknown methods (nomethod)."""
    counts = _stats(call)
    uptime = int(time.time() - counts["started"])
    return {"uptime": uptime, "requests": int(counts["requests"]),
            "flogins": int(counts["flogins"]), "nomethod": int(counts["nomethod"])}


def _stats(call: Call) -> dict[str, float]:
    from vcd.stats import Stats
    reader = Stats(call.config.rundir)
    try:
        return reader.read()
    finally:
        reader.close()


@method("vcd.hostinfo", cap="INFO", returns="struct")
def hostinfo(call: Call) -> dict:
    """Host facts a client needs: vbasedir, number of cpus and memory nodes, and more."""
    nodes = [n for n in _listdir(Path("/sys/devices/system/node")) if n.startswith("node")
             and n[4:].isdigit()]
    uname = os.uname()
    meminfo = _meminfo()
    return {"vbasedir": str(call.config.vbasedir), "cpus": os.cpu_count() or 1,
            "memnodes": max(len(nodes), 1), "kernel": uname.release, "machine": uname.machine,
            "hostname": uname.nodename, "memtotal": str(meminfo.get("MemTotal", 0)),
            "memavailable": str(meminfo.get("MemAvailable", 0))}


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _meminfo() -> dict[str, int]:
    result: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                result[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return result


# -- users ------------------------------------------------------------------------------

@method("vcd.user.get", cap="AUTH", returns="array",
        params=(Param("username", UserName, required=False, doc='"" = all users'),))
def user_get(call: Call, username: str | None) -> list[dict]:
    """Users as [{username, uid, admin, caps}]; the password hash is never returned."""
    if username:
        rows = call.db.execute("SELECT uid, username, admin FROM users WHERE username = ?",
                               (username,)).fetchall()
    else:
        rows = call.db.execute("SELECT uid, username, admin FROM users ORDER BY username").fetchall()
    result = []
    for row in rows:
        caps = [r[0] for r in call.db.execute(
            "SELECT cap FROM user_caps WHERE uid = ? ORDER BY cap", (row["uid"],))]
        result.append({"username": row["username"], "uid": row["uid"],
                       "admin": bool(row["admin"]), "caps": caps})
    return result


@method("vcd.user.set", cap="AUTH", txn=Txn.WRITE,
        params=(USERNAME,
                Param("password", Text(max_len=1024), required=False, secret=True,
                      doc="new users need at least 8 characters; \"\" keeps the password"),
                Param("admin", Bool(), required=False, doc="administrator flag")))
def user_set(call: Call, username: str, password: str | None, admin: bool | None) -> None:
    """Add a user or change one's password and administrator flag."""
    if password is not None and not password.startswith(auth.HASH_PREFIX) \
            and len(password) < MIN_PASSWORD:
        raise VcdError(Fault.MEINVAL, f"'password' must have at least {MIN_PASSWORD} characters")
    row = call.db.execute("SELECT uid FROM users WHERE username = ?", (username,)).fetchone()
    hashed = None if password is None else auth.given_hash(password)
    if hashed is not None and (len(hashed) != 128
                               or any(c not in "0123456789ABCDEF" for c in hashed)):
        raise VcdError(Fault.MEINVAL, "'password' hash must be 128 hex digits")
    if row is None:
        if hashed is None:
            raise VcdError(Fault.MEINVAL, "missing parameter 'password' (a new user needs one)")
        call.db.execute("INSERT INTO users (username, password, admin) VALUES (?, ?, ?)",
                        (username, hashed, int(bool(admin))))
        return
    if hashed is not None:
        call.db.execute("UPDATE users SET password = ? WHERE uid = ?", (hashed, row[0]))
    if admin is not None:
        call.db.execute("UPDATE users SET admin = ? WHERE uid = ?", (int(admin), row[0]))


@method("vcd.user.remove", cap="AUTH", txn=Txn.WRITE, params=(USERNAME,))
def user_remove(call: Call, username: str) -> None:
    """Remove a user, its capabilities and its ownerships."""
    uid = uid_of(call.db, username)
    if uid == call.user.uid:
        raise VcdError(Fault.MEPERM, "a user cannot remove itself")
    call.db.execute("DELETE FROM users WHERE uid = ?", (uid,))


@method("vcd.user.caps.add", cap="AUTH", txn=Txn.WRITE,
        params=(USERNAME, Param("cap", CAP)))
def user_caps_add(call: Call, username: str, cap: str) -> None:
    """Grant a capability to a user."""
    call.db.execute("INSERT OR IGNORE INTO user_caps (uid, cap) VALUES (?, ?)",
                    (uid_of(call.db, username), cap))


@method("vcd.user.caps.get", cap="AUTH", returns="array", params=(USERNAME,))
def user_caps_get(call: Call, username: str) -> list[str]:
    """The capabilities of a user, as an array of strings."""
    return [r[0] for r in call.db.execute("SELECT cap FROM user_caps WHERE uid = ? ORDER BY cap",
                                          (uid_of(call.db, username),))]


@method("vcd.user.caps.remove", cap="AUTH", txn=Txn.WRITE,
        params=(USERNAME, Param("cap", CAP, required=False, doc='"" = all')))
def user_caps_remove(call: Call, username: str, cap: str | None) -> None:
    """Take a capability (or all of them) from a user."""
    uid = uid_of(call.db, username)
    if cap is None:
        call.db.execute("DELETE FROM user_caps WHERE uid = ?", (uid,))
    else:
        call.db.execute("DELETE FROM user_caps WHERE uid = ? AND cap = ?", (uid, cap))
