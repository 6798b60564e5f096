"""The backend for a Linux-VServer 2.2 kernel: every setting is a sys_vserver command.

The kernel itself enforces bcaps, ccaps, flags, limits, the scheduler, uname,
network addresses and disk limits, and calls vshelper on reboot/halt, so no
supervisor is needed here.  This code cannot run on a stock kernel (ENOSYS);
its command words and structures are tested against the 2.2 headers, the
mount handling is shared with the native backend.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import struct
import time
from typing import Callable
from pathlib import Path

from ..api import (CAP_NUMBERS, ENFORCED, MEMORY_LIMIT_TYPES, AlreadyRunning, Backend,
                   ContextSpec, ContextStat, ExecResult, InitMissing, InvalidSpec, LimitUsage,
                   NotRunning, StartError, SyscallError, not_enforced)
from ..native import enter, rootfs
from ..native.namespaces import CLONE_NEWNS, MS_REC, MS_SLAVE, mount, unshare
from . import commands as c
from .syscall import call

PAGE_KIB = os.sysconf("SC_PAGESIZE") // 1024
PROC_VIRTUAL = Path("/proc/virtual")
VCMD_enter_namespace = c.vc_cmd(c.VC_CAT_PROCALT, 1, 0)
VCMD_set_namespace = c.vc_cmd(c.VC_CAT_PROCALT, 3, 0)
INIT_ENV = {"PATH": "/sbin:/bin:/usr/sbin:/usr/bin", "TERM": "linux"}


def _crlim(v: int | None, mult_kib_to_pages: bool) -> int:
    if v is None:
        return c.CRLIM_INFINITY
    return max(1, v // PAGE_KIB) if mult_kib_to_pages else v


def _ipv4(addr: str) -> int:
    # the kernel compares addresses in network byte order, as stored by inet_aton
    return struct.unpack("=I", socket.inet_aton(addr))[0]


class VserverBackend(Backend):
    name = "vserver"

    def __init__(self, state_dir: str | Path = "/run/vcd", cgroup_parent: str = "vcd",
                 notify_argv: list[str] | None = None,
                 image_dir: str | Path = "/var/lib/vcd/images", **_ignored) -> None:
        # cgroup_parent, notify_argv (vshelper is called by the kernel) and image_dir
        # (dlimits are kernel quotas) have no use on this kernel.
        self.state_dir = Path(state_dir)

    # --- helpers --------------------------------------------------------------------------

    def _info(self, xid: int) -> c.vcmd_vx_info_v0 | None:
        data = c.vcmd_vx_info_v0()
        try:
            call("vx_info", c.VCMD_vx_info, xid, data)
        except SyscallError as e:
            if e.errno == errno.ESRCH:
                return None
            raise
        return data

    def _setup(self, spec: ContextSpec) -> None:
        """In the child that becomes init: create and configure the context, then enter it."""
        xid = spec.xid
        flags = sum(c.VXF[f] for f in spec.flags if f in c.VXF)
        call("ctx_create", c.VCMD_ctx_create, xid, c.vcmd_ctx_create(flags | c.VXF_STATE_SETUP
                                                                     | c.VXF_STATE_INIT))
        bcaps = sum(1 << CAP_NUMBERS[b] for b in spec.bcaps)
        call("set_bcaps", c.VCMD_set_bcaps, xid, c.vcmd_bcaps(bcaps, (1 << 64) - 1))
        ccaps = sum(c.VXC[x] for x in spec.ccaps)
        call("set_ccaps", c.VCMD_set_ccaps, xid, c.vcmd_ctx_caps_v1(ccaps, (1 << 64) - 1))
        for lim in spec.limits:
            pages = lim.type in MEMORY_LIMIT_TYPES and lim.type != "MEMLOCK"
            data = c.vcmd_ctx_rlimit_v0(c.RLIMIT_IDS[lim.type], c.CRLIM_KEEP,
                                        _crlim(lim.soft, pages), _crlim(lim.hard, pages))
            call(f"set_rlimit {lim.type}", c.VCMD_set_rlimit, xid, data)
        for s in spec.sched:
            cpu = (c.VXSM_CPU_ID, s.cpuid) if s.cpuid >= 0 else (0, 0)
            base = c.VXSM_TOKENS_MIN | c.VXSM_TOKENS_MAX | cpu[0] | c.VXSM_FORCE
            if s.fillrate and s.interval:
                call("set_sched", c.VCMD_set_sched, xid, c.vcmd_set_sched_v4(
                    base | c.VXSM_FILL_RATE | c.VXSM_INTERVAL, s.fillrate, s.interval, 0,
                    s.tokensmin, s.tokensmax, 0, cpu[1], 0))
            if s.fillrate2 and s.interval2:
                # 2.2 carries the idle-time pair in the fill_rate/interval fields
                call("set_sched", c.VCMD_set_sched, xid, c.vcmd_set_sched_v4(
                    base | c.VXSM_FILL_RATE2 | c.VXSM_INTERVAL2 | c.VXSM_IDLE_TIME,
                    s.fillrate2, s.interval2, 0, s.tokensmin, s.tokensmax, 0, cpu[1], 0))
        for key, value in spec.uname.items():
            call(f"set_vhi_name {key}", c.VCMD_set_vhi_name, xid,
                 c.vcmd_vhi_name_v0(c.VHIN[key], value.encode()[:64]))
        if spec.addresses:
            call("net_create", c.VCMD_net_create, xid, c.vcmd_net_create(0))
            for a in spec.addresses:
                ip = (ctypes.c_uint32 * 4)(_ipv4(a.addr))
                mask = (ctypes.c_uint32 * 4)(_ipv4(a.netmask or "255.255.255.0"))
                call("net_add", c.VCMD_net_add, xid,
                     c.vcmd_net_addr_v0(c.NXA_TYPE_IPV4, 1, ip, mask))
            if spec.broadcast:
                ip = (ctypes.c_uint32 * 4)(_ipv4(spec.broadcast))
                call("net_add broadcast", c.VCMD_net_add, xid, c.vcmd_net_addr_v0(
                    c.NXA_TYPE_IPV4 | c.NXA_MOD_BCAST, 1, ip, (ctypes.c_uint32 * 4)()))
        if spec.disk_limit is not None:
            name = str(spec.vdir).encode()
            call("add_dlimit", c.VCMD_add_dlimit, xid, c.vcmd_ctx_dlimit_base_v0(name, 0))
            d = spec.disk_limit
            call("set_dlimit", c.VCMD_set_dlimit, xid, c.vcmd_ctx_dlimit_v0(
                name, c.CDLIM_KEEP32, d.space_kib, c.CDLIM_KEEP32, d.inodes, d.reserved_pct, 0))
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_SLAVE)
        rootfd = os.open(spec.vdir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for m in spec.mounts:
                rootfs.spec_mount(rootfd, m)
        finally:
            os.close(rootfd)
        call("set_namespace", VCMD_set_namespace, xid, None)
        os.chdir(spec.vdir)
        os.chroot(".")
        # leaving the setup state hands the context to its init
        call("set_cflags", c.VCMD_set_cflags, xid,
             c.vcmd_ctx_flags_v0(0, c.VXF_STATE_SETUP))

    # --- Backend --------------------------------------------------------------------------

    def start(self, spec: ContextSpec) -> None:
        spec.validate()
        if not Path(spec.vdir).is_dir():
            raise StartError(f"vdir {spec.vdir} is not a directory")
        if self._info(spec.xid) is not None:
            raise AlreadyRunning(f"context {spec.xid} is already running")
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            # double fork: init must not be the daemon's child
            try:
                os.close(err_r)
                os.setsid()
                if os.fork() > 0:
                    os._exit(0)
                self._setup(spec)
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                try:
                    os.execve(spec.init[0], spec.init, INIT_ENV)
                except OSError as e:
                    raise InitMissing(f"init {spec.init[0]} cannot be executed in "
                                      f"{spec.vdir}: {e.strerror}") from None
            except BaseException as e:
                kind = type(e).__name__ if isinstance(e, StartError) else "StartError"
                os.write(err_w, f"{kind}: {e}".encode()[:4000])
            os._exit(127)
        os.close(err_w)
        os.waitpid(pid, 0)
        chunks = []
        while chunk := os.read(err_r, 4096):
            chunks.append(chunk)
        os.close(err_r)
        if chunks:
            from .. import api
            kind, _, msg = b"".join(chunks).decode(errors="replace").partition(": ")
            cls = getattr(api, kind, StartError)
            raise (cls if isinstance(cls, type) and issubclass(cls, StartError)
                   else StartError)(msg)

    def _enter(self, xid: int):
        has_net = (PROC_VIRTUAL / str(xid)).exists() and self._has_nx(xid)

        def enter_fn() -> None:
            if has_net:
                call("net_migrate", c.VCMD_net_migrate, xid, None)
            call("enter_namespace", VCMD_enter_namespace, xid, None)
            call("ctx_migrate", c.VCMD_ctx_migrate, xid, c.vcmd_ctx_migrate(0))
        return enter_fn

    def _has_nx(self, xid: int) -> bool:
        data = c.vcmd_nx_info_v0()
        try:
            call("nx_info", c.VCMD_nx_info, xid, data)
            return True
        except SyscallError:
            return False

    def exec(self, xid: int, argv: list[str], timeout: float = 30.0,
             output_cap: int = 1 << 20, stdin: bytes | None = None,
             on_output: Callable[[bytes], None] | None = None) -> ExecResult:
        if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv):
            raise InvalidSpec("argv is empty or has a NUL byte")
        if self._info(xid) is None:
            raise NotRunning(f"context {xid} is not running")
        # the kernel applies the context's bcaps and limits: nothing to drop here
        return enter.run_entered(self._enter(xid), argv, timeout, output_cap, [], None,
                                 stdin, on_output)

    def stop(self, xid: int, halt_argv: list[str], timeout: float = 15.0) -> str:
        if self._info(xid) is None:
            raise NotRunning(f"context {xid} is not running")
        deadline = time.monotonic() + timeout
        out = (self.exec(xid, halt_argv, timeout=timeout, output_cap=64 * 1024) if halt_argv
               else ExecResult(0, b""))  # empty: init was sent its halt signal by the caller
        while self._info(xid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        end = time.monotonic() + 10
        while self._info(xid) is not None and time.monotonic() < end:
            try:
                call("ctx_kill", c.VCMD_ctx_kill, xid, c.vcmd_ctx_kill_v0(0, signal.SIGKILL))
            except SyscallError as e:
                if e.errno != errno.ESRCH:
                    raise
            time.sleep(0.05)
        return out.output.decode(errors="replace")

    def kill(self, xid: int, pid: int, sig: int) -> None:
        if self._info(xid) is None:
            raise NotRunning(f"context {xid} is not running")
        call("ctx_kill", c.VCMD_ctx_kill, xid, c.vcmd_ctx_kill_v0(pid, sig))

    def running(self) -> list[int]:
        try:
            return sorted(int(n) for n in os.listdir(PROC_VIRTUAL) if n.isdigit())
        except FileNotFoundError:
            return []

    def is_running(self, xid: int) -> bool:
        return self._info(xid) is not None

    def stat(self, xid: int, net: bool = True) -> ContextStat:
        if self._info(xid) is None:
            return ContextStat(running=False)
        st = c.vcmd_ctx_stat_v0()
        call("ctx_stat", c.VCMD_ctx_stat, xid, st)
        out = ContextStat(running=True, nproc=st.tasks)
        kv = _proc_kv(PROC_VIRTUAL / str(xid) / "cvirt")
        out.thr_total = int(kv.get("nr_threads", "0").split()[0])
        out.thr_running = int(kv.get("nr_running", "0").split()[0])
        out.thr_unintr = int(kv.get("nr_unintr", "0").split()[0])
        out.thr_onhold = int(kv.get("nr_onhold", "0").split()[0])
        out.forks_total = int(kv.get("total_forks", "0").split()[0])
        if "loadavg" in kv:
            out.load1, out.load5, out.load15 = (float(x) for x in kv["loadavg"].split()[:3])
        if "BiasUptime" in kv:
            try:
                with open("/proc/uptime") as f:
                    out.uptime = float(f.read().split()[0]) - float(kv["BiasUptime"].split()[0])
            except (OSError, ValueError):
                pass
        for name, lid in c.RLIMIT_IDS.items():
            data = c.vcmd_ctx_rlimit_v0(lid, 0, 0, 0)
            try:
                call("get_rlimit", c.VCMD_get_rlimit, xid, data)
            except SyscallError:
                continue
            if data.softlimit != c.CRLIM_INFINITY or data.maximum != c.CRLIM_INFINITY:
                out.limits.append(LimitUsage(name, None, 0, None))
        return out

    def enforcement(self, spec: ContextSpec) -> dict[str, str]:
        rep: dict[str, str] = {}
        for cap in spec.bcaps:
            rep[f"bcap:{cap}"] = ENFORCED
        for cc in spec.ccaps:
            rep[f"ccap:{cc}"] = ENFORCED
        for fl in spec.flags:
            rep[f"flag:{fl}"] = ENFORCED if fl in c.VXF else not_enforced("unknown to 2.2")
        for lim in spec.limits:
            rep[f"limit:{lim.type}"] = ENFORCED
        if spec.sched:
            rep["sched"] = ENFORCED
        if spec.cpuset is not None:
            rep["cpuset"] = not_enforced("Linux-VServer 2.2 has no cpuset command; use the "
                                         "cpuset filesystem")
        for key in spec.uname:
            rep[f"uname:{key}"] = ENFORCED
        if spec.addresses:
            rep["addresses"] = ENFORCED
        if spec.broadcast:
            rep["broadcast"] = ENFORCED
        if spec.disk_limit is not None:
            rep["disk_limit"] = ENFORCED
        if spec.mounts:
            rep["mounts"] = ENFORCED
        return rep


def _proc_kv(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    return out
