"""The typed interface: spec validation and its JSON round trip to the supervisor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from libvserver import (BCAPS, CCAPS, FLAGS, LIMIT_TYPES, ContextSpec, CpuSet, DiskLimit,
                        InvalidSpec, Limit, Mount, NetAddr, Sched)

limits_st = st.lists(st.builds(Limit, st.sampled_from(LIMIT_TYPES),
                               st.none() | st.integers(0, 2**40), st.none() | st.integers(0, 2**40)),
                     max_size=5)
spec_st = st.builds(
    ContextSpec, xid=st.integers(2, 65534), name=st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True),
    vdir=st.just(Path("/vservers/x")), init=st.just(["/sbin/init"]),
    bcaps=st.sets(st.sampled_from(BCAPS)), ccaps=st.sets(st.sampled_from(CCAPS)),
    flags=st.sets(st.sampled_from(FLAGS)), limits=limits_st,
    sched=st.lists(st.builds(Sched, st.integers(-1, 3), st.integers(0, 100), st.integers(0, 100)),
                   max_size=2),
    cpuset=st.none() | st.builds(CpuSet, st.just("0-1"), st.just("0"), st.booleans()),
    uname=st.dictionaries(st.sampled_from(["NODENAME", "DOMAINNAME", "RELEASE"]),
                          st.text("abc", max_size=10)),
    mounts=st.lists(st.builds(Mount, st.just("tmpfs"), st.just("/tmp"), st.just("tmpfs"),
                              st.just("size=1m")), max_size=2),
    addresses=st.lists(st.builds(NetAddr, st.just("10.0.0.2"), st.just("255.255.255.0")),
                       max_size=2),
    broadcast=st.none() | st.just("10.0.0.255"),
    disk_limit=st.none() | st.builds(DiskLimit, st.integers(1, 10**6), st.integers(1, 10**5),
                                     st.integers(0, 50)))


@given(spec_st)
def test_spec_survives_the_json_round_trip(spec):
    spec.validate()
    again = ContextSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


def _spec(**kw) -> ContextSpec:
    base = dict(xid=10, name="web1", vdir=Path("/vservers/web1"))
    base.update(kw)
    return ContextSpec(**base)


@pytest.mark.parametrize("kw,match", [
    (dict(xid=1), "xid"), (dict(xid=65535), "xid"), (dict(name="-x"), "name"),
    (dict(name="a" * 65), "name"), (dict(vdir=Path("rel")), "absolute"),
    (dict(init=[]), "init"), (dict(init=["sbin/init"]), "absolute"),
    (dict(bcaps={"CAP_CHOWN"}), "bcap"), (dict(ccaps={"FOO"}), "ccap"),
    (dict(flags={"VIRT_EVERYTHING"}), "flag"), (dict(limits=[Limit("RAM", 1, 2)]), "limit"),
    (dict(limits=[Limit("RSS", -1, 2)]), "RSS"), (dict(uname={"HOST": "x"}), "uname"),
    (dict(uname={"NODENAME": "x" * 65}), "64"), (dict(disk_limit=DiskLimit(0, 10)), "disk"),
])
def test_invalid_specs_are_refused_with_the_bad_value_named(kw, match):
    with pytest.raises(InvalidSpec, match=match):
        _spec(**kw).validate()


def test_default_spec_is_valid():
    _spec().validate()
