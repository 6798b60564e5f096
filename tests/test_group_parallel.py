"""vg.vx.*: a group's members are acted on in parallel inside the daemon (issue 13), the
answer stays the manual's nil, and failed members are named in one fault."""
from __future__ import annotations

import os
import threading
import time
import xmlrpc.client

import pytest

from api_helpers import boot_of, create_vserver, fault, unique
from vcdtest import VcdDaemon, daemon_fixture

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")

# Each member's halt waits for /go: the stop of the group only gets past it when every
# member's halt runs at the same time (one after the other, the first would wait forever).
BARRIER_HALT = "/bin/sh -c 'touch /arrived; while [ ! -e /go ]; do sleep 0.05; done; halt'"


rt = daemon_fixture("vgpar", workers=4, exec_timeout=10.0)


@pytest.fixture
def admin(rt):
    return rt.proxy()


def make_group(rt, admin, count: int) -> tuple[str, list[str]]:
    group = unique("grp")
    names = [create_vserver(rt) for _ in range(count)]
    for n in names:
        admin.vg.add(group=group, name=n)
    return group, names


def running(admin, names: list[str]) -> list[str]:
    return [n for n in names if admin.vx.status(name=n)["running"]]


def stop_all(admin, names: list[str]) -> None:
    for n in running(admin, names):
        admin.vxdb.init.set(name=n, halt="/bin/true", timeout=0)
        admin.vx.stop(name=n)


def test_a_group_of_twenty_is_stopped_in_parallel_and_answers_nil(rt, admin):
    group, names = make_group(rt, admin, 20)
    for n in names:
        admin.vxdb.init.set(name=n, halt=BARRIER_HALT, timeout=120)
    assert admin.vg.vx.start(group=group) is None
    assert running(admin, names) == names
    result: dict[str, object] = {}

    def stop() -> None:
        try:
            result["answer"] = rt.proxy().vg.vx.stop(group=group)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    stopper = threading.Thread(target=stop)
    stopper.start()
    arrived: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            arrived = [n for n in names if (rt.vbasedir / n / "arrived").exists()]
            if len(arrived) == len(names):
                break
            time.sleep(0.1)
    finally:
        for n in names:
            (rt.vbasedir / n / "go").touch()
        stopper.join(timeout=120)
    assert sorted(arrived) == sorted(names), "the members' halts did not all run at once"
    assert not stopper.is_alive()
    assert result == {"answer": None}
    assert running(admin, names) == []


def test_failed_members_are_named_in_one_fault_and_the_others_still_act(rt, admin):
    group, names = make_group(rt, admin, 6)
    broken = names[1], names[4]
    for n in broken:   # their root directories are gone: their starts fail
        os.rename(rt.vbasedir / n, rt.vbasedir / f"{n}.away")
    try:
        f = fault(admin.vg.vx.start, group=group)
        assert f.faultCode == 500, f.faultString
        assert f.faultString.startswith("System call or library call failed: "
                                        f"2 of 6 members of group {group} failed: ")
        for n in broken:
            assert f"{n}: " in f.faultString and f"root directory {rt.vbasedir / n}" in f.faultString
        good = [n for n in names if n not in broken]
        assert sorted(running(admin, names)) == sorted(good)
        for n in good:
            assert f"{n}:" not in f.faultString
        for n in names:
            admin.vxdb.init.set(name=n, halt="/bin/true", timeout=0)
        assert admin.vg.vx.stop(group=group) is None   # stopped members are skipped
        assert running(admin, names) == []
    finally:
        stop_all(admin, names)
        for n in broken:
            os.rename(rt.vbasedir / f"{n}.away", rt.vbasedir / n)


def test_a_users_group_stop_acts_on_its_own_members_and_names_the_others(rt, admin):
    group, names = make_group(rt, admin, 5)
    user = unique("vguser")
    admin.vcd.user.set(username=user, password="password1", admin=False)
    admin.vcd.user.caps.add(username=user, cap="INIT")
    mine, theirs = names[:3], names[3:]
    for n in mine:
        admin.vxdb.owner.add(name=n, username=user)
    for n in names:
        admin.vxdb.init.set(name=n, halt="/bin/true", timeout=0)
    admin.vg.vx.start(group=group)
    try:
        f = fault(rt.proxy(user, "password1").vg.vx.stop, group=group)
        assert f.faultCode == 202
        assert f.faultString.startswith("Virtual server does not exist: "
                                        f"2 of 5 members of group {group} failed: ")
        for n in theirs:
            assert f"{n}: " in f.faultString
        assert sorted(running(admin, names)) == sorted(theirs)
    finally:
        stop_all(admin, names)


def test_group_reboot_sends_each_members_reboot_signal(rt, admin):
    group, names = make_group(rt, admin, 3)
    for n in names:
        admin.vxdb.init.set(name=n, reboot_signal="SIGTERM", halt="/bin/true", timeout=0)
    admin.vg.vx.start(group=group)
    try:
        before = {n: boot_of(admin, n) for n in names}
        assert admin.vg.vx.reboot(group=group) is None

        def rebooted(n: str) -> bool:
            try:
                return boot_of(admin, n) != before[n]
            except xmlrpc.client.Fault:
                return False
        deadline = time.monotonic() + 60
        while not all(rebooted(n) for n in names):
            assert time.monotonic() < deadline, "not every member came back"
            time.sleep(0.2)
    finally:
        stop_all(admin, names)
