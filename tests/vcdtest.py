"""Shared test helpers: a real `vcd` daemon on loopback with its own temporary directories,
a client proxy and a raw HTTP helper. Fixtures built on these live in conftest.py.

Import from here (`from vcdtest import VcdDaemon`), never from conftest: with several
conftest.py files in the tree, "conftest" names a different module depending on order.
"""
from __future__ import annotations

import http.client
import itertools
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
# one cgroup parent per test run, so parallel runs and leftovers never mix; each daemon
# gets its own below it by name (CGROUP_PARENT-d<n>): a vcd refuses a cgroup parent
# another datadir's daemon uses
CGROUP_PARENT = f"vcd-test-{os.getpid()}"
# Host id ranges of this run's vservers (libvserver/native/idmap.py): a window of 512 xids
# of its own, so parallel runs never share ids.
IDMAP_BASE = (2 + (os.getpid() % 127) * 512) << 16

_daemon_numbers = itertools.count()


def is_test_cgroup_parent(name: str) -> bool:
    """A cgroup parent of this test run."""
    return name == CGROUP_PARENT or name.startswith(f"{CGROUP_PARENT}-d")


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


class VcdCallable:
    """`proxy.vxdb.list(**params)` -> `vxdb.list({username, password}, params)`."""

    def __init__(self, proxy: "VcdProxy", name: str) -> None:
        self._proxy = proxy
        self._name = name

    def __getattr__(self, part: str) -> "VcdCallable":
        if part.startswith("__"):
            raise AttributeError(part)
        return VcdCallable(self._proxy, f"{self._name}.{part}")

    def __call__(self, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self._proxy.call(self._name, params, **kw)


class VcdProxy:
    """An XML-RPC client that sends the `{username, password}` struct as param 1
    and the named params as the struct of param 2."""

    def __init__(self, url: str, username: str, password: str,
                 context: "ssl.SSLContext | None" = None) -> None:
        self.url = url
        self.username = username
        self.password = password
        self.server = xmlrpc.client.ServerProxy(url, allow_none=True, context=context)

    @property
    def auth(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}

    def call(self, method: str, params: dict[str, Any] | None = None, /, **kw: Any) -> Any:
        merged = dict(params or {})
        merged.update(kw)
        return getattr(self.server, method)(self.auth, merged)

    def raw(self, method: str, *args: Any) -> Any:
        """Call with exactly these params (for tests of malformed calls)."""
        return getattr(self.server, method)(*args)

    def __getattr__(self, part: str) -> VcdCallable:
        if part.startswith("__"):
            raise AttributeError(part)
        return VcdCallable(self, part)


class VcdDaemon:
    """A `vcd` process with its own config and directories under `root`."""

    def __init__(self, root: Path, *, foreground: bool = True, debug: bool = False,
                 boot: bool = False, **config: Any) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.datadir = root / "data"
        self.templatedir = root / "templates"
        self.vbasedir = root / "vservers"
        self.rundir = root / "run"
        self.pidfile = self.rundir / "vcd.pid"
        self.logfile = root / "vcd.log"
        self.stderr_path = root / "vcd.stderr"
        self.config_path = root / "vcd.conf"
        self.foreground = foreground
        self.debug = debug
        self.boot = boot
        self.host = str(config.pop("host", "127.0.0.1"))
        self.port = int(config.pop("port", 0)) or free_port(self.host)
        self.cgroup_parent = str(config.pop("cgroup_parent", f"{CGROUP_PARENT}-d{next(_daemon_numbers)}"))
        self.overrides: dict[str, Any] = {"workers": 2, "timeout": 10.0, **config}
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        # HTTPS daemons (tls_cert set): the client context of proxy() and the readiness probe
        self.client_ssl: ssl.SSLContext | None = None
        self._known_workers: set[int] = set()
        self.templatedir.mkdir(parents=True, exist_ok=True)
        self.vbasedir.mkdir(parents=True, exist_ok=True)
        self.write_config()

    # -- config --------------------------------------------------------------------------

    @property
    def tls(self) -> bool:
        return bool(self.overrides.get("tls_cert"))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/RPC2"

    def config_values(self) -> dict[str, Any]:
        return {
            "host": self.host, "port": self.port,
            "datadir": str(self.datadir), "templatedir": str(self.templatedir),
            "vbasedir": str(self.vbasedir), "rundir": str(self.rundir),
            "pidfile": str(self.pidfile), "logfile": str(self.logfile),
            "cgroup_parent": self.cgroup_parent, "idmap_base": IDMAP_BASE,
            **self.overrides,
        }

    def write_config(self, **changes: Any) -> None:
        """(Re)write the config file; `changes` are kept for later rewrites (None removes a key)."""
        for key, value in changes.items():
            if value is None:
                self.overrides.pop(key, None)
            else:
                self.overrides[key] = value
        if "port" in changes and changes["port"] is not None:
            self.port = int(changes["port"])
        text = "".join(f"{k} = {_toml(v)}\n" for k, v in self.config_values().items())
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    # -- life cycle ----------------------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "vcd.daemon", "-c", str(self.config_path)]
        if self.foreground:
            cmd.append("-f")
        if self.debug:
            cmd.append("-d")
        if self.boot:
            cmd.append("-b")
        return cmd

    def start(self, wait: bool = True) -> "VcdDaemon":
        with open(self.stderr_path, "ab") as err:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                            stdout=err, stderr=err, cwd=REPO)
        if not self.foreground:
            code = self.process.wait(timeout=START_TIMEOUT)
            if code != 0:
                raise RuntimeError(f"detached vcd failed to start ({code}): {self.stderr()}")
            self.pid = int(self.pidfile.read_text())
        else:
            self.pid = self.process.pid
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.foreground and self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"vcd exited with {self.process.returncode}: {self.stderr()}"
                                   f"\n--- log ---\n{self.log()}")
            if self.answers(tls=self.tls):
                self._known_workers.update(self.worker_pids())
                return
            time.sleep(0.05)
        raise RuntimeError(f"vcd did not answer within {timeout}s\n{self.stderr()}\n{self.log()}")

    def answers(self, tls: bool = False) -> bool:
        """True when a POST /RPC2 gets an HTTP 200 (any XML-RPC answer, fault or not);
        over plain HTTP unless `tls` (then with `probe_context()`)."""
        body = (b"<?xml version='1.0'?><methodCall><methodName>system.listMethods</methodName>"
                b"<params></params></methodCall>")
        try:
            status, _, _ = http_request(self.host, self.port, "POST", "/RPC2", body, timeout=2.0,
                                        context=self.probe_context() if tls else None)
        except OSError:
            return False
        return status == 200

    def probe_context(self) -> ssl.SSLContext:
        if self.client_ssl is not None:
            return self.client_ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # a readiness probe only; tests verify with their CA
        return ctx

    def worker_pids(self) -> list[int]:
        return children_of(self.pid) if self.pid else []

    def send_signal(self, sig: int) -> None:
        assert self.pid is not None
        os.kill(self.pid, sig)

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """Send `sig` to the supervisor; for SIGKILL also wait until it and its workers are gone."""
        self._known_workers.update(self.worker_pids())
        self.send_signal(sig)
        if sig == signal.SIGKILL:
            self.wait_exit()
            self._wait_pids_gone(self._known_workers, STOP_TIMEOUT)
            return self.process.returncode if self.process else None
        return None

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Wait for the supervisor to exit; its exit status when it is our child."""
        if self.process is not None and self.foreground:
            return self.process.wait(timeout=timeout)
        assert self.pid is not None
        if not self._wait_pids_gone({self.pid}, timeout):
            raise TimeoutError(f"vcd {self.pid} still running after {timeout}s")
        if self.process is not None:
            self.process.poll()
        return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; SIGKILL whatever is left after `timeout`. Returns the exit status."""
        if self.pid is None:
            return None
        self._known_workers.update(self.worker_pids())
        code: int | None = None
        try:
            if _alive(self.pid):
                os.kill(self.pid, signal.SIGTERM)
            code = self.wait_exit(timeout)
        except (TimeoutError, subprocess.TimeoutExpired, ProcessLookupError):
            pass
        finally:
            self._kill_leftovers()
        return code

    def restart(self) -> "VcdDaemon":
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Never leave a process behind, whatever state the test left the daemon in:
        the daemon, its workers, and the contexts it started (which outlive vcd by design)."""
        try:
            self.stop(timeout=10.0)
        finally:
            try:
                self._kill_leftovers()
            finally:
                self.teardown_contexts()

    def teardown_contexts(self) -> None:
        """Kill every context this daemon's backend started, then its supervisor."""
        if os.geteuid() != 0:
            return  # only root starts contexts
        import libvserver
        libvserver.get_backend(state_dir=self.rundir / "libvserver", cgroup_parent=self.cgroup_parent,
                               image_dir=self.datadir / "images").shutdown()

    def _kill_leftovers(self) -> None:
        pids = set(self._known_workers)
        if self.pid is not None:
            pids.add(self.pid)
            pids.update(self.worker_pids())
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._wait_pids_gone(pids, 5.0)

    @staticmethod
    def _wait_pids_gone(pids: set[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(_alive(p) for p in pids):
                return True
            time.sleep(0.02)
        return False

    # -- access --------------------------------------------------------------------------

    @property
    def admin_password(self) -> str:
        return (self.datadir / "admin.password").read_text().strip()

    @property
    def vshelper_password(self) -> str:
        return (self.datadir / "vshelper.password").read_text().strip()

    def proxy(self, user: str | None = None, password: str | None = None) -> VcdProxy:
        """A client logged in as `user` (default admin with the first-start password)."""
        if user is None:
            user = "admin"
            if password is None:
                password = self.admin_password
        return VcdProxy(self.url, user, password if password is not None else "",
                        context=self.probe_context() if self.tls else None)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def http_request(host: str, port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None,
                 timeout: float = 10.0,
                 context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request (HTTPS with `context`); returns (status, headers with lower-case names, body)."""
    conn = (http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
            if context is not None else http.client.HTTPConnection(host, port, timeout=timeout))
    try:
        hdrs = {"Content-Type": "text/xml"}
        hdrs.update(headers or {})
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()




def wait_until(cond: Any, timeout: float = 60.0, what: str = "condition",
               interval: float = 0.1) -> Any:
    """Poll cond() until it is truthy and return its value; AssertionError naming `what`
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def daemon_fixture(label: str, **config: Any) -> Any:
    """A module-scoped pytest fixture: one running daemon of its own for a test module,
    configured with `config`, cleaned up (contexts and supervisor included) at its end."""
    import pytest

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: Any) -> Any:
        daemon = VcdDaemon(tmp_path_factory.mktemp(label), **config)
        try:
            daemon.start()
            yield daemon
        finally:
            daemon.cleanup()
    return fixture


PROBE_SRC = Path(__file__).parent / "backend" / "probes" / "probe.c"


def build_probe(out: Path) -> Path:
    """tests/backend/probes/probe.c compiled static into `out` (skips without gcc)."""
    import shutil
    import pytest
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the in-vserver probe")
    subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(PROBE_SRC)], check=True)
    return out
