"""The command-line clients vcc, vce, vgc and the XML-RPC half of vcdadm.

Their subcommands and arguments are built from the daemon's method registry
(`vcd.registry`), so a method's declaration is the one place its parameters live.
"""
