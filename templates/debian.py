"""A Debian template: ``debootstrap --variant=minbase`` made bootable as a vserver.

Two inits (``--init``):

- ``systemd`` (the default): the distribution's own systemd, as every VPS and LXC/Incus
  container boots it (issue 16). minbase plus ``systemd-sysv`` (systemd as /sbin/init,
  halt/reboot/poweroff), ``dbus`` (logind, hostnamectl, timedatectl), ``procps`` (ps,
  kill, free) and ``iproute2`` (``ip``: vcd configures the network from outside, but an
  admin inspects it from inside). No udev, no kernel, no ifupdown, no getty on tty1.
  The template's metadata says how to run it: the API filesystems vcd mounts before
  init (tmpfs /run and /run/lock, the vserver's own cgroup2 view), systemd's halt and
  reboot signals (SIGRTMIN+3 and SIGINT) instead of commands, the capabilities it needs
  inside the vserver's user namespace, and ``ready = "notify"`` (wait for READY=1).
- ``busybox``: minbase has no init, so the template gets BusyBox's init (from the Debian
  package ``busybox-static``, so dpkg knows about it and apt upgrades it) with an
  inittab that runs the SysV start scripts of /etc/rc2.d, reaps orphans, and turns
  SIGUSR1/SIGTERM (what /sbin/halt and /sbin/reboot send) into an orderly shutdown.

Other debootstrap suites (e.g. Ubuntu's ``noble`` with ``--mirror
http://archive.ubuntu.com/ubuntu`` and the host's ``ubuntu-keyring``) build the same
way. No device nodes either way: the runtime provides /dev.
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
from .metadata import DEFAULT_BCAPS, TemplateMeta
from .pack import Progress, build_into_store

DEFAULT_SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
UBUNTU_MIRROR = "http://archive.ubuntu.com/ubuntu"
INITS = ("systemd", "busybox")
DEFAULT_INIT = "systemd"
# Packages beyond minbase for each init (see the module docstring for why each).
INIT_PACKAGES = {"systemd": ["systemd-sysv", "dbus", "procps", "iproute2"],
                 "busybox": ["busybox-static"]}

# Bounding capabilities of a systemd guest beyond vcd's defaults. Safe only because the
# guest's root is an unprivileged user in its own user namespace: each one reaches only
# what that namespace owns (its mounts, its network namespace, its files).
SYSTEMD_EXTRA_BCAPS = (
    "SETPCAP",       # systemd drops capabilities for units (journald, logind: status 218)
    "SYS_ADMIN",     # mount namespaces for PrivateTmp/ProtectSystem/DynamicUser; logind's /run/user
    "SYS_RESOURCE",  # raising RLIMIT_NOFILE and others for units (LimitNOFILE=)
    "NET_ADMIN",     # the guest's own network namespace: ip, networkd, ifupdown
    "NET_RAW",       # ping and DHCP clients
    "SETFCAP",       # dpkg installs binaries with file capabilities (iputils-ping)
    "AUDIT_WRITE",   # login, su and sshd send audit records (refused, not fatal, in a userns)
    "MKNOD",         # PrivateDevices= builds a small /dev (systemd falls back to binds)
    "SYS_NICE",      # Nice=, CPUSchedulingPolicy=, IOSchedulingClass= of units
    "IPC_LOCK",      # mlock: gpg-agent, some databases
)
# systemd's own signals: SIGRTMIN+3 halts (systemctl halt), SIGINT reboots (ctrl-alt-del
# in a container), as lxc.signal.halt / lxc.signal.reboot of LXC's systemd templates.
SYSTEMD_HALT_SIGNAL = "SIGRTMIN+3"
SYSTEMD_REBOOT_SIGNAL = "SIGINT"
SYSTEMD_API_MOUNTS = ["run", "run-lock", "cgroup"]
# Units that have no work in a vserver (no block devices of its own, no tty1): masked.
SYSTEMD_MASKED = ("e2scrub_reap.service", "e2scrub_all.timer", "fstrim.timer",
                  "getty@tty1.service", "systemd-pstore.service")
# A minbase root is ~210 MB and its tarball ~50 MB; refuse early below this.
MIN_FREE_BYTES = 600 * 1024 * 1024
_SUITE_RE = re.compile(r"[a-z][a-z0-9.-]{1,30}")
_PKG_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_NO_SECURITY = {"sid", "unstable", "experimental"}

# No respawn entry: BusyBox init with nothing to supervise stays up alone (see the
# INITTAB of busybox.py: a respawned idle process costs host memory in every vserver).
INITTAB = """\
# BusyBox init for a vserver (see /etc/vcd/rc.boot and rc.halt).
::sysinit:/etc/vcd/rc.boot
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


def is_ubuntu(suite: str, mirror: str | None = None) -> bool:
    """Whether ``suite`` is Ubuntu's: debootstrap builds it with its Ubuntu script (gutsy),
    or the mirror is an Ubuntu archive (suites newer than this host's debootstrap)."""
    if mirror is not None and re.search(r"/ubuntu(-ports)?/?$", mirror):
        return True
    script = Path("/usr/share/debootstrap/scripts") / suite
    return script.is_symlink() and os.readlink(script) == "gutsy" or script.name == "gutsy"


def apt_sources(suite: str, mirror: str) -> str:
    """/etc/apt/sources.list of the template: the suite, its updates and security."""
    if is_ubuntu(suite, mirror):
        components = "main universe"
        security = f"deb http://security.ubuntu.com/ubuntu {suite}-security {components}\n"
    else:
        components = "main"
        security = (f"deb http://security.debian.org/debian-security {suite}-security "
                    f"{components}\n")
    sources = f"deb {mirror} {suite} {components}\n"
    if suite not in _NO_SECURITY:
        sources += f"deb {mirror} {suite}-updates {components}\n" + security
    return sources


def make_bootable(root: Path, suite: str, mirror: str, hostname: str = "vserver",
                  init: str = "busybox") -> None:
    """Turn a debootstrapped tree into a vserver root (init, halt, reboot, no devices, small)."""
    if init == "systemd":
        _systemd_init(root)
    else:
        _busybox_init(root)
    for rel in ("etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/apt/sources.list"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _confined(root / rel, root)
    _write(root / "etc/hostname", hostname + "\n")
    _write(root / "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n"
                               "::1\tlocalhost ip6-localhost ip6-loopback\n")
    # debootstrap copies the host's resolv.conf; a vserver gets its own.
    _write(root / "etc/resolv.conf", "")
    _write(root / "etc/apt/sources.list", apt_sources(suite, mirror))

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


def _busybox_init(root: Path) -> None:
    bb = root / "bin" / "busybox"
    if not bb.exists():
        raise BuildError("busybox-static was not installed into the template")
    for applet in ("init", "halt", "reboot", "poweroff"):
        # Absolute target inside the vserver; /bin is /usr/bin on merged-usr suites.
        _link("/bin/busybox", _confined(root / "sbin" / applet, root))
    for rel in ("etc/inittab", "etc/vcd/rc.boot", "etc/vcd/rc.halt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        _confined(root / rel, root)
    _write(root / "etc/inittab", INITTAB)
    _write(root / "etc/vcd/rc.boot", RC_BOOT, 0o755)
    _write(root / "etc/vcd/rc.halt", RC_HALT, 0o755)


def _systemd_init(root: Path) -> None:
    init = root / "sbin" / "init"
    target = os.readlink(init) if init.is_symlink() else ""
    if not target.endswith("/systemd"):
        raise BuildError(f"systemd-sysv did not make /sbin/init systemd (it is {target or 'missing'})")
    # Every vserver made from the template gets its own machine id: empty, systemd
    # writes a fresh one at its first boot (machine-id(5)); dbus reads the same file.
    _write(_confined(root / "etc/machine-id", root), "", 0o444)
    dbus_id = _confined(root / "var/lib/dbus/machine-id", root)
    if dbus_id.parent.is_dir():
        _link("/etc/machine-id", dbus_id)
    system = root / "etc/systemd/system"
    for unit in SYSTEMD_MASKED:
        for wants in system.glob(f"*.wants/{unit}"):
            wants.unlink()
        _link("/dev/null", _confined(system / unit, root))


def build_meta(name: str, suite: str, init: str, mirror: str | None = None) -> TemplateMeta:
    """The metadata of a Debian template: how vcd runs its init."""
    distro = "Ubuntu" if is_ubuntu(suite, mirror) else "Debian"
    if init == "busybox":
        return TemplateMeta(name=name, description=f"{distro} {suite} (debootstrap minbase) "
                                                   "with BusyBox init")
    return TemplateMeta(
        name=name, description=f"{distro} {suite} (debootstrap minbase) with systemd",
        bcaps=DEFAULT_BCAPS + [c for c in SYSTEMD_EXTRA_BCAPS if c not in DEFAULT_BCAPS],
        halt_signal=SYSTEMD_HALT_SIGNAL, reboot_signal=SYSTEMD_REBOOT_SIGNAL,
        api_mounts=list(SYSTEMD_API_MOUNTS), ready="notify")


def build(name: str, templatedir: Path, *, suite: str = DEFAULT_SUITE, mirror: str | None = None,
          include: list[str] | None = None, fmt: str = "zst", hostname: str = "vserver",
          cache_dir: Path | None = None, progress: Progress | None = None,
          init: str = DEFAULT_INIT) -> Path:
    """Build Debian template ``name`` with ``init`` (systemd or busybox, see the module
    docstring); ``cache_dir`` keeps downloaded .debs for the next build."""
    if not _SUITE_RE.fullmatch(suite):
        raise BuildError(f"invalid suite name {suite!r}")
    if init not in INITS:
        raise BuildError(f"unknown init {init!r} (known: {' '.join(INITS)})")
    pkgs = INIT_PACKAGES[init] + [p for p in (include or []) if p]
    for p in pkgs:
        if not _PKG_RE.fullmatch(p):
            raise BuildError(f"invalid package name {p!r}")
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (apt-get install debootstrap)")
    mirror = (mirror or (UBUNTU_MIRROR if is_ubuntu(suite) else host_mirror())).rstrip("/")
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
        say(f"making it bootable as a vserver ({init} init, no devices, apt caches dropped)")
        make_bootable(root, suite, mirror, hostname, init)

    meta = build_meta(name, suite, init, mirror)
    return build_into_store(name, templatedir, fmt, populate=populate, meta=meta, progress=say)
