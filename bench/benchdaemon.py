"""The daemon a benchmark measures: a fresh work directory, a VcdDaemon in it with the
busybox template, and on the way out (also after an error) every vserver it still runs
stopped through the API before the daemon and the directory go. A cleanup's kill-all of
hundreds of contexts would keep the supervisor too busy to answer its shutdown."""
from __future__ import annotations

import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from vcdtest import VcdDaemon  # noqa: E402


@contextmanager
def bench_daemon(prefix: str, *, workers: int = 4, start: bool = True,
                 **config: Any) -> Iterator[tuple[VcdDaemon, Path]]:
    """(daemon, work directory). ``start``: started, with the busybox template built;
    else only prepared (the caller adds its templates and starts it). ``config``: more
    keys of VcdDaemon. The work directory is mode 0711: an unprivileged vserver's root
    must reach the root filesystems below it."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    work.chmod(0o711)
    daemon = VcdDaemon(work / "vcd", workers=workers, **config)
    try:
        if start:
            start_with_busybox(daemon)
        yield daemon, work
    finally:
        try:
            stop_running(daemon)
        finally:
            daemon.cleanup()
            shutil.rmtree(work, ignore_errors=True)


def start_with_busybox(daemon: VcdDaemon) -> None:
    """Start the daemon and build the busybox template (bench_daemon(start=False))."""
    daemon.start()
    from templates import busybox
    busybox.build("busybox", daemon.templatedir)


def stop_running(daemon: VcdDaemon) -> None:
    """vx.stop of every vserver of the daemon that runs (nothing when it is not up)."""
    if daemon.pid is None:
        return
    try:
        admin = daemon.proxy()
        names = admin.vxdb.list()
    except Exception:      # it is down or was never up
        return
    for name in names:
        try:
            if admin.vx.status(name=name)["running"]:
                admin.vx.stop(name=name)
        except Exception:
            pass    # the cleanup's kill-all is left for it
