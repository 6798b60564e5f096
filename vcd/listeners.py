"""The sockets vcd listens on: TCP (plain HTTP or, with a certificate, HTTPS) and a Unix socket.

Every worker serves every listener, so a transport is only a way of making the
socket and of naming the peer. TLS is not a separate port: a configured
certificate turns the TCP listener into HTTPS, because an operator who set up
TLS does not want the same service in clear text next to it.

A listener has a `key` (what was bound); a reload compares keys, keeps the
sockets whose key did not change and binds only the new ones, since binding the
same TCP port twice would fail while the old socket still listens.
"""
from __future__ import annotations

import errno
import grp
import ipaddress
import logging
import math
import os
import socket
import ssl
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Hashable

from vcd.config import Config

log = logging.getLogger("vcd.server")

BACKLOG = 1024
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
LOCAL_PEER = "local:uid="        # how a Unix socket peer is named: LOCAL_PEER + its uid


IPV6_SHARE_PREFIX = 64


def share_of(peer: str) -> str:
    """Whom a peer (as `Listener.peer_name` names it) counts as where clients are given
    their share (connections and threads per worker, turns) and where failed logins are
    throttled: an IPv6 address as its /64, which one host or site holds whole (2^64
    source addresses, each a fresh share and a fresh throttle otherwise, as RFC 6177
    assigns a /64 to a single subnet); anything else as itself."""
    if ":" not in peer or peer.startswith(LOCAL_PEER):
        return peer
    try:
        return str(ipaddress.IPv6Network((peer.partition("%")[0], IPV6_SHARE_PREFIX),
                                         strict=False))
    except ValueError:
        return peer


def local_uid(peer: str) -> int | None:
    """The uid the kernel vouched for (SO_PEERCRED) of a peer `peer_name` named on the
    Unix socket; None for TCP peers and for a Unix peer whose credentials were unreadable.
    A TCP peer's name is an address, which never starts with LOCAL_PEER."""
    if not peer.startswith(LOCAL_PEER):
        return None
    text = peer[len(LOCAL_PEER):]
    return int(text) if text.isdigit() else None


@dataclass
class Listener:
    """A listening socket the workers accept on."""
    sock: socket.socket
    name: str             # for log messages: "127.0.0.1:13386", "https://[::1]:13386", "unix:/run/vcd/vcd.sock"
    key: Hashable = None  # what was bound; equal keys mean the socket can be kept on reload
    tls: ssl.SSLContext | None = None  # wrap accepted connections with this (HTTPS)
    unix_path: Path | None = None
    # the bound file, so closing never removes a socket another process put there since
    _unix_inode: tuple[int, int] | None = None
    _owner_pid: int = field(default_factory=os.getpid)

    def fileno(self) -> int:
        return self.sock.fileno()

    def peer_name(self, conn: socket.socket, addr: object) -> str:
        """How the dispatcher (login throttling, logs, audit log) names the client."""
        if self.unix_path is not None:
            # The uid the kernel vouches for: local users are told apart in the audit
            # log, and one user's failed logins don't throttle another's.
            try:
                _, uid, _ = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             _PEERCRED.size))
                return f"{LOCAL_PEER}{uid}"
            except OSError:
                return "local"
        # The address alone (failed logins are throttled per source address); an
        # IPv4-mapped IPv6 address is the IPv4 client it is.
        if isinstance(addr, tuple) and addr:
            host = addr[0]
            if host.startswith("::ffff:") and "." in host:
                return host[7:]
            return host
        return "local"

    def close(self) -> None:
        self.sock.close()
        # Only the process that bound it removes the file: a forked worker exiting
        # must not take the socket away from the others.
        if self.unix_path is not None and os.getpid() == self._owner_pid:
            try:
                st = os.lstat(self.unix_path)
                if (st.st_dev, st.st_ino) == self._unix_inode:
                    os.unlink(self.unix_path)
            except OSError:
                pass


# --------------------------------------------------------------------------- TLS

def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server context for `tls_cert`/`tls_key` (None without TLS).

    TLS 1.2 is the floor (1.0 and 1.1 are deprecated by RFC 8996); with
    `tls_client_ca` a client must present a certificate signed by that CA.
    Raises OSError or ssl.SSLError when a file is missing or unusable.
    """
    if config.tls_cert is None or config.tls_key is None:
        return None
    for path in (config.tls_cert, config.tls_key, config.tls_client_ca):
        # ssl reports a missing file without its name; name it for the operator
        if path is not None:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, str(path)) from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Renegotiation only serves attacks on a one-request-per-connection service.
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    # One ticket, so a client that resumes (one request per connection!) skips the full
    # handshake: the context is made before the workers fork, so they share the
    # ticket key and any worker can resume any session (about 1.5x the HTTPS rate
    # with wrk; bench/transports.py).
    ctx.num_tickets = 1
    ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    if config.tls_client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(config.tls_client_ca))
    return ctx


# --------------------------------------------------------------------------- TCP

def tcp_listener(host: str, port: int, backlog: int = BACKLOG, defer_accept: int = 0,
                 tls: ssl.SSLContext | None = None) -> Listener:
    """Bind and listen on host:port; an IPv6 literal host gives an IPv6 socket.

    With `defer_accept` seconds, the kernel hands a connection to a worker only once
    its first data has arrived (XML-RPC and TLS clients always speak first), so
    connections that are opened and left silent cost no worker time.
    """
    if host == "localhost":
        host = "127.0.0.1"
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # a restarted daemon must be able to bind while old connections sit in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if defer_accept:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, defer_accept)
        sock.listen(backlog)
        # shared by all workers: accept must not block when another worker won the race
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    if tls is not None:
        shown = f"https://{shown}"
    return Listener(sock, shown, key=("tcp", host, port), tls=tls)


# --------------------------------------------------------------------------- Unix socket

def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on (left by a killed daemon); refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, "exists and is not a socket", str(path))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        return
    except OSError:
        pass
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "another process serves this socket", str(path))


def _group_id(group: str | None, path: Path) -> int:
    if group is None:
        return -1
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise OSError(errno.EINVAL, f"group {group!r} does not exist", str(path)) from None


def unix_listener(path: Path, mode: int, group: str | None, backlog: int = BACKLOG) -> Listener:
    """Bind a Unix stream socket at `path` with `mode`, owned by `group` if given.

    The socket is created with no permissions at all (umask 0777 around bind) and
    only then chowned and chmodded, so there is no moment at which a client the
    mode would refuse could connect.
    """
    gid = _group_id(group, path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    _remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        old = os.umask(0o777)
        try:
            sock.bind(str(path))
            bound = True
        finally:
            os.umask(old)
        os.chown(path, -1, gid)
        os.chmod(path, mode)
        sock.listen(backlog)
        sock.setblocking(False)
        st = os.lstat(path)
    except BaseException:
        sock.close()
        if bound:
            try:
                os.unlink(path)
            except OSError:
                pass
        raise
    return Listener(sock, f"unix:{path}", key=("unix", str(path)), unix_path=path,
                    _unix_inode=(st.st_dev, st.st_ino))


def _set_unix_access(listener: Listener, mode: int, group: str | None) -> None:
    """A reload that changes only mode or group: applied to the bound socket in place."""
    assert listener.unix_path is not None
    gid = _group_id(group, listener.unix_path)
    # chown to root when the group was removed from the config
    os.chown(listener.unix_path, -1, gid if gid != -1 else 0)
    os.chmod(listener.unix_path, mode)


# --------------------------------------------------------------------------- from the config

def _tcp_from(config: Config) -> Listener:
    return tcp_listener(config.host, config.port, defer_accept=max(1, math.ceil(config.timeout)),
                        tls=tls_context(config))


def _unix_from(config: Config) -> Listener | None:
    if config.unix_socket is None:
        return None
    return unix_listener(config.unix_socket, config.unix_socket_mode, config.unix_socket_group)


def describe_error(config: Config, exc: Exception) -> str:
    """A one-line reason for a failed `listeners_for`, naming what could not be set up."""
    if isinstance(exc, ssl.SSLError):
        return f"cannot use TLS certificate {config.tls_cert} / key {config.tls_key}: {exc.reason or exc}"
    if isinstance(exc, OSError):
        where = exc.filename or f"{config.host}:{config.port}"
        if exc.filename and str(exc.filename) in {str(config.tls_cert), str(config.tls_key),
                                                  str(config.tls_client_ca)}:
            return f"cannot read TLS file {where}: {exc.strerror}"
        return f"cannot listen on {where}: {exc.strerror or exc}"
    return f"cannot listen: {exc}"


def listeners_for(config: Config) -> list[Listener]:
    """Every listener the config asks for. Raises OSError / ssl.SSLError (see describe_error)."""
    made: list[Listener] = []
    try:
        made.append(_tcp_from(config))
        unix = _unix_from(config)
        if unix is not None:
            made.append(unix)
    except BaseException:
        for listener in made:
            listener.close()
        raise
    return made


def listen_address(config: Config) -> tuple[Hashable, ...]:
    """What `listeners_for` binds (the keys); a reload that changes it needs new sockets."""
    keys: list[Hashable] = [("tcp", "127.0.0.1" if config.host == "localhost" else config.host,
                             config.port)]
    if config.unix_socket is not None:
        keys.append(("unix", str(config.unix_socket)))
    return tuple(keys)


def reconcile(current: list[Listener], config: Config) -> list[Listener]:
    """The listeners for a reloaded `config`: unchanged sockets are kept, new ones bound.

    TLS contexts are always rebuilt, so a renewed certificate at the same path is
    picked up by a reload. Raises like `listeners_for`; nothing is changed then.
    """
    by_key = {listener.key: listener for listener in current}
    # first what can fail without side effects: a bad certificate or group must not
    # leave half-made sockets behind
    tls = tls_context(config)
    if config.unix_socket is not None:
        _group_id(config.unix_socket_group, config.unix_socket)
    made: list[Listener] = []
    result: list[Listener] = []
    try:
        for key in listen_address(config):
            kept = by_key.get(key)
            if kept is not None:
                result.append(kept)
                continue
            new = _tcp_from(config) if key[0] == "tcp" else _unix_from(config)
            assert new is not None
            made.append(new)
            result.append(new)
    except BaseException:
        for listener in made:
            listener.close()
        raise
    for listener in result:
        if listener.unix_path is not None:
            if any(listener is old for old in current):
                _set_unix_access(listener, config.unix_socket_mode, config.unix_socket_group)
        else:
            listener.tls = tls
            host_port = listener.name.removeprefix("https://")
            listener.name = f"https://{host_port}" if tls is not None else host_port
    return result
