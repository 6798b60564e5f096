"""The `vcd` command: load the config, take the pidfile, detach, run the worker pool.

The process that stays is the supervisor of `vcd.server.Pool`: it forks the
workers, and afterwards only reacts to signals and to its children exiting:

* SIGHUP: reload the config (a bad one is logged and the old one kept), reopen
  the log, start a new generation of workers with the new config and retire the
  old ones after their current request.
* SIGTERM / SIGINT: stop the workers (in-flight requests finish, bounded), remove
  the pidfile, exit 0.
* SIGCHLD: respawn a worker that died, replace one that retired.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import select
import signal
import sys
from pathlib import Path
from typing import Callable

from vcd import __version__, listeners as vlisteners, log as vlog, ownership, sdnotify, server
from vcd.callbacklog import FILENAME as CALLBACKS_FILE, CallbackFailures
from vcd.config import DEFAULT_CONFIG, Config, ConfigError, load

EXIT_CONFIG = 2
EXIT_FAILURE = 1
PIDFILE_MODE = 0o644
READY = b"ready"

log = vlog.get("daemon")


class AlreadyRunning(Exception):
    pass


class PidFile:
    """The pidfile, locked with flock for as long as the daemon runs.

    The lock, not the pid written in the file, says whether an instance is alive:
    the kernel drops it when the holder dies however it dies, so a stale file of
    a dead daemon is simply taken over and a reused pid can't fool us.
    """

    def __init__(self, path: Path, program: str = "vcd") -> None:
        self.path = path
        self.program = program
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PIDFILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(f"another {self.program} (pid {holder}) holds {self.path}") from None
        self.fd = fd

    def write(self, pid: int) -> None:
        assert self.fd is not None
        os.fchmod(self.fd, PIDFILE_MODE)  # a taken-over file may have had another mode
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode("ascii"), 0)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            # only our own file: after a takeover race the name may point elsewhere
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vcd", description="VServer Control Daemon")
    parser.add_argument("-c", "--config", metavar="FILE", type=Path,
                        help=f"config file (default {DEFAULT_CONFIG}, built-in defaults if it is missing)")
    parser.add_argument("-f", "--foreground", action="store_true", help="do not detach")
    parser.add_argument("-d", "--debug", action="store_true", help="log at debug level")
    parser.add_argument("-b", "--boot", action="store_true",
                        help="start the vservers of the group 'onboot'")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config file and exit (0 = valid, 2 = not)")
    parser.add_argument("--version", action="version", version=f"vcd {__version__}")
    return parser.parse_args(argv)


def _config_path(args: argparse.Namespace) -> Path | None:
    if args.config is not None:
        # a SIGHUP reload reads it again after detaching to /
        return Path(os.path.abspath(args.config))
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def wait_signals(sig_r: int, timeout: float | None) -> set[int]:
    """The signals that arrived through the wakeup pipe `sig_r` within `timeout` (a daemon's
    main loop acts on them outside the handler, where anything is safe to do)."""
    try:
        select.select([sig_r], [], [], timeout)
    except InterruptedError:
        pass
    try:
        return set(os.read(sig_r, 4096))
    except BlockingIOError:
        return set()


def start_logging_and_lock(program: str, logfile: Path | None, loglevel: str, debug: bool,
                           pidfile_path: Path) -> PidFile | int:
    """The first steps every daemon of ours takes: open the log, take the pidfile.
    Returns the held PidFile, or the exit status after saying what went wrong."""
    try:
        vlog.setup(logfile, loglevel, debug=debug)
    except OSError as exc:
        print(f"{program}: cannot open log file {logfile}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    pidfile = PidFile(pidfile_path, program)
    try:
        pidfile.acquire()
    except AlreadyRunning as exc:
        print(f"{program}: not starting: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"{program}: cannot open pidfile {pidfile_path}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    return pidfile


def _detach(keep: list[object]) -> Callable[[bytes], None]:
    """Become a daemon (python-daemon); the launching process exits only when the
    daemon reports it is serving (status 0) or failed (status 1, its message on
    stderr), so scripts and `Type=forking` units see start-up errors.

    Returns the function the daemon calls with READY or an error message.
    """
    import daemon  # python-daemon; only needed when detaching

    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid > 0:
        os.close(ready_w)
        message = b""
        while True:
            chunk = os.read(ready_r, 4096)
            if not chunk:
                break
            message += chunk
            if message == READY:
                break
        os.waitpid(pid, 0)
        if message == READY:
            os._exit(0)
        text = message.decode("utf-8", "replace") or "the daemon exited during start-up; see its log"
        sys.stderr.write(f"vcd: {text}\n")
        sys.stderr.flush()
        os._exit(EXIT_FAILURE)
    os.close(ready_r)
    context = daemon.DaemonContext(
        working_directory="/",
        umask=0o022,
        prevent_core=True,
        detach_process=True,
        files_preserve=[*keep, ready_w],
        # our own handlers are installed right after; these keep a stray terminal signal harmless
        signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None},
    )
    context.open()

    def notify(message: bytes) -> None:
        nonlocal ready_w
        if ready_w < 0:
            return
        try:
            os.write(ready_w, message[:4000])
        finally:
            os.close(ready_w)
            ready_w = -1
    notify.fd = ready_w  # type: ignore[attr-defined]  # children must not hold it open
    return notify


class Supervisor:
    def __init__(self, args: argparse.Namespace, config_path: Path | None, config: Config,
                 pidfile: PidFile, listeners: list[server.Listener],
                 claim: ownership.Claim | None = None) -> None:
        self.args = args
        self.claim = claim
        self.claim_fds = claim.fds if claim is not None else []
        self.config_path = config_path
        self.config = config
        self.pidfile = pidfile
        self.listeners = listeners
        self.pool: server.Pool | None = None

    def reload(self) -> None:
        from vcd import dispatch

        log.info("SIGHUP: reloading %s", self.config_path or "the built-in defaults")
        try:
            new = load(self.config_path)
        except ConfigError as exc:
            log.error("new configuration rejected, keeping the running one: %s", exc)
            new = None
        current = new or self.config
        try:
            vlog.setup(current.logfile, current.loglevel, debug=self.args.debug)
        except OSError as exc:
            log.error("cannot reopen log file %s: %s; still logging to the old one",
                      current.logfile, exc.strerror)
        if new is None:
            return
        if new.pidfile != self.config.pidfile:
            log.warning("a changed pidfile takes effect at the next start, not on reload")
        if not self.reclaim(new):
            return
        try:
            # prepare() is once per start (it also restarts the vcd.status counters);
            # only a new datadir or rundir needs it again before workers can use them
            if (new.datadir, new.rundir) != (self.config.datadir, self.config.rundir):
                dispatch.prepare(new)
        except Exception:
            log.exception("preparing the new configuration failed; keeping the running one")
            return
        # last, because it changes the kept sockets in place (TLS context, socket mode)
        try:
            listeners = vlisteners.reconcile(self.listeners, new)
        except OSError as exc:  # ssl.SSLError is one too
            log.error("%s; keeping the running configuration", vlisteners.describe_error(new, exc))
            return
        if [li.key for li in listeners] == [li.key for li in self.listeners]:
            kept: list[server.Listener] | None = None  # same sockets (TLS contexts were refreshed)
        else:
            kept = listeners
        assert self.pool is not None
        self.pool.restart(new, kept)
        self.listeners = self.pool.listeners
        self.config = new
        log.info("configuration reloaded; %d workers restarting on %s", new.worker_count,
                 ", ".join(li.name for li in self.pool.listeners))

    def reclaim(self, new: Config) -> bool:
        """A reload that moves datadir, rundir or cgroup parent must own the new ones
        (vcd.ownership); False (logged, the running configuration kept) if it cannot."""
        old = self.config
        if self.claim is None or (new.datadir, new.rundir, new.cgroup_parent) == \
                (old.datadir, old.rundir, old.cgroup_parent):
            return True
        try:
            claim = ownership.claim(new, held=self.claim)
        except (ownership.Conflict, OSError) as exc:
            log.error("new configuration rejected, keeping the running one: %s", exc)
            return False
        self.claim.release(keep=claim)
        self.claim = claim
        if self.pool is not None:
            self.pool.close_in_children = [fd for fd in self.pool.close_in_children
                                           if fd not in self.claim_fds] + claim.fds
        self.claim_fds = claim.fds
        return True

    def run(self, notify: Callable[[bytes], None] | None, notify_fd: int | None) -> int:
        from vcd import dispatch

        sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(sig_w, warn_on_full_buffer=False)
        for sig in server.SUPERVISED_SIGNALS:
            # handlers do nothing: the signal number arrives through the wakeup pipe
            signal.signal(sig, lambda signum, frame: None)

        config = self.config
        close_in_children = [sig_r, sig_w]
        if self.pidfile.fd is not None:
            close_in_children.append(self.pidfile.fd)
        if notify_fd is not None:
            close_in_children.append(notify_fd)
        # a worker holding a copy would keep a lock the daemon gives up on reload
        close_in_children += self.claim_fds

        pool = self.pool = server.Pool(config, self.listeners, dispatch.Dispatcher, close_in_children)
        pool.start()
        log.info("vcd %s serving on %s with %d workers (pid %d)", __version__,
                 ", ".join(li.name for li in self.listeners), config.worker_count, os.getpid())
        if self.args.boot or config.boot:
            pool.run_task("boot", lambda: dispatch.on_boot(config))
        if notify:
            notify(READY)
            # the number is free again and may be reused; later children must not close it
            pool.close_in_children.remove(notify_fd)
        sdnotify.notify(f"READY=1\nMAINPID={os.getpid()}")

        callbacks = CallbackFailures(config.supervisor_dir / CALLBACKS_FILE)
        while True:
            received = wait_signals(sig_r, pool.tick())
            callbacks.poll()
            if callbacks.path != self.config.supervisor_dir / CALLBACKS_FILE:
                callbacks = CallbackFailures(self.config.supervisor_dir / CALLBACKS_FILE)
            if signal.SIGTERM in received or signal.SIGINT in received:
                name = "SIGTERM" if signal.SIGTERM in received else "SIGINT"
                log.info("%s: stopping", name)
                sdnotify.notify("STOPPING=1")
                break
            pool.reap()
            if signal.SIGHUP in received:
                self.reload()
            pool.fill()

        grace = min(max(self.config.timeout, 5.0), 60.0)
        pool.stop(grace)
        log.info("vcd stopped")
        return 0


def _check_files(config: Config) -> list[str]:
    """What --check-config can verify beyond the keys (load checked those, [vstatd]
    included) without binding anything: the TLS files load, the Unix socket's group
    exists. Every problem, not only the first."""
    import grp

    problems = []
    try:
        vlisteners.tls_context(config)
    except OSError as exc:
        problems.append(vlisteners.describe_error(config, exc))
    if config.unix_socket_group is not None:
        try:
            grp.getgrnam(config.unix_socket_group)
        except KeyError:
            problems.append(f"unix_socket_group: group {config.unix_socket_group!r} "
                            "does not exist")
    return problems


def _report(problems: list[str]) -> None:
    for line in problems:
        print(f"vcd: {line}", file=sys.stderr)


def _prepare(config: Config) -> None:
    from vcd import dispatch
    dispatch.prepare(config)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config_path = _config_path(args)
    try:
        config = load(config_path)
    except ConfigError as exc:
        _report(exc.problems)
        return EXIT_CONFIG
    if args.check_config:
        problems = _check_files(config)
        if problems:
            _report([f"{config_path or 'built-in defaults'}: {p}" for p in problems])
            return EXIT_CONFIG
        print(f"vcd: {config_path or 'built-in defaults'}: configuration is valid")
        return 0

    pidfile = start_logging_and_lock("vcd", config.logfile, config.loglevel, args.debug,
                                     config.pidfile)
    if isinstance(pidfile, int):
        return pidfile

    try:
        claim = ownership.claim(config)
    except (ownership.Conflict, OSError) as exc:
        text = str(exc) if isinstance(exc, ownership.Conflict) else \
            f"cannot lock {exc.filename}: {exc.strerror}"
        log.error("not starting: %s", text)
        print(f"vcd: not starting: {text}", file=sys.stderr)
        pidfile.release()
        return EXIT_FAILURE
    holder: list[ownership.Claim | None] = [claim]
    try:
        return _run(args, config_path, config, pidfile, holder)
    finally:
        if holder[0] is not None:
            holder[0].release()


def _run(args: argparse.Namespace, config_path: Path | None, config: Config, pidfile: PidFile,
         holder: list[ownership.Claim | None]) -> int:
    """Everything after the claim; `holder[0]` is the claim in force (a reload may move it)."""
    claim = holder[0]
    assert claim is not None
    # Ready before anything listens: a client that connects as soon as the port accepts
    # must find the first users and their password files (and a VXDB that is migrated).
    try:
        _prepare(config)
    except Exception as exc:
        log.exception("start-up failed while preparing VXDB")
        print(f"vcd: start-up failed: {exc}", file=sys.stderr)
        pidfile.release()
        return EXIT_FAILURE

    # Bind before detaching so "address in use" or a bad certificate is an error the caller sees.
    try:
        listeners = vlisteners.listeners_for(config)
    except OSError as exc:  # ssl.SSLError is one too
        print(f"vcd: {vlisteners.describe_error(config, exc)}", file=sys.stderr)
        pidfile.release()
        return EXIT_FAILURE

    notify = None
    notify_fd = None
    if not args.foreground:
        keep: list[object] = [*listeners, pidfile.fd, *claim.fds]
        stream = vlog.stream()
        if stream is not None and config.logfile is not None:
            keep.append(stream)
        notify = _detach(keep)
        notify_fd = notify.fd  # type: ignore[attr-defined]
    pidfile.write(os.getpid())

    supervisor = Supervisor(args, config_path, config, pidfile, listeners, claim)
    try:
        return supervisor.run(notify, notify_fd)
    except Exception as exc:
        log.exception("supervisor failed")
        if notify:
            notify(f"supervisor failed: {exc}".encode())
        if supervisor.pool is not None:
            supervisor.pool.stop(5.0)
        return EXIT_FAILURE
    finally:
        holder[0] = supervisor.claim
        pidfile.release()


if __name__ == "__main__":
    sys.exit(main())
