"""A BusyBox root filesystem built offline from Debian's ``busybox-static``.

The result is the smallest useful vserver: one static binary, its applet links,
an /etc that makes BusyBox init behave as the PID 1 of a context, and no device
nodes (the runtime creates /dev at start, so the tree can be built and shared
without privileges over devices).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from .metadata import TemplateMeta
from .pack import DEFAULT_FORMAT, Progress, build_into_store

BUSYBOX = Path("/bin/busybox")

_HOSTNAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")

# BusyBox init reads this. Why each line:
# - sysinit: hostname and loopback before anything else, as a boot would;
# - no respawn (nor askfirst) entry: BusyBox init with nothing to supervise stays up,
#   reaping and waiting for signals, so an idle vserver is its init alone. A respawned
#   idle process (``/bin/sleep``) would be a second task in every vserver: its kernel
#   stack, page tables, task and mm structures and private pages, about 130 KiB of
#   host memory each (issue 13's density goal; bench/density.py shows it);
# - shutdown: rcK runs the stop scripts on halt/reboot (SIGUSR1/SIGTERM);
# - restart: SIGQUIT re-execs init, used by a reboot that keeps the context.
INITTAB = """\
::sysinit:/etc/init.d/rcS
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
::restart:/sbin/init
"""

RCS = """\
#!/bin/sh
# Boot of a BusyBox vserver: name it, bring up loopback, then run the
# start scripts /etc/init.d/S??* in order (the SysV convention BusyBox uses).
PATH=/sbin:/bin:/usr/sbin:/usr/bin
export PATH
[ -s /etc/hostname ] && hostname -F /etc/hostname 2>/dev/null
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null
for s in /etc/init.d/S??*; do
    [ -x "$s" ] && "$s" start
done
exit 0
"""

RCK = """\
#!/bin/sh
# Halt or reboot of a BusyBox vserver: stop scripts in reverse order, then
# flush, so that BusyBox init can signal and kill the rest.
PATH=/sbin:/bin:/usr/sbin:/usr/bin
export PATH
for s in $(ls -r /etc/init.d/S??* 2>/dev/null); do
    [ -x "$s" ] && "$s" stop
done
sync
exit 0
"""

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

# Root's password is locked: a vserver is entered with vx.exec, not a login.
SHADOW = """\
root:*:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
nobody:*:19000:0:99999:7:::
"""

GROUP = """\
root:x:0:
daemon:x:1:
tty:x:5:
nogroup:x:65534:
"""


def busybox_version() -> str:
    """The version line of the host's busybox, e.g. ``BusyBox v1.35.0 (Debian ...)``."""
    out = subprocess.run([str(BUSYBOX)], capture_output=True, text=True, check=False).stdout
    line = out.splitlines()[0].strip() if out else "BusyBox"
    return line.removesuffix(" multi-call binary.")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    os.chmod(path, mode)


def build_rootfs(dest: Path, hostname: str = "vserver") -> None:
    """Build a BusyBox root filesystem in ``dest`` (created; must not exist or be empty)."""
    if not _HOSTNAME_RE.fullmatch(hostname) or len(hostname) > 253:
        raise ValueError(f"invalid hostname: {hostname!r}")
    if not BUSYBOX.is_file():
        raise FileNotFoundError(f"{BUSYBOX} is missing: install Debian's busybox-static")
    dest = Path(dest)
    dest.mkdir(mode=0o755, parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty")
    os.chmod(dest, 0o755)

    dirs = {
        "bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
        "etc": 0o755, "etc/init.d": 0o755, "proc": 0o555, "sys": 0o555, "dev": 0o755,
        "tmp": 0o1777, "root": 0o700, "home": 0o755, "mnt": 0o755, "run": 0o755,
        "var": 0o755, "var/log": 0o755, "var/tmp": 0o1777, "var/spool": 0o755,
    }
    for rel, mode in dirs.items():
        d = dest / rel
        d.mkdir(exist_ok=True)
        os.chmod(d, mode)  # chmod because mkdir's mode is masked by the umask
    # /var/run as a link keeps pid files in /run like current Debian
    os.symlink("../run", dest / "var/run")

    shutil.copy2(BUSYBOX, dest / "bin/busybox")
    os.chmod(dest / "bin/busybox", 0o755)

    applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for rel in applets:
        # linuxrc is for initramfs roots; a vserver boots /sbin/init.
        if "/" not in rel or rel == "bin/busybox":
            continue
        link = dest / rel
        if link.exists() or link.is_symlink():
            continue
        # Relative targets, so that a host tool looking into the vdir resolves
        # them to the vserver's busybox and never to the host's.
        target = os.path.relpath("bin/busybox", os.path.dirname(rel))
        os.symlink(target, link)

    etc = dest / "etc"
    _write(etc / "passwd", PASSWD)
    _write(etc / "shadow", SHADOW, 0o600)
    _write(etc / "group", GROUP)
    _write(etc / "hostname", hostname + "\n")
    _write(etc / "hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost\n")
    _write(etc / "inittab", INITTAB)
    _write(etc / "shells", "/bin/sh\n/bin/ash\n")
    _write(etc / "profile", "export PATH=/sbin:/bin:/usr/sbin:/usr/bin\nexport PS1='\\h:\\w\\$ '\n")
    _write(etc / "resolv.conf", "")
    _write(etc / "fstab", "# mounts are made by the runtime, not by init\n")
    _write(etc / "init.d/rcS", RCS, 0o755)
    _write(etc / "init.d/rcK", RCK, 0o755)


def meta_for(name: str) -> TemplateMeta:
    return TemplateMeta(name=name, description=f"{busybox_version()}, built offline from busybox-static")


def build(name: str, templatedir: Path, *, fmt: str = DEFAULT_FORMAT, hostname: str = "vserver",
          progress: Progress | None = None) -> Path:
    """Build template ``name`` into ``templatedir``; return the tarball (or directory) path.

    Written under a temporary name and renamed at the end, so an interrupted
    build leaves no template behind.
    """
    return build_into_store(name, Path(templatedir), fmt,
                            populate=lambda root: build_rootfs(root, hostname),
                            meta=meta_for(name), progress=progress)
