"""The method registry: every XML-RPC method declared once.

A declaration carries the name, capability, owner-check rule, locking, transaction
mode, typed parameters and docstring. Dispatch, validation, system.methodHelp /
methodSignature, the README's method table and the command-line clients all read
this one table.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable

from vcd.errors import Fault, VcdError
from vcd.params import Bool, Param, signature_of
from vcd.vxdb.lookup import VServer, find_vserver, find_vserver_by_xid, is_owner, may_see

if TYPE_CHECKING:
    from vcd.auth import User
    from vcd.config import Config
    from vcd.vxdb import Connection


class Owner(Enum):
    NONE = "none"        # no owner check
    OWNER = "owner"      # `name` must exist and be owned by the caller (admins pass)
    CREATE = "create"    # as OWNER, but an admin also passes for a name that doesn't exist yet
    TASK = "task"        # `id` names a task: the check of the method that started it applies
    VISIBLE = "visible"  # a lookup by `name` or `xid`: owners, admins and HELPER (vshelper names
                         # any context) see the vserver; anyone else gets 202 (issue 12)


class Txn(Enum):
    READ = "read"        # one read transaction
    WRITE = "write"      # one write transaction, taken up front (BEGIN IMMEDIATE)
    SELF = "self"        # the method runs kernel work outside any transaction and opens its own


@dataclass
class Call:
    """What a method body gets besides its parameters."""
    method: "Method"
    user: "User"
    db: "Connection"
    config: "Config"
    peer: str
    vserver: VServer | None = None
    task: Any = None                                  # the vcd.tasks.Task of an Owner.TASK method
    output: Callable[[bytes], None] | None = None     # a task's log, when run as a task

    def say(self, text: str) -> None:
        """A line of progress for the log of a task (nothing outside a task)."""
        if self.output is not None:
            self.output(text.rstrip("\n").encode("utf-8", "replace") + b"\n")

    @property
    def runtime(self) -> Any:
        from vcd import runtime  # imported late: it pulls in libvserver
        return runtime.get(self.config)


@dataclass(frozen=True)
class Method:
    name: str
    func: Callable[..., Any]
    cap: str | tuple[str, ...] | None    # a tuple: any one of them is enough
    owner: Owner
    lock: bool
    txn: Txn
    params: tuple[Param, ...]
    returns: str
    doc: str
    background: bool = False    # takes `background: true`: runs as a task, answers its id
    waits: bool = False         # may wait long (a guest, a big copy, a lock): served off
                                # the worker's event loop (server.py); every background,
                                # locking or writing one
    check: Callable[[Call, dict[str, Any]], None] | None = None  # checks of params against
                                # the config: before the call, and before a task is started

    def __post_init__(self) -> None:
        # a lock may be held by a long stop, VXDB's write lock by a long create or
        # remove (busy_timeout): only read-only calls are sure to be quick
        if self.background or self.lock or self.txn is not Txn.READ:
            object.__setattr__(self, "waits", True)

    @property
    def mutating(self) -> bool:
        """Changes VXDB or a running vserver: audited. Read-only methods use Txn.READ."""
        return self.txn is not Txn.READ

    @property
    def caps(self) -> tuple[str, ...]:
        if self.cap is None:
            return ()
        return (self.cap,) if isinstance(self.cap, str) else self.cap

    @property
    def cap_text(self) -> str:
        if self.owner is Owner.TASK:
            return "that of the task's method"
        return " or ".join(self.caps) or "none"

    @property
    def owner_text(self) -> str:
        """The owner-check column of the README table and of methodHelp."""
        return {Owner.NONE: "no", Owner.VISIBLE: "yes (HELPER: any)"}.get(self.owner, "yes")

    @property
    def signature(self) -> list[list[str]]:
        # XML-RPC introspection: [return type, param types...]; ours take two structs
        return [[self.returns, "struct", "struct"]]

    @property
    def params_signature(self) -> str:
        return signature_of(self.params + ((BACKGROUND,) if self.background else ()))

    @property
    def help(self) -> str:
        lines = [self.doc.strip(), "", f"Parameters: {self.params_signature}"]
        for p in self.params:
            flag = "required" if p.required else f"optional, default {p.default!r}"
            alias = f" (also accepted as {', '.join(p.aliases)})" if p.aliases else ""
            lines.append(f"  {p.name}: {p.type.description}, {flag}{alias}"
                         + (f" - {p.doc}" if p.doc else ""))
        if self.background or self.lock:
            lines.append(f"  {BACKGROUND.name}: boolean, optional - {BACKGROUND.doc}")
        lines.append(f"Returns: {self.returns}" + (" (with background: the task id, a string)"
                                                   if self.background else ""))
        if self.returns == "nil":
            lines.append("  (void: <nil/>; boolean true for a client that posts to /RPC2?nil=0)")
        lines.append(f"Capability: {self.cap_text}; owner check: {self.owner_text}")
        return "\n".join(lines)


# Not in Method.params: commands derived for the clients don't take it positionally.
BACKGROUND = Param("background", Bool(), required=False, default=False,
                   doc="run as a task: the answer is its id at once; follow it with task.get, "
                       "task.log, task.stop")

REGISTRY: dict[str, Method] = {}


def register(m: Method) -> Method:
    if m.name in REGISTRY:
        raise ValueError(f"method {m.name} declared twice")
    first = {Owner.TASK: ("id",), Owner.VISIBLE: ("name", "xid")}.get(m.owner, ("name",))
    if m.owner is not Owner.NONE and (not m.params or m.params[0].name not in first):
        raise ValueError(f"{m.name}: an owner-checked method takes "
                         f"{' or '.join(repr(f) for f in first)} first")
    REGISTRY[m.name] = m
    return m


def method(name: str, *, cap: str | tuple[str, ...] | None, owner: Owner = Owner.NONE, lock: bool = False,
           txn: Txn = Txn.READ, params: tuple[Param, ...] = (), returns: str = "nil",
           doc: str | None = None, background: bool = False, waits: bool = False,
           check: Callable[[Call, dict[str, Any]], None] | None = None,
           ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a method; the decorated function gets (call, **params)."""
    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        register(Method(name=name, func=func, cap=cap, owner=owner, lock=lock, txn=txn,
                        params=tuple(params), returns=returns,
                        doc=doc if doc is not None else (inspect.getdoc(func) or name),
                        background=background, waits=waits, check=check))
        return func
    return wrap


def check_owner(db: "Connection", owner: Owner, user: "User", name: str | int) -> VServer | None:
    """The owner check of a method for vserver `name` (an xid for Owner.VISIBLE lookups by
    xid): the vserver, or None for an admin creating it. Not yours answers like "does not
    exist" (202), so no name leaks."""
    if owner is Owner.VISIBLE:
        vserver = find_vserver_by_xid(db, name) if isinstance(name, int) else find_vserver(db, name)
        if vserver is None or not may_see(db, user, vserver.xid):
            raise VcdError(Fault.MENOVPS, f"xid {name}" if isinstance(name, int) else name)
        return vserver
    vserver = find_vserver(db, name)
    if vserver is None:
        if owner is Owner.CREATE and user.admin:
            return None
        raise VcdError(Fault.MENOVPS, name)
    if user.admin or is_owner(db, vserver.xid, user.uid):
        return vserver
    raise VcdError(Fault.MENOVPS, name)


def load_all() -> dict[str, Method]:
    """Import every method module so the registry is complete."""
    import vcd.methods  # noqa: F401  (registers on import)
    return REGISTRY


def method_table_markdown() -> str:
    """The README's method table, generated so it never drifts from the code."""
    rows = ["| method | params | returns | capability | owner check |",
            "|---|---|---|---|---|"]
    for name in sorted(load_all()):
        m = REGISTRY[name]
        params = ", ".join(p.name + ("" if p.required else "?")
                           for p in m.params + ((BACKGROUND,) if m.background else ()))
        rows.append(f"| `{name}` | {params} | {m.returns} | {m.cap_text} | {m.owner_text} |")
    return "\n".join(rows)
