"""Progress of long work as a task's log carries it, and as a client draws it.

A method run as a task reports progress as log lines `progress DONE/TOTAL UNIT WHAT`
(vx.create: bytes of the template archive read); a client following the log draws
them as a bar (tqdm) when its output is a terminal, and a person reading the log
sees plain lines.
"""
from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from typing import IO, Any

LINE_RE = re.compile(r"progress (\d+)/(\d+) (\S+) (.*)")


def line(done: int, total: int, unit: str, what: str) -> str:
    return f"progress {done}/{total} {unit} {what}"


def _size() -> dict[str, int]:
    # tqdm draws nothing on a terminal that reports 0 rows (a pty nobody sized)
    size = shutil.get_terminal_size()
    return {"ncols": min(size.columns, 120), "nrows": size.lines}


@dataclass
class Step:
    done: int
    total: int
    unit: str
    what: str


def parse(text: str) -> Step | None:
    match = LINE_RE.fullmatch(text.strip())
    if match is None:
        return None
    return Step(int(match[1]), int(match[2]), match[3], match[4])


class Bar:
    """A tqdm bar fed with Steps; drawn on `stream` (stdout) only when it is a terminal."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.bar: Any = None
        self.shown = self.stream.isatty()

    def update(self, step: Step) -> None:
        if not self.shown:
            return
        if self.bar is None:
            from tqdm import tqdm  # only a terminal needs it
            scale = step.unit == "bytes"
            self.bar = tqdm(total=step.total, desc=step.what, file=self.stream,
                            unit="B" if scale else step.unit, unit_scale=scale,
                            unit_divisor=1024, leave=True,
                            **_size())
        self.bar.update(max(0, step.done - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
