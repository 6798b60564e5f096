"""Every XML-RPC method; importing this package fills the registry."""
from vcd.methods import helper, stats, task, vcd, vg, vx, vxdb  # noqa: F401
