"""Slow clients and a flood from one address must not starve anybody else."""
from __future__ import annotations

from engine import flood, slow_clients


def test_one_byte_a_second_clients_cannot_starve_the_worker_pool(torture_vcd) -> None:
    daemon = torture_vcd(workers=2, timeout=6.0)
    report = slow_clients(daemon, count=64, seconds=4.0)  # 32 per worker
    print(f"\nslow clients: {report.served} calls served meanwhile, worst {report.worst_latency:.3f}s, "
          f"{report.slow_dropped}/{report.slow_total} slow ones dropped at the deadline")
    assert report.ok, (report.failures, report.served)
    assert report.slow_dropped == report.slow_total, report
    assert "timed out" in daemon.log()


def test_a_flood_from_one_address_does_not_lock_out_another(torture_vcd) -> None:
    daemon = torture_vcd(workers=2)
    report = flood(daemon, seconds=6.0, held_connections=600)
    print(f"\nflood: victim {report.served} served, worst {report.worst_latency:.3f}s; {report.extra}")
    assert report.ok, (report.failures, report.extra)
    # the attacker was throttled (per address: the victim, served every time, never was),
    # and its connections beyond its share were refused
    assert report.extra["attacker_throttled"] > 0, report.extra
    assert report.extra["held_cut_by_server"] > 0, report.extra
