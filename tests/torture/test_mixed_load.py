"""Bounded form of the load torture (full form: bench/torture.py)."""
from __future__ import annotations

from engine import mixed_load

CLIENTS = 16
SECONDS = 10.0


def test_mixed_reads_writes_starts_and_stops_give_no_unexpected_fault(torture_vcd) -> None:
    daemon = torture_vcd()
    report = mixed_load(daemon, CLIENTS, SECONDS, runtime_vservers=2, data_vservers=4, seed=1)
    print(f"\nmixed load: {report.tally.requests} requests, faults {dict(report.tally.faults)}, "
          f"ops {dict(report.ops)}, {report.writes_checked} writes checked")
    assert report.tally.unexpected == 0, report.tally.notes
    assert not report.writes_missing, report.writes_missing[:20]
    assert report.ops["vx.start"] and report.ops["write"] and report.ops["read"]
    # nothing the daemon hid from the client either
    assert "Traceback" not in daemon.log()
