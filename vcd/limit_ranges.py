"""What the kernel and a vserver's init can live with, for each configurable value:
checked when a value is set (vxdb.vx.limit.set, vxdb.vx.sched.set), so a bad value is a
fault 200 naming the accepted range then, not a failed or dead start later.

Ranges measured on this kernel (6.18, cgroup v1 and v2 agree) and taken from its source:
- memory cgroup limits are bytes in a signed 64-bit counter: KiB * 1024 <= 2^63-1;
- below MIN_MEMORY_KIB the memory cgroup kills init before (or while) it starts;
- `pids.max` accepts 0..PID_MAX_LIMIT (4194304 = 2^22 on 64-bit; 4194305 is EINVAL);
- RLIMIT_NOFILE above /proc/sys/fs/nr_open is refused by setrlimit (EPERM);
- the IPC sysctls are C ints (proc_dointvec: above 2^31-1 is EINVAL);
- a disk limit is an ext4 image made by mkfs.ext4 (libvserver/native/quota.py): it
  needs at least 60 KiB and 13 inodes (asked: 64 and 16), at most one inode per KiB
  (mkfs's smallest inode_ratio, 1024 bytes), 2^32-1 inodes and 2^50 KiB (ext4's 1 EiB);
- CFS bandwidth: quota 1000..2^44-1 us and quota + burst <= 2^44-1 us
  (kernel/sched/core.c: max_cfs_runtime = MAX_BW * NSEC_PER_USEC, MAX_BW = 2^44-1;
  min_cfs_quota_period = 1 ms); the quota comes from the token bucket as libvserver's
  `cpu_plan` computes it.
"""
from __future__ import annotations

from libvserver import Sched
from libvserver.native.limits import CPU_PERIOD_US, cpu_plan

from vcd import vocab
from vcd.errors import invalid

# Docker refuses memory limits below 6 MiB for the same reason; a busybox init needs
# about 1 MiB, a shell and its children a few more.
MIN_MEMORY_KIB = 6144
MAX_MEMORY_KIB = (2**63 - 1) // 1024
PID_MAX_LIMIT = 1 << 22
INT_MAX = 2**31 - 1
MAX_CFS_QUOTA_US = (1 << 44) - 1
MEMORY_CGROUP_TYPES = frozenset({"RSS", "AS", "ANON"})  # libvserver maps these to memory.*


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 1048576  # the kernel's default


def limit_range(type_: str) -> tuple[int, int]:
    """(lowest, highest) finite value a limit of this type may have; "inf" is always
    accepted besides (no limit)."""
    if type_ in MEMORY_CGROUP_TYPES:
        return MIN_MEMORY_KIB, MAX_MEMORY_KIB
    if type_ in vocab.MEMORY_LIMITS:
        return 0, MAX_MEMORY_KIB
    if type_ == "NPROC":
        return 1, PID_MAX_LIMIT
    if type_ == "NOFILE":
        return 0, _nr_open()
    if type_ in ("NSEMS", "SEMARY"):
        return 0, INT_MAX
    return 0, vocab.UINT64_MAX - 1


def check_limit(type_: str, soft: str, hard: str) -> None:
    """Raise MEINVAL unless soft and hard (decimal text or "inf") fit the type's range."""
    lo, hi = limit_range(type_)
    unit = " KiB" if type_ in vocab.MEMORY_LIMITS else ""
    for key, text in (("max", hard), ("soft", soft)):
        if text == "inf":
            continue
        value = int(text)
        if not lo <= value <= hi:
            raise invalid(f"'{key}' {value}{unit} is outside the range {type_} accepts: "
                          f"{lo}..{hi}{unit} or \"inf\" (unlimited)")
    if hard != "inf" and (soft == "inf" or int(soft) > int(hard)):
        raise invalid(f"'soft' ({soft}) must not exceed 'max' ({hard})")


MIN_DISK_KIB, MAX_DISK_KIB = 64, 1 << 50
MIN_INODES, MAX_INODES = 16, 2**32 - 1


def check_disk(space_kib: int, inodes: int) -> None:
    """Raise MEINVAL unless mkfs.ext4 can make an image of this size and inode count."""
    if not MIN_DISK_KIB <= space_kib <= MAX_DISK_KIB:
        raise invalid(f"'space' {space_kib} KiB is outside the accepted range "
                      f"{MIN_DISK_KIB}..{MAX_DISK_KIB} KiB")
    most = min(MAX_INODES, space_kib)
    if not MIN_INODES <= inodes <= most:
        raise invalid(f"'inodes' {inodes} is outside the range a {space_kib} KiB disk takes: "
                      f"{MIN_INODES}..{most} (at most one per KiB)")


def max_rate() -> int:
    """The highest fillrate/interval ratio whose CPU quota the kernel accepts."""
    return MAX_CFS_QUOTA_US // CPU_PERIOD_US


def check_sched(bucket: Sched) -> None:
    """Raise MEINVAL when the CPU controller would refuse the quota of this bucket."""
    plan = cpu_plan(bucket)
    if plan.quota_us is not None and plan.quota_us + (plan.burst_us or 0) > MAX_CFS_QUOTA_US:
        raise invalid(
            f"'fillrate' {bucket.fillrate} per 'interval' {bucket.interval} is a CPU quota of "
            f"{plan.quota_us} us per {plan.period_us} us"
            + (f" plus a burst of {plan.burst_us} us" if plan.burst_us else "")
            + f"; the kernel accepts at most {MAX_CFS_QUOTA_US} us in all "
              f"(fillrate/interval up to {max_rate()}, less with tokensmax)")
