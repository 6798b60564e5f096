"""`vstatd`: the statistics daemon, and `vstatd graph` to draw one metric.

    vstatd [-c FILE] [-f] [-d]
    vstatd [-c FILE] graph NAME METRIC [--period 1h|1d|1w|1m|1y] -o FILE.png

The daemon reads the same vcd.conf as vcd (its own [vstatd] table), detaches the
way vcd does, and every `step` seconds samples every running context into RRD
files. SIGHUP reloads the config and reopens the log, SIGTERM/SIGINT end it.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vcd import log as vlog
from vcd.config import DEFAULT_CONFIG, Config, ConfigError, load
from vcd.daemon import READY, _detach, start_logging_and_lock, wait_signals

from vstatd import graph

if TYPE_CHECKING:
    from vstatd.collector import Collector
from vstatd.config import Settings, settings
from vstatd.layout import valid_metric, valid_name

EXIT_CONFIG = 2
EXIT_FAILURE = 1
UMASK = 0o027       # statistics are the host admin's, not every local user's

log = vlog.get("vstatd")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vstatd", description="VServer statistics daemon")
    p.add_argument("-c", "--config", metavar="FILE", type=Path,
                   help=f"config file (default {DEFAULT_CONFIG}, built-in defaults if missing)")
    p.add_argument("-f", "--foreground", action="store_true", help="do not detach")
    p.add_argument("-d", "--debug", action="store_true", help="log at debug level")
    sub = p.add_subparsers(dest="command")
    g = sub.add_parser("graph", help="draw one metric of one vserver as PNG")
    g.add_argument("name", help="vserver name")
    g.add_argument("metric", help="database name, e.g. cpu, mem, thread_TOTAL, sys_LOADAVG")
    g.add_argument("--period", choices=sorted(graph.PERIODS), default="1d")
    g.add_argument("-o", "--output", metavar="FILE.png", type=Path, required=True)
    g.add_argument("-c", "--config", metavar="FILE", type=Path, default=argparse.SUPPRESS)
    return p.parse_args(argv)


def _config_path(args: argparse.Namespace) -> Path | None:
    if args.config is not None:
        return args.config
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def load_all(path: Path | None) -> tuple[Config, Settings]:
    config = load(path)
    return config, settings(config)


def cmd_graph(args: argparse.Namespace, st: Settings) -> int:
    if not valid_name(args.name):
        print(f"vstatd: invalid vserver name {args.name!r}", file=sys.stderr)
        return EXIT_CONFIG
    if not valid_metric(args.metric):
        print(f"vstatd: unknown metric {args.metric!r}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        png = graph.render(st.rrddir, args.name, args.metric, args.period)
    except graph.NoData as exc:
        print(f"vstatd: {exc} in {st.rrddir}", file=sys.stderr)
        return EXIT_FAILURE
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(png)
    return 0


@dataclass
class Runtime:
    """What a (re)load builds from the config: the sampler and the store."""
    config: Config
    st: Settings

    def build(self) -> "Collector":
        import libvserver
        from vstatd.collector import Collector
        from vstatd.sample import sampler_for
        from vstatd.store import Store
        # the same state directory and cgroup parent as vcd's runtime, so the load
        # averages and cgroups are the ones vcd sees; nothing here starts a supervisor
        backend = libvserver.get_backend(state_dir=self.config.supervisor_dir,
                                         cgroup_parent=self.config.cgroup_parent,
                                         image_dir=self.config.datadir / "images")
        store = Store(self.st.rrddir, self.st.step, self.st.on_remove, self.st.flush_interval)
        return Collector(self.config.vxdb_path, sampler_for(backend), store)


class Daemon:
    def __init__(self, args: argparse.Namespace, path: Path | None, config: Config,
                 st: Settings) -> None:
        self.args = args
        self.path = path
        self.runtime = Runtime(config, st)
        self.collector = self.runtime.build()

    @property
    def step(self) -> int:
        return self.runtime.st.step

    def reload(self) -> None:
        log.info("SIGHUP: reloading %s", self.path or "the built-in defaults")
        try:
            config, st = load_all(self.path)
        except ConfigError as exc:
            log.error("new configuration rejected, keeping the running one: %s", exc)
            config, st = None, None
        cur = st or self.runtime.st
        try:
            vlog.setup(cur.logfile, cur.loglevel, debug=self.args.debug)
        except OSError as exc:
            log.error("cannot reopen log file %s: %s", cur.logfile, exc.strerror)
        if config is None or st is None:
            return
        if st.pidfile != self.runtime.st.pidfile:
            log.warning("a changed pidfile takes effect at the next start, not on reload")
        if st.step != self.runtime.st.step:
            log.warning("step %d -> %d: existing files keep the step they were created with",
                        self.runtime.st.step, st.step)
        new = Runtime(config, st)
        try:
            collector = new.build()
        except Exception:
            log.exception("the new configuration cannot be used; keeping the running one")
            return
        self.collector.close()
        self.runtime, self.collector = new, collector
        log.info("configuration reloaded: rrddir %s, step %d s", st.rrddir, st.step)

    def run(self) -> int:
        sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(sig_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            # the number arrives through the wakeup pipe; the loop acts on it
            signal.signal(sig, lambda signum, frame: None)
        log.info("vstatd sampling every %d s into %s (pid %d)", self.step,
                 self.runtime.st.rrddir, os.getpid())
        next_t = (int(time.time()) // self.step + 1) * self.step
        while True:
            received = wait_signals(sig_r, max(0.0, next_t - time.time()))
            if signal.SIGTERM in received or signal.SIGINT in received:
                log.info("%s: stopping", "SIGTERM" if signal.SIGTERM in received else "SIGINT")
                break
            if signal.SIGHUP in received:
                self.reload()
                next_t = (int(time.time()) // self.step + 1) * self.step
                continue
            if time.time() < next_t:
                continue
            try:
                r = self.collector.step(next_t)
                log.debug("step %d: %d contexts, %d samples queued, %d written, %.1f ms CPU",
                          r.t, r.contexts, r.queued, r.written, r.cpu_seconds * 1000)
            except Exception:
                log.exception("sampling step %d failed", next_t)
            now = time.time()
            following = next_t + self.step
            if now >= following:
                # slower than the step: skip the steps already gone rather than pile up
                skipped = int((now - following) // self.step) + 1
                log.warning("a step took %.1f s (step %d s): skipping %d step(s)",
                            now - next_t, self.step, skipped)
                following += skipped * self.step
            next_t = following
        self.collector.close()
        log.info("vstatd stopped")
        return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    path = _config_path(args)
    try:
        config, st = load_all(path)
    except ConfigError as exc:
        for problem in exc.problems:     # every bad key, one line each
            print(f"vstatd: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "graph":
        return cmd_graph(args, st)

    os.umask(UMASK)
    pidfile = start_logging_and_lock("vstatd", st.logfile, st.loglevel, args.debug, st.pidfile)
    if isinstance(pidfile, int):
        return pidfile

    notify = None
    if not args.foreground:
        keep: list[object] = [pidfile.fd]
        stream = vlog.stream()
        if stream is not None and st.logfile is not None:
            keep.append(stream)
        notify = _detach(keep)
        os.umask(UMASK)  # DaemonContext set its own
    pidfile.write(os.getpid())
    try:
        try:
            daemon = Daemon(args, path, config, st)
        except Exception as exc:
            log.exception("start-up failed")
            if notify:
                notify(f"vstatd: start-up failed: {exc}".encode())
            return EXIT_FAILURE
        if notify:
            notify(READY)
        return daemon.run()
    finally:
        pidfile.release()


if __name__ == "__main__":
    sys.exit(main())
