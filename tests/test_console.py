"""vx.console and `vcc console`: init's output, kept by the supervisor, across a daemon
restart and after the vserver stopped."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from api_helpers import create_vserver, fault_code

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")


def _until(cond, timeout: float = 20.0):
    end = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < end, f"not reached within {timeout}s: {cond}"
        time.sleep(0.1)


def _vserver_with_init(vcd, script: str) -> str:
    name = create_vserver(vcd)
    api = vcd.proxy()
    vdir = Path(api.call("vxdb.vdir.get", name=name))
    init = vdir / "sbin" / "console-init"
    init.write_text("#!/bin/sh\n" + script)
    init.chmod(0o755)
    api.call("vxdb.init.set", name=name, init="/sbin/console-init")
    return name


def test_console_shows_init_output_and_survives_a_daemon_restart(vcd):
    name = _vserver_with_init(vcd, "echo hello-from-init\nexec sleep 1000\n")
    api = vcd.proxy()
    api.call("vx.start", name=name)
    try:
        answer = _until(lambda: (lambda a: a if "hello-from-init" in a["data"] else None)(
            api.call("vx.console", name=name)))
        assert isinstance(answer["offset"], int) and answer["offset"] >= len("hello-from-init")
        vcd.restart()
        api = vcd.proxy()
        assert "hello-from-init" in api.call("vx.console", name=name)["data"]
        api.call("vx.exec", name=name, command="sh -c 'echo after-restart > /dev/console'")
        follow = _until(lambda: (lambda a: a if "after-restart" in a["data"] else None)(
            api.call("vx.console", name=name, offset=answer["offset"])))
        assert "hello-from-init" not in follow["data"]
    finally:
        api.call("vx.stop", name=name)
    # what a stopped vserver wrote last stays readable until its next start
    assert "after-restart" in api.call("vx.console", name=name, lines=5)["data"]


def test_console_of_another_tenants_vserver_does_not_exist(vcd):
    name = create_vserver(vcd)
    api = vcd.proxy()
    api.call("vcd.user.set", username="tenant1", password="tenant-pass-1", admin=False)
    api.call("vcd.user.caps.add", username="tenant1", cap="INFO")
    assert fault_code(vcd.proxy("tenant1", "tenant-pass-1").call, "vx.console",
                      name=name) == 202


def test_vcc_console_prints_the_last_lines(vcd):
    name = _vserver_with_init(vcd, "for i in 1 2 3 4 5; do echo line-$i; done\n"
                                   "exec sleep 1000\n")
    api = vcd.proxy()
    api.call("vx.start", name=name)
    try:
        _until(lambda: "line-5" in api.call("vx.console", name=name)["data"])
        env = dict(os.environ, VCD_PASSWORD=vcd.admin_password, HOME=str(vcd.root / "home"))
        r = subprocess.run([str(BIN / "vcc"), "-p", str(vcd.port), "console", name,
                            "--lines", "2"], capture_output=True, text=True, env=env,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert "line-5" in r.stdout and "line-4" in r.stdout and "line-3" not in r.stdout
    finally:
        api.call("vx.stop", name=name)
