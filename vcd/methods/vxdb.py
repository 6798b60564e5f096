"""vxdb.*: the configuration database, manual chapter 13.

Forty-odd methods of three shapes — a keyed list of rows, a single row, a list of
flags — declared as data; `area()` and friends generate the get/set/remove (add)
methods, so each area is one declaration.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Callable

from libvserver import Sched

from vcd import vocab
from vcd.errors import Fault, VcdError
from vcd.host_addresses import host_use, special_kind
from vcd.limit_ranges import (MAX_DISK_KIB, MIN_DISK_KIB, MIN_INODES, check_disk, check_limit,
                               check_sched, limit_range, max_rate)
from vcd.params import (AbsPath, Bool, Choice, CpuList, Int, IPv4, Netmask, Param,
                        SignalName, Text, UInt64, UserName, VServerName)
from vcd.vxdb.lookup import security_of, uid_of, xid_of
from vcd.registry import Call, Method, Owner, Txn, method, register

NAME = Param("name", VServerName, doc="vserver name")

Check = Callable[[Call, dict[str, Any]], None]  # may complete values; raises VcdError


@dataclass(frozen=True)
class Field:
    param: Param
    column: str
    result: str          # key in the returned struct
    to_wire: Callable[[Any], Any] = lambda v: v



def plural(noun: str) -> str:
    """'address' -> 'addresses', 'capability' -> 'capabilities', 'limit' -> 'limits'."""
    if noun.endswith(("s", "x", "sh", "ch")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"

def _field(param: Param, column: str | None = None, result: str | None = None,
           to_wire: Callable[[Any], Any] = lambda v: v) -> Field:
    return Field(param, column or param.name, result or param.name, to_wire)


def _method(name: str, cap: str, func: Callable[..., Any], params: tuple[Param, ...],
            doc: str, returns: str = "nil", write: bool = False) -> None:
    register(Method(name=name, func=func, cap=cap, owner=Owner.OWNER, lock=write,
                    txn=Txn.WRITE if write else Txn.READ, params=(NAME, *params),
                    returns=returns, doc=doc))


def keyed_area(prefix: str, *, cap: str, table: str, what: str, key: Field,
               fields: tuple[Field, ...], check: Check | None = None,
               set_doc: str = "", check_remove: Check | None = None) -> None:
    """get(name, key="" = all) -> [struct]; set(name, key, fields...); remove(name, key="" = all)."""
    columns = [key.column, *(f.column for f in fields)]
    select = f"SELECT {', '.join(columns)} FROM {table} WHERE xid = ?"
    optional_key = Param(key.param.name, key.param.type, required=False,
                         aliases=key.param.aliases, doc=f'"" = all {plural(what)}')

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
            check(call, values)
        placeholders = ", ".join("?" * (len(columns) + 1))
        updates = ", ".join(f"{f.column} = excluded.{f.column}" for f in fields)
        call.db.execute(
            f"INSERT INTO {table} (xid, {', '.join(columns)}) VALUES ({placeholders}) "
            f"ON CONFLICT (xid, {key.column}) DO UPDATE SET {updates}",
            (call.vserver.xid, values[key.param.name], *(values[f.param.name] for f in fields)))

    def remove(call: Call, name: str, **values: Any) -> None:
        wanted = values[key.param.name]
        if check_remove:
            check_remove(call, values)
        if wanted is None:
            call.db.execute(f"DELETE FROM {table} WHERE xid = ?", (call.vserver.xid,))
        else:
            call.db.execute(f"DELETE FROM {table} WHERE xid = ? AND {key.column} = ?",
                            (call.vserver.xid, wanted))

    result_keys = ", ".join([key.result, *(f.result for f in fields)])
    _method(f"{prefix}.get", cap, get, (optional_key,), returns="array",
            doc=f"The configured {plural(what)} of a vserver as [{{{result_keys}}}]; "
                f"an empty {key.param.name} returns all, an unknown one [].")
    _method(f"{prefix}.set", cap, set_, (key.param, *(f.param for f in fields)), write=True,
            doc=f"Add or change a {what} of a vserver.{set_doc}")
    _method(f"{prefix}.remove", cap, remove, (optional_key,), write=True,
            doc=f"Remove a {what} of a vserver (an empty {key.param.name} removes all); "
                f"removing one that is not there succeeds.")


def single_area(prefix: str, *, cap: str, table: str, what: str, fields: tuple[Field, ...],
                unset: Callable[[], Any], shape: Callable[[dict[str, Any]], Any] = lambda d: d,
                check: Check | None = None, with_remove: bool = True) -> None:
    """get(name) -> struct (or value); set(name, fields...); remove(name).

    A set keeps what it does not name: an optional field left out keeps its current
    value (or gets its default when nothing is set yet)."""
    columns = [f.column for f in fields]
    optional = [f for f in fields if not f.param.required]
    set_params = tuple(f.param if f.param.required else replace(
        f.param, default=None,
        doc=(f.param.doc + "; " if f.param.doc else "")
        + f"left out: keeps the current value (default {f.param.default!r})")
        for f in fields)

    def get(call: Call, name: str) -> Any:
        row = call.db.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE xid = ?",
                              (call.vserver.xid,)).fetchone()
        if row is None:
            return unset()
        return shape({f.result: f.to_wire(row[f.column]) for f in fields})

    def set_(call: Call, name: str, **values: Any) -> None:
        if any(values[f.param.name] is None for f in optional):
            row = call.db.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE xid = ?",
                                  (call.vserver.xid,)).fetchone()
            for f in optional:
                if values[f.param.name] is None:
                    values[f.param.name] = row[f.column] if row is not None else f.param.default
        if check:
            check(call, values)
        call.db.execute(
            f"INSERT OR REPLACE INTO {table} (xid, {', '.join(columns)}) "
            f"VALUES ({', '.join('?' * (len(columns) + 1))})",
            (call.vserver.xid, *(values[f.param.name] for f in fields)))

    def remove(call: Call, name: str) -> None:
        call.db.execute(f"DELETE FROM {table} WHERE xid = ?", (call.vserver.xid,))

    _method(f"{prefix}.get", cap, get, (), returns="struct" if len(fields) > 1 else "string",
            doc=f"The {what} of a vserver.")
    _method(f"{prefix}.set", cap, set_, set_params, write=True,
            doc=f"Set the {what} of a vserver; what a set leaves out keeps its value.")
    if with_remove:
        _method(f"{prefix}.remove", cap, remove, (), write=True,
                doc=f"Remove the {what} of a vserver (succeeds when none is set).")


def flag_area(prefix: str, *, cap: str, table: str, column: str, what: str,
              values: tuple[str, ...], kept_for_admins: dict[str, str] | None = None) -> None:
    """add(name, x); get(name) -> [string]; remove(name, x="" = all).

    kept_for_admins: values only an admin may remove (value -> why), fault 101 for
    anyone else, also when a removal of all would take one of them."""
    param = Param(column, Choice(values, what))
    kept = kept_for_admins or {}

    def _check_removal(call: Call, value: str | None) -> None:
        if call.user.admin or not kept:
            return
        present = {r[0] for r in call.db.execute(
            f"SELECT {column} FROM {table} WHERE xid = ?", (call.vserver.xid,))}
        for protected, why in kept.items():
            if protected in present and value in (None, protected):
                raise VcdError(Fault.MEPERM, f"only an admin may remove {what} {protected}: "
                                             f"{why}")

    def add(call: Call, name: str, **given: str) -> None:
        call.db.execute(f"INSERT OR IGNORE INTO {table} (xid, {column}) VALUES (?, ?)",
                        (call.vserver.xid, given[column]))

    def get(call: Call, name: str) -> list[str]:
        return [r[0] for r in call.db.execute(
            f"SELECT {column} FROM {table} WHERE xid = ? ORDER BY {column}", (call.vserver.xid,))]

    def remove(call: Call, name: str, **given: str | None) -> None:
        _check_removal(call, given[column])
        if given[column] is None:
            call.db.execute(f"DELETE FROM {table} WHERE xid = ?", (call.vserver.xid,))
        else:
            call.db.execute(f"DELETE FROM {table} WHERE xid = ? AND {column} = ?",
                            (call.vserver.xid, given[column]))

    _method(f"{prefix}.add", cap, add, (param,), write=True, doc=f"Add a {what} to a vserver.")
    _method(f"{prefix}.get", cap, get, (), returns="array",
            doc=f"The {plural(what)} of a vserver, as an array of strings.")
    _method(f"{prefix}.remove", cap, remove,
            (Param(column, Choice(values, what), required=False, doc='"" = all'),), write=True,
            doc=f"Remove a {what} (an empty value removes all) from a vserver."
            + "".join(f" Only an admin may remove {v} ({why}): fault 101 for anyone else."
                      for v, why in kept.items()))


# -- value checks that involve more than one parameter --------------------------------

def _limit_check(call: Call, values: dict[str, Any]) -> None:
    if values["soft"] is None:
        values["soft"] = values["max"]
    check_limit(values["limit"], values["soft"], values["max"])
    ceiling = _nproc_ceiling(call) if values["limit"] == "NPROC" else None
    if ceiling is not None:
        for field in ("soft", "max"):
            if values[field] == "inf" or int(values[field]) > ceiling:
                raise VcdError(Fault.MEPERM, f"'{field}' {values[field]} of NPROC is above "
                                             f"{ceiling}: {_NPROC_WHY}")


# default_nproc protects the host from a fork bomb (issue 11, "Host-protecting
# defaults"): only the admin (or the template) says otherwise. An owner may lower the
# limit, and raise it again up to default_nproc or what an admin set.
_NPROC_WHY = ("only an admin may lift a vserver's process limit above the host's "
              "default_nproc or remove it")


def _nproc_ceiling(call: Call) -> int | None:
    """The highest NPROC a non-admin may set on this vserver, or None (no bound)."""
    if call.user.admin or not call.config.default_nproc:
        return None
    row = call.db.execute("SELECT max FROM vx_limit WHERE xid = ? AND type = 'NPROC'",
                          (call.vserver.xid,)).fetchone()
    if row is None:
        return call.config.default_nproc
    if not row[0].isdigit():
        return None     # "inf": an admin already decided so
    return max(call.config.default_nproc, int(row[0]))


def _limit_remove_check(call: Call, values: dict[str, Any]) -> None:
    if values["limit"] not in (None, "NPROC") or _nproc_ceiling(call) is None:
        return
    row = call.db.execute("SELECT 1 FROM vx_limit WHERE xid = ? AND type = 'NPROC'",
                          (call.vserver.xid,)).fetchone()
    if row is not None:
        raise VcdError(Fault.MEPERM, f"removing NPROC: {_NPROC_WHY}")


def _sched_check(call: Call, values: dict[str, Any]) -> None:
    if values["fillrate"] > 0 and values["interval"] == 0:
        raise VcdError(Fault.MEINVAL, "'interval' must be greater than 0")
    if values["fillrate2"] and not values["interval2"]:
        raise VcdError(Fault.MEINVAL, "'interval2' must be greater than 0 with 'fillrate2'")
    if values["tokensmin"] > values["tokensmax"] and values["tokensmax"]:
        raise VcdError(Fault.MEINVAL, "'tokensmin' must not exceed 'tokensmax'")
    check_sched(Sched(values["cpuid"], values["interval"], values["fillrate"],
                      values["interval2"], values["fillrate2"], values["tokensmin"],
                      values["tokensmax"]))


# Filesystems a vserver owner may mount besides binds of its own paths: they show only
# what belongs to the vserver (tmpfs: memory charged to its cgroup; mqueue: its own IPC
# namespace). Everything else (devtmpfs, proc, sysfs, cgroup, debugfs, bpf, block
# device filesystems ...) shows or changes the host: admins only.
TENANT_FSTYPES = ("tmpfs", "mqueue")
BIND_FSTYPES = ("bind", "rbind")
# Bind sources that are kernel interfaces inside the vserver too (a plain bind of /proc
# would show it without the masks vcd puts over /proc/sys and friends).
KERNEL_DIRS = ("/proc", "/sys", "/dev")


def mount_refusal(src: str, fstype: str, opts: str) -> str | None:
    """Why a vserver owner who is not an admin may not set this mount, or None.

    Bind sources are paths inside the vserver (libvserver resolves them confined to
    the vdir at start); anything that names a device, a host path or a filesystem
    showing the host is refused."""
    words = [o.strip() for o in opts.split(",")]
    binding = fstype in BIND_FSTYPES or "bind" in words or "rbind" in words
    if fstype in ("auto", "none", "") and src.startswith("/"):
        binding = True  # the manual's short form: a path as source binds it
    if binding:
        if fstype not in (*BIND_FSTYPES, "auto", "none", ""):
            return (f"'opts' {opts!r} binds, but 'type' is {fstype!r}: a bind mount has type "
                    f"bind or rbind")
        if not src.startswith("/"):
            return f"'src' {src!r} of a bind mount must be an absolute path inside the vserver"
        norm = os.path.normpath(src)
        if norm == "/" or norm.startswith("//"):
            return "'src' / would bind the whole root filesystem"
        if any(part == ".." for part in src.split("/")):
            return f"'src' {src!r} must not contain '..'"
        for kernel_dir in KERNEL_DIRS:
            if norm == kernel_dir or norm.startswith(kernel_dir + "/"):
                return (f"'src' {src!r} lies in {kernel_dir}, a kernel interface: only an "
                        f"admin may bind it")
        return None
    if fstype not in TENANT_FSTYPES:
        return (f"'type' {fstype!r} is not one a vserver owner may mount (admins only): "
                f"allowed are {', '.join(TENANT_FSTYPES)} and binds of paths inside the "
                f"vserver (type bind or rbind)")
    if src.startswith("/dev/") or src.startswith("/"):
        return f"'src' {src!r} of a {fstype} mount must be a label, not a path or device"
    return None


def _mount_check(call: Call, values: dict[str, Any]) -> None:
    if call.user.admin:
        return
    why = mount_refusal(values["src"], values["type"], values["opts"])
    if why is not None:
        raise VcdError(Fault.MEPERM, why)


def _addr_check(call: Call, values: dict[str, Any]) -> None:
    """An IPv4 address belongs to one vserver at a time (the index in VXDB agrees); it
    is a unicast address (fault 200 otherwise), and for owners who are not admins none
    the host itself uses (fault 101: its /32 route would pull the host's own traffic for
    it into the vserver, see vcd/host_addresses.py)."""
    kind = special_kind(values["addr"])
    if kind is not None:
        raise VcdError(Fault.MEINVAL, f"'addr' {values['addr']} is {kind}, not an address a "
                                      f"vserver may hold: give a unicast IPv4 address")
    if not call.user.admin:
        use = host_use(values["addr"])
        if use is not None:
            raise VcdError(Fault.MEPERM, f"'addr' {values['addr']} is {use}: only an admin "
                                         f"may give it to a vserver")
    row = call.db.execute("SELECT v.name FROM nx_addr a JOIN vservers v ON v.xid = a.xid "
                          "WHERE a.addr = ? AND a.xid != ?",
                          (values["addr"], call.vserver.xid)).fetchone()
    if row is not None:
        holder = f" by vserver {row[0]}" if call.user.admin else " by another vserver"
        raise VcdError(Fault.MEEXIST, f"address {values['addr']} is in use{holder}")


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


def _cpuset_check(call: Call, values: dict[str, Any]) -> None:
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


def _init_defaults(call: Call, values: dict[str, Any]) -> None:
    values["init"] = values["init"] or vocab.DEFAULT_INIT
    values["halt"] = values["halt"] or vocab.DEFAULT_HALT
    values["reboot"] = values["reboot"] or vocab.DEFAULT_REBOOT


def _dx_check(call: Call, values: dict[str, Any]) -> None:
    values["space"], values["inodes"] = int(values["space"]), int(values["inodes"])
    check_disk(values["space"], values["inodes"])


# -- the areas --------------------------------------------------------------------------

_u64 = UInt64()
_u64_finite = UInt64(allow_inf=False, max=2**63 - 1, description="uint64 as decimal string")
_nonneg = Int(0, 2**31 - 1)

keyed_area("vxdb.mount", cap="MOUNT", table="mount", what="mount point",
           key=_field(Param("dst", AbsPath(), doc="absolute path inside the vserver")),
           fields=(_field(Param("src", Text(max_len=1024), required=False, default="none",
                                doc="source path inside the vserver or an identifier")),
                   _field(Param("type", Text(max_len=64), required=False, default="auto",
                                doc="filesystem type")),
                   _field(Param("opts", Text(max_len=1024), required=False, default="defaults",
                                doc="mount options"))),
           check=_mount_check,
           set_doc=" A bind's source is a path inside the vserver (resolved confined to it "
                   "at start). Owners who are not admins may set only binds of their own "
                   "paths (not /, /proc, /sys, /dev) and " + ", ".join(TENANT_FSTYPES)
                   + " mounts; anything else is fault 101 naming the reason.")

keyed_area("vxdb.nx.addr", cap="NET", table="nx_addr", what="network address",
           key=_field(Param("addr", IPv4(), doc="IPv4 address, dot-decimal")),
           fields=(_field(Param("netmask", Netmask(), required=False,
                                default=vocab.DEFAULT_NETMASK, doc="dot-decimal netmask")),),
           check=_addr_check,
           set_doc=" An address belongs to one vserver at a time: one held by another "
                   "is fault 201 (naming the holder to admins only). Loopback, 0.0.0.0/8, "
                   "multicast and 240.0.0.0/4 are fault 200; owners who are not admins get "
                   "fault 101 for an address the host uses (its own, a gateway of its routes, "
                   "one on a link of its own addresses).")

keyed_area("vxdb.vx.limit", cap="RLIM", table="vx_limit", what="resource limit",
           key=_field(Param("limit", Choice(vocab.LIMITS, "limit type"), aliases=("type",),
                            doc="limit type (memory types in KiB, others counts)"),
                      column="type"),
           fields=(_field(Param("soft", _u64, required=False, doc="soft limit; default = max")),
                   _field(Param("max", _u64, doc="hard limit; 'inf' = unlimited"))),
           check=_limit_check, check_remove=_limit_remove_check,
           set_doc=' Unlimited is "inf" (also accepted: "-1", the int -1 and '
                   '18446744073709551615; read back as "inf"). A value the kernel or init '
                   'cannot live with is fault 200 naming the accepted range: RSS, AS and '
                   f'ANON {limit_range("RSS")[0]}..{limit_range("RSS")[1]} KiB, the other '
                   f'memory types up to {limit_range("MEMLOCK")[1]} KiB (bytes fit 63 bits), '
                   f'NPROC {limit_range("NPROC")[0]}..{limit_range("NPROC")[1]} (pids.max), '
                   'NOFILE up to /proc/sys/fs/nr_open, NSEMS and SEMARY up to 2^31-1. '
                   'Owners who are not admins may not raise NPROC above the larger of the '
                   'config key default_nproc and its current value, nor remove it: fault '
                   '101 (the host\'s protection against fork bombs).')

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
           check=_sched_check,
           set_doc=" The bucket becomes a CFS quota of 100 ms * fillrate / interval per "
                   "100 ms; a rate whose quota (plus burst) the kernel refuses, above "
                   f"{max_rate()} tokens per jiffy, is fault 200.")

keyed_area("vxdb.vx.uname", cap="UNAME", table="vx_uname", what="system information value",
           key=_field(Param("uname", Choice(vocab.UNAMES, "uname type"), aliases=("type",)),
                      column="type"),
           fields=(_field(Param("value", Text(max_len=64), empty_is_value=True)),))

single_area("vxdb.dx.limit", cap="DLIM", table="dx_limit", what="disk limit",
            fields=(_field(Param("space", _u64_finite,
                                 doc=f"KiB, {MIN_DISK_KIB}..{MAX_DISK_KIB} (no disk limit: "
                                     "vxdb.dx.limit.remove)"), to_wire=str),
                    _field(Param("inodes", _u64_finite,
                                 doc=f"{MIN_INODES}..space (one per KiB at most)"), to_wire=str),
                    _field(Param("reserved", Int(0, 100), required=False, default=5,
                                 doc="percent reserved for root inside"))),
            unset=lambda: {"space": "", "inodes": "", "reserved": 0}, check=_dx_check)

single_area("vxdb.init", cap="INIT", table="init",
            what="init, halt and reboot commands (or halt and reboot signals)",
            fields=(_field(Param("init", AbsPath(), required=False, default=vocab.DEFAULT_INIT)),
                    _field(Param("halt", AbsPath(), required=False, default=vocab.DEFAULT_HALT)),
                    _field(Param("reboot", AbsPath(), required=False, default=vocab.DEFAULT_REBOOT)),
                    _field(Param("timeout", Int(0, 86400), required=False,
                                 default=vocab.DEFAULT_TIMEOUT,
                                 doc="seconds vx.stop waits for the vserver to end before "
                                     "killing it (its halt command may run 1 s "
                                     "at least, also with 0)")),
                    _field(Param("halt_signal", SignalName(), required=False, default="",
                                 doc='vx.stop sends this to init instead of running halt, '
                                     'e.g. "SIGRTMIN+3" (systemd), "SIGUSR2" (BusyBox); '
                                     '"none" clears it (run halt); read back "" then')),
                    _field(Param("reboot_signal", SignalName(), required=False, default="",
                                 doc='vx.reboot sends this to init instead of running reboot, '
                                     'e.g. "SIGINT" (systemd), "SIGTERM" (BusyBox); '
                                     '"none" clears it (run reboot)'))),
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
# Without HIDE_NETIF a vserver that has no addresses shares the host's network
# namespace (libvserver/native/backend.py): root inside then reaches the host's
# loopback-only services and abstract unix sockets and listens on its ports.
flag_area("vxdb.vx.flags", cap="CFLAG", table="vx_flags", column="flag",
          what="context flag", values=vocab.FLAGS,
          kept_for_admins={"HIDE_NETIF": "without it a vserver with no addresses shares "
                                         "the host's network"})


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


# The three plain lookups answer only about vservers the caller may see: "not yours =
# does not exist" as everywhere (admins and vshelper's HELPER capability excepted,
# issue 12 overrides DESIGN.md's "no owner check" on them).
LOOKUP_CAPS = ("INFO", "HELPER")


@method("vxdb.name.get", cap=LOOKUP_CAPS, owner=Owner.VISIBLE, returns="string",
        params=(Param("xid", Int(2, 65534)),))
def name_get(call: Call, xid: int) -> str:
    """The name of the vserver with this context id (one the caller owns; admins and
    HELPER: any); 202 otherwise (issue 12)."""
    return call.vserver.name


@method("vxdb.xid.get", cap=LOOKUP_CAPS, owner=Owner.VISIBLE, returns="int", params=(NAME,))
def xid_get(call: Call, name: str) -> int:
    """The context id of a vserver (one the caller owns; admins and HELPER: any); 202
    otherwise (issue 12)."""
    return call.vserver.xid


@method("vxdb.vdir.get", cap=LOOKUP_CAPS, owner=Owner.VISIBLE, returns="string", params=(NAME,))
def vdir_get(call: Call, name: str) -> str:
    """The absolute root directory of a vserver on the host (one the caller owns;
    admins and HELPER: any); 202 otherwise (issue 12)."""
    return call.vserver.vdir


# -- security settings: admins only ---------------------------------------------------

@method("vxdb.vx.security.get", cap=("BCAP", "INFO"), owner=Owner.OWNER, returns="struct",
        params=(NAME,))
def security_get(call: Call, name: str) -> dict[str, bool]:
    """The security settings of a vserver: {privileged, seccomp} (booleans; defaults
    false and true). privileged: no user namespace, root inside is root on the host;
    seccomp: the default system call filter applies."""
    return security_of(call.db, call.vserver.xid)


@method("vxdb.vx.security.set", cap="BCAP", owner=Owner.OWNER, lock=True, txn=Txn.WRITE,
        params=(NAME,
                Param("privileged", Bool(), required=False,
                      doc="true: no user namespace (root inside is root outside); "
                          "left out: unchanged"),
                Param("seccomp", Bool(), required=False,
                      doc="false: no seccomp filter; left out: unchanged")))
def security_set(call: Call, name: str, privileged: bool | None,
                 seccomp: bool | None) -> None:
    """Change the security settings of a vserver (effective at its next start). Admins
    only: capability BCAP and the admin flag; anyone else gets fault 101, owners with
    every capability too, since either setting hands the host to root inside."""
    if not call.user.admin:
        raise VcdError(Fault.MEPERM, "vxdb.vx.security.set is for admins only")
    current = security_of(call.db, call.vserver.xid)
    if privileged is not None:
        current["privileged"] = privileged
    if seccomp is not None:
        current["seccomp"] = seccomp
    call.db.execute("INSERT OR REPLACE INTO vx_security (xid, privileged, seccomp) "
                    "VALUES (?, ?, ?)", (call.vserver.xid, int(current["privileged"]),
                                         int(current["seccomp"])))
