"""`vcc login NAME`: an interactive shell inside a running vserver on this host.

The daemon answers which context the name is (vxdb.xid.get) and whether it runs;
the rest is local and needs root: libvserver's native backend finds the context's
init (`NativeBackend.init_pid`, from the context's cgroup) and the limits and
bounding set entered commands get, and `NativeBackend.entry(xid)` puts a process into the
context exactly as vx.exec does. What libvserver has no part for - a terminal -
is here: a pty whose slave becomes the shell's controlling terminal, the window
size copied to it (and again on SIGWINCH), and a relay between it and ours.

    vcc ─fork─▶ E1: joins the cgroups, setns() into init's namespaces, forks E2,
                    waits, exits with E2's status
                E2: (PID 1's namespace) setsid, the pty slave as controlling
                    terminal and fds 0-2, init's limits and bounding set, exec shell
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import os
import select
import signal
import struct
import sys
import termios
import tty
from pathlib import Path
from typing import Any

from vcd.clients import common
from vcd.clients.common import Client, ClientError
from vcd.clients.output import Output

SHELLS = ("/bin/bash", "/bin/sh")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _winsize(fd: int) -> bytes | None:
    try:
        return fcntl.ioctl(fd, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
    except OSError:
        return None


def _copy_winsize(src: int, dst: int) -> None:
    size = _winsize(src)
    if size is not None and struct.unpack("HHHH", size)[:2] != (0, 0):
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)


def _backend(vcd_config: str | None) -> tuple[Any, Path]:
    """The daemon's libvserver backend and vbasedir, from the daemon's config file."""
    from vcd import config as configmod
    import libvserver
    from libvserver.native import NativeBackend
    path = vcd_config
    if path is None and configmod.DEFAULT_CONFIG.exists():
        path = str(configmod.DEFAULT_CONFIG)
    try:
        cfg = configmod.load(path)
    except configmod.ConfigError as exc:
        raise ClientError("login", f"the daemon's config: {exc}", status=common.USAGE) from None
    backend = libvserver.get_backend(state_dir=cfg.supervisor_dir,
                                     cgroup_parent=cfg.cgroup_parent,
                                     image_dir=cfg.datadir / "images")
    if not isinstance(backend, NativeBackend):
        raise ClientError("login", f"not supported with the {backend.name} backend",
                          status=common.SYSTEM)
    return backend, cfg.vbasedir


def _shell_env() -> dict[str, str]:
    return {"PATH": PATH, "HOME": "/root", "USER": "root", "LOGNAME": "root",
            "TERM": os.environ.get("TERM") or "vt100"}


def _e2(slave: int, entry: Any) -> None:
    """Inside the context; never returns."""
    try:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        os.closerange(3, 65536)
        os.chdir("/")
        entry.confine()
        for s in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                  signal.SIGTSTP, signal.SIGWINCH, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        shell = next((s for s in SHELLS if os.access(s, os.X_OK)), SHELLS[-1])
        # a leading '-' makes it a login shell, which reads /etc/profile
        os.execve(shell, ["-" + os.path.basename(shell)], {**_shell_env(), "SHELL": shell})
    except BaseException as exc:
        os.write(2, f"vcc login: {getattr(exc, 'strerror', None) or exc}\r\n".encode())
    os._exit(127)


def _e1(entry: Any, master: int, slave: int) -> None:
    """Enters the context and waits for the shell; never returns."""
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.close(master)
        entry.join()
        shell = os.fork()     # a PID namespace applies to children only
        if shell == 0:
            _e2(slave, entry)
        os.close(slave)
        for s in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        _, status = os.waitpid(shell, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status)
                 else 128 + os.WTERMSIG(status))
    except BaseException as exc:
        os.write(slave, f"vcc login: cannot enter the context: {exc}\r\n".encode())
        os._exit(126)


def _relay(master: int, child: int) -> int:
    """Copy our terminal to the pty and back until the shell's side is gone."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    child_fd = os.pidfd_open(child)
    fds = [master, child_fd, stdin]
    status: int | None = None
    input_ended = False
    try:
        while True:
            ready, _, _ = select.select(fds, [], [])
            if stdin in ready:
                data = os.read(stdin, 4096)
                if data:
                    os.write(master, data)
                else:
                    # input ended (a pipe): end the shell's input the way a terminal does
                    fds.remove(stdin)
                    input_ended = True
                    os.write(master, b"\x04")
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError as exc:
                    if exc.errno != errno.EIO:   # EIO: every slave fd is closed
                        raise
                    data = b""
                if not data:
                    break
                os.write(stdout, data)
                if input_ended:
                    # a ^D typed ahead is lost when the shell switches its line editor on;
                    # repeat it whenever the shell has spoken (a new prompt) until it ends
                    os.write(master, b"\x04")
            if child_fd in ready and status is None:
                _, st = os.waitpid(child, 0)
                status = os.waitstatus_to_exitcode(st)
                # a background job may keep the pty open: take what is there and stop
                os.set_blocking(master, False)
                try:
                    while chunk := os.read(master, 65536):
                        os.write(stdout, chunk)
                except (BlockingIOError, OSError):
                    pass
                break
    finally:
        os.close(child_fd)
    if status is None:
        _, st = os.waitpid(child, 0)
        status = os.waitstatus_to_exitcode(st)
    return status if status >= 0 else 128 - status


def attach(backend: Any, xid: int) -> int:
    from libvserver import LibvserverError
    try:
        entry = backend.entry(xid)
    except LibvserverError:
        raise ClientError("login", f"context {xid} is not running", 300) from None
    try:
        master, slave = os.openpty()
    except BaseException:
        entry.close()
        raise
    interactive = os.isatty(sys.stdin.fileno())
    if interactive:
        _copy_winsize(sys.stdin.fileno(), slave)
    sys.stdout.flush()
    child = os.fork()
    if child == 0:
        _e1(entry, master, slave)
    os.close(slave)
    entry.close()
    saved = termios.tcgetattr(sys.stdin.fileno()) if interactive else None
    previous = signal.getsignal(signal.SIGWINCH)
    try:
        if interactive:
            signal.signal(signal.SIGWINCH,
                          lambda *_: _copy_winsize(sys.stdin.fileno(), master))
            tty.setraw(sys.stdin.fileno())
        return _relay(master, child)
    finally:
        if saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSAFLUSH, saved)
        signal.signal(signal.SIGWINCH, previous)
        os.close(master)


def run(client: Client | None, ns: argparse.Namespace, out: Output) -> int:
    assert client is not None
    if os.geteuid() != 0:
        raise ClientError("login", "needs root on the daemon's host", status=common.PERMISSION)
    # one round trip: which context, is it running, and is that daemon this host's
    answers = client.multicall([("vxdb.xid.get", {"name": ns.name}),
                                ("vx.status", {"name": ns.name}), ("vcd.hostinfo", {})])
    for answer in answers:
        if isinstance(answer, ClientError):
            raise answer
    xid, status, host = answers
    if not status.get("running"):
        raise ClientError("vx.status", f"Virtual server not running: {ns.name}", 300)
    config_path = ns.vcd_config or client.settings.vcd_config
    backend, vbasedir = _backend(config_path)
    # a remote daemon's xid means nothing here, and a config of another daemon on this
    # host would name another daemon's contexts: both would enter the wrong vserver
    if host.get("hostname") != os.uname().nodename or host.get("vbasedir") != str(vbasedir):
        raise ClientError("login", f"{client.settings.url} is not the daemon of this host's "
                                   f"config {config_path or '(defaults)'} (hostname "
                                   f"{host.get('hostname')}, vbasedir {host.get('vbasedir')})",
                          status=common.USAGE)
    return attach(backend, int(xid))


def _setup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="vserver name")
    parser.add_argument("--vcd-config", metavar="FILE",
                        help="the daemon's config on this host, to find its contexts "
                             "(default: vcd_config from the client config, else /etc/vcd/vcd.conf)")


def _local() -> Any:
    from vcd.clients.commands import Local
    return Local("login", "an interactive shell inside a running vserver on this host (root)",
                 _setup, run, usage="NAME [--vcd-config FILE]")


LOCAL = _local()
