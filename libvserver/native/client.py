"""Talking to the supervisor, and starting it when nobody answers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from .. import api
from ..api import LibvserverError


class SupervisorError(LibvserverError):
    """The supervisor could not be reached or started."""


class SupervisorClient:
    def __init__(self, state_dir: Path, cgroup_parent: str, notify_argv: list[str] | None,
                 net_tag: str, load_interval: float = 5.0) -> None:
        self.state_dir = Path(state_dir)
        self.sock = self.state_dir / "supervisor.sock"
        self.notify_argv = notify_argv
        self.argv = [sys.executable, "-m", "libvserver.native.supervisor",
                     "--state-dir", str(self.state_dir), "--cgroup-parent", cgroup_parent,
                     "--notify", json.dumps(notify_argv), "--net-tag", net_tag,
                     "--load-interval", str(load_interval)]

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.connect(str(self.sock))
        except OSError:
            s.close()
            raise
        return s

    def ensure(self) -> None:
        """Start the supervisor unless one answers on the socket."""
        try:
            self._connect().close()
            return
        except OSError:
            pass
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = dict(os.environ)
        # the package must be importable from the supervisor's cwd (/)
        pkg_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                        else "")
        r = subprocess.run(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env=env, timeout=30, cwd="/")
        if r.returncode != 0:
            raise SupervisorError(f"cannot start the supervisor: {r.stderr.decode().strip()}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self._connect().close()
                return
            except OSError:
                time.sleep(0.02)
        raise SupervisorError(f"the supervisor does not answer on {self.sock}")

    def call(self, req: dict, timeout: float = 120.0, spawn: bool = True) -> dict:
        """One request; starts the supervisor first if none answers, unless `spawn` is
        false (then SupervisorError: there is nobody to ask). A start carries the
        callback, so a supervisor started for an earlier configuration calls this one."""
        if req.get("op") == "start" and self.notify_argv is not None:
            req = {**req, "notify": self.notify_argv}
        try:
            s = self._connect()
        except OSError:
            if not spawn:
                raise SupervisorError(f"no supervisor answers on {self.sock}") from None
            self.ensure()
            s = self._connect()
        with s:
            s.settimeout(timeout)
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        if not buf:
            raise SupervisorError(f"the supervisor closed the connection during {req.get('op')}")
        resp = json.loads(buf)
        if not resp.get("ok"):
            cls = getattr(api, resp.get("kind", ""), None)
            if not (isinstance(cls, type) and issubclass(cls, LibvserverError)):
                cls = LibvserverError
            raise cls(resp.get("error", "supervisor error"))
        return resp
