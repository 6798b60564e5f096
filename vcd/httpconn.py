"""One client connection, as a non-blocking state machine the worker's event loop drives.

A worker holds many connections at once and only ever blocks in epoll and in the
dispatcher. That is what keeps slow clients from starving the pool: a client that
sends one byte a second costs a buffer and an epoll entry, not a worker, and is
dropped when the connection's deadline (`timeout`, covering TLS handshake, head and
body together) passes.

States: PEEK (HTTPS listener, is this TLS at all?) -> HANDSHAKE -> READ -> READY
(a complete request, waiting for the dispatcher) -> WRITE -> LINGER (after an
error answer, swallow what the client still sends so our answer isn't destroyed
by a reset) -> closed.

The HTTP parsing is our own rather than `http.server`'s: see `vcd.server`.
"""
from __future__ import annotations

import enum
import logging
import socket
import ssl
import time
import zlib
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

from vcd import webpanel

log = logging.getLogger("vcd.server")

MAX_HEAD_BYTES = 65536      # request line + headers, as http.server allows per line
MAX_HEADERS = 100           # as http.client's limit
RECV_SIZE = 65536
LINGER_SECONDS = 1.0        # after an early refusal, how long to swallow what the client still sends
LINGER_BYTES = 4 * 1048576  # ... and how much of it at most
ERROR_SEND_SECONDS = 5.0    # an error answer gets at most this long to be written
TLS_RECORD_HANDSHAKE = 0x16  # first byte of every TLS ClientHello

# what the connection waits for, as epoll masks (set by the worker)
WANT_READ = 1
WANT_WRITE = 4
WANT_NOTHING = 0


class State(enum.Enum):
    PEEK = "peek"
    HANDSHAKE = "handshake"
    READ = "read"
    READY = "ready"
    WRITE = "write"
    LINGER = "linger"
    CLOSED = "closed"


class Refuse(Exception):
    """Answer with an HTTP error instead of calling the dispatcher."""

    def __init__(self, status: HTTPStatus, extra: bytes = b"", head_only: bool = False,
                 text: bytes | None = None) -> None:
        super().__init__(status.phrase)
        self.status = status
        self.extra = extra
        self.head_only = head_only  # the answer to a HEAD request has no body
        self.text = text


class Served(Exception):
    """Answer at once with `data` (a complete response) instead of calling the dispatcher:
    the web panel's files, which need nothing but memory."""

    def __init__(self, data: bytes) -> None:
        super().__init__("served")
        self.data = data


_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date_cache[1]


def response_head(version: bytes, status: HTTPStatus, ctype: bytes, length: int,
                  extra: bytes = b"") -> bytes:
    # nosniff on every answer: a fault or error text is never taken for a script or a page
    return b"%s %d %s\r\nServer: vcd\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" \
           b"X-Content-Type-Options: nosniff\r\nConnection: close\r\n%s\r\n" % (
               version, status.value, status.phrase.encode("ascii"), http_date(), ctype, length, extra)


def error_answer(status: HTTPStatus, extra: bytes = b"", head_only: bool = False,
                 text: bytes | None = None) -> bytes:
    body = text if text is not None else status.phrase.encode("ascii") + b"\n"
    return response_head(b"HTTP/1.0", status, b"text/plain", len(body), extra) + \
        (b"" if head_only else body)


def panel_response(version: bytes, method: str, path: str) -> bytes:
    """The complete answer to `GET`/`HEAD` of a web panel path (see `vcd.webpanel`)."""
    found = webpanel.answer(path)
    head = response_head(version, found.status, found.ctype, len(found.body), found.extra)
    return head if method == "HEAD" else head + found.body


@dataclass(frozen=True)
class Head:
    """What the worker needs from a request head."""
    version: bytes
    size: int                       # Content-Length: the body as sent
    expect: str | None
    encodings: tuple[str, ...] = ()  # Content-Encoding, in the order they were applied
    nil: bool = True                 # False for `?nil=0`: void results as boolean true


def _query_nil(query: str) -> bool:
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if key == "nil":
            return value.lower() not in ("0", "false", "no", "off")
    return True


def parse_head(head: bytes, max_body: int) -> Head:
    """The request head, parsed; Refuse when it is not a well-formed `POST /RPC2` with a
    Content-Length we accept (and a Content-Encoding we can undo: 415 otherwise); Served
    for `GET`/`HEAD` of a web panel path."""
    lines = head.decode("latin-1").split("\n")
    parts = lines[0].rstrip("\r").split(" ")
    if len(parts) != 3:
        raise Refuse(HTTPStatus.BAD_REQUEST)
    method, target, proto = parts
    if proto == "HTTP/1.1":
        version = b"HTTP/1.1"
    elif proto == "HTTP/1.0":
        version = b"HTTP/1.0"
    elif proto.startswith("HTTP/"):
        raise Refuse(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
    else:
        raise Refuse(HTTPStatus.BAD_REQUEST)
    if len(lines) > MAX_HEADERS + 1:
        raise Refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
    length: str | None = None
    expect: str | None = None
    chunked = False
    encodings: list[str] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name[-1] in " \t" or name[0] in " \t":
            # no colon, or whitespace around the name (obsolete line folding, smuggling tricks)
            raise Refuse(HTTPStatus.BAD_REQUEST)
        name = name.lower()
        if name == "content-length":
            value = value.strip()
            if length is not None and length != value:
                raise Refuse(HTTPStatus.BAD_REQUEST)
            length = value
        elif name == "transfer-encoding":
            # "identity" is no transfer coding (RFC 2616 listed it; clients still send it)
            if value.strip().lower() != "identity":
                chunked = True
        elif name == "content-encoding":
            encodings += [e.strip().lower() for e in value.split(",") if e.strip()]
        elif name == "expect":
            expect = value.strip().lower()

    path = target.partition("?")[0]
    if path != "/RPC2":
        if method in ("GET", "HEAD") and webpanel.is_panel_path(path):
            raise Served(panel_response(version, method, path))
        raise Refuse(HTTPStatus.NOT_FOUND, head_only=method == "HEAD")
    if method != "POST":
        raise Refuse(HTTPStatus.METHOD_NOT_ALLOWED, b"Allow: POST\r\n", method == "HEAD")
    if chunked:
        # a body without a length (or with two framings) is not something XML-RPC clients send
        raise Refuse(HTTPStatus.BAD_REQUEST if length is not None else HTTPStatus.LENGTH_REQUIRED)
    if length is None:
        raise Refuse(HTTPStatus.LENGTH_REQUIRED)
    if not (length.isascii() and length.isdigit()):
        raise Refuse(HTTPStatus.BAD_REQUEST)
    size = int(length)
    if size > max_body:
        raise Refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    if expect is not None and expect != "100-continue":
        raise Refuse(HTTPStatus.EXPECTATION_FAILED)
    applied = tuple(e for e in encodings if e != "identity")
    unknown = [e for e in applied if e not in DECODERS]
    if unknown:
        raise Refuse(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                     text=f"Content-Encoding {unknown[0]} is not supported; "
                          f"use gzip or deflate.\n".encode("latin-1", "replace"))
    return Head(version, size, expect, applied, _query_nil(target.partition("?")[2]))


# Content-Encoding -> zlib wbits (RFC 9110 8.4.1: gzip and x-gzip are one coding)
DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_body(body: bytes, encodings: tuple[str, ...], max_body: int) -> bytes:
    """Undo the content codings (last applied first), never producing more than
    `max_body` bytes: the limit applies to what the dispatcher gets, and a small
    compressed body that inflates beyond it is refused (413) without being inflated
    further. Refuse 400 for data that is not what the coding says."""
    for coding in reversed(encodings):
        inflater = zlib.decompressobj(DECODERS[coding])
        try:
            body = inflater.decompress(body, max_body + 1)
            if len(body) > max_body or inflater.unconsumed_tail:
                raise Refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            body += inflater.flush()
        except zlib.error:
            raise Refuse(HTTPStatus.BAD_REQUEST,
                         text=f"The body is not valid {coding} data.\n".encode("ascii")) from None
        if len(body) > max_body:
            raise Refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        if not inflater.eof:
            raise Refuse(HTTPStatus.BAD_REQUEST,
                         text=f"The body ends inside its {coding} data.\n".encode("ascii"))
    return body


class Connection:
    """An accepted connection and everything the worker knows about it.

    The step methods (`on_readable`, `on_writable`, `expire`) never raise and never
    block; afterwards `state` and `want` say what the worker does next.
    """
    __slots__ = ("sock", "peer", "share", "tls", "deadline", "state", "want", "buf", "scanned",
                 "body_start", "size", "version", "body", "out", "sent", "linger", "swallowed",
                 "max_body", "timeout", "registered", "pushed", "encodings", "nil")

    def __init__(self, sock: socket.socket, peer: str, tls: ssl.SSLContext | None,
                 timeout: float, max_body: int, share: str | None = None) -> None:
        self.sock: socket.socket = sock
        self.peer = peer
        # whose share of the worker it counts against (vcd.listeners.share_of)
        self.share = peer if share is None else share
        self.tls = tls
        self.timeout = timeout
        self.max_body = max_body
        self.deadline = time.monotonic() + timeout  # the whole request must arrive by then
        self.state = State.PEEK if tls is not None else State.READ
        self.want = WANT_READ
        self.buf = bytearray()
        self.scanned = 0
        self.body_start = -1     # index in buf where the body starts, once the head is parsed
        self.size = 0
        self.version = b"HTTP/1.0"
        self.body: bytes | None = None
        self.encodings: tuple[str, ...] = ()
        self.nil = True
        self.out = memoryview(b"")
        self.sent = 0
        self.linger = False
        self.swallowed = 0
        self.registered = 0                # the epoll mask currently registered (worker's business)
        self.pushed = 0.0                  # the deadline the worker last queued for this connection

    # -- reading -----------------------------------------------------------------------

    def on_readable(self) -> None:
        try:
            if self.state is State.PEEK:
                self._peek()
            if self.state is State.HANDSHAKE:
                self._handshake()
            if self.state is State.READ:
                self._read()
            elif self.state is State.LINGER:
                self._swallow()
            elif self.state is State.WRITE:
                self._write()
        except Served as served:
            # half-close and linger as after a refusal, but with the whole timeout to send
            # (the panel's files are larger than an error text)
            self.answer_error(served.data, self.timeout)
        except Refuse as refusal:
            # logged here: the request never reaches the dispatcher, which logs the others
            log.info("refused request from %s: HTTP %d %s", self.peer, refusal.status.value,
                     refusal.status.phrase)
            self.answer_error(error_answer(refusal.status, refusal.extra, refusal.head_only,
                                           refusal.text))
        except (ConnectionError, ssl.SSLError, OSError):
            self.close()

    def _peek(self) -> None:
        try:
            first = self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            self.want = WANT_READ
            return
        if not first:
            self.close()
            return
        if first[0] != TLS_RECORD_HANDSHAKE:
            # plain HTTP (or anything else) sent to the HTTPS port: say so in clear
            # text instead of failing a handshake the client never started
            self.tls = None
            raise Refuse(HTTPStatus.BAD_REQUEST,
                         text=b"This port speaks HTTPS; use an https:// URL.\n")
        assert self.tls is not None
        self.sock = self.tls.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        self.state = State.HANDSHAKE

    def _handshake(self) -> None:
        assert isinstance(self.sock, ssl.SSLSocket)
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.want = WANT_READ
            return
        except ssl.SSLWantWriteError:
            self.want = WANT_WRITE
            return
        except (ssl.SSLError, OSError) as exc:
            log.info("TLS handshake with %s failed: %s", self.peer,
                     getattr(exc, "reason", None) or exc.__class__.__name__)
            self.close()
            return
        self.state = State.READ
        self.want = WANT_READ

    def _read(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                self.want = WANT_READ
                return
            except ssl.SSLWantWriteError:
                self.want = WANT_WRITE
                return
            if not chunk:
                self.close()  # the client went away before finishing its request
                return
            self.buf += chunk
            if self._parse():
                return

    def _parse(self) -> bool:
        """Look at what arrived; True once nothing more is to be read (request complete
        or an answer already queued)."""
        buf = self.buf
        if self.body_start < 0:
            if buf[0] == TLS_RECORD_HANDSHAKE:
                # a TLS client on the plain port (or at a reload that turned TLS off):
                # refuse at once instead of waiting for a head that never comes
                raise Refuse(HTTPStatus.BAD_REQUEST, text=b"This port speaks plain HTTP.\n")
            end = buf.find(b"\r\n\r\n", max(0, self.scanned - 3))
            skip = 4
            if end < 0:
                end = buf.find(b"\n\n", max(0, self.scanned - 1))
                skip = 2
            if end < 0:
                self.scanned = len(buf)
                if self.scanned > MAX_HEAD_BYTES:
                    raise Refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
                return False
            if end > MAX_HEAD_BYTES:
                raise Refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            head = parse_head(bytes(buf[:end]), self.max_body)
            self.version, self.size, expect = head.version, head.size, head.expect
            self.encodings, self.nil = head.encodings, head.nil
            self.body_start = end + skip
            if expect is not None and self.version == b"HTTP/1.1" and len(buf) == self.body_start \
                    and self.size > 0:
                # the interim answer is tiny: it fits the empty socket buffer of a new connection
                self.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(buf) - self.body_start >= self.size:
            self.body = bytes(buf[self.body_start:self.body_start + self.size])
            self.buf = bytearray()
            if self.encodings:
                self.body = decode_body(self.body, self.encodings, self.max_body)
            self.state = State.READY
            self.want = WANT_NOTHING
            return True
        return False

    # -- writing -----------------------------------------------------------------------

    def answer(self, body: bytes) -> None:
        """Queue the dispatcher's answer; the write has `timeout` to complete."""
        self.out = memoryview(response_head(self.version, HTTPStatus.OK, b"text/xml", len(body)) + body)
        self.sent = 0
        self.linger = False
        # the deadline before the state: a slow-lane thread answers while the event loop
        # expires, and WRITE with the request's old deadline would be dropped (_expire)
        self.deadline = time.monotonic() + self.timeout
        self.state = State.WRITE
        self._write_guarded()

    def answer_error(self, data: bytes, send_seconds: float = ERROR_SEND_SECONDS) -> None:
        """Queue an answer sent without the dispatcher (an error, the panel's files), to be
        followed by a half-close and a short linger."""
        self.out = memoryview(data)
        self.sent = 0
        self.linger = True
        self.deadline = time.monotonic() + min(self.timeout, send_seconds)  # as in answer()
        self.state = State.WRITE
        self._write_guarded()

    def on_writable(self) -> None:
        if self.state is State.HANDSHAKE:
            self.on_readable()  # the handshake decides itself what it waits for
        elif self.state is State.WRITE:
            self._write_guarded()
        elif self.state is State.READ:
            self.on_readable()

    def _write_guarded(self) -> None:
        try:
            self._write()
        except (ConnectionError, ssl.SSLError, OSError):
            self.close()

    def _write(self) -> None:
        out = self.out
        while self.sent < len(out):
            try:
                self.sent += self.sock.send(out[self.sent:])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                self.want = WANT_WRITE
                return
            except ssl.SSLWantReadError:
                self.want = WANT_READ
                return
        self.out = memoryview(b"")
        if self.linger:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self.close()
                return
            self.state = State.LINGER
            self.want = WANT_READ
            self.deadline = time.monotonic() + LINGER_SECONDS
            self._swallow()
        else:
            self.close()

    def _swallow(self) -> None:
        while self.swallowed < LINGER_BYTES:
            try:
                chunk = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            if not chunk:
                break
            self.swallowed += len(chunk)
        self.close()

    # -- time and the end ---------------------------------------------------------------

    def expire(self) -> None:
        """The deadline passed: drop the client, with a 408 when it was sending its request."""
        if self.state is State.READ:
            log.info("request from %s timed out after %gs; connection dropped", self.peer, self.timeout)
            self.answer_error(error_answer(HTTPStatus.REQUEST_TIMEOUT))
            return
        if self.state in (State.PEEK, State.HANDSHAKE):
            log.info("TLS handshake with %s timed out after %gs", self.peer, self.timeout)
        self.close()

    def close(self) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.want = WANT_NOTHING
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and not self.linger:
            # a close_notify, so the client can tell our end of the answer from a cut
            # connection; never waited for (the socket is non-blocking)
            try:
                sock.unwrap()
            except (ssl.SSLError, OSError, ValueError):
                pass
        try:
            sock.close()
        except OSError:
            pass
