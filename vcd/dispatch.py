"""The one request path every method goes through.

parse (defusedxml) -> authenticate -> capability -> validate params -> owner check
-> per-vserver lock -> one VXDB transaction -> method -> marshal result, and the single
place where exceptions become XML-RPC faults. The server hands us a request body
(`parse`), asks whether the call may wait long (`waits`: then it serves it in a thread
with a dispatcher of its own) and gets a complete methodResponse body back (`answer`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
import xmlrpc.client
from contextlib import ExitStack
from typing import Any, Callable

from defusedxml import DefusedXmlException
from defusedxml.xmlrpc import DefusedExpatParser

from libvserver.native import phases
from vcd import auth, stats, tasks, vxdb
from vcd.listeners import local_uid, share_of
from vcd.audit import AuditLog
from vcd.config import Config
from vcd.errors import Fault, MustWait, VcdError
from vcd.locks import user_slot, vserver_lock
from vcd.marshal import RequestUnmarshaller, dump_fault, dump_result, sent_text
from vcd.registry import BACKGROUND, REGISTRY, Call, Method, Owner, Txn, check_owner, load_all
from vcd.vocab import USER_CAPS
from vcd.vxdb.lookup import VServer, find_vserver

log = logging.getLogger("vcd")
request_log = logging.getLogger("vcd.request")

# Whom a trusted local uid is on the Unix socket when it sends no credentials.
LOCAL_ADMIN = "admin"

FIRST_USERS = (
    ("admin", True, tuple(c for c in USER_CAPS if c != "HELPER")),
    ("vshelper", False, ("HELPER",)),
)


# -- set-up ---------------------------------------------------------------------------

def prepare(config: Config) -> None:
    """Once per daemon start, before the workers fork: VXDB ready, counters reset."""
    load_all()
    config.datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config.rundir.mkdir(parents=True, exist_ok=True, mode=0o755)
    conn = vxdb.connect(config.vxdb_path, create=True)
    try:
        vxdb.migrate(conn)
        create_first_users(conn, config)
    finally:
        conn.close()
    stats.reset(config.rundir)


def create_first_users(conn: vxdb.Connection, config: Config) -> None:
    """An empty VXDB gets `admin` and `vshelper` with random passwords in files (0600)."""
    with vxdb.transaction(conn, immediate=True):
        if conn.execute("SELECT count(*) FROM users").fetchone()[0]:
            return
        for username, admin, caps in FIRST_USERS:
            password = auth.random_password()
            auth.create_user(conn, username, password, admin=admin, caps=caps)
            path = config.password_file(username)
            auth.write_password_file(path, password)
            log.info("first start: created user %s, password in %s", username, path)


def on_boot(config: Config) -> None:
    """Start every member of the group `onboot` (vcd -b / boot = true)."""
    from vcd import runtime
    runtime.boot(config)


# -- parsing and marshalling -----------------------------------------------------------

def loads(body: bytes) -> tuple[tuple[Any, ...], str]:
    unmarshaller = RequestUnmarshaller()
    parser = DefusedExpatParser(unmarshaller, forbid_dtd=True, forbid_entities=True,
                                forbid_external=True)
    parser.feed(body)
    parser.close()
    name = unmarshaller.getmethodname()
    if not name:
        raise ValueError("no methodName")
    return unmarshaller.close(), name


@dataclass
class Request:
    """A request body, parsed: method name and params, or the parse error's text."""
    name: str
    params: tuple[Any, ...]
    fault: str | None
    started: float          # time.monotonic() when it came in
    phases: Any             # its start phases (phases.begin_request)


def parse(body: bytes) -> Request:
    started = time.monotonic()
    # with VCD_START_PHASES (bench/start_phases.py) a vx.start records its steps
    ph = phases.begin_request()
    try:
        params, name = loads(body)
        ph.mark("vcd: XML-RPC parse")
        return Request(name, params, None, started, ph)
    except Exception as exc:  # expat errors, defusedxml's refusals, anything malformed
        return Request("-", (), f"Parse error: {_short(exc)}", started, ph)


def waits(request: Request) -> bool:
    """Whether the call may wait long (on a guest, a copy of a tree): Method.waits, also
    of any call inside a system.multicall, and every system.multicall of more than one
    call (a request of 1 MiB carries thousands: as many separate requests would be
    served in turn with everybody else's, a multicall at once). Such calls are served
    off the worker's event loop (server.py), so they never hold up the calls of others."""
    if request.name == "system.multicall":
        calls = request.params[0] if request.params else None
        return not isinstance(calls, list) or len(calls) > 1 or any(
            not isinstance(c, dict) or _waits(c.get("methodName")) for c in calls)
    return _waits(request.name)


def _waits(name: Any) -> bool:
    method = REGISTRY.get(name) if isinstance(name, str) else None
    return method is not None and method.waits


def fault_of(exc: BaseException) -> VcdError:
    """Every exception a method can raise, as a fault. Never a traceback."""
    if isinstance(exc, VcdError):
        return exc
    if isinstance(exc, vxdb.IntegrityError):
        text = str(exc)
        if "UNIQUE" in text or "PRIMARY KEY" in text:
            return VcdError(Fault.MEEXIST)
        if "CHECK" in text or "NOT NULL" in text or "FOREIGN KEY" in text:
            return VcdError(Fault.MEINVAL, "value refused by VXDB constraints")
        return VcdError(Fault.MEVXDB, text)
    if isinstance(exc, vxdb.Error):
        return VcdError(Fault.MEVXDB, str(exc))
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return VcdError(Fault.MESYS, f"{exc.strerror or exc}{where}")
    return VcdError(Fault.MESYS, "internal error")


# -- the dispatcher --------------------------------------------------------------------

class Dispatcher:
    """One per worker process, created after fork."""

    def __init__(self, config: Config):
        load_all()
        self.config = config
        self.db = vxdb.connect(config.vxdb_path)
        self.auth = auth.Authenticator(self.db)
        self.stats = stats.of_process(config.rundir)
        self.audit = AuditLog(config.audit_log) if config.audit_log else None
        self.nil = True
        self.quick = False

    def serve_long(self) -> None:
        """This worker will serve for long: the backend's set-up for many entries (every
        vx.exec and stop enters a vserver). A backend that cannot is logged, not fatal."""
        from vcd import runtime
        try:
            runtime.get(self.config).backend.serve_long()
        except Exception:
            log.exception("the backend's set-up for a long-serving worker failed; "
                          "entering vservers forks this worker instead")

    def close(self) -> None:
        self.db.close()
        if self.audit is not None:
            self.audit.close()

    @staticmethod
    def parse(body: bytes) -> Request:
        return parse(body)

    @staticmethod
    def waits(request: Request) -> bool:
        return waits(request)

    def answer(self, request: Request, peer: str, nil: bool = True,
               quick: bool = False) -> bytes:
        """The methodResponse for a request (parsed by any dispatcher of this process).
        `nil` False (`POST /RPC2?nil=0`): void results are boolean true, also inside
        system.multicall. `quick` (on a worker's event loop): raises MustWait, having
        done nothing, for a call that would have to wait (a failed login to record)."""
        ph = request.phases
        phases.current = ph
        self.nil = nil
        self.quick = quick
        name, code, self.user = request.name, 0, "-"
        deferred = False
        try:
            if request.fault is not None:
                code = Fault.PARSE_ERROR
                return dump_fault(code, request.fault)
            try:
                result = self.call(name, request.params, peer)
            except Exception as exc:
                fault = fault_of(exc)
                if not isinstance(exc, VcdError):
                    log.exception("%s failed", name)
                code = fault.code
                return dump_fault(fault.code, str(fault))
            try:
                return dump_result(result, nil=nil)
            except (OverflowError, TypeError) as exc:
                log.error("%s: result cannot be marshalled: %s", name, exc)
                code = Fault.MESYS
                return dump_fault(code, "System call or library call failed: bad result")
        except MustWait:
            deferred = True     # answered again in a thread: counted and logged there
            raise
        finally:
            self.quick = False
            if not deferred:
                self.stats.add("requests")
                request_log.info("%s user=%s peer=%s fault=%s %.1fms", name, self.user, peer,
                                 int(code), (time.monotonic() - request.started) * 1000)

    # A call by name, also used for each entry of system.multicall.
    def call(self, name: str, params: tuple[Any, ...], peer: str) -> Any:
        if name.startswith("system."):
            return self.system(name, params, peer)
        method = REGISTRY.get(name)
        if method is None:
            self.stats.add("nomethod")
            raise VcdError(Fault.METHOD_NOT_FOUND, text=f"method not found: {name}")
        given = params[1] if len(params) > 1 else {}
        if self.audit is None or not method.mutating:
            user = self.authenticate(params, peer)
            self.user = user.username
            phases.current.mark("vcd: authenticate (VXDB)")
            return self.invoke(method, user, given, peer)
        claimed = params[0].get("username") if params and isinstance(params[0], dict) else None
        try:
            user = self.authenticate(params, peer)
            self.user = user.username
            result = self.invoke(method, user, given, peer)
        except auth.Throttled:
            raise
        except Exception as exc:
            fault = fault_of(exc)
            self._audit(method, str(claimed), peer, given, (fault.code, str(fault)))
            raise
        self._audit(method, user.username, peer, given, None)
        return result

    def _audit(self, method: Method, user: str, peer: str, given: Any,
               fault: tuple[int, str] | None) -> None:
        # The call has happened (and is committed) by now: a full disk or a removed
        # directory must not turn its answer into a fault naming the audit file, nor
        # replace the fault the caller should see. The operator learns it from the log.
        assert self.audit is not None
        try:
            self.audit.record(method, user, peer, given, fault)
        except OSError as exc:
            log.error("audit log %s: cannot record %s by %r: %s", self.audit.path, method.name,
                      user[:64], exc.strerror or exc)

    def authenticate(self, params: tuple[Any, ...], peer: str) -> auth.User:
        creds = params[0] if params else None
        uid = local_uid(peer)
        if uid is not None and _no_credentials(creds):
            return self.local_user(uid)
        username = _credential(creds.get("username")) if isinstance(creds, dict) else None
        password = _credential(creds.get("password")) if isinstance(creds, dict) else None
        if username is None or password is None:
            self.stats.add("flogins")
            raise VcdError(Fault.MEAUTH, "first parameter must be {username, password}")
        try:
            # throttled per share_of(peer): an IPv6 client's /64, not each of its addresses
            return self.auth.check(username, password, share_of(peer), quick=self.quick)
        except VcdError:
            self.stats.add("flogins")
            raise

    def local_user(self, uid: int) -> auth.User:
        """The Incus convention: a trusted local uid (root by default) that sends no
        credentials on the Unix socket is the admin; anyone else is asked for them.
        A trusted uid that does send credentials is checked like everybody else."""
        if uid not in self.config.unix_socket_trusted_uids:
            self.stats.add("flogins")
            raise VcdError(Fault.MEAUTH, f"no username and password given, and uid {uid} is "
                                         "not trusted on the Unix socket "
                                         "(unix_socket_trusted_uids)")
        found = auth.load_user(self.db, LOCAL_ADMIN)
        if found is None:
            raise VcdError(Fault.MEAUTH, f"uid {uid} is trusted on the Unix socket as user "
                                         f"{LOCAL_ADMIN!r}, which does not exist")
        return found[0]

    def invoke(self, method: Method, user: auth.User, given: Any, peer: str,
               output: Callable[[bytes], None] | None = None) -> Any:
        """Check and run one call. output: where a method run as a task writes its log."""
        if method.caps and not any(cap in user.caps for cap in method.caps):
            raise VcdError(Fault.MEPERM, f"{method.name} needs capability {method.cap_text}")
        if given in ("", None) or given == []:
            # PHP's xmlrpc extension can only send an empty array for "no params"
            given = {}
        if not isinstance(given, dict):
            raise VcdError(Fault.MEINVAL, "second parameter must be a struct of named params")
        background = BACKGROUND.take(given)
        if background and not method.background:
            raise VcdError(Fault.MEINVAL, f"{method.name} does not run as a task: 'background' "
                                          "is taken by " + ", ".join(
                                              sorted(m.name for m in REGISTRY.values()
                                                     if m.background)))
        values = {p.name: p.take(given) for p in method.params}
        call = Call(method=method, user=user, db=self.db, config=self.config, peer=peer,
                    output=output)
        if method.owner is Owner.TASK:
            with vxdb.transaction(self.db):
                call.task = tasks.get_checked(self.config, self.db, user, values["id"])
        elif method.owner is not Owner.NONE:
            call.vserver = self.owner_check(method, user, values[method.params[0].name])
        if method.check is not None:
            method.check(call, values)
        if background:
            # checked like the call itself; the runner checks again when it runs it
            name = values.get("name") or values.get("group") or ""
            return tasks.start(self.config, method.name, name, user.username, values, peer)
        phases.current.mark("vcd: capability, params, owner (VXDB)")
        with ExitStack() as stack:
            if method.waits and output is None and not user.admin:
                # threads are a worker's 16, 4 per peer: a tenant calling from many
                # addresses must not take them all with commands that wait an hour
                stack.enter_context(user_slot(self.config.rundir, user.uid,
                                              self.config.waiting_calls_per_user,
                                              "waiting_calls_per_user"))
            if method.lock:
                names = [values["name"]] if "name" in values else []
                if isinstance(values.get("newname"), str):
                    names.append(values["newname"])
                stack.enter_context(vserver_lock(self.config.rundir, names))
                phases.current.mark("vcd: vserver lock")
            if method.txn is Txn.SELF:
                return method.func(call, **values)
            with vxdb.transaction(self.db, immediate=method.txn is Txn.WRITE):
                if call.vserver is not None:
                    # re-read under the lock and inside the transaction: it may have
                    # been removed or renamed since the owner check
                    name = call.vserver.name
                    call.vserver = find_vserver(self.db, name)
                    if call.vserver is None:
                        raise VcdError(Fault.MENOVPS, name)
                return method.func(call, **values)

    def owner_check(self, method: Method, user: auth.User, name: str | int) -> VServer | None:
        return check_owner(self.db, method.owner, user, name)

    # -- introspection ------------------------------------------------------------------

    def system(self, name: str, params: tuple[Any, ...], peer: str) -> Any:
        args = [p for p in params if not isinstance(p, dict)]
        if name == "system.listMethods":
            return sorted([*REGISTRY, *SYSTEM_METHODS])
        if name in ("system.methodHelp", "system.methodSignature"):
            target = args[0] if args else next(
                (p.get("name") or p.get("method") for p in params
                 if isinstance(p, dict) and (p.get("name") or p.get("method"))), None)
            if not isinstance(target, str):
                raise VcdError(Fault.MEINVAL, "give the method name")
            if target in SYSTEM_METHODS:
                help_text, signature = SYSTEM_METHODS[target]
                return help_text if name == "system.methodHelp" else signature
            m = REGISTRY.get(target)
            if m is None:
                raise VcdError(Fault.METHOD_NOT_FOUND, text=f"method not found: {target}")
            return m.help if name == "system.methodHelp" else m.signature
        if name == "system.multicall":
            return self.multicall(args[0] if args else None, peer)
        self.stats.add("nomethod")
        raise VcdError(Fault.METHOD_NOT_FOUND, text=f"method not found: {name}")

    def multicall(self, calls: Any, peer: str) -> list[Any]:
        if not isinstance(calls, list):
            raise VcdError(Fault.MEINVAL, "system.multicall takes an array of calls")
        results: list[Any] = []
        for entry in calls:
            try:
                if not isinstance(entry, dict) or not isinstance(entry.get("methodName"), str):
                    raise VcdError(Fault.MEINVAL, "each call needs methodName and params")
                if entry["methodName"] == "system.multicall":
                    raise VcdError(Fault.MEINVAL, "system.multicall cannot be nested")
                sub = entry.get("params", [])
                if not isinstance(sub, list):
                    raise VcdError(Fault.MEINVAL, "params of a call must be an array")
                result = self.call(entry["methodName"], tuple(sub), peer)
                results.append([True if result is None and not self.nil else result])
            except Exception as exc:
                fault = fault_of(exc)
                if not isinstance(exc, VcdError):
                    log.exception("multicall %s failed", entry)
                results.append({"faultCode": fault.code, "faultString": str(fault)})
        return results


SYSTEM_METHODS: dict[str, tuple[str, Any]] = {
    "system.listMethods": ("Return the names of all methods.", [["array"]]),
    "system.methodHelp": ("Return the help text of a method.", [["string", "string"]]),
    "system.methodSignature": ("Return the signatures of a method.", [["array", "string"]]),
    "system.multicall": ("Run several calls in one request; each carries its own "
                         "{username, password}. Returns [[result] or fault struct, ...].",
                         [["array", "array"]]),
}


def _no_credentials(creds: Any) -> bool:
    """No params at all, an empty struct, or an empty username and password."""
    if creds is None or creds == "":
        return True
    return isinstance(creds, dict) and set(creds) <= {"username", "password"} \
        and not _credential(creds.get("username")) and not _credential(creds.get("password"))


def _credential(value: Any) -> str | None:
    """A username or password as sent: Perl's clients send an all-digit one as <int>
    (a number-like one as <double>), with its own characters."""
    if isinstance(value, str):
        return value
    return sent_text(value)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
