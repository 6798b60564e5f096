"""What every client shares: exit statuses, faults, the authenticated XML-RPC client."""
from __future__ import annotations

import http.client
import ssl
import sys
import xmlrpc.client
from typing import Any

from vcd.clients.settings import Settings, SettingsError
from vcd.clients.transport import Endpoint, TransportError, endpoint

# Exit statuses, one per fault class, so scripts can tell failures apart.
OK = 0
ERROR = 1          # anything not covered below
USAGE = 2          # bad command line or client config
AUTH = 3           # 100: wrong user or password
PERMISSION = 4     # 101: a capability is missing
NOT_FOUND = 5      # 102 user, 202 vserver, 203 group, -32601 method
INVALID = 6        # 200 invalid argument, -32700 malformed request
STATE = 7          # 201 exists, 300 not running, 301 running, 302 busy
SYSTEM = 8         # 400 VXDB, 401 config, 500 system call failed
CONNECTION = 9     # the daemon could not be reached or answered garbage
EXEC = 10          # 1000+N: a command run inside the vserver exited with N

FAULT_CLASSES: dict[int, int] = {
    100: AUTH, 101: PERMISSION, 102: NOT_FOUND, 202: NOT_FOUND, 203: NOT_FOUND,
    -32601: NOT_FOUND, 200: INVALID, -32700: INVALID, 201: STATE, 300: STATE, 301: STATE,
    302: STATE, 400: SYSTEM, 401: SYSTEM, 500: SYSTEM,
}

EXIT_HELP = """exit status:
   0 success
   1 any other error
   2 usage: bad arguments or client config
   3 unauthorized (100)
   4 not permitted (101)
   5 not found (102 user, 202 vserver, 203 group, -32601 method)
   6 invalid argument (200, -32700)
   7 wrong state (201 exists, 300 not running, 301 running, 302 busy)
   8 system error (400, 401, 500)
   9 daemon unreachable
  10 a command inside the vserver exited non-zero (1000+N); vcc exec exits
     with the command's own status instead, as ssh does"""

COMMON_HELP = """Options go before the command. The client config (-c, else
~/.config/vcd/vcc.conf, else /etc/vcd/vcc.conf) is TOML with host, port or url, user,
password or password_file, cacert. When nothing names a daemon, the local socket
($VCD_SOCKET, else /run/vcd/vcd.sock) is used if it exists, and root needs no password
there. The password comes from the config, $VCD_PASSWORD or a prompt without echo; it is
never taken from the command line."""


def exit_status(code: int) -> int:
    if code > 1000:
        return EXEC
    return FAULT_CLASSES.get(code, ERROR)


class ClientError(Exception):
    """A failed call, printed as `prog: method: text (code)`."""

    def __init__(self, method: str, text: str, code: int | None = None,
                 status: int | None = None) -> None:
        super().__init__(text)
        self.method = method
        self.text = text
        self.code = code
        self.status = status if status is not None else (
            exit_status(code) if code is not None else ERROR)

    def message(self, prog: str) -> str:
        suffix = f" ({self.code})" if self.code is not None else ""
        return f"{prog}: {self.method}: {self.text}{suffix}"


class Client:
    """XML-RPC calls as the configured user: `call(method, params)` and `multicall`."""

    def __init__(self, settings: Settings, interactive: bool = True) -> None:
        self.settings = settings
        self.interactive = interactive
        self._password: str | None = None
        self._endpoint: Endpoint | None = None
        # local root on the Unix socket: no credentials until the daemon asks for them
        self._anonymous = settings.without_password()

    @property
    def auth(self) -> dict[str, str]:
        if self._anonymous:
            return {}
        if self._password is None:
            self._password = self.settings.password(self.interactive)
        return {"username": self.settings.user, "password": self._password}

    def _proxy(self) -> xmlrpc.client.ServerProxy:
        if self._endpoint is None:
            self._endpoint = endpoint(self.settings.url, self.settings.timeout, self.settings.tls)
        return xmlrpc.client.ServerProxy(self._endpoint.uri, transport=self._endpoint.transport,
                                         allow_none=True, use_builtin_types=True)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self._send(method, lambda proxy: getattr(proxy, method)(self.auth, params or {}))

    def multicall(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """One round trip for many calls; each result is a value or a ClientError."""
        if not calls:
            return []
        def send(proxy: xmlrpc.client.ServerProxy) -> Any:
            auth = self.auth
            answers = proxy.system.multicall([{"methodName": m, "params": [auth, p]}
                                              for m, p in calls])
            # each entry authenticates on its own: a refused anonymous one asks for a password
            if self._anonymous and any(isinstance(a, dict) and a.get("faultCode") == 100
                                       for a in answers):
                raise xmlrpc.client.Fault(100, "Unauthorized")
            return answers
        answers = self._send("system.multicall", send)
        results: list[Any] = []
        for (method, _), answer in zip(calls, answers):
            if isinstance(answer, dict) and "faultCode" in answer:
                results.append(ClientError(method, str(answer.get("faultString", "")),
                                           int(answer["faultCode"])))
            else:
                results.append(answer[0] if isinstance(answer, list) and answer else None)
        return results

    def _send(self, method: str, send: Any) -> Any:
        try:
            try:
                return send(self._proxy())
            except xmlrpc.client.Fault as fault:
                if fault.faultCode != 100 or not self._anonymous:
                    raise
                # our uid is not trusted on the socket: ask for the password and retry
                self._anonymous = False
                return send(self._proxy())
        except xmlrpc.client.Fault as fault:
            text = fault.faultString
            if fault.faultCode == 100 and not self._anonymous:
                # the daemon says only "Unauthorized": we know who asked, where, and
                # where the password came from
                text = f"{text}: {self.settings.refused_hint()}"
            raise ClientError(method, text, fault.faultCode) from None
        except SettingsError as exc:
            raise ClientError(method, str(exc), status=AUTH) from None
        except TransportError as exc:
            raise ClientError(method, str(exc), status=USAGE) from None
        except xmlrpc.client.ProtocolError as exc:
            raise ClientError(method, f"{self.settings.url}: HTTP {exc.errcode} {exc.errmsg}",
                              status=CONNECTION) from None
        except (OSError, ssl.SSLError, http.client.HTTPException,
                xmlrpc.client.ResponseError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise ClientError(method, f"cannot talk to {self.settings.url}: {reason}",
                              status=CONNECTION) from None


def fail(prog: str, error: ClientError) -> int:
    print(error.message(prog), file=sys.stderr)
    return error.status
