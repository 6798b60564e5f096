"""Init signals (issue 16): vxdb.init halt_signal/reboot_signal, sent to a vserver's init by
vx.stop and vx.reboot instead of running the halt/reboot command; templates carry them.

BusyBox init (the busybox template) obeys SIGUSR2 = poweroff, SIGUSR1 = halt and SIGTERM =
reboot, running its shutdown action (/etc/init.d/rcK: the stop scripts) first: a stop
script that leaves a mark proves that init shut down by itself and was not killed.
"""
from __future__ import annotations

import os
import time
import xmlrpc.client

import pytest

from api_helpers import boot_of, create_vserver, ensure_busybox_template, fault, fault_code, unique
from vcdtest import VcdDaemon, daemon_fixture, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")

# A SysV stop script: BusyBox's rcK runs it on halt, poweroff and reboot.
MARK_SCRIPT = '#!/bin/sh\ncase "$1" in stop) echo by-init > /var/stopped-by-init;; esac\n'


rt = daemon_fixture("initsig", workers=4, exec_timeout=10.0)


@pytest.fixture
def admin(rt):
    return rt.proxy()


@pytest.fixture
def vserver(rt, admin):
    """A stopped busybox vserver, stopped (and removed) after the test."""
    name = create_vserver(rt)
    yield name
    if admin.vx.status(name=name)["running"]:
        admin.vxdb.init.set(name=name, halt="/bin/true", timeout=0)
        admin.vx.stop(name=name)
    admin.vx.remove(name=name)


def start_with_mark(rt, admin, name: str) -> None:
    script = rt.vbasedir / name / "etc/init.d/S99mark"
    script.write_text(MARK_SCRIPT)
    script.chmod(0o755)
    admin.vx.start(name=name)


def init_started(admin, name: str) -> str:
    """Which boot runs (api_helpers.boot_of): a new value = a new init."""
    return boot_of(admin, name)


def test_init_signals_round_trip_through_vxdb_init(admin, vserver):
    admin.vxdb.init.set(name=vserver, halt_signal="SIGRTMIN+3", reboot_signal="SIGINT")
    got = admin.vxdb.init.get(name=vserver)
    assert (got["halt_signal"], got["reboot_signal"]) == ("SIGRTMIN+3", "SIGINT")
    assert got["halt"] == "/sbin/halt" and got["timeout"] == 15
    admin.vxdb.init.set(name=vserver, halt_signal="SIGPWR", reboot_signal="SIGRTMAX-2")
    got = admin.vxdb.init.get(name=vserver)
    assert (got["halt_signal"], got["reboot_signal"]) == ("SIGPWR", "SIGRTMAX-2")
    # a partial set keeps what it does not name; "none" clears a signal (the command again)
    admin.vxdb.init.set(name=vserver, halt="/sbin/halt")
    got = admin.vxdb.init.get(name=vserver)
    assert (got["halt_signal"], got["reboot_signal"]) == ("SIGPWR", "SIGRTMAX-2")
    admin.vxdb.init.set(name=vserver, halt_signal="none", reboot_signal="NONE")
    got = admin.vxdb.init.get(name=vserver)
    assert (got["halt_signal"], got["reboot_signal"]) == ("", "")


@pytest.mark.parametrize("bad", ["SIGFOO", "9", "sigterm", "TERM", "SIGRTMIN+99", "SIGRTMAX+1",
                                 "SIG_DFL", "SIGRTMIN-1", " SIGINT"])
def test_a_bad_signal_name_is_refused_when_set_naming_the_accepted_forms(admin, vserver, bad):
    for key in ("halt_signal", "reboot_signal"):
        f = fault(admin.vxdb.init.set, name=vserver, **{key: bad})
        assert f.faultCode == 200, f.faultString
        assert key in f.faultString and "SIGRTMIN+n" in f.faultString and "SIGPWR" in f.faultString
    assert admin.vxdb.init.get(name=vserver)["halt_signal"] == ""


def test_vx_stop_sends_the_halt_signal_and_does_not_run_the_halt_command(rt, admin, vserver):
    vdir = rt.vbasedir / vserver
    # were the command run, it would leave its mark; were init killed, no stop script would
    admin.vxdb.init.set(name=vserver, halt="/bin/sh -c 'echo ran > /halt-ran'", timeout=60,
                        halt_signal="SIGUSR2")
    start_with_mark(rt, admin, vserver)
    assert admin.vx.stop(name=vserver) == ""
    assert admin.vx.status(name=vserver)["running"] is False
    assert (vdir / "var/stopped-by-init").read_text() == "by-init\n"
    assert not (vdir / "halt-ran").exists()
    # stopped is stopped, signal or not
    assert fault_code(admin.vx.stop, name=vserver) == 300


def test_vx_stop_without_a_signal_runs_the_halt_command_as_before(rt, admin, vserver):
    vdir = rt.vbasedir / vserver
    admin.vxdb.init.set(name=vserver, halt="/bin/sh -c 'echo ran > /halt-ran; halt'", timeout=60)
    start_with_mark(rt, admin, vserver)
    assert isinstance(admin.vx.stop(name=vserver), str)
    assert admin.vx.status(name=vserver)["running"] is False
    assert (vdir / "halt-ran").read_text() == "ran\n"
    assert (vdir / "var/stopped-by-init").read_text() == "by-init\n"


def test_vx_reboot_sends_the_reboot_signal_and_the_vserver_comes_back(rt, admin, vserver):
    vdir = rt.vbasedir / vserver
    admin.vxdb.init.set(name=vserver, reboot="/bin/sh -c 'echo ran > /reboot-ran'",
                        reboot_signal="SIGTERM")
    start_with_mark(rt, admin, vserver)
    before = init_started(admin, vserver)
    assert admin.vx.reboot(name=vserver) == ""

    def back() -> bool:
        try:
            return init_started(admin, vserver) != before
        except xmlrpc.client.Fault:
            return False
    wait_until(back, what="the reboot")
    assert (vdir / "var/stopped-by-init").read_text() == "by-init\n"
    assert not (vdir / "reboot-ran").exists()
    assert fault_code(admin.vx.reboot, name=unique("nosuch")) == 202


def test_a_stop_marker_never_swallows_a_later_reboot_from_inside(rt, admin, vserver):
    """vcd skips vshelper for its own stops; a reboot from inside after a new start still
    brings the vserver back."""
    admin.vxdb.init.set(name=vserver, halt_signal="SIGUSR2")
    admin.vx.start(name=vserver)
    admin.vx.stop(name=vserver)
    admin.vx.start(name=vserver)
    before = init_started(admin, vserver)
    admin.vx.exec(name=vserver, command="sh -c 'reboot -f &'")

    def back() -> bool:
        try:
            return init_started(admin, vserver) != before
        except xmlrpc.client.Fault:
            return False
    wait_until(back, what="the reboot from inside")


def test_a_template_gives_new_vservers_its_signals_api_mounts_and_readiness(rt, admin):
    from templates import busybox
    from templates.metadata import TemplateMeta
    from vcd import vxdb
    from vcd.runtime import build_spec
    from vcd.vxdb.lookup import find_vserver

    ensure_busybox_template(rt.templatedir)
    tpl = unique("bbsig")
    busybox.build(tpl, rt.templatedir)
    conf = rt.templatedir / f"{tpl}.conf"
    meta = TemplateMeta.load(conf)
    meta.halt_signal, meta.reboot_signal = "SIGUSR2", "SIGTERM"
    meta.api_mounts, meta.ready = ["run", "run-lock"], "notify"
    meta.save(conf)
    name = unique()
    admin.vx.create(name=name, template=tpl)
    try:
        got = admin.vxdb.init.get(name=name)
        assert (got["halt_signal"], got["reboot_signal"]) == ("SIGUSR2", "SIGTERM")
        db = vxdb.connect(rt.datadir / "vxdb")
        try:
            spec, init = build_spec(db, find_vserver(db, name))
        finally:
            db.close()
        assert spec.api_mounts == ["run", "run-lock"] and spec.ready == "notify"
        assert init["halt_signal"] == "SIGUSR2"
        # a plain template's vserver gets none of it
        plain = create_vserver(rt)
        db = vxdb.connect(rt.datadir / "vxdb")
        try:
            spec, _ = build_spec(db, find_vserver(db, plain))
        finally:
            db.close()
        assert spec.api_mounts == [] and spec.ready == ""
        admin.vx.remove(name=plain)
    finally:
        admin.vx.remove(name=name)


def test_context_spec_carries_api_mounts_and_ready_and_reads_older_dicts():
    from pathlib import Path

    from libvserver import ContextSpec
    from libvserver.api import InvalidSpec

    spec = ContextSpec(xid=42, name="x", vdir=Path("/v/x"), api_mounts=["run", "cgroup"],
                       ready="notify")
    spec.validate()
    again = ContextSpec.from_dict(spec.to_dict())
    assert again.api_mounts == ["run", "cgroup"] and again.ready == "notify"
    old = spec.to_dict()
    del old["api_mounts"], old["ready"]
    older = ContextSpec.from_dict(old)
    assert older.api_mounts == [] and older.ready == ""
    for bad in (dict(api_mounts=["proc"]), dict(ready="sd_notify")):
        with pytest.raises(InvalidSpec):
            ContextSpec(xid=42, name="x", vdir=Path("/v/x"), **bad).validate()
