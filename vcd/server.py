"""The XML-RPC transport: HTTP(S) on listening sockets, served by a pre-forked pool.

Shape:

* The supervisor (the `vcd` parent process) creates the listening sockets
  (`vcd.listeners`: TCP, HTTPS when a certificate is configured, a Unix socket),
  forks `worker_count` workers and then only supervises them (`Pool`): it respawns
  a worker that dies, replaces one that retired after `max_requests`, starts a new
  generation on reload and stops them all on exit. It never touches a request.
* Each worker (`Worker`) runs an event loop over one epoll set: the listeners
  (EPOLLEXCLUSIVE, so a new connection wakes one idle worker, not all of them) and
  every connection it has accepted (`vcd.httpconn.Connection`, non-blocking). It
  reads requests from many clients at once and calls the dispatcher for one
  complete request at a time, except for calls that may wait long (on a guest:
  `vx.exec`, `vx.stop`, ...; `Method.waits`): those run in threads of the worker
  (`SlowLane`), so a tenant's long command holds up nobody else's calls. One request
  per connection is what XML-RPC clients expect, and it keeps a persistent client from
  pinning a worker.
* A worker's SQLite connection and everything else the dispatcher needs is made in
  the worker after fork (`make_dispatcher(config)`).

Why an event loop and not one blocking connection per worker: a client that sends
one byte a second would then hold a whole worker for `timeout` seconds, and as many
such clients as there are workers would stop the service. Here such a client costs
an epoll entry until its deadline (TLS handshake, head and body together must
arrive within `timeout`). The HTTP request is parsed by `vcd.httpconn` rather than
`http.server`, whose buffered reads can't be driven this way.

Fairness: complete requests are dispatched round-robin by peer (source address, an
IPv6 one by its /64 (`vcd.listeners.share_of`), or uid on the Unix socket), and one
peer may hold at most a quarter of a worker's connections, so a flood from one address
neither queues ahead of nor locks out another. Failed logins are throttled per peer
by the dispatcher.
"""
from __future__ import annotations

import ctypes
import errno
import gc
import heapq
import itertools
import logging
import os
import resource
import select
import signal
import threading
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from http import HTTPStatus
from concurrent.futures import ThreadPoolExecutor
from queue import SimpleQueue
from typing import Any, Callable, Protocol

from vcd.config import Config
from vcd.errors import MustWait
from vcd.httpconn import WANT_NOTHING, Connection, State, error_answer
from vcd.listeners import Listener, share_of

log = logging.getLogger("vcd.server")

PARENT_CHECK_SECONDS = 2.0  # an idle worker checks this often that its supervisor is alive
ACCEPT_BATCH = 64           # connections taken per listener per loop turn
MAX_CONNECTIONS = 1024      # open connections per worker (bounded further by RLIMIT_NOFILE)
PEER_SHARE = 4              # one peer may hold at most 1/PEER_SHARE of a worker's connections
FD_RESERVE = 64             # descriptors kept for VXDB, logs, locks, vx.exec pipes
ACCEPT_PAUSE = 0.1          # after EMFILE and the like, before trying accept again

# worker exit codes the supervisor tells apart
EXIT_STOPPED = 0    # asked to stop (SIGTERM): not replaced unless it is a current-generation worker
EXIT_RETIRED = 75   # served max_requests: replaced at once
EXIT_SETUP_FAILED = 78  # could not build its dispatcher: replaced with back-off

PR_SET_PDEATHSIG = 1


class Dispatcher(Protocol):
    def parse(self, body: bytes) -> Any: ...
    def waits(self, request: Any) -> bool: ...
    def answer(self, request: Any, peer: str, nil: bool = True,
               quick: bool = False) -> bytes: ...
    def serve_long(self) -> None: ...
    def close(self) -> None: ...


DispatcherFactory = Callable[[Config], Dispatcher]



# --------------------------------------------------------------------------- worker

def raise_fd_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to what the workers' connections need (each is a
    descriptor); returns the soft limit in force.

    Only that far and no further: vservers started by vcd inherit the limit, and
    software inside them may still use select() with its 1024-descriptor sets.
    """
    want = MAX_CONNECTIONS + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_limits() -> tuple[int, int]:
    """(connections per worker, connections per peer and worker)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    total = max(8, min(MAX_CONNECTIONS, soft - FD_RESERVE))
    return total, max(2, total // PEER_SHARE)


# Calls that may wait long (Method.waits: on a guest, on a copy of a tree) are served in
# threads, so that the event loop goes on with everybody else's. Four workers then serve
# 4 * SLOW_THREADS such calls at once, and one peer holds at most SLOW_PER_PEER of a
# worker's; its further ones wait their turn (round-robin by peer).
SLOW_THREADS = 16
SLOW_PER_PEER = 4


@dataclass
class _SlowCall:
    fd: int
    conn: Connection
    request: Any
    answer: bytes | None = None     # None: the dispatcher failed (an HTTP 500)


class SlowLane:
    """Threads of one worker for its waiting calls, each thread with a dispatcher (VXDB
    connection) of its own made by `make_dispatcher`; `wake` is called when an answer
    is ready for the event loop (`finished`)."""

    def __init__(self, make_dispatcher: Callable[[], Dispatcher], wake: Callable[[], None],
                 threads: int = SLOW_THREADS, per_peer: int = SLOW_PER_PEER) -> None:
        self.make_dispatcher = make_dispatcher
        self.wake = wake
        self.threads = threads
        self.per_peer = per_peer
        self.pool: ThreadPoolExecutor | None = None
        self.local = threading.local()
        self.dispatchers: list[Dispatcher] = []
        self.guard = threading.Lock()
        self.running: Counter[str] = Counter()
        self.waiting: OrderedDict[str, deque[_SlowCall]] = OrderedDict()
        self.done: SimpleQueue[_SlowCall] = SimpleQueue()

    def __len__(self) -> int:
        return sum(self.running.values()) + sum(len(q) for q in self.waiting.values())

    def submit(self, fd: int, conn: Connection, request: Any) -> None:
        self.waiting.setdefault(conn.share, deque()).append(_SlowCall(fd, conn, request))
        self._start_waiting()

    def finished(self) -> list[_SlowCall]:
        """The calls answered since the last look; starts the waiting ones they made
        room for."""
        calls: list[_SlowCall] = []
        while not self.done.empty():
            call = self.done.get_nowait()
            self.running[call.conn.share] -= 1
            if self.running[call.conn.share] <= 0:
                del self.running[call.conn.share]
            calls.append(call)
        if calls:
            self._start_waiting()
        return calls

    def _start_waiting(self) -> None:
        for peer in list(self.waiting):
            if sum(self.running.values()) >= self.threads:
                return
            queue = self.waiting[peer]
            if self.running[peer] >= self.per_peer:
                continue
            call = queue.popleft()
            if not queue:
                del self.waiting[peer]
            else:
                self.waiting.move_to_end(peer)
            self.running[peer] += 1
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="vcd-slow")
            self.pool.submit(self._run, call)

    def _run(self, call: _SlowCall) -> None:
        try:
            dispatcher = getattr(self.local, "dispatcher", None)
            if dispatcher is None:
                dispatcher = self.local.dispatcher = self.make_dispatcher()
                with self.guard:
                    self.dispatchers.append(dispatcher)
            call.answer = dispatcher.answer(call.request, call.conn.peer, nil=call.conn.nil)
        except Exception:
            log.exception("request from %s failed in the dispatcher", call.conn.peer)
        finally:
            # sent from here: the event loop leaves a connection alone while its call
            # runs, and waking it first cost a thread switch before the client had its
            # answer; the loop then only settles the connection (finished)
            try:
                deliver(call.conn, call.answer)
            except Exception:
                log.exception("answering %s failed", call.conn.peer)
                call.conn.close()
            self.done.put(call)
            self.wake()

    def close(self) -> None:
        """Without waiting for calls still running (the worker is exiting)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        with self.guard:
            for dispatcher in self.dispatchers:
                try:
                    dispatcher.close()
                except Exception:
                    log.exception("closing a dispatcher failed")


class Worker:
    """The body of a worker process: an event loop over listeners and connections,
    until told to stop or retired; then it finishes the connections it holds."""

    def __init__(self, config: Config, listeners: list[Listener], dispatcher: Dispatcher,
                 supervisor_pid: int,
                 make_dispatcher: Callable[[], Dispatcher] | None = None) -> None:
        self.listeners = listeners
        self.dispatcher = dispatcher
        self._wake_w = -1
        # without a factory (a dispatcher that cannot be made twice) every call is
        # served on the event loop
        self.slow = SlowLane(make_dispatcher, self._wake) if make_dispatcher else None
        self.timeout = config.timeout
        self.max_body = config.max_request_size
        self.max_requests = config.max_requests
        self.supervisor_pid = supervisor_pid
        self.max_open, self.max_per_peer = connection_limits()
        self.stopping = False
        self.served = 0
        self.conns: dict[int, Connection] = {}
        self.per_peer: Counter[str] = Counter()
        # complete requests by peer; served round-robin across peers
        self.ready: OrderedDict[str, deque[tuple[int, Connection]]] = OrderedDict()
        self.deadlines: list[tuple[float, int, int, Connection]] = []
        self._seq = itertools.count()
        self.listening = False
        self.accept_resume_at = 0.0
        self.poller: select.epoll | None = None
        self.refused_by_share = 0

    def _on_term(self, signum: int, frame: object) -> None:
        # Only a flag: the loop stops accepting and ends once its connections are done.
        # An idle worker is woken by the signal's byte on the wakeup pipe.
        self.stopping = True

    def run(self) -> int:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wake_w = wake_w
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_term)
        self.poller = poller = select.epoll()
        listener_fds = {listener.fileno() for listener in self.listeners}
        poller.register(wake_r, select.EPOLLIN)
        retired = False
        try:
            while True:
                if self.max_requests and self.served >= self.max_requests:
                    retired = True
                wanted = not (self.stopping or retired) and len(self.conns) < self.max_open \
                    and time.monotonic() >= self.accept_resume_at
                self._listen(wanted)
                if not wanted and (self.stopping or retired) and not self.conns:
                    return EXIT_RETIRED if retired and not self.stopping else EXIT_STOPPED
                if wanted and not self.ready:
                    # under load a connection is usually waiting: skip the epoll round trip
                    self._accept()
                timeout = 0.0 if self.ready else self._poll_timeout()
                events = poller.poll(timeout)
                for fd, mask in events:
                    if fd == wake_r:
                        try:
                            os.read(wake_r, 512)
                        except BlockingIOError:
                            pass
                        continue
                    if fd in listener_fds:
                        continue  # accepted at the top of the next turn
                    conn = self.conns.get(fd)
                    if conn is None:
                        continue
                    if mask & select.EPOLLOUT and not mask & select.EPOLLIN:
                        conn.on_writable()
                    else:
                        conn.on_readable()
                    self._settle(fd, conn)
                self._expire()
                if self.slow is not None:
                    for call in self.slow.finished():
                        self._answered(call.fd, call.conn)
                if self.ready:
                    self._dispatch_one()
                elif not events and timeout > 0 and os.getppid() != self.supervisor_pid:
                    log.warning("supervisor is gone; worker exiting")
                    return EXIT_STOPPED
        finally:
            if self.slow is not None:
                self.slow.close()
            for fd, conn in list(self.conns.items()):
                conn.close()
            self.conns.clear()
            poller.close()

    def _wake(self) -> None:
        """From a slow-lane thread: an answer is ready (the loop may be in epoll)."""
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass    # the pipe is full (the loop is awake anyway) or the worker is ending

    # -- accepting -----------------------------------------------------------------------

    def _listen(self, wanted: bool) -> None:
        """(Un)register the listeners: a worker that can't take connections must not be
        woken for them (and level-triggered epoll would spin)."""
        if wanted == self.listening:
            return
        assert self.poller is not None
        for listener in self.listeners:
            if wanted:
                self.poller.register(listener.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
            else:
                self.poller.unregister(listener.fileno())
        self.listening = wanted

    def _accept(self) -> None:
        for listener in self.listeners:
            for _ in range(ACCEPT_BATCH):
                if len(self.conns) >= self.max_open:
                    return
                try:
                    sock, addr = listener.sock.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                        continue
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.error("accept on %s: %s", listener.name, exc)
                        self.accept_resume_at = time.monotonic() + ACCEPT_PAUSE
                        return
                    raise
                peer = listener.peer_name(sock, addr)
                share = share_of(peer)
                if self.per_peer[share] >= self.max_per_peer:
                    # this peer already holds its share: others must still get in
                    self.refused_by_share += 1
                    if self.refused_by_share in (1, 10, 100) or self.refused_by_share % 1000 == 0:
                        log.warning("%s holds %d connections to this worker; refused %d so far",
                                    share, self.per_peer[share], self.refused_by_share)
                    sock.close()
                    continue
                sock.setblocking(False)
                fd = sock.fileno()
                stale = self.conns.get(fd)
                if stale is not None:
                    # a slow-lane thread closed it after its answer (deliver), and the
                    # loop has not settled it yet (finished): its number is taken again
                    self._forget(fd, stale)
                conn = Connection(sock, peer, listener.tls, self.timeout, self.max_body, share)
                self.conns[fd] = conn
                self.per_peer[share] += 1
                # with TCP_DEFER_ACCEPT the request has usually arrived already
                conn.on_readable()
                self._settle(fd, conn)
                if self.ready:
                    # a request to serve: leave further connections to idle workers,
                    # which EPOLLEXCLUSIVE wakes for them
                    return

    # -- after each step of a connection -------------------------------------------------------

    def _settle(self, fd: int, conn: Connection) -> None:
        """Bring the epoll registration, the deadline queue and the ready queue in line
        with what the connection now waits for."""
        assert self.poller is not None
        state = conn.state
        want = WANT_NOTHING if state in (State.READY, State.CLOSED) else conn.want
        if want != conn.registered:
            try:
                if conn.registered == 0:
                    self.poller.register(fd, want)
                elif want == 0:
                    self.poller.unregister(fd)
                else:
                    self.poller.modify(fd, want)
            except OSError:
                pass  # a closed descriptor has left the epoll set by itself
            conn.registered = want
        if state is State.CLOSED:
            self._forget(fd, conn)
        elif state is State.READY:
            self.ready.setdefault(conn.share, deque()).append((fd, conn))
        elif conn.deadline != conn.pushed:
            # only connections that wait get here: the fast path never touches the heap
            conn.pushed = conn.deadline
            heapq.heappush(self.deadlines, (conn.deadline, next(self._seq), fd, conn))

    def _forget(self, fd: int, conn: Connection) -> None:
        if self.conns.get(fd) is conn:
            del self.conns[fd]
            self.per_peer[conn.share] -= 1
            if self.per_peer[conn.share] <= 0:
                del self.per_peer[conn.share]

    def _poll_timeout(self) -> float:
        heap = self.deadlines
        while heap and (heap[0][3].state in (State.CLOSED, State.READY)
                        or heap[0][3].deadline != heap[0][0]):
            heapq.heappop(heap)  # stale: the connection ended or got a new deadline
        wait = PARENT_CHECK_SECONDS
        if heap:
            wait = min(wait, max(0.0, heap[0][0] - time.monotonic()))
        if self.accept_resume_at:
            wait = min(wait, max(0.0, self.accept_resume_at - time.monotonic()))
        return wait

    def _expire(self) -> None:
        heap = self.deadlines
        if not heap:
            return
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            deadline, _, fd, conn = heapq.heappop(heap)
            if conn.state in (State.CLOSED, State.READY) or conn.deadline != deadline:
                continue
            conn.expire()
            self._settle(fd, conn)
        if len(heap) > 4 * len(self.conns) + 1024:
            # mostly stale entries of connections that finished early: start over
            self.deadlines = [(c.deadline, next(self._seq), fd, c) for fd, c in self.conns.items()
                              if c.state not in (State.CLOSED, State.READY)]
            heapq.heapify(self.deadlines)

    # -- dispatching ---------------------------------------------------------------------

    def _dispatch_one(self) -> None:
        peer, queue = next(iter(self.ready.items()))
        fd, conn = queue.popleft()
        if queue:
            self.ready.move_to_end(peer)
        else:
            del self.ready[peer]
        body = conn.body
        conn.body = None
        assert body is not None
        answer: bytes | None = None
        try:
            request = self.dispatcher.parse(body)
            if self.slow is not None and self.dispatcher.waits(request):
                self.slow.submit(fd, conn, request)
                return      # answered by _answer when its thread is done
            answer = self.dispatcher.answer(request, conn.peer, nil=conn.nil,
                                            quick=self.slow is not None)
        except MustWait:
            # it found it has to wait after all (a failed login to record): a thread's
            assert self.slow is not None
            self.slow.submit(fd, conn, request)
            return
        except Exception:
            log.exception("request from %s failed in the dispatcher", conn.peer)
        self._answer(fd, conn, answer)

    def _answer(self, fd: int, conn: Connection, answer: bytes | None) -> None:
        """Send a call's answer (None: the dispatcher failed, an HTTP 500)."""
        deliver(conn, answer)
        self._answered(fd, conn)

    def _answered(self, fd: int, conn: Connection) -> None:
        self.served += 1
        self._settle(fd, conn)


def deliver(conn: Connection, answer: bytes | None) -> None:
    """Start sending a call's answer (None: the dispatcher failed, an HTTP 500); what
    the socket does not take at once is sent as it becomes writable."""
    if isinstance(answer, (bytes, bytearray)):
        conn.answer(answer)
    else:
        if answer is not None:
            log.error("dispatcher returned %s, not bytes", type(answer).__name__)
        conn.answer_error(error_answer(HTTPStatus.INTERNAL_SERVER_ERROR))


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
    dispatcher.serve_long()
    try:
        return Worker(config, listeners, dispatcher, supervisor_pid,
                      lambda: make_dispatcher(config)).run()
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
        raise_fd_limit()
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
        requests, so a reload drops no connection. `listeners`, when given, replaces
        the list: sockets in both lists are kept, the others closed here once the
        new generation is forked without them.
        """
        old_listeners = self.listeners
        self.config = config
        dropped: list[Listener] = []
        if listeners is not None:
            self.listeners = listeners
            dropped = [old for old in old_listeners if all(old is not new for new in listeners)]
        old = self.workers()
        self.generation += 1
        self.backoff = 0.0
        self.next_spawn = 0.0
        self.retiring_fds = [listener.fileno() for listener in dropped]
        try:
            self.fill()
        finally:
            self.retiring_fds = []
        for pid in old:
            self._signal(pid, signal.SIGTERM)
        # Old workers hold their own copies until they exit; the supervisor's are no
        # longer needed, and once those workers are gone the old address stops accepting.
        for listener in dropped:
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
