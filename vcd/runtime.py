"""The daemon's side of running vservers: one libvserver backend per process.

The daemon never asks which backend it has; everything kernel-facing goes through
`libvserver.get_backend()`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import libvserver

from vcd.config import Config

_runtimes: dict[Path | None, "Runtime"] = {}


class Runtime:
    def __init__(self, config: Config):
        self.config = config
        self._backend: Any = None

    @property
    def backend(self) -> Any:
        if self._backend is None:
            self._backend = libvserver.get_backend(
                state_dir=self.config.rundir / "libvserver",
                cgroup_parent=self.config.cgroup_parent,
                notify_argv=self.notify_argv())
        return self._backend

    def notify_argv(self) -> list[str]:
        # the supervisor reports a context's end the way the kernel would call vshelper
        argv = [sys.executable, "-m", "vshelper"]
        if self.config.source is not None:
            argv += ["-c", str(self.config.source)]
        return argv

    def is_running(self, xid: int) -> bool:
        return self.backend.is_running(xid)


def get(config: Config) -> Runtime:
    runtime = _runtimes.get(config.source)
    if runtime is None or runtime.config is not config:
        runtime = _runtimes[config.source] = Runtime(config)
    return runtime
