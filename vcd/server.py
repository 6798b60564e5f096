"""The XML-RPC transport: HTTP on a listening socket, served by a pre-forked pool.

Shape:

* The supervisor (the `vcd` parent process) creates the listening socket(s), forks
  `worker_count` workers and then only supervises them (`Pool`): it respawns a
  worker that dies, replaces one that retired after `max_requests`, starts a new
  generation on reload and stops them all on exit. It never touches a request.
* Each worker (`Worker`) waits for connections on every listener with an epoll set
  (EPOLLEXCLUSIVE, so a new connection wakes one idle worker, not all of them),
  accepts one, serves exactly one request on it (`RequestHandler`) and closes it.
  One request per connection is what XML-RPC clients expect, and it keeps a
  persistent client from pinning a worker.
* A worker's SQLite connection and everything else the dispatcher needs is made in
  the worker after fork (`make_dispatcher(config)`).

The HTTP request is parsed here rather than with `http.server.BaseHTTPRequestHandler`
because that class reads through a buffered file whose socket timeout applies to each
recv separately: a client sending one byte a second would hold a worker forever.
Here the whole request (head and body) must arrive within `timeout`, the head is
capped at 64 KiB, the body is refused (413) from its Content-Length before a byte of
it is read, and each step is a few string operations, which matters at thousands of
requests a second per core.

Listeners are a list so that TLS and a Unix socket (issue 8) are more entries served
by the same workers: a `Listener` carries its socket and how to name the peer; a TLS
listener will also carry the context to wrap accepted connections with.
"""
from __future__ import annotations

import ctypes
import errno
import gc
import ipaddress
import logging
import math
import os
import select
import signal
import socket
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Callable, Protocol

from vcd.config import Config

log = logging.getLogger("vcd.server")

MAX_HEAD_BYTES = 65536      # request line + headers, as http.server allows per line
MAX_HEADERS = 100           # as http.client's limit
RECV_SIZE = 65536
LINGER_SECONDS = 1.0        # after an early refusal, how long to swallow what the client still sends
LINGER_BYTES = 4 * 1048576  # ... and how much of it at most
PARENT_CHECK_SECONDS = 2.0  # an idle worker checks this often that its supervisor is alive

# worker exit codes the supervisor tells apart
EXIT_STOPPED = 0    # asked to stop (SIGTERM): not replaced unless it is a current-generation worker
EXIT_RETIRED = 75   # served max_requests: replaced at once
EXIT_SETUP_FAILED = 78  # could not build its dispatcher: replaced with back-off

PR_SET_PDEATHSIG = 1


class Dispatcher(Protocol):
    def handle(self, body: bytes, peer: str) -> bytes: ...
    def close(self) -> None: ...


DispatcherFactory = Callable[[Config], Dispatcher]


# --------------------------------------------------------------------------- listeners

@dataclass
class Listener:
    """A listening socket the workers accept on."""
    sock: socket.socket
    name: str  # for log messages: "127.0.0.1:13386", "[::1]:13386", later "unix:/run/vcd/vcd.sock"

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


def tcp_listener(host: str, port: int, backlog: int = 1024, defer_accept: int = 0) -> Listener:
    """Bind and listen on host:port; an IPv6 literal host gives an IPv6 socket.

    With `defer_accept` seconds, the kernel hands a connection to a worker only once
    its first data has arrived (XML-RPC clients always speak first), so connections
    that are opened and left silent don't occupy workers.
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
    return Listener(sock, shown)


def listeners_for(config: Config) -> list[Listener]:
    return [tcp_listener(config.host, config.port, defer_accept=max(1, math.ceil(config.timeout)))]


def listen_address(config: Config) -> tuple[str, int]:
    """What `listeners_for` binds; a reload that changes it needs new sockets."""
    return (config.host, config.port)


def _peer_name(addr: object) -> str:
    # The dispatcher throttles failed logins per source address, so the peer is
    # the address alone; an IPv4-mapped IPv6 address is the IPv4 client it is.
    if isinstance(addr, tuple) and addr:
        host = addr[0]
        if host.startswith("::ffff:") and "." in host:
            return host[7:]
        return host
    return "local"


# --------------------------------------------------------------------------- HTTP

class _Refuse(Exception):
    """Answer with an HTTP error instead of calling the dispatcher."""

    def __init__(self, status: HTTPStatus, extra: bytes = b"", head_only: bool = False) -> None:
        super().__init__(status.phrase)
        self.status = status
        self.extra = extra
        self.head_only = head_only  # the answer to a HEAD request has no body


_date_cache: tuple[int, bytes] = (0, b"")


def _http_date() -> bytes:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date_cache[1]


def _head(version: bytes, status: HTTPStatus, ctype: bytes, length: int, extra: bytes = b"") -> bytes:
    return b"%s %d %s\r\nServer: vcd\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" \
           b"Connection: close\r\n%s\r\n" % (
               version, status.value, status.phrase.encode("ascii"), _http_date(), ctype, length, extra)


class RequestHandler:
    """Serves one HTTP request on one accepted connection."""

    def __init__(self, dispatcher: Dispatcher, timeout: float, max_body: int) -> None:
        self.dispatcher = dispatcher
        self.timeout = timeout
        self.max_body = max_body

    def serve(self, conn: socket.socket, peer: str) -> bool:
        """Answer one request and close the connection.

        Returns True when the dispatcher was called. Never raises: whatever goes
        wrong is logged and, where the connection still works, answered without
        details.
        """
        version = b"HTTP/1.0"
        try:
            try:
                version, body = self._read_request(conn)
            except _Refuse as refusal:
                # logged here: the request never reaches the dispatcher, which logs the others
                log.info("refused request from %s: HTTP %d %s", peer, refusal.status.value,
                         refusal.status.phrase)
                self._send_error(conn, version, refusal.status, refusal.extra, refusal.head_only)
                return False
            if body is None:
                return False  # the client closed the connection before finishing its request
            try:
                answer = self.dispatcher.handle(body, peer)
                if not isinstance(answer, (bytes, bytearray)):
                    raise TypeError(f"dispatcher returned {type(answer).__name__}, not bytes")
            except Exception:
                log.exception("request from %s failed in the dispatcher", peer)
                self._send_error(conn, version, HTTPStatus.INTERNAL_SERVER_ERROR)
                return True
            if conn.gettimeout() != self.timeout:  # shortened while reading a slow request
                conn.settimeout(self.timeout)
            conn.sendall(_head(version, HTTPStatus.OK, b"text/xml", len(answer)) + answer)
            return True
        except TimeoutError:
            log.info("request from %s timed out after %gs; connection dropped", peer, self.timeout)
            self._send_error(conn, version, HTTPStatus.REQUEST_TIMEOUT)
            return False
        except OSError as exc:
            log.debug("connection from %s: %s", peer, exc)
            return False
        except Exception:
            log.exception("request from %s failed", peer)
            self._send_error(conn, version, HTTPStatus.INTERNAL_SERVER_ERROR)
            return False
        finally:
            conn.close()

    # Returns (version, body); body None when the client went away mid-request.
    def _read_request(self, conn: socket.socket) -> tuple[bytes, bytes | None]:
        timeout = self.timeout
        deadline = time.monotonic() + timeout
        conn.settimeout(timeout)
        buf = conn.recv(RECV_SIZE)
        if not buf:
            return b"HTTP/1.0", None
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            # the head came in pieces (or with bare LFs): collect it, searching only the new part
            data = bytearray(buf)
            scanned = 0
            while True:
                end = data.find(b"\r\n\r\n", max(0, scanned - 3))
                if end >= 0:
                    skip = 4
                    break
                end = data.find(b"\n\n", max(0, scanned - 1))
                if end >= 0:
                    skip = 2
                    break
                scanned = len(data)
                if scanned > MAX_HEAD_BYTES:
                    raise _Refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                conn.settimeout(remaining)
                chunk = conn.recv(RECV_SIZE)
                if not chunk:
                    return b"HTTP/1.0", None
                data += chunk
            buf = bytes(data)
        else:
            skip = 4
        if end > MAX_HEAD_BYTES:
            raise _Refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)

        lines = buf[:end].decode("latin-1").split("\n")
        parts = lines[0].rstrip("\r").split(" ")
        if len(parts) != 3:
            raise _Refuse(HTTPStatus.BAD_REQUEST)
        method, target, proto = parts
        if proto == "HTTP/1.1":
            version = b"HTTP/1.1"
        elif proto == "HTTP/1.0":
            version = b"HTTP/1.0"
        elif proto.startswith("HTTP/"):
            raise _Refuse(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
        else:
            raise _Refuse(HTTPStatus.BAD_REQUEST)
        if len(lines) > MAX_HEADERS + 1:
            raise _Refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        length: str | None = None
        expect: str | None = None
        chunked = False
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name[-1] in " \t" or name[0] in " \t":
                # no colon, or whitespace around the name (obsolete line folding, smuggling tricks)
                raise _Refuse(HTTPStatus.BAD_REQUEST)
            name = name.lower()
            if name == "content-length":
                value = value.strip()
                if length is not None and length != value:
                    raise _Refuse(HTTPStatus.BAD_REQUEST)
                length = value
            elif name == "transfer-encoding":
                chunked = True
            elif name == "expect":
                expect = value.strip().lower()

        path = target.partition("?")[0]
        if path != "/RPC2":
            raise _Refuse(HTTPStatus.NOT_FOUND, head_only=method == "HEAD")
        if method != "POST":
            raise _Refuse(HTTPStatus.METHOD_NOT_ALLOWED, b"Allow: POST\r\n", method == "HEAD")
        if chunked:
            # a body without a length (or with two framings) is not something XML-RPC clients send
            raise _Refuse(HTTPStatus.BAD_REQUEST if length is not None else HTTPStatus.LENGTH_REQUIRED)
        if length is None:
            raise _Refuse(HTTPStatus.LENGTH_REQUIRED)
        if not (length.isascii() and length.isdigit()):
            raise _Refuse(HTTPStatus.BAD_REQUEST)
        size = int(length)
        if size > self.max_body:
            raise _Refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)

        start = end + skip
        have = len(buf) - start
        if have >= size:
            return version, buf[start:start + size]
        if expect is not None:
            if expect != "100-continue":
                raise _Refuse(HTTPStatus.EXPECTATION_FAILED)
            if version == b"HTTP/1.1" and have == 0:
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = bytearray(buf[start:])
        while len(body) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            conn.settimeout(remaining)
            chunk = conn.recv(min(size - len(body), RECV_SIZE))
            if not chunk:
                return version, None
            body += chunk
        return version, bytes(body)

    def _send_error(self, conn: socket.socket, version: bytes, status: HTTPStatus,
                    extra: bytes = b"", head_only: bool = False) -> None:
        """Answer an error and close gently.

        The client may still be sending a body we refused to read; closing a socket
        with unread data makes the kernel send a reset, which would destroy our answer
        before the client reads it. So: answer, half-close, and swallow (briefly,
        boundedly) what still arrives.
        """
        text = status.phrase.encode("ascii") + b"\n"
        try:
            conn.settimeout(min(self.timeout, 5.0))
            conn.sendall(_head(version, status, b"text/plain", len(text), extra)
                         + (b"" if head_only else text))
            conn.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            swallowed = 0
            while swallowed < LINGER_BYTES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                conn.settimeout(remaining)
                chunk = conn.recv(RECV_SIZE)
                if not chunk:
                    break
                swallowed += len(chunk)
        except OSError:
            pass


# --------------------------------------------------------------------------- worker

class Worker:
    """The body of a worker process: accept, serve, repeat; until told to stop or retired."""

    def __init__(self, config: Config, listeners: list[Listener], dispatcher: Dispatcher,
                 supervisor_pid: int) -> None:
        self.listeners = listeners
        self.handler = RequestHandler(dispatcher, config.timeout, config.max_request_size)
        self.max_requests = config.max_requests
        self.supervisor_pid = supervisor_pid
        self.stopping = False
        self.served = 0

    def _on_term(self, signum: int, frame: object) -> None:
        # Only a flag: a request being served finishes, the loop then ends. An idle
        # worker is woken by the signal's byte on the wakeup pipe.
        self.stopping = True

    def run(self) -> int:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_term)
        poller = select.epoll()
        by_fd: dict[int, Listener] = {}
        for listener in self.listeners:
            poller.register(listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
            by_fd[listener.fileno()] = listener
        poller.register(wake_r, select.EPOLLIN)
        handler = self.handler
        max_requests = self.max_requests
        try:
            while not self.stopping:
                # Try the listeners first: under load a connection is usually waiting,
                # and this saves the epoll round trip.
                accepted = False
                for listener in self.listeners:
                    try:
                        conn, addr = listener.sock.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                            continue
                        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                            log.error("accept on %s: %s", listener.name, exc)
                            time.sleep(0.1)
                            continue
                        raise
                    accepted = True
                    handler.serve(conn, _peer_name(addr))
                    self.served += 1
                    if max_requests and self.served >= max_requests:
                        return EXIT_RETIRED
                    if self.stopping:
                        break
                if accepted:
                    continue
                events = poller.poll(PARENT_CHECK_SECONDS)
                if not events and os.getppid() != self.supervisor_pid:
                    log.warning("supervisor is gone; worker exiting")
                    return EXIT_STOPPED
                for fd, _ in events:
                    if fd == wake_r:
                        try:
                            os.read(wake_r, 512)
                        except BlockingIOError:
                            pass
            return EXIT_STOPPED
        finally:
            poller.close()


def _set_parent_death_signal(sig: int) -> None:
    # A SIGKILLed supervisor cannot stop its workers; let the kernel do it.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the getppid() check in the idle loop still catches it


def _worker_main(config: Config, listeners: list[Listener], make_dispatcher: DispatcherFactory,
                 supervisor_pid: int, close_fds: list[int]) -> int:
    # Runs in the child right after fork, with the supervisor's signals still blocked.
    _set_parent_death_signal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the whole group; the supervisor decides
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    if os.getppid() != supervisor_pid:
        return EXIT_STOPPED
    try:
        dispatcher = make_dispatcher(config)
    except Exception:
        log.exception("worker could not start its dispatcher")
        return EXIT_SETUP_FAILED
    try:
        return Worker(config, listeners, dispatcher, supervisor_pid).run()
    finally:
        try:
            dispatcher.close()
        except Exception:
            log.exception("closing the dispatcher failed")


# --------------------------------------------------------------------------- supervisor side

SUPERVISED_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}


@dataclass
class _Child:
    generation: int
    started: float
    kind: str = "worker"


@dataclass
class Pool:
    """The supervisor's view of its workers."""
    config: Config
    listeners: list[Listener]
    make_dispatcher: DispatcherFactory
    close_in_children: list[int] = field(default_factory=list)  # supervisor-only fds (signal pipe, pidfile)
    children: dict[int, _Child] = field(default_factory=dict)
    generation: int = 0
    backoff: float = 0.0
    next_spawn: float = 0.0
    stopping: bool = False
    # sockets being replaced by a reload: workers forked meanwhile must not keep them open
    retiring_fds: list[int] = field(default_factory=list)

    def start(self) -> None:
        # Objects made so far are shared copy-on-write with every worker; keeping the
        # collector away from them keeps those pages shared and its passes short.
        gc.freeze()
        self.fill()

    def workers(self, generation: int | None = None) -> list[int]:
        return [pid for pid, c in self.children.items()
                if c.kind == "worker" and (generation is None or c.generation == generation)]

    def fork(self, target: Callable[[], int], kind: str = "worker") -> int:
        """Fork a child running `target`; its return value is its exit code."""
        # Block the supervisor's signals across fork: a signal reaching the child
        # before it has its own handlers would otherwise land in the supervisor's
        # wakeup pipe and be taken for the supervisor's.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISED_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                code = 70
                try:
                    code = target()
                except BaseException:
                    log.exception("%s process failed", kind)
                finally:
                    logging.shutdown()
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self.children[pid] = _Child(self.generation, time.monotonic(), kind)
        return pid

    def spawn(self) -> int:
        config, listeners, factory = self.config, self.listeners, self.make_dispatcher
        supervisor = os.getpid()
        close = [*self.close_in_children, *self.retiring_fds]
        pid = self.fork(lambda: _worker_main(config, listeners, factory, supervisor, close))
        log.debug("worker %d started (generation %d)", pid, self.generation)
        return pid

    def run_task(self, name: str, task: Callable[[], None]) -> int:
        """Run `task` in its own child process (e.g. booting vservers), so a slow
        task never stalls supervision."""
        close = list(self.close_in_children)

        def body() -> int:
            for fd in close:
                try:
                    os.close(fd)
                except OSError:
                    pass
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            task()
            return 0
        return self.fork(body, kind=name)

    def fill(self) -> None:
        """Start workers until the current generation is complete (unless backing off)."""
        if self.stopping:
            return
        missing = self.config.worker_count - len(self.workers(self.generation))
        if missing <= 0:
            return
        if time.monotonic() < self.next_spawn:
            return
        for _ in range(missing):
            self.spawn()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self._exited(pid, child, status)

    def _exited(self, pid: int, child: _Child, status: int) -> None:
        lived = time.monotonic() - child.started
        if os.WIFSIGNALED(status):
            how = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
            code = -1
        else:
            code = os.WEXITSTATUS(status)
            how = f"exited with status {code}"
        if child.kind != "worker":
            level = logging.INFO if code == 0 else logging.ERROR
            log.log(level, "%s process %d %s", child.kind, pid, how)
            return
        if child.generation != self.generation or self.stopping:
            log.debug("worker %d stopped (%s)", pid, how)
            return
        if code == EXIT_RETIRED:
            log.info("worker %d retired after %d requests; replacing it", pid, self.config.max_requests)
            return
        log.warning("worker %d %s after %.1fs; respawning", pid, how, lived)
        # A worker that dies young is probably failing at start-up (bad datadir, ...):
        # back off instead of forking in a tight loop.
        if lived < 1.0 or code == EXIT_SETUP_FAILED:
            self.backoff = min(max(self.backoff * 2, 0.5), 10.0)
            self.next_spawn = time.monotonic() + self.backoff
        else:
            self.backoff = 0.0

    def tick(self) -> float:
        """How long the supervisor may sleep before `fill` has something to do."""
        if self.stopping or len(self.workers(self.generation)) >= self.config.worker_count:
            return 5.0
        return max(0.05, self.next_spawn - time.monotonic())

    def restart(self, config: Config, listeners: list[Listener] | None = None) -> None:
        """Start a new generation with `config`, then retire the old one gracefully.

        The new workers accept on the same sockets while the old ones finish their
        requests, so a reload drops no connection.
        """
        old_listeners = self.listeners
        self.config = config
        if listeners is not None:
            self.listeners = listeners
        old = self.workers()
        self.generation += 1
        self.backoff = 0.0
        self.next_spawn = 0.0
        if listeners is not None:
            self.retiring_fds = [listener.fileno() for listener in old_listeners]
        try:
            self.fill()
        finally:
            self.retiring_fds = []
        for pid in old:
            self._signal(pid, signal.SIGTERM)
        if listeners is not None:
            # Old workers hold their own copies until they exit; the supervisor's
            # are no longer needed, and once those workers are gone the old
            # address stops accepting.
            for listener in old_listeners:
                listener.close()

    def _signal(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace: float) -> None:
        """Stop every child: SIGTERM, wait up to `grace` seconds for in-flight requests, then SIGKILL."""
        self.stopping = True
        for pid in list(self.children):
            self._signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            self.reap()
            if self.children:
                time.sleep(0.02)
        for pid in list(self.children):
            log.warning("%s %d did not stop in %.0fs; killing it", self.children[pid].kind, pid, grace)
            self._signal(pid, signal.SIGKILL)
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.children.pop(pid, None)
        for listener in self.listeners:
            listener.close()
