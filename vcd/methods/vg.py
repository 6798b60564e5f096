"""vg.*: groups of vservers (the group `onboot` is started with the daemon)."""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable

from vcd import vxdb
from vcd.errors import Fault, VcdError
from vcd.locks import vserver_lock
from vcd.params import Param, VServerName
from vcd.registry import Call, Txn, method
from vcd.vxdb.lookup import VServer, find_vserver, is_owner, xid_of

log = logging.getLogger("vcd.vg")

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
# Members are handled in parallel (issue 13: 200 stops in under 2 s): the backend's calls
# wait in syscalls and on the guests, not on the CPU. Each thread has its own VXDB
# connection and takes its member's lock itself, so a member busy elsewhere is one
# failure (MEBUSY), not a stall of the group.

# Enough to overlap the waits of a large group; more only adds contention on 2 cores.
GROUP_THREADS = 32


Action = Callable[[Call, VServer, Any], Any]
# Reads (and writes) what the members' actions need, in the group's one transaction:
# VXDB connection, member xids -> a value per xid handed to the action.
Prepare = Callable[[vxdb.Connection, list[int]], dict[int, Any]]


def _each(call: Call, group: str, action: Action, prepare: Prepare | None = None) -> None:
    """Run `action` on every member, in parallel, each under its own lock. One failure
    doesn't stop the others; after all were tried, the failures are one fault."""
    with vxdb.transaction(call.db, immediate=prepare is not None):
        names = members(call, group)
        prepared = prepare(call.db, [xid_of(call.db, n) for n in names]) if prepare else {}
    if not names:
        return
    # the backend (and its supervisor) is set up once here, not raced for by the threads
    call.runtime.backend
    local = threading.local()
    connections: list[vxdb.Connection] = []
    guard = threading.Lock()

    def one(name: str) -> None:
        db = getattr(local, "db", None)
        if db is None:
            db = local.db = vxdb.connect(call.config.vxdb_path)
            with guard:
                connections.append(db)
        with vserver_lock(call.config.rundir, [name]):
            vserver = find_vserver(db, name)
            if vserver is None:
                return  # removed since the group was read
            # a group never widens what the caller may do: members it doesn't own
            # are refused like any owner-checked call
            if not call.user.admin and not is_owner(db, vserver.xid, call.user.uid):
                raise VcdError(Fault.MENOVPS, name)
            action(replace(call, db=db, vserver=vserver), vserver, prepared.get(vserver.xid))

    failures: list[tuple[str, VcdError]] = []
    try:
        with ThreadPoolExecutor(max_workers=min(GROUP_THREADS, len(names)),
                                thread_name_prefix=f"vg-{group}") as pool:
            futures = {name: pool.submit(one, name) for name in names}
            for name, future in futures.items():
                try:
                    future.result()
                    call.say(f"{name}: done")
                except VcdError as exc:
                    failures.append((name, exc))
                    call.say(f"{name}: {exc} ({exc.code})")
                except Exception as exc:  # noqa: BLE001 - one member's bug is one failure
                    log.exception("vg %s: %s", group, name)
                    failures.append((name, VcdError(Fault.MESYS, f"{type(exc).__name__}: {exc}")))
    finally:
        for db in connections:
            db.close()
    if failures:
        raise group_fault(group, len(names), failures)


def group_fault(group: str, total: int, failures: list[tuple[str, VcdError]]) -> VcdError:
    """One fault for the failed members (in name order): the code of the first failure,
    its standard text (as every fault string), then the message naming every failed member
    and its reason."""
    listed = "; ".join(f"{name}: {exc}" for name, exc in failures)
    return VcdError(failures[0][1].code,
                    f"{len(failures)} of {total} members of group {group} failed: {listed}")


FAULT_DOC = (" Members are handled in parallel. Returns nil when every member succeeded; "
             "otherwise, after all were tried, one fault naming each failed member and its "
             "reason (\"<standard text>: N of M members of group G failed: a: reason; b: "
             "reason\"), with the code (and standard text) of the first failed member in "
             "name order.")


def _group_method(verb: str, doc: str, action: Action, prepare: Prepare | None = None) -> None:
    def run(call: Call, group: str) -> None:
        _each(call, group, action, prepare)
    method(f"vg.vx.{verb}", cap="INIT", txn=Txn.SELF, params=(GROUP,), doc=doc + FAULT_DOC,
           background=True)(run)


def _stop_settings(db: vxdb.Connection, xids: list[int]) -> dict[int, Any]:
    """Every member's init settings; their reboot requests from inside are dropped (as
    vx.stop does), all in the group's one transaction instead of one per member."""
    from vcd import runtime  # imported late, as Call.runtime: it pulls in libvserver
    runtime.forget_restarts(db, xids)
    return {xid: runtime.init_settings(db, xid) for xid in xids}


def _start(call: Call, vs: VServer, _: Any) -> None:
    if not call.runtime.is_running(vs.xid):
        call.runtime.start(call.db, vs)


def _stop(call: Call, vs: VServer, init: dict[str, Any] | None) -> None:
    if call.runtime.is_running(vs.xid):
        call.runtime.stop(call.db, vs, init)


def _reboot(call: Call, vs: VServer, _: Any) -> None:
    if call.runtime.is_running(vs.xid):
        call.runtime.reboot(call.db, vs)


def _restart(call: Call, vs: VServer, init: dict[str, Any] | None) -> None:
    _stop(call, vs, init)
    call.runtime.start(call.db, vs)


_group_method("start", "Start every stopped member of a group.", _start)
_group_method("stop", "Stop every running member of a group (halt signal or command, as "
              "vx.stop).", _stop, _stop_settings)
_group_method("reboot", "Reboot every running member of a group (reboot signal or command, "
              "as vx.reboot).", _reboot)
_group_method("restart", "Stop (if running) and start every member of a group.", _restart,
              _stop_settings)
