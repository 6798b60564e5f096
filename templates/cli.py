"""``vcdadm template ...``: build, list and remove template caches.

``main`` takes the arguments after ``template``; it is also runnable as
``python -m templates.cli``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path

from . import busybox, debian
from .errors import TemplateError
from .pack import FORMATS, Progress, StepPrinter
from .store import DEFAULT_TEMPLATEDIR, TemplateStore


def _size() -> dict[str, int]:
    # tqdm draws nothing on a terminal that reports 0 rows (a pty nobody sized)
    size = shutil.get_terminal_size()
    return {"ncols": min(size.columns, 120), "nrows": size.lines}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that every ``finally`` cleanup runs."""


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise _Terminated()


# The steps each build reports (templates.pack, .busybox, .debian), in order: a message
# starting with one of these moves the bar there; the others only describe it.
STAGES = {
    "busybox": ("building root filesystem", "packing", "template"),
    "debian": ("checking mirror", "building root filesystem", "debootstrap --variant",
               "making it bootable", "packing", "template"),
}


class BuildBar:
    """The build's progress as a tqdm bar over its stages, the latest message beside it."""

    def __init__(self, stages: tuple[str, ...], stream=None) -> None:
        from tqdm import tqdm
        self.stages = stages
        self.bar = tqdm(total=len(stages), file=stream or sys.stdout, unit="step",
                        bar_format="{desc:48.48} {percentage:3.0f}%|{bar}| "
                                   "{n_fmt}/{total_fmt} [{elapsed}]",
                        **_size())

    def __call__(self, msg: str) -> None:
        text = msg.strip()
        self.bar.set_description_str(text, refresh=False)
        for i, prefix in enumerate(self.stages):
            if text.startswith(prefix):
                self.bar.update(max(0, i + 1 - self.bar.n))
                break
        else:
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


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
        # a bar on a terminal; step lines with times for logs and scripts
        bar = BuildBar(STAGES[args.source]) if sys.stdout.isatty() else None
        progress = bar or StepPrinter(sys.stderr, time.monotonic())
        try:
            if args.source == "busybox" and args.init not in (None, "busybox"):
                raise ValueError(f"--init {args.init} needs --from debian (--from busybox "
                                 "is BusyBox init)")
            out = _build(args, progress)
        finally:
            if bar is not None:
                bar.close()
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


def _build(args: argparse.Namespace, progress: Progress) -> Path:
    if args.source == "busybox":
        return busybox.build(args.name, args.templatedir, fmt=args.fmt or "gz",
                             hostname=args.hostname, progress=progress)
    include = [x.strip() for x in args.include.split(",") if x.strip()]
    return debian.build(args.name, args.templatedir, suite=args.suite, mirror=args.mirror,
                        include=include, fmt=args.fmt or "zst", hostname=args.hostname,
                        cache_dir=args.cache_dir, progress=progress,
                        init=args.init or debian.DEFAULT_INIT)


if __name__ == "__main__":
    sys.exit(main())
