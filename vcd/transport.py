"""Client side of the transports: one `ServerProxy` for http://, https:// and unix:// URLs.

    proxy = server_proxy("unix:///run/vcd/vcd.sock")
    proxy = server_proxy("https://vhost.example:13386/RPC2", cacert="/etc/vcd/ca.pem")
    proxy.vcd.login({"username": "admin", "password": "..."}, {})

Every transport has a timeout: the stdlib's default is none at all, and a client of
a daemon that stopped answering should fail, not hang.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import urllib.parse
import xmlrpc.client
from pathlib import Path

DEFAULT_TIMEOUT = 60.0
RPC_PATH = "/RPC2"


class _HTTPTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float, use_builtin_types: bool = False) -> None:
        super().__init__(use_builtin_types=use_builtin_types)
        self.timeout = timeout

    def make_connection(self, host: str) -> http.client.HTTPConnection:  # type: ignore[override]
        conn = super().make_connection(host)
        conn.timeout = self.timeout  # read by connect(); the stdlib passes none
        return conn


class _HTTPSTransport(xmlrpc.client.SafeTransport):
    def __init__(self, timeout: float, context: ssl.SSLContext,
                 use_builtin_types: bool = False) -> None:
        super().__init__(use_builtin_types=use_builtin_types, context=context)
        self.timeout = timeout

    def make_connection(self, host: str) -> http.client.HTTPSConnection:  # type: ignore[override]
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float, use_builtin_types: bool = False) -> None:
        super().__init__(use_builtin_types=use_builtin_types)
        self.socket_path = path
        self.timeout = timeout

    def make_connection(self, host: str) -> http.client.HTTPConnection:  # type: ignore[override]
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        self._connection = host, _UnixConnection(self.socket_path, self.timeout)
        return self._connection[1]


def client_context(cacert: str | Path | None = None, cert: str | Path | None = None,
                   key: str | Path | None = None) -> ssl.SSLContext:
    """A verifying client context: `cacert` (else the system's CAs), TLS 1.2 or later,
    and a client certificate when the server asks for one (`tls_client_ca`)."""
    ctx = ssl.create_default_context(cafile=str(cacert) if cacert is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    return ctx


def make_transport(url: str, *, cacert: str | Path | None = None,
                   timeout: float = DEFAULT_TIMEOUT, cert: str | Path | None = None,
                   key: str | Path | None = None,
                   use_builtin_types: bool = False) -> tuple[str, xmlrpc.client.Transport]:
    """The URI a ServerProxy wants and the transport that reaches `url`: http://HOST:PORT
    [/RPC2], https://... (verified against `cacert`, with a client certificate `cert`/
    `key` if given), or unix:///PATH/TO/SOCKET.

    Raises ValueError for a URL it cannot use; OSError/ssl.SSLError for unusable
    certificate files.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"{url}: a Unix socket URL is unix:///absolute/path/to/socket")
        return (f"http://localhost{RPC_PATH}",
                _UnixTransport(urllib.parse.unquote(parts.path), timeout, use_builtin_types))
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url}: expected http://HOST:PORT, https://HOST:PORT or unix:///PATH")
    if scheme == "http" and (cacert is not None or cert is not None):
        raise ValueError(f"{url}: a CA or client certificate needs an https:// URL")
    target = url if parts.path not in ("", "/") else urllib.parse.urlunsplit(
        (scheme, parts.netloc, RPC_PATH, parts.query, ""))
    if scheme == "https":
        return target, _HTTPSTransport(timeout, client_context(cacert, cert, key),
                                       use_builtin_types)
    return target, _HTTPTransport(timeout, use_builtin_types)


def server_proxy(url: str, *, cacert: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT,
                 cert: str | Path | None = None, key: str | Path | None = None,
                 allow_none: bool = True) -> xmlrpc.client.ServerProxy:
    """A ServerProxy for `url` (see make_transport). Raises ValueError for a URL it cannot use."""
    target, transport = make_transport(url, cacert=cacert, timeout=timeout, cert=cert, key=key)
    return xmlrpc.client.ServerProxy(target, transport=transport, allow_none=allow_none)
