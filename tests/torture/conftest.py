"""Daemons for the torture suite: `make_vcd` with more workers and a longer timeout; every
one stopped, and every context it started killed, whether or not the test passed."""
from __future__ import annotations

from typing import Callable

import pytest

from vcdtest import VcdDaemon


@pytest.fixture
def torture_vcd(make_vcd: Callable[..., VcdDaemon]) -> Callable[..., VcdDaemon]:
    return lambda **config: make_vcd(**{"workers": 4, "timeout": 30.0, **config})
