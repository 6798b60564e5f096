"""Helpers shared by the API tests (not fixtures: plain functions)."""
from __future__ import annotations

import itertools
import xmlrpc.client
from pathlib import Path
from typing import Any, Callable

import pytest

_counter = itertools.count()


def fault_code(fn: Callable[..., Any], *args: Any, **kw: Any) -> int:
    """Call and return the fault code; fails the test if there was no fault."""
    with pytest.raises(xmlrpc.client.Fault) as info:
        fn(*args, **kw)
    return info.value.faultCode


def fault(fn: Callable[..., Any], *args: Any, **kw: Any) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as info:
        fn(*args, **kw)
    return info.value


def unique(prefix: str = "vs") -> str:
    return f"{prefix}{next(_counter)}"


def ensure_busybox_template(templatedir: Path) -> None:
    from templates import busybox
    from templates.store import TemplateStore
    if not any(t.name == "busybox" for t in TemplateStore(templatedir).list()):
        busybox.build("busybox", templatedir)


def create_vserver(daemon: Any, name: str | None = None, **params: Any) -> str:
    """Create a vserver from the busybox template through the API; returns its name."""
    ensure_busybox_template(daemon.templatedir)
    name = name or unique()
    daemon.proxy().call("vx.create", name=name, template="busybox", **params)
    return name


BOOT_TOKEN = "/dev/.vcd-test-boot"


def boot_of(admin, name: str) -> str:
    """Which boot of the vserver runs: a random token left in that boot's /dev (a new
    tmpfs each start). Not init's start time (field 22 of /proc/1/stat): VIRT_UPTIME
    starts each boot's clock at 0, so two inits often show the same one; nor the PID
    namespace's inode number, reused at once."""
    return admin.vx.exec(name=name, timeout=10, command=(
        f"sh -c '[ -s {BOOT_TOKEN} ] || cat /proc/sys/kernel/random/uuid > {BOOT_TOKEN}; "
        f"cat {BOOT_TOKEN}'")).strip()
