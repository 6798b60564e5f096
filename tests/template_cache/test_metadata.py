"""Template metadata: TOML round trip, DESIGN.md defaults, and errors that name the bad key."""

from __future__ import annotations

import pytest

from templates.errors import MetadataError
from templates.metadata import (DEFAULT_BCAPS, DEFAULT_CCAPS, DEFAULT_FLAGS, LimitSpec, Mount,
                                TemplateMeta)
from templates.store import TemplateStore
from templates import busybox


def test_round_trip_keeps_every_field_including_awkward_strings(tmp_path):
    meta = TemplateMeta(
        name="web",
        description='Debian "web" \\ server\nline two\ttab \x01 ünïcode',
        init="/sbin/my init", halt="/sbin/halt -f", reboot="/sbin/reboot", timeout=42,
        mounts=[Mount("none", "/tmp", "tmpfs", "size=16m,mode=1777"),
                Mount("/srv/data", "/data", "auto", "defaults")],
        bcaps=["CHOWN", "NET_RAW", "SYS_ADMIN"], ccaps=["SYSLOG"], flags=["VIRT_TIME", "HIDE_MOUNT"],
        limits=[LimitSpec("NPROC", 100, 200), LimitSpec("RSS", "inf", "inf"),
                LimitSpec("AS", 2**63, 2**64 - 2)],
    )
    meta.save(tmp_path / "web.conf")
    assert TemplateMeta.load(tmp_path / "web.conf") == meta


def test_absent_file_and_absent_keys_give_design_defaults(tmp_path):
    (tmp_path / "empty.conf").write_text("")
    for meta in (TemplateMeta.load(tmp_path / "empty.conf"), TemplateMeta(name="empty")):
        assert (meta.init, meta.halt, meta.reboot, meta.timeout) == (
            "/sbin/init", "/sbin/halt", "/sbin/reboot", 15)
        assert meta.bcaps == DEFAULT_BCAPS and meta.ccaps == DEFAULT_CCAPS
        assert meta.flags == DEFAULT_FLAGS and meta.mounts == [] and meta.limits == []
    assert "SYS_ADMIN" not in DEFAULT_BCAPS


def test_limit_max_of_two_to_the_64_minus_one_means_inf(tmp_path):
    (tmp_path / "t.conf").write_text('limits = [{type = "NOFILE", soft = "1024", max = "18446744073709551615"}]\n')
    assert TemplateMeta.load(tmp_path / "t.conf").limits == [LimitSpec("NOFILE", 1024, "inf")]


@pytest.mark.parametrize("text, key", [
    ('colour = "blue"\n', "colour"),
    ('bcaps = ["CHOWN", "FLY"]\n', "bcaps"),
    ('ccaps = "SYSLOG"\n', "ccaps"),
    ('flags = ["virt_mem"]\n', "flags"),
    ('timeout = "15"\n', "timeout"),
    ('timeout = 0\n', "timeout"),
    ('init = "sbin/init"\n', "init"),
    ('description = 3\n', "description"),
    ('name = "other"\n', "name"),
    ('[[limits]]\ntype = "BOGUS"\n', "limits[0].type"),
    ('[[limits]]\ntype = "NPROC"\nsoft = 10\nmax = 5\n', "limits[0].soft"),
    ('[[limits]]\ntype = "NPROC"\nmax = -1\n', "limits[0].max"),
    ('[[limits]]\ntype = "NPROC"\nhard = 1\n', "limits[0].hard"),
    ('[[mounts]]\nsrc = "none"\n', "mounts[0].dst"),
    ('[[mounts]]\ndst = "../etc"\n', "mounts[0].dst"),
])
def test_invalid_value_is_an_error_naming_the_key(tmp_path, text, key):
    (tmp_path / "t.conf").write_text(text)
    with pytest.raises(MetadataError) as e:
        TemplateMeta.load(tmp_path / "t.conf")
    assert f"key {key!r}" in str(e.value)
    assert str(tmp_path / "t.conf") in str(e.value)


def test_invalid_toml_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "t.conf").write_text("description = \n")
    with pytest.raises(MetadataError, match="not valid TOML"):
        TemplateMeta.load(tmp_path / "t.conf")


def test_store_lists_a_template_with_bad_metadata_but_get_refuses_it(tmp_path):
    busybox.build("good", tmp_path)
    busybox.build("bad", tmp_path)
    (tmp_path / "bad.conf").write_text('bcaps = ["NOPE"]\n')
    store = TemplateStore(tmp_path)
    rows = {t.name: t for t in store.list()}
    assert rows["good"].error is None and "BusyBox" in rows["good"].description
    assert "bcaps" in rows["bad"].error
    with pytest.raises(MetadataError, match="bcaps"):
        store.get("bad")
