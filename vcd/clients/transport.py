"""How a client reaches the daemon: http://, https:// and unix:// URLs.

Every transport speaks the same XML-RPC over HTTP to `/RPC2`; only the socket
differs, so each scheme is a small `xmlrpc.client.Transport` and adding one is one
entry in `SCHEMES`.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import urllib.parse
import xmlrpc.client
from dataclasses import dataclass
from typing import Callable


class TransportError(Exception):
    """A URL or TLS setting that cannot work; raised before any request is sent."""


@dataclass(frozen=True)
class Endpoint:
    url: str                      # as the user gave it, for messages
    uri: str                      # what ServerProxy gets (http(s)://host[:port]/path)
    transport: xmlrpc.client.Transport


@dataclass(frozen=True)
class TLSOptions:
    cacert: str | None = None     # CA bundle that signed the daemon's certificate
    cert: str | None = None       # client certificate, for daemons with tls_client_ca
    key: str | None = None


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__(use_builtin_types=True)
        self._timeout = timeout

    def make_connection(self, host: str) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


class _TLSTransport(xmlrpc.client.SafeTransport):
    def __init__(self, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(use_builtin_types=True, context=context)
        self._timeout = timeout

    def make_connection(self, host: str) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        # the Host header needs some name; the daemon ignores it
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__(use_builtin_types=True)
        self._socket_path = path
        self._timeout = timeout

    def make_connection(self, host: str) -> http.client.HTTPConnection:
        # one connection per request: the daemon's workers close after answering
        return _UnixConnection(self._socket_path, self._timeout)


def _path_of(parts: urllib.parse.SplitResult) -> str:
    return parts.path if parts.path and parts.path != "/" else "/RPC2"


def _http(parts: urllib.parse.SplitResult, url: str, timeout: float,
          tls: TLSOptions) -> Endpoint:
    if not parts.hostname:
        raise TransportError(f"{url}: no host")
    return Endpoint(url, f"http://{parts.netloc}{_path_of(parts)}", _TimeoutTransport(timeout))


def tls_context(tls: TLSOptions) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=tls.cacert)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls.cert:
            context.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"TLS setup: {exc}") from None
    return context


def _https(parts: urllib.parse.SplitResult, url: str, timeout: float,
           tls: TLSOptions) -> Endpoint:
    if not parts.hostname:
        raise TransportError(f"{url}: no host")
    return Endpoint(url, f"https://{parts.netloc}{_path_of(parts)}",
                    _TLSTransport(timeout, tls_context(tls)))


def _unix(parts: urllib.parse.SplitResult, url: str, timeout: float,
          tls: TLSOptions) -> Endpoint:
    # unix:///run/vcd/vcd.sock - the socket path is the URL's path; requests go to /RPC2
    path = urllib.parse.unquote(parts.path)
    if parts.netloc or not path.startswith("/"):
        raise TransportError(f"{url}: expected unix:///absolute/path/of/socket")
    return Endpoint(url, "http://localhost/RPC2", _UnixTransport(path, timeout))


SCHEMES: dict[str, Callable[[urllib.parse.SplitResult, str, float, TLSOptions], Endpoint]] = {
    "http": _http, "https": _https, "unix": _unix,
}


def endpoint(url: str, timeout: float = 300.0, tls: TLSOptions = TLSOptions()) -> Endpoint:
    parts = urllib.parse.urlsplit(url)
    make = SCHEMES.get(parts.scheme)
    if make is None:
        raise TransportError(f"{url}: unsupported scheme (use {', '.join(s + '://' for s in SCHEMES)})")
    return make(parts, url, timeout, tls)


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/RPC2"
