"""``vcdadm template ...``: build, list and remove template caches.

``main`` takes the arguments after ``template``; it is also runnable as
``python -m templates.cli``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from . import busybox, debian
from .errors import TemplateError
from .pack import FORMATS, StepPrinter
from .store import DEFAULT_TEMPLATEDIR, TemplateStore


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that every ``finally`` cleanup runs."""


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise _Terminated()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vcdadm template", description="Manage vserver template caches.")
    p.add_argument("--templatedir", type=Path, default=DEFAULT_TEMPLATEDIR,
                   help=f"where template caches live (default {DEFAULT_TEMPLATEDIR})")
    # Also accepted after the subcommand (vcdadm appends it there); SUPPRESS
    # keeps an absent one from overriding the value given before.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--templatedir", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build a template cache", parents=[common])
    b.add_argument("name")
    b.add_argument("--from", dest="source", choices=["busybox", "debian"], required=True)
    b.add_argument("--init", choices=debian.INITS,
                   help="init of a debian template: the distribution's own systemd "
                        "(default) or BusyBox init (the small variant)")
    b.add_argument("--suite", default=debian.DEFAULT_SUITE,
                   help="debootstrap suite, e.g. bookworm, trixie, or Ubuntu's jammy "
                        "(debian only; default %(default)s)")
    b.add_argument("--mirror", help="mirror URL (default: the Debian mirror this host's apt uses; "
                                    f"{debian.UBUNTU_MIRROR} for Ubuntu suites)")
    b.add_argument("--include", default="", help="extra packages, comma-separated (debian only)")
    b.add_argument("--format", dest="fmt", choices=sorted(FORMATS),
                   help="archive format, or 'dir' for a directory template that vservers can "
                        "share (default: gz for busybox, zst for debian)")
    b.add_argument("--cache-dir", type=Path,
                   help="keep downloaded packages here for later builds (debian only)")
    b.add_argument("--hostname", default="vserver", help="hostname written to /etc/hostname")
    u = sub.add_parser("unpack", help="make a directory template (shareable) from a tarball template",
                       parents=[common])
    u.add_argument("name")
    u.add_argument("new_name")
    sub.add_parser("list", help="list template caches", parents=[common])
    r = sub.add_parser("remove", help="remove a template cache (refused while vservers share it)",
                       parents=[common])
    r.add_argument("name")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    store = TemplateStore(args.templatedir)
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.cmd == "list":
            rows = store.list()
            if not rows:
                print(f"no templates in {args.templatedir}")
            for t in rows:
                users = len(store.users(t.name)) if t.kind == "directory" else 0
                shared = f"  shared by {users}" if users else ""
                print(f"{t.name:20} {t.kind:9} {t.path.name:28} {t.description}{shared}")
            return 0
        if args.cmd == "unpack":
            info = store.unpack(args.name, args.new_name)
            print(info.path)
            return 0
        if args.cmd == "remove":
            store.remove_template(args.name)
            print(f"template {args.name!r} removed")
            return 0
        # build
        progress = StepPrinter(sys.stderr, time.monotonic())
        if args.source == "busybox":
            if args.init not in (None, "busybox"):
                raise ValueError(f"--init {args.init} needs --from debian (--from busybox "
                                 "is BusyBox init)")
            out = busybox.build(args.name, args.templatedir, fmt=args.fmt or "gz",
                                hostname=args.hostname, progress=progress)
        else:
            include = [x.strip() for x in args.include.split(",") if x.strip()]
            out = debian.build(args.name, args.templatedir, suite=args.suite, mirror=args.mirror,
                               include=include, fmt=args.fmt or "zst", hostname=args.hostname,
                               cache_dir=args.cache_dir, progress=progress,
                               init=args.init or debian.DEFAULT_INIT)
        print(out)
        return 0
    except KeyboardInterrupt:
        print("vcdadm template: interrupted; nothing was left behind", file=sys.stderr)
        return 130
    except (TemplateError, ValueError, OSError) as e:
        print(f"vcdadm template: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
