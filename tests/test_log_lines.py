"""vcd's log keeps one line per message: what a guest wrote to its console reaches it
inside faults (a failed start's last console lines, which a failed reboot's vshelper
prints and the supervisor's callbacks.failed carries here) and must not forge lines."""
from __future__ import annotations

import json
import logging

import pytest

from vcd import log as vcdlog
from vcd.callbacklog import CallbackFailures

FORGED = "2026-11-30 10:00:00,000 vcd.auth[1] WARNING admin logged in from 10.9.9.9"


@pytest.fixture
def logfile(tmp_path):
    path = tmp_path / "vcd.log"
    vcdlog.setup(path, "info")
    yield path
    vcdlog.setup(None, "info")


def test_a_guests_console_lines_in_a_failed_callback_forge_no_line_of_vcds_log(
        tmp_path, logfile):
    failed = tmp_path / "callbacks.failed"
    follower = CallbackFailures(failed)
    # as vshelper reports helper.shutdown's fault for a reboot whose start failed
    output = (f"vshelper: helper.shutdown(5): init of vs0 died during its start: exit "
              f"status 1; last console lines:\nok\n{FORGED}\r\x1b[2K\u2028{FORGED} (20)")
    failed.write_text(json.dumps({"time": 0, "xid": 5, "action": "shutdown",
                                  "argv": ["vshelper", "shutdown", "5"],
                                  "how": "exit status 1", "output": output}) + "\n")
    assert follower.poll() == 1
    lines = logfile.read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].split(" ")[2].startswith("vcd.callbacks[") and "ERROR" in lines[0]
    assert f"\\n{FORGED}\\r\\x1b[2K\\u2028{FORGED}" in lines[0]
    assert "\x1b" not in logfile.read_text()


def test_a_traceback_the_daemon_logs_keeps_its_lines(logfile):
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logging.getLogger("vcd.test").exception("failed:\n%s", "detail")
    text = logfile.read_text()
    assert "failed:\\ndetail\nTraceback (most recent call last):\n" in text
    assert text.rstrip().endswith("ValueError: bad\nvalue")
