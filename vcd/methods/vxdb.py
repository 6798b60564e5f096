"""vxdb.*: the configuration database, manual chapter 13.

Forty-odd methods of three shapes — a keyed list of rows, a single row, a list of
flags — declared as data; `area()` and friends generate the get/set/remove (add)
methods, so each area is one declaration.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from vcd import vocab
from vcd.errors import Fault, VcdError
from vcd.params import (AbsPath, Bool, Choice, CpuList, Int, IPv4, Netmask, Param,
                        SignalName, Text, UInt64, UserName, VServerName)
from vcd.vxdb.lookup import uid_of, xid_of
from vcd.registry import Call, Method, Owner, Txn, method, register

NAME = Param("name", VServerName, doc="vserver name")


@dataclass(frozen=True)
class Field:
    param: Param
    column: str
    result: str          # key in the returned struct
    to_wire: Callable[[Any], Any] = lambda v: v


def _field(param: Param, column: str | None = None, result: str | None = None,
           to_wire: Callable[[Any], Any] = lambda v: v) -> Field:
    return Field(param, column or param.name, result or param.name, to_wire)


def _method(name: str, cap: str, func: Callable[..., Any], params: tuple[Param, ...],
            doc: str, returns: str = "nil", write: bool = False) -> None:
    register(Method(name=name, func=func, cap=cap, owner=Owner.OWNER, lock=write,
                    txn=Txn.WRITE if write else Txn.READ, params=(NAME, *params),
                    returns=returns, doc=doc))


def keyed_area(prefix: str, *, cap: str, table: str, what: str, key: Field,
               fields: tuple[Field, ...],
               check: Callable[[dict[str, Any]], None] | None = None) -> None:
    """get(name, key="" = all) -> [struct]; set(name, key, fields...); remove(name, key="" = all)."""
    columns = [key.column, *(f.column for f in fields)]
    select = f"SELECT {', '.join(columns)} FROM {table} WHERE xid = ?"
    optional_key = Param(key.param.name, key.param.type, required=False,
                         aliases=key.param.aliases, doc=f'"" = all {what}s')

    def to_struct(row: Any) -> dict[str, Any]:
        out = {key.result: key.to_wire(row[key.column])}
        out.update({f.result: f.to_wire(row[f.column]) for f in fields})
        return out

    def get(call: Call, name: str, **values: Any) -> list[dict[str, Any]]:
        wanted = values[key.param.name]
        if wanted is None:
            rows = call.db.execute(select + f" ORDER BY {key.column}", (call.vserver.xid,))
        else:
            rows = call.db.execute(select + f" AND {key.column} = ?", (call.vserver.xid, wanted))
        return [to_struct(r) for r in rows]

    def set_(call: Call, name: str, **values: Any) -> None:
        if check:
            check(values)
        placeholders = ", ".join("?" * (len(columns) + 1))
        updates = ", ".join(f"{f.column} = excluded.{f.column}" for f in fields)
        call.db.execute(
            f"INSERT INTO {table} (xid, {', '.join(columns)}) VALUES ({placeholders}) "
            f"ON CONFLICT (xid, {key.column}) DO UPDATE SET {updates}",
            (call.vserver.xid, values[key.param.name], *(values[f.param.name] for f in fields)))

    def remove(call: Call, name: str, **values: Any) -> None:
        wanted = values[key.param.name]
        if wanted is None:
            call.db.execute(f"DELETE FROM {table} WHERE xid = ?", (call.vserver.xid,))
        else:
            call.db.execute(f"DELETE FROM {table} WHERE xid = ? AND {key.column} = ?",
                            (call.vserver.xid, wanted))

    result_keys = ", ".join([key.result, *(f.result for f in fields)])
    _method(f"{prefix}.get", cap, get, (optional_key,), returns="array",
            doc=f"The configured {what}s of a vserver as [{{{result_keys}}}]; "
                f"an empty {key.param.name} returns all, an unknown one [].")
    _method(f"{prefix}.set", cap, set_, (key.param, *(f.param for f in fields)), write=True,
            doc=f"Add or change a {what} of a vserver.")
    _method(f"{prefix}.remove", cap, remove, (optional_key,), write=True,
            doc=f"Remove a {what} of a vserver (an empty {key.param.name} removes all); "
                f"removing one that is not there succeeds.")


def single_area(prefix: str, *, cap: str, table: str, what: str, fields: tuple[Field, ...],
                unset: Callable[[], Any], shape: Callable[[dict[str, Any]], Any] = lambda d: d,
                check: Callable[[dict[str, Any]], None] | None = None,
                with_remove: bool = True) -> None:
    """get(name) -> struct (or value); set(name, fields...); remove(name)."""
    columns = [f.column for f in fields]

    def get(call: Call, name: str) -> Any:
        row = call.db.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE xid = ?",
                              (call.vserver.xid,)).fetchone()
        if row is None:
            return unset()
        return shape({f.result: f.to_wire(row[f.column]) for f in fields})

    def set_(call: Call, name: str, **values: Any) -> None:
        if check:
            check(values)
        call.db.execute(
            f"INSERT OR REPLACE INTO {table} (xid, {', '.join(columns)}) "
            f"VALUES ({', '.join('?' * (len(columns) + 1))})",
            (call.vserver.xid, *(values[f.param.name] for f in fields)))

    def remove(call: Call, name: str) -> None:
        call.db.execute(f"DELETE FROM {table} WHERE xid = ?", (call.vserver.xid,))

    _method(f"{prefix}.get", cap, get, (), returns="struct" if len(fields) > 1 else "string",
            doc=f"The {what} of a vserver.")
    _method(f"{prefix}.set", cap, set_, tuple(f.param for f in fields), write=True,
            doc=f"Set the {what} of a vserver.")
    if with_remove:
        _method(f"{prefix}.remove", cap, remove, (), write=True,
                doc=f"Remove the {what} of a vserver (succeeds when none is set).")


def flag_area(prefix: str, *, cap: str, table: str, column: str, what: str,
              values: tuple[str, ...]) -> None:
    """add(name, x); get(name) -> [string]; remove(name, x="" = all)."""
    param = Param(column, Choice(values, what))

    def add(call: Call, name: str, **given: str) -> None:
        call.db.execute(f"INSERT OR IGNORE INTO {table} (xid, {column}) VALUES (?, ?)",
                        (call.vserver.xid, given[column]))

    def get(call: Call, name: str) -> list[str]:
        return [r[0] for r in call.db.execute(
            f"SELECT {column} FROM {table} WHERE xid = ? ORDER BY {column}", (call.vserver.xid,))]

    def remove(call: Call, name: str, **given: str | None) -> None:
        if given[column] is None:
            call.db.execute(f"DELETE FROM {table} WHERE xid = ?", (call.vserver.xid,))
        else:
            call.db.execute(f"DELETE FROM {table} WHERE xid = ? AND {column} = ?",
                            (call.vserver.xid, given[column]))

    _method(f"{prefix}.add", cap, add, (param,), write=True, doc=f"Add a {what} to a vserver.")
    _method(f"{prefix}.get", cap, get, (), returns="array",
            doc=f"The {what}s of a vserver, as an array of strings.")
    _method(f"{prefix}.remove", cap, remove,
            (Param(column, Choice(values, what), required=False, doc='"" = all'),), write=True,
            doc=f"Remove a {what} (an empty value removes all) from a vserver.")


# -- value checks that involve more than one parameter --------------------------------

def _limit_check(values: dict[str, Any]) -> None:
    if values["soft"] is None:
        values["soft"] = values["max"]
    soft, hard = values["soft"], values["max"]
    if hard != "inf" and (soft == "inf" or int(soft) > int(hard)):
        raise VcdError(Fault.MEINVAL, f"'soft' ({soft}) must not exceed 'max' ({hard})")


def _sched_check(values: dict[str, Any]) -> None:
    if values["fillrate"] > 0 and values["interval"] == 0:
        raise VcdError(Fault.MEINVAL, "'interval' must be greater than 0")
    if values["fillrate2"] and not values["interval2"]:
        raise VcdError(Fault.MEINVAL, "'interval2' must be greater than 0 with 'fillrate2'")
    if values["tokensmin"] > values["tokensmax"] and values["tokensmax"]:
        raise VcdError(Fault.MEINVAL, "'tokensmin' must not exceed 'tokensmax'")


def _online(path: str) -> set[int]:
    try:
        with open(path) as fh:
            return _expand(fh.read().strip())
    except OSError:
        return set()


def _expand(cpulist: str) -> set[int]:
    result: set[int] = set()
    for part in filter(None, cpulist.split(",")):
        lo, _, hi = part.partition("-")
        result.update(range(int(lo), int(hi or lo) + 1))
    return result


def _cpuset_check(values: dict[str, Any]) -> None:
    cpus = _online("/sys/devices/system/cpu/online") or set(range(os.cpu_count() or 1))
    missing = _expand(values["cpus"]) - cpus
    if missing:
        raise VcdError(Fault.MEINVAL, f"'cpus' names cpus this host does not have: "
                                      f"{sorted(missing)}")
    if values["mems"] is None:
        values["mems"] = "0"
    nodes = _online("/sys/devices/system/node/online") or {0}
    missing = _expand(values["mems"]) - nodes
    if missing:
        raise VcdError(Fault.MEINVAL, f"'mems' names memory nodes this host does not have: "
                                      f"{sorted(missing)}")


def _init_defaults(values: dict[str, Any]) -> None:
    values["init"] = values["init"] or vocab.DEFAULT_INIT
    values["halt"] = values["halt"] or vocab.DEFAULT_HALT
    values["reboot"] = values["reboot"] or vocab.DEFAULT_REBOOT


def _dx_check(values: dict[str, Any]) -> None:
    for key in ("space", "inodes"):
        if int(values[key]) >= 2**63:
            raise VcdError(Fault.MEINVAL, f"'{key}' is too large")
        values[key] = int(values[key])


# -- the areas --------------------------------------------------------------------------

_u64 = UInt64()
_u64_finite = UInt64(allow_inf=False, max=2**63 - 1)
_nonneg = Int(0, 2**31 - 1)

keyed_area("vxdb.mount", cap="MOUNT", table="mount", what="mount point",
           key=_field(Param("dst", AbsPath(), doc="absolute path inside the vserver")),
           fields=(_field(Param("src", Text(max_len=1024), required=False, default="none",
                                doc="source path inside the vserver or an identifier")),
                   _field(Param("type", Text(max_len=64), required=False, default="auto",
                                doc="filesystem type")),
                   _field(Param("opts", Text(max_len=1024), required=False, default="defaults",
                                doc="mount options"))))

keyed_area("vxdb.nx.addr", cap="NET", table="nx_addr", what="network address",
           key=_field(Param("addr", IPv4(), doc="IPv4 address, dot-decimal")),
           fields=(_field(Param("netmask", Netmask(), required=False,
                                default=vocab.DEFAULT_NETMASK, doc="dot-decimal netmask")),))

keyed_area("vxdb.vx.limit", cap="RLIM", table="vx_limit", what="resource limit",
           key=_field(Param("limit", Choice(vocab.LIMITS, "limit type"), aliases=("type",),
                            doc="limit type (memory types in KiB, others counts)"),
                      column="type"),
           fields=(_field(Param("soft", _u64, required=False, doc="soft limit; default = max")),
                   _field(Param("max", _u64, doc="hard limit; 'inf' = unlimited"))),
           check=_limit_check)

keyed_area("vxdb.vx.sched", cap="SCHED", table="vx_sched", what="CPU scheduler bucket",
           key=_field(Param("cpuid", Int(0, 4095), doc="CPU id as in /proc/cpuinfo")),
           fields=(_field(Param("interval", _nonneg, doc="jiffies between fills")),
                   _field(Param("fillrate", _nonneg, doc="tokens per interval")),
                   _field(Param("interval2", _nonneg, required=False, default=0,
                                doc="idle-time interval")),
                   _field(Param("fillrate2", _nonneg, required=False, default=0,
                                doc="idle-time fillrate")),
                   _field(Param("tokensmin", _nonneg, required=False, default=0)),
                   _field(Param("tokensmax", _nonneg, required=False, default=0))),
           check=_sched_check)

keyed_area("vxdb.vx.uname", cap="UNAME", table="vx_uname", what="system information value",
           key=_field(Param("uname", Choice(vocab.UNAMES, "uname type"), aliases=("type",)),
                      column="type"),
           fields=(_field(Param("value", Text(max_len=64), empty_is_value=True)),))

single_area("vxdb.dx.limit", cap="DLIM", table="dx_limit", what="disk limit",
            fields=(_field(Param("space", _u64_finite, doc="KiB"), to_wire=str),
                    _field(Param("inodes", _u64_finite), to_wire=str),
                    _field(Param("reserved", Int(0, 100), required=False, default=5,
                                 doc="percent reserved for root inside"))),
            unset=lambda: {"space": "", "inodes": "", "reserved": 0}, check=_dx_check)

single_area("vxdb.init", cap="INIT", table="init",
            what="init, halt and reboot commands (or halt and reboot signals)",
            fields=(_field(Param("init", AbsPath(), required=False)),
                    _field(Param("halt", AbsPath(), required=False)),
                    _field(Param("reboot", AbsPath(), required=False)),
                    _field(Param("timeout", Int(0, 86400), required=False,
                                 default=vocab.DEFAULT_TIMEOUT,
                                 doc="seconds vx.stop waits before killing")),
                    _field(Param("halt_signal", SignalName(), required=False, default="",
                                 doc='vx.stop sends this to init instead of running halt, '
                                     'e.g. "SIGRTMIN+3" (systemd), "SIGUSR2" (BusyBox); '
                                     '"" = run halt')),
                    _field(Param("reboot_signal", SignalName(), required=False, default="",
                                 doc='vx.reboot sends this to init instead of running reboot, '
                                     'e.g. "SIGINT" (systemd), "SIGTERM" (BusyBox); '
                                     '"" = run reboot'))),
            unset=lambda: {"init": vocab.DEFAULT_INIT, "halt": vocab.DEFAULT_HALT,
                           "reboot": vocab.DEFAULT_REBOOT, "timeout": vocab.DEFAULT_TIMEOUT,
                           "halt_signal": "", "reboot_signal": ""},
            check=_init_defaults, with_remove=False)

single_area("vxdb.nx.broadcast", cap="NET", table="nx_broadcast", what="broadcast address",
            fields=(_field(Param("broadcast", IPv4())),),
            unset=lambda: "", shape=lambda d: d["broadcast"])

single_area("vxdb.vx.cpuset", cap="SCHED", table="vx_cpuset", what="cpuset",
            fields=(_field(Param("cpus", CpuList(), doc="cpus like 0-3,5")),
                    _field(Param("mems", CpuList(), required=False, doc="memory nodes; default 0")),
                    _field(Param("virtualize", Bool(), required=False, default=False),
                           to_wire=bool)),
            unset=lambda: {"cpus": "", "mems": "", "virtualize": False}, check=_cpuset_check)

flag_area("vxdb.vx.bcaps", cap="BCAP", table="vx_bcaps", column="bcap",
          what="system capability", values=vocab.BCAPS)
flag_area("vxdb.vx.ccaps", cap="CCAP", table="vx_ccaps", column="ccap",
          what="context capability", values=vocab.CCAPS)
flag_area("vxdb.vx.flags", cap="CFLAG", table="vx_flags", column="flag",
          what="context flag", values=vocab.FLAGS)


# -- lookups and owners -----------------------------------------------------------------

@method("vxdb.list", cap=None, returns="array",
        params=(Param("username", UserName, required=False,
                      doc='only vservers this user owns; "" = every vserver you may see'),))
def vxdb_list(call: Call, username: str | None) -> list[str]:
    """Names of the vservers that pass the caller's owner checks (admins: all)."""
    if not call.user.admin:
        if username is not None and username != call.user.username:
            return []
        username = call.user.username
    if username is None:
        return [r[0] for r in call.db.execute("SELECT name FROM vservers ORDER BY name")]
    return [r[0] for r in call.db.execute(
        "SELECT v.name FROM vservers v JOIN owners o ON o.xid = v.xid WHERE o.uid = ? "
        "ORDER BY v.name", (uid_of(call.db, username),))]


@method("vxdb.owner.add", cap="AUTH", txn=Txn.WRITE,
        params=(NAME, Param("username", UserName)))
def owner_add(call: Call, name: str, username: str) -> None:
    """Add a user to the owners of a vserver."""
    call.db.execute("INSERT OR IGNORE INTO owners (xid, uid) VALUES (?, ?)",
                    (xid_of(call.db, name), uid_of(call.db, username)))


@method("vxdb.owner.get", cap="AUTH", returns="array", params=(NAME,))
def owner_get(call: Call, name: str) -> list[str]:
    """The owners of a vserver, as an array of usernames."""
    return [r[0] for r in call.db.execute(
        "SELECT u.username FROM owners o JOIN users u ON u.uid = o.uid WHERE o.xid = ? "
        "ORDER BY u.username", (xid_of(call.db, name),))]


@method("vxdb.owner.remove", cap="AUTH", txn=Txn.WRITE,
        params=(NAME, Param("username", UserName, required=False, doc='"" = all owners')))
def owner_remove(call: Call, name: str, username: str | None) -> None:
    """Remove a user (or all users) from the owners of a vserver."""
    xid = xid_of(call.db, name)
    if username is None:
        call.db.execute("DELETE FROM owners WHERE xid = ?", (xid,))
    else:
        call.db.execute("DELETE FROM owners WHERE xid = ? AND uid = ?", (xid, uid_of(call.db, username)))


@method("vxdb.name.get", cap="INFO", returns="string", params=(Param("xid", Int(2, 65534)),))
def name_get(call: Call, xid: int) -> str:
    """The name of the vserver with this context id."""
    row = call.db.execute("SELECT name FROM vservers WHERE xid = ?", (xid,)).fetchone()
    if row is None:
        raise VcdError(Fault.MENOVPS, f"xid {xid}")
    return row[0]


@method("vxdb.xid.get", cap="INFO", returns="int", params=(NAME,))
def xid_get(call: Call, name: str) -> int:
    """The context id of a vserver."""
    return xid_of(call.db, name)


@method("vxdb.vdir.get", cap="INFO", returns="string", params=(NAME,))
def vdir_get(call: Call, name: str) -> str:
    """The absolute root directory of a vserver on the host."""
    row = call.db.execute("SELECT vdir FROM vservers WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise VcdError(Fault.MENOVPS, name)
    return row[0]
