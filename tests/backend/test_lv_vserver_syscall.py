"""The sys_vserver binding: command words and structure layouts as the 2.2 headers define them.

Expected values are written out as the headers' numbers (util-vserver kernel/*.h,
Linux-VServer 2.2), not recomputed with our own vc_cmd, so an encoding bug shows.
"""

from __future__ import annotations

import ctypes
import errno

import pytest
from hypothesis import given, strategies as st

from libvserver import SyscallError
from libvserver.vserver import commands as c
from libvserver.vserver import syscall as s


def VC_CMD(cat: int, cmd: int, ver: int) -> int:  # the C macro, transcribed independently
    return ((cat & 0x3F) << 24) | ((cmd & 0xFF) << 16) | (ver & 0xFFF)


@pytest.mark.parametrize("name,cat,cmd,ver", [
    ("VCMD_get_version", 0, 0, 0), ("VCMD_get_vci", 0, 1, 0),
    ("VCMD_ctx_create", 9, 1, 2), ("VCMD_ctx_migrate", 11, 1, 2),
    ("VCMD_task_xid", 46, 1, 0), ("VCMD_vx_info", 46, 5, 0), ("VCMD_ctx_stat", 40, 0, 0),
    ("VCMD_get_cflags", 52, 1, 0), ("VCMD_set_cflags", 52, 2, 0),
    ("VCMD_get_ccaps", 52, 3, 1), ("VCMD_set_ccaps", 52, 4, 1),
    ("VCMD_get_bcaps", 52, 9, 0), ("VCMD_set_bcaps", 52, 10, 0),
    ("VCMD_set_vhi_name", 2, 1, 0), ("VCMD_get_vhi_name", 2, 2, 0),
    ("VCMD_get_rlimit", 60, 1, 0), ("VCMD_set_rlimit", 60, 2, 0),
    ("VCMD_get_rlimit_mask", 60, 3, 0), ("VCMD_set_sched", 14, 1, 4),
    ("VCMD_net_create", 25, 1, 1), ("VCMD_net_migrate", 27, 1, 0),
    ("VCMD_net_add", 26, 1, 0), ("VCMD_net_remove", 26, 2, 0),
    ("VCMD_add_dlimit", 36, 1, 0), ("VCMD_rem_dlimit", 36, 2, 0),
    ("VCMD_set_dlimit", 36, 5, 0), ("VCMD_get_dlimit", 36, 6, 0),
    ("VCMD_ctx_kill", 12, 1, 0), ("VCMD_wait_exit", 48, 99, 0),
])
def test_command_words_match_the_headers(name, cat, cmd, ver):
    word = getattr(c, name)
    assert word == VC_CMD(cat, cmd, ver)
    assert (s.vc_category(word), s.vc_command(word), s.vc_version(word)) == (cat, cmd, ver)


def test_known_literal_encodings():
    # spot values computed by hand from the bit layout of manual section 3.4
    assert c.VCMD_ctx_create == 0x09010002
    assert c.VCMD_set_rlimit == 0x3C020000
    assert c.VCMD_wait_exit == 0x30630000
    assert c.VCMD_set_bcaps == 0x340A0000


@given(cat=st.integers(0, 63), cmd=st.integers(0, 255), ver=st.integers(0, 4095))
def test_encoding_round_trips_and_keeps_reserved_bits_clear(cat, cmd, ver):
    word = s.vc_cmd(cat, cmd, ver)
    assert (s.vc_category(word), s.vc_command(word), s.vc_version(word)) == (cat, cmd, ver)
    assert word & 0xC000F000 == 0  # bits 12-15 and 30-31 are reserved


@pytest.mark.parametrize("struct,size,offsets", [
    (c.vcmd_ctx_create, 8, {"flagword": 0}),
    (c.vcmd_ctx_flags_v0, 16, {"flagword": 0, "mask": 8}),
    (c.vcmd_ctx_caps_v1, 16, {"ccaps": 0, "cmask": 8}),
    (c.vcmd_bcaps, 16, {"bcaps": 0, "bmask": 8}),
    (c.vcmd_vhi_name_v0, 72, {"field": 0, "name": 4}),
    # uint32 id then three uint64: natural x86_64 alignment pads id to 8 bytes
    (c.vcmd_ctx_rlimit_v0, 32, {"id": 0, "minimum": 8, "softlimit": 16, "maximum": 24}),
    (c.vcmd_ctx_rlimit_mask_v0, 12, {"minimum": 0, "softlimit": 4, "maximum": 8}),
    (c.vcmd_set_sched_v4, 36, {"set_mask": 0, "fill_rate": 4, "interval": 8, "tokens": 12,
                               "tokens_min": 16, "tokens_max": 20, "prio_bias": 24,
                               "cpu_id": 28, "bucket_id": 32}),
    (c.vcmd_net_addr_v0, 36, {"type": 0, "count": 2, "ip": 4, "mask": 20}),
    (c.vcmd_ctx_kill_v0, 8, {"pid": 0, "sig": 4}),
    (c.vcmd_wait_exit_v0, 8, {"reboot_cmd": 0, "exit_code": 4}),
    (c.vcmd_vx_info_v0, 8, {"xid": 0, "initpid": 4}),
    (c.vcmd_ctx_dlimit_v0, 32, {"name": 0, "space_used": 8, "space_total": 12,
                                "inodes_used": 16, "inodes_total": 20, "reserved": 24,
                                "flags": 28}),
])
def test_structure_layouts(struct, size, offsets):
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("layouts are written for a 64-bit ABI")
    assert ctypes.sizeof(struct) == size
    for field, off in offsets.items():
        assert getattr(struct, field).offset == off


def test_flag_ccap_and_limit_values():
    assert c.VXF["VIRT_UPTIME"] == 0x00020000 and c.VXF["HIDE_NETIF"] == 0x02000000
    assert c.VXF["FORK_RSS"] == 1 << 48
    assert c.VXC["SET_UTSNAME"] == 1 and c.VXC["RAW_ICMP"] == 0x100
    assert c.VXC["ADMIN_CLOOP"] == 0x00400000
    assert c.RLIMIT_IDS["NSOCK"] == 16 and c.RLIMIT_IDS["MAPPED"] == 23
    assert c.VHIN["NODENAME"] == 2 and c.VHIN["DOMAINNAME"] == 6
    assert c.CRLIM_INFINITY == 2**64 - 1


def test_syscall_numbers_per_architecture():
    assert s.syscall_number("x86_64") == 236
    assert s.syscall_number("i686") == 273
    assert s.syscall_number("armv7l") == 313
    assert s.syscall_number("aarch64") is None


def test_enosys_on_a_stock_kernel_is_detected_cleanly():
    if s.syscall_number() is None:
        pytest.skip("this architecture has no sys_vserver number")
    r = s.raw(c.VCMD_get_version, 0, None)
    if r != -errno.ENOSYS:
        pytest.skip("this kernel implements sys_vserver")
    assert s.available() is False
    with pytest.raises(SyscallError) as exc:
        s.call("ctx_create", c.VCMD_ctx_create, 42, c.vcmd_ctx_create(0))
    assert exc.value.errno == errno.ENOSYS
    assert "ctx_create" in str(exc.value) and "xid 42" in str(exc.value)


def test_vserver_backend_fails_with_enosys_naming_the_command_on_a_stock_kernel():
    if s.available():
        pytest.skip("this kernel implements sys_vserver")
    from libvserver.vserver.backend import VserverBackend
    b = VserverBackend()
    assert b.name == "vserver"
    with pytest.raises(SyscallError, match="vx_info") as exc:
        b.is_running(42)
    assert exc.value.errno == errno.ENOSYS


def test_vserver_backend_limits_convert_kib_to_pages():
    from libvserver.vserver.backend import PAGE_KIB, _crlim
    assert _crlim(None, True) == c.CRLIM_INFINITY
    assert _crlim(1024 * PAGE_KIB, True) == 1024
    assert _crlim(77, False) == 77
