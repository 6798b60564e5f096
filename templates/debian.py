"""A Debian template: ``debootstrap --variant=minbase`` made bootable as a vserver.

minbase has no init, so the template gets BusyBox's init (from the Debian
package ``busybox-static``, so dpkg knows about it and apt upgrades it) with an
inittab that runs the SysV start scripts of /etc/rc2.d, reaps orphans, and
turns SIGUSR1/SIGTERM (what /sbin/halt and /sbin/reboot send) into an orderly
shutdown. No kernel, no udev, no device nodes: the runtime provides /dev.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from .errors import BuildError
from .metadata import TemplateMeta
from .pack import Progress, build_into_store

DEFAULT_SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
# A minbase root is ~210 MB and its tarball ~50 MB; refuse early below this.
MIN_FREE_BYTES = 600 * 1024 * 1024
_SUITE_RE = re.compile(r"[a-z][a-z0-9.-]{1,30}")
_PKG_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_NO_SECURITY = {"sid", "unstable", "experimental"}

INITTAB = """\
# BusyBox init for a vserver (see /etc/vcd/rc.boot and rc.halt).
::sysinit:/etc/vcd/rc.boot
::respawn:/bin/sleep infinity
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/vcd/rc.halt
::restart:/sbin/init
"""

RC_BOOT = """\
#!/bin/sh
# Boot of a Debian vserver: name it, bring up loopback, then the SysV start
# scripts that update-rc.d links into /etc/rc2.d (apt-installed services).
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
[ -s /etc/hostname ] && busybox hostname -F /etc/hostname 2>/dev/null
busybox ip link set lo up 2>/dev/null
mkdir -p /run/lock && chmod 1777 /run/lock
for s in /etc/rc2.d/S*; do
    [ -x "$s" ] && "$s" start
done
exit 0
"""

RC_HALT = """\
#!/bin/sh
# Halt or reboot of a Debian vserver: stop the services in reverse order;
# BusyBox init then signals and kills whatever is left.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
for s in $(ls -r /etc/rc2.d/S* 2>/dev/null); do
    [ -x "$s" ] && "$s" stop
done
sync
exit 0
"""


def host_mirror() -> str:
    """The Debian mirror this host's apt uses (deb822 or one-line sources), else deb.debian.org."""
    files = sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list"] + \
        sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in files:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            uri = None
            if line.startswith("URIs:"):
                uri = line.split(None, 1)[1].split()[0] if len(line.split()) > 1 else None
            elif line.startswith("deb "):
                parts = [p for p in line.split() if not p.startswith("[")]
                uri = parts[1] if len(parts) > 1 else None
            if uri and re.search(r"/debian/?$", uri):
                return uri.rstrip("/")
    return FALLBACK_MIRROR


def check_mirror(mirror: str, suite: str, timeout: float = 10.0) -> None:
    """Raise BuildError saying why unless ``<mirror>/dists/<suite>/Release`` can be fetched."""
    url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            head = r.read(4096).decode(errors="replace")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise BuildError(f"suite {suite!r} not found on mirror {mirror} ({url}: 404)") from None
        raise BuildError(f"mirror {mirror} unreachable: {url}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise BuildError(f"mirror {mirror} unreachable: {url}: {reason}") from None
    if "Suite:" not in head and "Codename:" not in head:
        raise BuildError(f"{url} is not a Debian Release file")


# debootstrap prints one "I:" line per package and step; these words start
# the lines of one phase, reported once with a count.
_PHASES = {"Retrieving": "download", "Validating": "download", "Extracting": "extract",
           "Unpacking": "unpack", "Configuring": "configure", "Resolving": "resolve",
           "Checking": "check"}


def _run_debootstrap(argv: list[str], root: Path, say: Progress) -> None:
    """Run debootstrap, reporting each phase once (with its elapsed time) instead of every package."""
    phase = None
    count = 0
    tail: list[str] = []
    # Own process group: on interruption the whole tree (dpkg, maintainer
    # scripts in the chroot) is signalled at once, not just debootstrap.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"},
                            start_new_session=True)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            line = line.rstrip()
            tail = (tail + [line])[-15:]
            if line.startswith("I: "):
                word = line[3:].split(" ", 1)[0]
                step = _PHASES.get(word, word)
                if step != phase:
                    if phase is not None and count > 1:
                        say(f"  debootstrap: {phase} phase done ({count} steps)")
                    say(f"  debootstrap: {line[3:]}")
                    phase, count = step, 0
                count += 1
            elif line.startswith(("E: ", "W: ")):
                say(f"  debootstrap: {line}")
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            # Interrupted: SIGTERM lets debootstrap's exit trap unmount /proc
            # and /sys in the target; the caller unmounts whatever remains.
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    if rc != 0:
        text = "\n".join(tail)
        logf = root / "debootstrap" / "debootstrap.log"
        if logf.is_file():
            text += "\n" + "\n".join(logf.read_text(errors="replace").splitlines()[-15:])
        if "No space left" in text:
            raise BuildError(f"no space left on device while bootstrapping into {root}")
        if re.search(r"Failed getting release file|Couldn't download|Could not resolve|"
                     r"Connection refused|Network is unreachable|unable to resolve", text):
            raise BuildError(f"debootstrap could not download from the mirror: {_last_error(text)}")
        raise BuildError(f"debootstrap failed (exit {rc}): {_last_error(text)}")


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _last_error(text: str) -> str:
    errs = [ln for ln in text.splitlines() if ln.startswith("E:") or "rror" in ln]
    return (errs[-1] if errs else text.strip().splitlines()[-1] if text.strip() else "no output")


def _confined(path: Path, root: Path) -> Path:
    """``path`` if writing it stays inside ``root`` (the tree's own symlinks, e.g. merged-usr's, resolved)."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path.parent)
    if os.path.commonpath([real, real_root]) != real_root:
        raise BuildError(f"{path} resolves outside the template root ({real})")
    return path


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    os.chmod(path, mode)


def _link(target: str, link: Path) -> None:
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target, link)


def make_bootable(root: Path, suite: str, mirror: str, hostname: str = "vserver") -> None:
    """Turn a debootstrapped tree into a vserver root (init, halt, reboot, no devices, small)."""
    bb = root / "bin" / "busybox"
    if not bb.exists():
        raise BuildError("busybox-static was not installed into the template")
    for applet in ("init", "halt", "reboot", "poweroff"):
        # Absolute target inside the vserver; /bin is /usr/bin on merged-usr suites.
        _link("/bin/busybox", _confined(root / "sbin" / applet, root))
    for rel in ("etc/inittab", "etc/vcd/rc.boot", "etc/hostname", "etc/hosts", "etc/resolv.conf",
                "etc/apt/sources.list"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _confined(root / rel, root)
    _write(root / "etc/inittab", INITTAB)
    _write(root / "etc/vcd/rc.boot", RC_BOOT, 0o755)
    _write(root / "etc/vcd/rc.halt", RC_HALT, 0o755)
    _write(root / "etc/hostname", hostname + "\n")
    _write(root / "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n"
                               "::1\tlocalhost ip6-localhost ip6-loopback\n")
    # debootstrap copies the host's resolv.conf; a vserver gets its own.
    _write(root / "etc/resolv.conf", "")
    sources = f"deb {mirror} {suite} main\n"
    if suite not in _NO_SECURITY:
        sources += f"deb {mirror} {suite}-updates main\n"
        sources += f"deb http://security.debian.org/debian-security {suite}-security main\n"
    _write(root / "etc/apt/sources.list", sources)

    # Devices are made by the runtime at start; a template carries none.
    dev = root / "dev"
    for entry in os.scandir(dev):
        p = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(p)
        else:
            p.unlink()
    # Downloaded .debs and package lists are a third of the tree and stale
    # by the time a vserver runs: `apt-get update` inside fetches fresh ones.
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*"):
        for p in glob.glob(str(root / pattern)):
            os.unlink(p)
    for p in (root / "var/log").rglob("*"):
        if p.is_file() and not p.is_symlink():
            p.write_bytes(b"")
    shutil.rmtree(root / "debootstrap", ignore_errors=True)
    # Leftover device nodes anywhere would be refused on extraction anyway.
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames:
            p = os.path.join(dirpath, n)
            m = os.lstat(p).st_mode
            if stat.S_ISCHR(m) or stat.S_ISBLK(m):
                os.unlink(p)


def build(name: str, templatedir: Path, *, suite: str = DEFAULT_SUITE, mirror: str | None = None,
          include: list[str] | None = None, fmt: str = "zst", hostname: str = "vserver",
          cache_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """Build Debian template ``name``; ``cache_dir`` keeps downloaded .debs for the next build."""
    if not _SUITE_RE.fullmatch(suite):
        raise BuildError(f"invalid suite name {suite!r}")
    pkgs = ["busybox-static"] + [p for p in (include or []) if p]
    for p in pkgs:
        if not _PKG_RE.fullmatch(p):
            raise BuildError(f"invalid package name {p!r}")
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (apt-get install debootstrap)")
    mirror = (mirror or host_mirror()).rstrip("/")
    if not re.fullmatch(r"(https?|file)://[^\s,]+", mirror):
        raise BuildError(f"invalid mirror URL {mirror!r}")
    say = progress or (lambda m: None)
    templatedir = Path(templatedir)
    templatedir.mkdir(mode=0o755, parents=True, exist_ok=True)
    free = shutil.disk_usage(templatedir).free
    if free < MIN_FREE_BYTES:
        raise BuildError(f"no space: {templatedir} has {free // 2**20} MiB free, "
                         f"a Debian build needs about {MIN_FREE_BYTES // 2**20} MiB")
    cache = None
    if cache_dir is not None:
        # debootstrap wants an absolute, existing directory
        cache = Path(os.path.abspath(cache_dir))
        cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    say(f"checking mirror {mirror} for {suite}")
    check_mirror(mirror, suite)

    def populate(root: Path) -> None:
        argv = ["debootstrap", "--variant=minbase", f"--include={','.join(pkgs)}"]
        if cache_dir is not None:
            argv.append(f"--cache-dir={cache}")
        argv += [suite, str(root), mirror]
        say(f"debootstrap --variant=minbase {suite} ({', '.join(pkgs)})")
        _run_debootstrap(argv, root, say)
        say("making it bootable as a vserver (busybox init, no devices, apt caches dropped)")
        make_bootable(root, suite, mirror, hostname)

    meta = TemplateMeta(name=name, description=f"Debian {suite} (debootstrap minbase) with BusyBox init")
    return build_into_store(name, templatedir, fmt, populate=populate, meta=meta, progress=say)
