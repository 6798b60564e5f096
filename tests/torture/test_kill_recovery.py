"""Bounded form of the SIGKILL torture (full form: bench/torture.py --kills 100)."""
from __future__ import annotations

from engine import kill_recovery

KILLS = 10


def test_sigkill_during_writes_loses_no_acknowledged_write_and_keeps_vxdb_intact(torture_vcd) -> None:
    daemon = torture_vcd()
    report = kill_recovery(daemon, KILLS, writers=4, seed=2)
    print(f"\nkills: {report.kills} ({report.kills_during_writes} with a write in flight), "
          f"{report.acknowledged} acknowledged writes checked")
    assert report.kills == KILLS
    assert not report.integrity, report.integrity
    assert not report.missing, report.missing[:20]
    assert not report.unexpected, report.unexpected[:20]
    assert report.acknowledged > 0 and report.kills_during_writes > 0
    assert daemon.proxy().vcd.login() is None
