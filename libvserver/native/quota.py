"""Disk limits as a per-vserver ext4 image, loop-mounted on the vdir inside the context.

This kernel has no ext4/XFS project quota, so space and inodes are bounded by
the filesystem itself: ``mkfs.ext4 -N inodes`` on an image of ``space_kib``,
populated from the vdir the first time (``mkfs -d``).  From then on the image
holds the vserver's files; the host vdir keeps the tree it had at that moment.
The loop device is attached with LO_FLAGS_AUTOCLEAR and mounted only in the
context's mount namespace, so it detaches by itself when the context ends.
For an unprivileged context the supervisor mounts it detached (fsmount) and
idmaps it like any root (idmap.py): its files stay owned as mkfs copied them.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import subprocess
import time
from pathlib import Path

from ..api import DiskLimit, QuotaError

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LOOP_SET_FD = 0x4C00
LOOP_SET_STATUS64 = 0x4C04
LO_FLAGS_AUTOCLEAR = 4


class _LoopInfo64(ctypes.Structure):
    _fields_ = [("lo_device", ctypes.c_uint64), ("lo_inode", ctypes.c_uint64),
                ("lo_rdevice", ctypes.c_uint64), ("lo_offset", ctypes.c_uint64),
                ("lo_sizelimit", ctypes.c_uint64), ("lo_number", ctypes.c_uint32),
                ("lo_encrypt_type", ctypes.c_uint32), ("lo_encrypt_key_size", ctypes.c_uint32),
                ("lo_flags", ctypes.c_uint32), ("lo_file_name", ctypes.c_uint8 * 64),
                ("lo_crypt_name", ctypes.c_uint8 * 64), ("lo_encrypt_key", ctypes.c_uint8 * 32),
                ("lo_init", ctypes.c_uint64 * 2)]


class _LoopConfig(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_uint32), ("block_size", ctypes.c_uint32),
                ("info", _LoopInfo64), ("reserved", ctypes.c_uint64 * 8)]


def image_path(image_dir: Path, xid: int) -> Path:
    return Path(image_dir) / f"{xid}.img"


def ensure_image(image: Path, vdir: Path, limit: DiskLimit) -> None:
    """Create the image from vdir if missing, grow it offline if the limit grew."""
    image.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    size = limit.space_kib * 1024
    if not image.exists():
        tmp = image.with_suffix(".new")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY | os.O_NOFOLLOW, 0o600)
            try:
                os.ftruncate(fd, size)  # sparse: costs what the vserver stores
            finally:
                os.close(fd)
            r = subprocess.run(
                ["mkfs.ext4", "-q", "-F", "-N", str(limit.inodes), "-m", str(limit.reserved_pct),
                 "-d", str(vdir), "-E", "root_owner=0:0", "-L", f"vx-{image.stem}", str(tmp)],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise QuotaError(f"quota image {image} cannot be made (space {limit.space_kib} "
                                 f"KiB, {limit.inodes} inodes): {(r.stderr or r.stdout).strip()}")
            os.rename(tmp, image)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return
    if image.stat().st_size < size:
        # Online resize needs CAP_SYS_RESOURCE here; the context is stopped, so resize offline
        # once its filesystem is gone: the last reference to the stopped context's mount
        # namespace (a kept handle, unmounted lazily) may release it a moment later.
        _wait_detached(image)
        with open(image, "r+b") as f:
            os.ftruncate(f.fileno(), size)
        for argv in (["e2fsck", "-f", "-p", str(image)], ["resize2fs", str(image)]):
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=600)
            if r.returncode not in (0, 1):
                raise QuotaError(f"cannot grow quota image {image}: {argv[0]}: "
                                 f"{(r.stderr or r.stdout).strip()}")


def _in_use(image: Path) -> bool:
    """A loop device still backs image (its filesystem is mounted somewhere)."""
    want = os.path.realpath(image)
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if backing.read_text().strip().removesuffix(" (deleted)") == want:
                return True
        except OSError:
            continue
    return False


def _wait_detached(image: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while _in_use(image):
        if time.monotonic() > deadline:
            raise QuotaError(f"quota image {image} is still in use (mounted) after the "
                             f"context ended; it cannot be grown now")
        time.sleep(0.02)


def attach(image: Path) -> tuple[int, str]:
    """Attach image to a free loop device with autoclear; returns (loop fd, device path).

    The device detaches once the returned fd is closed and no mount uses it.
    """
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            for _ in range(64):
                n = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                dev = f"/dev/loop{n}"
                if not os.path.exists(dev):
                    os.mknod(dev, 0o600 | 0o060000, os.makedev(7, n))
                lfd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
                cfg = _LoopConfig()
                cfg.fd = backing
                cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR
                try:
                    fcntl.ioctl(lfd, LOOP_CONFIGURE, cfg)
                    return lfd, dev
                except OSError as e:
                    os.close(lfd)
                    if e.errno != errno.EBUSY:  # EBUSY: another process took it first
                        raise QuotaError(f"cannot attach {image} to {dev}: {e.strerror}") from None
            raise QuotaError(f"no free loop device for {image}")
        finally:
            os.close(ctl)
    finally:
        os.close(backing)
