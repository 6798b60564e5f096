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

from vcd.params import Param, signature_of
from vcd.vxdb.lookup import VServer

if TYPE_CHECKING:
    from vcd.auth import User
    from vcd.config import Config
    from vcd.vxdb import Connection


class Owner(Enum):
    NONE = "none"        # no owner check
    OWNER = "owner"      # `name` must exist and be owned by the caller (admins pass)
    CREATE = "create"    # as OWNER, but an admin also passes for a name that doesn't exist yet


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
        return " or ".join(self.caps) or "none"

    @property
    def signature(self) -> list[list[str]]:
        # XML-RPC introspection: [return type, param types...]; ours take two structs
        return [[self.returns, "struct", "struct"]]

    @property
    def params_signature(self) -> str:
        return signature_of(self.params)

    @property
    def help(self) -> str:
        lines = [self.doc.strip(), "", f"Parameters: {self.params_signature}"]
        for p in self.params:
            flag = "required" if p.required else f"optional, default {p.default!r}"
            alias = f" (also accepted as {', '.join(p.aliases)})" if p.aliases else ""
            lines.append(f"  {p.name}: {p.type.description}, {flag}{alias}"
                         + (f" - {p.doc}" if p.doc else ""))
        lines.append(f"Returns: {self.returns}")
        if self.returns == "nil":
            lines.append("  (void: <nil/>; boolean true for a client that posts to /RPC2?nil=0)")
        lines.append(f"Capability: {self.cap_text}; owner check: "
                     f"{'yes' if self.owner is not Owner.NONE else 'no'}")
        return "\n".join(lines)


REGISTRY: dict[str, Method] = {}


def register(m: Method) -> Method:
    if m.name in REGISTRY:
        raise ValueError(f"method {m.name} declared twice")
    if m.owner is not Owner.NONE and (not m.params or m.params[0].name != "name"):
        raise ValueError(f"{m.name}: an owner-checked method takes 'name' first")
    REGISTRY[m.name] = m
    return m


def method(name: str, *, cap: str | tuple[str, ...] | None, owner: Owner = Owner.NONE, lock: bool = False,
           txn: Txn = Txn.READ, params: tuple[Param, ...] = (), returns: str = "nil",
           doc: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a method; the decorated function gets (call, **params)."""
    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        register(Method(name=name, func=func, cap=cap, owner=owner, lock=lock, txn=txn,
                        params=tuple(params), returns=returns,
                        doc=doc if doc is not None else (inspect.getdoc(func) or name)))
        return func
    return wrap


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
        params = ", ".join(p.name + ("" if p.required else "?") for p in m.params)
        rows.append(f"| `{name}` | {params} | {m.returns} | {m.cap_text} | "
                     f"{'yes' if m.owner is not Owner.NONE else 'no'} |")
    return "\n".join(rows)
