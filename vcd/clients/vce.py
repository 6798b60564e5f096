"""vce: the VServer Configuration Editor - every vxdb.* method as `vce AREA.VERB NAME ...`.

The commands and their arguments are the vxdb.* methods' declared params in order;
the table below only keeps the original vce's argument order where it differs.
"""
from __future__ import annotations

import sys

from vcd.clients.commands import Program, Spec, derived

OVERRIDES = (
    # original: mount.set <name> <src> <dst> [<type> [<opts>]]
    Spec("mount.set", "vxdb.mount.set", order=("name", "src", "dst", "type?", "opts?")),
    # original: vx.limit.set <name> <limit> <soft> [<max>], max defaulting to soft
    Spec("vx.limit.set", "vxdb.vx.limit.set", order=("name", "limit", "soft", "max?"),
         fill={"max": "soft"}),
    # the init signals are newer than the original vce's positional arguments
    Spec("init.set", "vxdb.init.set", options=("halt_signal", "reboot_signal")),
)

PROGRAM = Program("vce", "VServer Configuration Editor: the settings of vservers in VXDB.",
                  derived("vxdb.", OVERRIDES))


def main(argv: list[str] | None = None) -> int:
    return PROGRAM.main(argv)


if __name__ == "__main__":
    sys.exit(main())
