"""vgc: the VServer Group Client - every vg.* method as a command, params in order."""
from __future__ import annotations

import sys

from vcd.clients.commands import Program, derived

PROGRAM = Program("vgc", "VServer Group Client: groups of vservers, started and stopped together.",
                  derived("vg."))


def main(argv: list[str] | None = None) -> int:
    return PROGRAM.main(argv)


if __name__ == "__main__":
    sys.exit(main())
