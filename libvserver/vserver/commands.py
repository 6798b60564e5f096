"""Categories, commands and data structures of the Linux-VServer 2.2 syscall interface.

Values as defined by the kernel patch's ``include/linux/vserver/*_cmd.h`` (mirrored in
util-vserver's ``kernel/`` directory): switch.h, context_cmd.h, cvirt_cmd.h, limit_cmd.h,
sched_cmd.h, network_cmd.h, dlimit_cmd.h, signal_cmd.h.  Only what vcd uses is here.
"""

from __future__ import annotations

import ctypes

from .syscall import vc_cmd


# --- categories (switch.h) ------------------------------------------------------------------
VC_CAT_VERSION = 0
VC_CAT_VSETUP = 1
VC_CAT_VHOST = 2
VC_CAT_VPROC = 9
VC_CAT_PROCALT = 10
VC_CAT_PROCMIG = 11
VC_CAT_PROCTRL = 12
VC_CAT_SCHED = 14
VC_CAT_VNET = 25
VC_CAT_NETALT = 26
VC_CAT_NETMIG = 27
VC_CAT_NETCTRL = 28
VC_CAT_DLIMIT = 36
VC_CAT_INODE = 38
VC_CAT_VSTAT = 40
VC_CAT_VINFO = 46
VC_CAT_EVENT = 48
VC_CAT_FLAGS = 52
VC_CAT_DEBUG = 56
VC_CAT_RLIMIT = 60
VC_CAT_SYSTEST = 61
VC_CAT_COMPAT = 63

# --- commands -------------------------------------------------------------------------------
VCMD_get_version = vc_cmd(VC_CAT_VERSION, 0, 0)
VCMD_get_vci = vc_cmd(VC_CAT_VERSION, 1, 0)

VCMD_task_xid = vc_cmd(VC_CAT_VINFO, 1, 0)
VCMD_task_nid = vc_cmd(VC_CAT_VINFO, 2, 0)
VCMD_vx_info = vc_cmd(VC_CAT_VINFO, 5, 0)
VCMD_nx_info = vc_cmd(VC_CAT_VINFO, 6, 0)
VCMD_ctx_stat = vc_cmd(VC_CAT_VSTAT, 0, 0)

VCMD_ctx_create = vc_cmd(VC_CAT_VPROC, 1, 2)
VCMD_ctx_migrate = vc_cmd(VC_CAT_PROCMIG, 1, 2)

VCMD_get_cflags = vc_cmd(VC_CAT_FLAGS, 1, 0)
VCMD_set_cflags = vc_cmd(VC_CAT_FLAGS, 2, 0)
VCMD_get_ccaps = vc_cmd(VC_CAT_FLAGS, 3, 1)
VCMD_set_ccaps = vc_cmd(VC_CAT_FLAGS, 4, 1)
VCMD_get_nflags = vc_cmd(VC_CAT_FLAGS, 5, 0)
VCMD_set_nflags = vc_cmd(VC_CAT_FLAGS, 6, 0)
VCMD_get_ncaps = vc_cmd(VC_CAT_FLAGS, 7, 0)
VCMD_set_ncaps = vc_cmd(VC_CAT_FLAGS, 8, 0)
VCMD_get_bcaps = vc_cmd(VC_CAT_FLAGS, 9, 0)
VCMD_set_bcaps = vc_cmd(VC_CAT_FLAGS, 10, 0)

VCMD_set_vhi_name = vc_cmd(VC_CAT_VHOST, 1, 0)
VCMD_get_vhi_name = vc_cmd(VC_CAT_VHOST, 2, 0)

VCMD_get_rlimit = vc_cmd(VC_CAT_RLIMIT, 1, 0)
VCMD_set_rlimit = vc_cmd(VC_CAT_RLIMIT, 2, 0)
VCMD_get_rlimit_mask = vc_cmd(VC_CAT_RLIMIT, 3, 0)

VCMD_set_sched_v2 = vc_cmd(VC_CAT_SCHED, 1, 2)
VCMD_set_sched_v3 = vc_cmd(VC_CAT_SCHED, 1, 3)
VCMD_set_sched = vc_cmd(VC_CAT_SCHED, 1, 4)

VCMD_net_create = vc_cmd(VC_CAT_VNET, 1, 1)
VCMD_net_migrate = vc_cmd(VC_CAT_NETMIG, 1, 0)
VCMD_net_add = vc_cmd(VC_CAT_NETALT, 1, 0)
VCMD_net_remove = vc_cmd(VC_CAT_NETALT, 2, 0)

VCMD_add_dlimit = vc_cmd(VC_CAT_DLIMIT, 1, 0)
VCMD_rem_dlimit = vc_cmd(VC_CAT_DLIMIT, 2, 0)
VCMD_set_dlimit = vc_cmd(VC_CAT_DLIMIT, 5, 0)
VCMD_get_dlimit = vc_cmd(VC_CAT_DLIMIT, 6, 0)

VCMD_ctx_kill = vc_cmd(VC_CAT_PROCTRL, 1, 0)
VCMD_wait_exit = vc_cmd(VC_CAT_EVENT, 99, 0)

# --- constants ------------------------------------------------------------------------------
CRLIM_UNSET = 0
CRLIM_INFINITY = (1 << 64) - 1
CRLIM_KEEP = (1 << 64) - 2

VXSM_FILL_RATE = 0x0001
VXSM_INTERVAL = 0x0002
VXSM_FILL_RATE2 = 0x0004
VXSM_INTERVAL2 = 0x0008
VXSM_TOKENS = 0x0010
VXSM_TOKENS_MIN = 0x0020
VXSM_TOKENS_MAX = 0x0040
VXSM_PRIO_BIAS = 0x0100
VXSM_IDLE_TIME = 0x0200
VXSM_FORCE = 0x0400
VXSM_CPU_ID = 0x1000
VXSM_BUCKET_ID = 0x2000

# vhi_name_field (cvirt_cmd.h)
VHIN = {"CONTEXT": 0, "SYSNAME": 1, "NODENAME": 2, "RELEASE": 3, "VERSION": 4, "MACHINE": 5,
        "DOMAINNAME": 6}

# Context flags (context.h, VXF_*), as vcd's flag names.
VXF = {
    "INFO_PRIVATE": 0x00000008, "INFO_INIT": 0x00000010, "INFO_HIDE": 0x00000020,
    "SCHED_HARD": 0x00000100, "SCHED_PRIO": 0x00000200, "SCHED_PAUSE": 0x00000400,
    "VIRT_MEM": 0x00010000, "VIRT_UPTIME": 0x00020000, "VIRT_CPU": 0x00040000,
    "VIRT_LOAD": 0x00080000, "VIRT_TIME": 0x00100000, "HIDE_MOUNT": 0x01000000,
    "HIDE_NETIF": 0x02000000, "HIDE_VINFO": 0x04000000, "FORK_RSS": 1 << 48,
}
VXF_STATE_SETUP = 1 << 32
VXF_STATE_INIT = 1 << 33
VXF_STATE_ADMIN = 1 << 34

# Context capabilities (context.h, VXC_*).
VXC = {
    "SET_UTSNAME": 0x00000001, "SET_RLIMIT": 0x00000002, "RAW_ICMP": 0x00000100,
    "SYSLOG": 0x00001000, "SECURE_MOUNT": 0x00010000, "SECURE_REMOUNT": 0x00020000,
    "BINARY_MOUNT": 0x00040000, "QUOTA_CTL": 0x00100000, "ADMIN_MAPPER": 0x00200000,
    "ADMIN_CLOOP": 0x00400000,
}

# Resource ids of the vserver rlimit commands: Linux RLIMIT_* numbers, then the
# vserver-only ones (limit_def.h VLIMIT_*).
RLIMIT_IDS = {
    "CPU": 0, "FSIZE": 1, "DATA": 2, "STACK": 3, "CORE": 4, "RSS": 5, "NPROC": 6, "NOFILE": 7,
    "MEMLOCK": 8, "AS": 9, "LOCKS": 10, "SIGPENDING": 11, "MSGQUEUE": 12,
    "NSOCK": 16, "OPENFD": 17, "ANON": 18, "SHMEM": 19, "SEMARY": 20, "NSEMS": 21,
    "DENTRY": 22, "MAPPED": 23,
}

NXA_TYPE_IPV4 = 1
NXA_TYPE_IPV6 = 2
NXA_MOD_BCAST = 1 << 8

# dlimit.h; the v0 structure has 32-bit fields, so the kernel compares against the low half
CDLIM_UNSET = 0
CDLIM_INFINITY = (1 << 64) - 1
CDLIM_KEEP = (1 << 64) - 2
CDLIM_KEEP32 = CDLIM_KEEP & 0xFFFFFFFF


# --- data structures ------------------------------------------------------------------------
class vcmd_vx_info_v0(ctypes.Structure):
    _fields_ = [("xid", ctypes.c_uint32), ("initpid", ctypes.c_uint32)]


class vcmd_nx_info_v0(ctypes.Structure):
    _fields_ = [("nid", ctypes.c_uint32)]


class vcmd_ctx_stat_v0(ctypes.Structure):
    _fields_ = [("usecnt", ctypes.c_uint32), ("tasks", ctypes.c_uint32)]


class vcmd_ctx_create(ctypes.Structure):
    _fields_ = [("flagword", ctypes.c_uint64)]


class vcmd_ctx_migrate(ctypes.Structure):
    _fields_ = [("flagword", ctypes.c_uint64)]


class vcmd_ctx_flags_v0(ctypes.Structure):
    _fields_ = [("flagword", ctypes.c_uint64), ("mask", ctypes.c_uint64)]


class vcmd_ctx_caps_v1(ctypes.Structure):
    _fields_ = [("ccaps", ctypes.c_uint64), ("cmask", ctypes.c_uint64)]


class vcmd_bcaps(ctypes.Structure):
    _fields_ = [("bcaps", ctypes.c_uint64), ("bmask", ctypes.c_uint64)]


class vcmd_vhi_name_v0(ctypes.Structure):
    _fields_ = [("field", ctypes.c_uint32), ("name", ctypes.c_char * 65)]


class vcmd_ctx_rlimit_v0(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("minimum", ctypes.c_uint64),
                ("softlimit", ctypes.c_uint64), ("maximum", ctypes.c_uint64)]


class vcmd_ctx_rlimit_mask_v0(ctypes.Structure):
    _fields_ = [("minimum", ctypes.c_uint32), ("softlimit", ctypes.c_uint32),
                ("maximum", ctypes.c_uint32)]


class vcmd_set_sched_v4(ctypes.Structure):
    _fields_ = [("set_mask", ctypes.c_uint32), ("fill_rate", ctypes.c_int32),
                ("interval", ctypes.c_int32), ("tokens", ctypes.c_int32),
                ("tokens_min", ctypes.c_int32), ("tokens_max", ctypes.c_int32),
                ("prio_bias", ctypes.c_int32), ("cpu_id", ctypes.c_int32),
                ("bucket_id", ctypes.c_int32)]


class vcmd_net_create(ctypes.Structure):
    _fields_ = [("flagword", ctypes.c_uint64)]


class vcmd_net_addr_v0(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint16), ("count", ctypes.c_uint16),
                ("ip", ctypes.c_uint32 * 4), ("mask", ctypes.c_uint32 * 4)]


class vcmd_ctx_dlimit_base_v0(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("flags", ctypes.c_uint32)]


class vcmd_ctx_dlimit_v0(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("space_used", ctypes.c_uint32),
                ("space_total", ctypes.c_uint32), ("inodes_used", ctypes.c_uint32),
                ("inodes_total", ctypes.c_uint32), ("reserved", ctypes.c_uint32),
                ("flags", ctypes.c_uint32)]


class vcmd_ctx_kill_v0(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_int32), ("sig", ctypes.c_int32)]


class vcmd_wait_exit_v0(ctypes.Structure):
    _fields_ = [("reboot_cmd", ctypes.c_int32), ("exit_code", ctypes.c_int32)]
