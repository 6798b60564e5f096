"""The four client programs as installed (the entry points of vcc, vce, vgc and vcdadm).

The top of the clients: it imports each program and gives each the `completion`
command, whose script covers all four. Nothing imports this module, so the program
modules and `completion` depend only downwards.
"""
from __future__ import annotations

import sys

from vcd import vcdadm as vcdadm_module
from vcd.clients import completion
from vcd.clients import vce as vce_module
from vcd.clients import vcc as vcc_module
from vcd.clients import vgc as vgc_module
from vcd.clients.commands import Program

PROGRAMS: dict[str, Program] = {
    "vcc": vcc_module.PROGRAM, "vce": vce_module.PROGRAM, "vgc": vgc_module.PROGRAM,
    "vcdadm": vcdadm_module.PROGRAM,
}
for _program in PROGRAMS.values():
    _program.locals = [*_program.locals, completion.local_command(PROGRAMS)]


def vcc(argv: list[str] | None = None) -> int:
    return PROGRAMS["vcc"].main(argv)


def vce(argv: list[str] | None = None) -> int:
    return PROGRAMS["vce"].main(argv)


def vgc(argv: list[str] | None = None) -> int:
    return PROGRAMS["vgc"].main(argv)


def vcdadm(argv: list[str] | None = None) -> int:
    return PROGRAMS["vcdadm"].main(argv)


if __name__ == "__main__":
    # python -m vcd.clients.programs vcc ARGS...
    sys.exit(PROGRAMS[sys.argv[1]].main(sys.argv[2:]) if len(sys.argv) > 1
             and sys.argv[1] in PROGRAMS else 2)
