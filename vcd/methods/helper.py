"""helper.*: the calls vshelper makes on behalf of the kernel (capability HELPER).

On a Linux-VServer kernel the kernel runs vshelper at a context's start and end. On a
stock kernel libvserver's supervisor runs it when a context's init ends (a reboot
from inside: `restart` then `shutdown`; a halt or any other end: `shutdown`).
"""
from __future__ import annotations

import logging

from vcd import vxdb
from vcd.errors import Fault, VcdError
from vcd.locks import vserver_lock
from vcd.params import Int, Param
from vcd.registry import Call, Txn, method
from vcd.vxdb.lookup import VServer, find_vserver

log = logging.getLogger("vcd.helper")

XID = Param("xid", Int(2, 65534), doc="context id")
# helper.shutdown may arrive while the vx.stop that caused it still holds the lock
SHUTDOWN_LOCK_WAIT = 30.0


def _vserver(call: Call, xid: int) -> VServer:
    row = call.db.execute("SELECT name FROM vservers WHERE xid = ?", (xid,)).fetchone()
    if row is None:
        raise VcdError(Fault.MENOVPS, f"xid {xid}")
    return find_vserver(call.db, row[0])


@method("helper.netup", cap="HELPER", params=(XID,))
def netup(call: Call, xid: int) -> None:
    """Network set-up of a starting context. The native backend configures the network
    itself while starting, so this only checks that the vserver exists."""
    _vserver(call, xid)


@method("helper.startup", cap="HELPER", params=(XID,))
def startup(call: Call, xid: int) -> None:
    """Set-up of a starting context. The native backend applies the whole configuration
    itself while starting, so this only checks that the vserver exists."""
    _vserver(call, xid)


@method("helper.restart", cap="HELPER", txn=Txn.WRITE, params=(XID,))
def restart(call: Call, xid: int) -> None:
    """Record that a vserver asked for a reboot; the shutdown that follows starts it again."""
    vserver = _vserver(call, xid)
    call.db.execute("INSERT OR REPLACE INTO restart (xid) VALUES (?)", (xid,))
    log.info("%s (xid %d) asked for a reboot", vserver.name, xid)


@method("helper.shutdown", cap="HELPER", txn=Txn.SELF, params=(XID,), waits=True)
def shutdown(call: Call, xid: int) -> None:
    """Clear the state of a context that ended; start it again if a reboot was asked for."""
    with vxdb.transaction(call.db):
        vserver = _vserver(call, xid)
    with vserver_lock(call.config.rundir, [vserver.name], wait=SHUTDOWN_LOCK_WAIT):
        with vxdb.transaction(call.db, immediate=True):
            requested = call.db.execute("DELETE FROM restart WHERE xid = ? RETURNING xid",
                                        (xid,)).fetchone() is not None
        if not requested:
            log.info("%s (xid %d) ended", vserver.name, xid)
            return
        if call.runtime.is_running(xid):
            return  # somebody started it already
        log.info("%s (xid %d) rebooting", vserver.name, xid)
        call.runtime.start(call.db, vserver)
