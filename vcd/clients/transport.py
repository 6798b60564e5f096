"""How a client reaches the daemon: http://, https:// and unix:// URLs, through the
transports of `vcd.transport`, with the clients' error type and config shapes."""
from __future__ import annotations

import ssl
import urllib.parse
import xmlrpc.client
from dataclasses import dataclass

from vcd.transport import make_transport


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


def endpoint(url: str, timeout: float = 300.0, tls: TLSOptions = TLSOptions()) -> Endpoint:
    """How to reach `url`; the transports themselves are vcd.transport's, shared with
    vshelper. TLS settings from a client config only apply to https:// URLs."""
    https = urllib.parse.urlsplit(url).scheme.lower() == "https"
    try:
        uri, transport = make_transport(
            url, timeout=timeout, use_builtin_types=True,
            cacert=tls.cacert if https else None, cert=tls.cert if https else None,
            key=tls.key if https else None)
    except ValueError as exc:
        raise TransportError(str(exc)) from None
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"TLS setup: {exc}") from None
    return Endpoint(url, uri, transport)


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/RPC2"
