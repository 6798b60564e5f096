"""The audit log: one JSON line per mutating call, secrets masked, faults included,
written before the answer reaches the client."""
from __future__ import annotations

import json
import os
import stat
import xmlrpc.client
from pathlib import Path
from typing import Any, Callable

import pytest

from api_helpers import fault_code
from vcdtest import VcdDaemon

SECRET = "Very-Secret-Passw0rd"


@pytest.fixture
def audited(make_vcd: Callable[..., VcdDaemon], tmp_path: Path) -> tuple[VcdDaemon, Path]:
    path = tmp_path / "audit" / "vcd-audit.log"  # the directory does not exist yet
    return make_vcd(audit_log=str(path)), path


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_mutating_call_is_one_json_line_written_before_the_answer(audited) -> None:
    daemon, path = audited
    admin = daemon.proxy()
    admin.call("vcd.user.set", username="carol", password=SECRET, admin=False)
    # read at once: the line was written before the answer was sent
    entries = lines(path)
    assert len(entries) == 1
    entry = entries[0]
    assert entry["method"] == "vcd.user.set"
    assert entry["user"] == "admin"
    assert entry["peer"] == "127.0.0.1"
    assert entry["result"] == "ok"
    assert entry["params"]["username"] == "carol"
    assert entry["params"]["password"] == "***"
    assert entry["time"]
    # read-only calls are not audited
    admin.call("vxdb.list", username="")
    admin.call("vcd.user.get", username="")
    assert len(lines(path)) == 1


def test_audit_log_never_contains_a_password_and_is_private(audited) -> None:
    daemon, path = audited
    admin = daemon.proxy()
    admin.call("vcd.user.set", username="dave", password=SECRET, admin=False)
    admin.call("vcd.user.set", username="dave", password=SECRET + "2", admin=False)
    with pytest.raises(xmlrpc.client.Fault):
        daemon.proxy("admin", SECRET + "-wrong").call("vcd.user.set", username="eve", password=SECRET)
    text = path.read_text()
    assert SECRET not in text
    assert daemon.admin_password not in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def test_faults_are_audited_with_code_and_claimed_user(audited) -> None:
    daemon, path = audited
    assert fault_code(daemon.proxy().call, "vx.remove", name="nosuchvserver") == 202
    assert fault_code(daemon.proxy("mallory", "guess").call, "vx.remove", name="web1") == 100
    first, second = lines(path)
    assert (first["method"], first["vserver"], first["result"]) == ("vx.remove", "nosuchvserver", "fault")
    assert first["fault"]["code"] == 202
    assert first["user"] == "admin"
    assert (second["user"], second["result"], second["fault"]["code"]) == ("mallory", "fault", 100)
    assert second["vserver"] == "web1"


def test_each_call_of_a_multicall_is_audited(audited) -> None:
    daemon, path = audited
    creds = {"username": "admin", "password": daemon.admin_password}
    results = xmlrpc.client.ServerProxy(daemon.url, allow_none=True).system.multicall([
        {"methodName": "vcd.user.set", "params": [creds, {"username": "m1", "password": SECRET}]},
        {"methodName": "vxdb.list", "params": [creds, {"username": ""}]},
        {"methodName": "vcd.user.remove", "params": [creds, {"username": "m1"}]},
    ])
    assert len(results) == 3
    assert [e["method"] for e in lines(path)] == ["vcd.user.set", "vcd.user.remove"]
    assert SECRET not in path.read_text()


def test_without_audit_log_nothing_is_written(vcd: VcdDaemon) -> None:
    vcd.proxy().call("vcd.user.set", username="frank", password=SECRET, admin=False)
    assert not [p for p in vcd.root.rglob("*audit*")]


def test_a_claimed_username_of_any_length_is_cut_in_the_audit_log(audited) -> None:
    daemon, path = audited
    assert fault_code(daemon.proxy("x" * 100_000, "guess").call, "vx.remove", name="web1") == 100
    (entry,) = lines(path)
    assert len(entry["user"]) <= 65
    assert len(path.read_bytes()) < 2000


def test_an_unwritable_audit_log_is_reported_in_the_log_and_the_call_still_answers(
        make_vcd: Callable[..., VcdDaemon], tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    daemon = make_vcd(audit_log=str(blocker / "audit.log"))
    admin = daemon.proxy()
    admin.call("vcd.user.set", username="grace", password=SECRET, admin=False)  # no fault
    assert [u["username"] for u in admin.call("vcd.user.get", username="grace")] == ["grace"]
    assert fault_code(admin.call, "vx.remove", name="nosuchvserver") == 202  # the real fault
    log = daemon.log()
    assert "cannot record vcd.user.set by 'admin'" in log
    assert SECRET not in log
