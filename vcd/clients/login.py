"""`vcc login NAME`: an interactive shell inside a running vserver on this host.

The daemon answers which context the name is (vxdb.xid.get) and whether it runs;
the rest is local and needs root: `NativeBackend.entry(xid)` opens the namespaces
the supervisor kept at start and the privileges of the spec the context was started
with, and `enter.spawn` puts a process into the context exactly as vx.exec does.
What libvserver has no part for - a terminal - is here: a pty whose slave becomes the shell's controlling terminal, the window
size copied to it (and again on SIGWINCH), and a relay between it and ours.

    vcc ─enter.spawn─▶ E1: keeps only the pty slave, joins the context exactly as
                           vx.exec does (libvserver.native.enter), forks E2, waits,
                           exits with E2's status
                       E2: setsid, the pty slave as controlling terminal and fds 0-2,
                           exec the first shell of SHELLS that exists inside
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


def _shell_command() -> Any:
    """The login shell: the first of SHELLS that exists inside (tried there, by exec)."""
    from libvserver.native.enter import Command
    cmds = [Command(["-" + os.path.basename(sh)], {**_shell_env(), "SHELL": sh}, path=sh)
            for sh in SHELLS]
    # a leading '-' makes it a login shell, which reads /etc/profile
    return Command(cmds[0].argv, cmds[0].env, cmds[0].path, fallbacks=cmds[1:])


def attach(backend: Any, xid: int) -> int:
    from libvserver import LibvserverError, NotRunning
    from libvserver.native import enter
    try:
        entry = backend.entry(xid)
    except NotRunning:
        raise ClientError("login", f"context {xid} is not running", 300) from None
    except LibvserverError as exc:
        raise ClientError("login", f"context {xid}: {exc}", status=common.SYSTEM) from None
    try:
        master, slave = os.openpty()
    except BaseException:
        entry.close()
        raise
    os.set_inheritable(master, False)
    interactive = os.isatty(sys.stdin.fileno())
    if interactive:
        _copy_winsize(sys.stdin.fileno(), slave)
    sys.stdout.flush()
    try:
        # the same clean entry as vx.exec: the entering process keeps only the pty slave
        # (never our terminal), the shell gets it as its controlling terminal
        child = enter.spawn(entry, _shell_command(), (slave, slave, slave), ctty=True)
    finally:
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
