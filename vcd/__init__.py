"""vcd — the VServer Control Daemon."""
__version__ = "0.1.0"
