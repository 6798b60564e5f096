"""Host id ranges of unprivileged contexts (libvserver/native/idmap.py): pure arithmetic."""

from __future__ import annotations

import pytest

from libvserver import InvalidSpec
from libvserver.api import MAX_XID, MIN_XID
from libvserver.native import idmap


@pytest.mark.parametrize("base", [idmap.DEFAULT_BASE, 7 << 16, 40000 << 16, 65534 << 16])
def test_every_xid_gets_its_own_range_above_host_ids_and_below_2_32(base):
    starts = [idmap.range_for(x, base).host for x in range(MIN_XID, MAX_XID + 1)]
    assert len(set(starts)) == len(starts)
    assert min(starts) >= 2 * 65536  # host ids 0..131071 are never given out
    assert max(starts) + 65535 < (1 << 32) - 1  # (uid_t) -1 is never mapped
    assert all(s % 65536 == 0 for s in starts)


def test_default_base_puts_xid_n_at_n_shifted_16():
    assert idmap.range_for(2).host == 2 << 16
    assert idmap.range_for(4242).host == 4242 << 16
    assert idmap.range_for(MAX_XID).host == MAX_XID << 16


def test_another_base_moves_the_window():
    assert idmap.range_for(2, 1000 << 16).host == 1000 << 16
    assert idmap.range_for(100, 1000 << 16).host == 1098 << 16


@pytest.mark.parametrize("bad", [0, 65536, 131072 + 1, 65535 << 16, -65536, "131072"])
def test_bad_base_is_refused_with_the_accepted_range(bad):
    with pytest.raises(InvalidSpec, match="multiple of 65536 between 131072"):
        idmap.check_base(bad)


def test_a_range_holding_a_host_user_is_reported(tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text("root:x:0:0::/root:/bin/sh\nsvc:x:262150:262150::/:/bin/false\n")
    assert idmap.host_ids_in(idmap.range_for(4), (str(pw),)) == [f"{pw}:svc"]
    assert idmap.host_ids_in(idmap.range_for(5), (str(pw),)) == []


def test_map_line_maps_root_to_the_range():
    r = idmap.range_for(9)
    assert r.map_line() == f"0 {9 << 16} 65536\n"
    assert r.to_host(0) == 9 << 16 and r.to_host(65535) == (9 << 16) + 65535
    assert r.to_host(65536) == -1
