"""The systemd units in contrib/systemd: accepted by systemd's own checker, and they
say what operators rely on (stopping vcd never kills vservers)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vcd.config import DEFAULT_CONFIG
from vcdtest import REPO
from vstatd.config import KEYS as VSTATD_KEYS

UNITS = REPO / "contrib" / "systemd"
BIN = Path(shutil.which("vcd") or REPO / ".venv" / "bin" / "vcd").parent


def settings(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def installed_copy(unit: Path, into: Path, edit: tuple[str, str] | None = None) -> Path:
    """The unit as installed here: ExecStart= must name programs that exist for verify."""
    text = unit.read_text().replace("/usr/local/bin/", f"{BIN}/")
    if edit:
        assert edit[0] in text
        text = text.replace(*edit)
    copy = into / unit.name
    copy.write_text(text)
    return copy


def verify(*units: Path) -> str:
    result = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True,
                            text=True, timeout=60)
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}".strip()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    assert (BIN / "vcd").exists() and (BIN / "vstatd").exists()
    copies = [installed_copy(UNITS / name, tmp_path) for name in ("vcd.service", "vstatd.service")]
    assert verify(*copies) == "exit 0"
    # the checker does complain about a broken unit, so the silence above means something
    broken = tmp_path / "broken"
    broken.mkdir()
    bad = installed_copy(UNITS / "vcd.service", broken, ("Type=notify", "Type=notfy"))
    assert "notfy" in verify(bad)


def test_stopping_vcd_signals_only_the_daemon_and_pidfiles_match_the_defaults() -> None:
    vcd = settings(UNITS / "vcd.service")
    vstatd = settings(UNITS / "vstatd.service")
    assert vcd["KillMode"] == ["process"]
    # vcd tells systemd itself when it serves (READY=1, tests/test_reboot_reliability.py)
    assert vcd["Type"] == ["notify"] and vstatd["Type"] == ["forking"]
    assert vstatd["PIDFile"] == [{k.name: k.default for k in VSTATD_KEYS}["pidfile"]]
    # no -c: both read the default config (/etc/vcd/vcd.conf), as the comments in the units say
    assert vcd["ExecStart"] == ["/usr/local/bin/vcd -f"]
    assert vstatd["ExecStart"] == ["/usr/local/bin/vstatd"]
    assert str(DEFAULT_CONFIG) in (UNITS / "vcd.service").read_text()
    assert any("--check-config" in line for line in vcd["ExecReload"])
    assert vcd["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
