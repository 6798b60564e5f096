"""Bounded form of the fuzzer (full form: bench/torture.py --fuzz N)."""
from __future__ import annotations

from api_helpers import create_vserver
from engine import fuzz

EXAMPLES = 400  # per generator: calls and mutated bodies


def test_fuzzed_calls_and_mutated_bodies_never_crash_or_leak_a_traceback(torture_vcd) -> None:
    daemon = torture_vcd(workers=2)
    vserver = create_vserver(daemon, "fz1")
    report = fuzz(daemon, EXAMPLES, seed=3, vserver=vserver)
    print(f"\nfuzz: {report.cases} cases, HTTP {dict(report.statuses)}, faults {dict(report.faults)}")
    assert report.cases >= EXAMPLES
    assert not report.failures, report.failures[:10]
    assert daemon.proxy().vcd.login() is None  # still answering
    assert "Traceback" not in daemon.log()
