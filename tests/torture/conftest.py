"""Daemons for the torture suite: every one stopped, and every context it started
killed, whether or not the test passed."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from engine import teardown_contexts
from vcdtest import VcdDaemon


@pytest.fixture
def torture_vcd(tmp_path: Path) -> Iterator[Callable[..., VcdDaemon]]:
    daemons: list[VcdDaemon] = []

    def make(**config: Any) -> VcdDaemon:
        daemon = VcdDaemon(tmp_path / f"vcd{len(daemons)}", **{"workers": 4, "timeout": 30.0, **config})
        daemons.append(daemon)
        daemon.start()
        return daemon

    try:
        yield make
    finally:
        for daemon in daemons:
            try:
                daemon.cleanup()
            finally:
                teardown_contexts(daemon)
