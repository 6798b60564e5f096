"""vx.stats and vx.graph: the history vstatd recorded, for panels without shell access.

Both read the RRD files directly (vcd and vstatd share the [vstatd] table of the
config); the metric is checked against vstatd's vocabulary and the name passed the
owner check before either becomes part of a path.
"""
from __future__ import annotations

import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vcd.config import ConfigError
from vcd.errors import Fault, VcdError, invalid
from vcd.params import Choice, Param, ParamType, VServerName
from vcd.registry import Call, Owner, Txn, method

from vstatd import graph
from vstatd.config import settings
from vstatd.layout import metric_vocabulary, valid_metric
from vstatd.store import Identity


@dataclass(frozen=True)
class Metric(ParamType):
    description: str = "metric (RRD database name)"

    def convert(self, name: str, value: Any) -> str:
        value = self._string(name, value)
        if not valid_metric(value):
            raise invalid(f"'{name}' is not a known metric: {value!r} "
                          f"(one of {', '.join(metric_vocabulary())})")
        return value


PARAMS = (Param("name", VServerName, doc="vserver name"),
          Param("metric", Metric(), doc="thread_TOTAL, sys_LOADAVG, cpu, mem, mem_RSS, "
                                        "sys_NPROC, net_<family|interface> ..."),
          Param("period", Choice(tuple(graph.PERIODS), "period"), required=False,
                default="1d", doc="1h, 1d, 1w, 1m (30 days) or 1y"))


def _rrddir(call: Call) -> Path:
    try:
        return settings(call.config).rrddir
    except ConfigError as exc:
        raise VcdError(Fault.MECONF, str(exc)) from None


def _identity(call: Call) -> Identity:
    # the files vstatd marked for this very vserver, not a removed namesake's
    row = call.db.execute("SELECT created FROM vservers WHERE xid = ?",
                          (call.vserver.xid,)).fetchone()
    if row is None:
        raise VcdError(Fault.MENOVPS, call.vserver.name)
    return Identity(call.vserver.xid, row[0])


@method("vx.stats", cap="INFO", owner=Owner.OWNER, txn=Txn.SELF, params=PARAMS,
        returns="struct")
def stats(call: Call, name: str, metric: str, period: str) -> dict:
    """Recorded history of one metric: {name, metric, period, start, end, step,
    timestamps, series: [{ds, label, unit, values}]}; values are what vx.graph draws
    (rates for counters, percent of one CPU for cpu), nil where unknown."""
    try:
        data = graph.series(_rrddir(call), name, metric, period, owner=_identity(call))
    except graph.NoData as exc:
        raise VcdError(Fault.MEINVAL, f"{exc} (is vstatd running?)") from None
    return {"name": name, "metric": metric, "period": period, **data}


@method("vx.graph", cap="INFO", owner=Owner.OWNER, txn=Txn.SELF, params=PARAMS,
        returns="base64")
def graph_png(call: Call, name: str, metric: str, period: str) -> xmlrpc.client.Binary:
    """A PNG graph (titled, with units and legend) of one metric over a period."""
    try:
        png = graph.render(_rrddir(call), name, metric, period, owner=_identity(call))
    except graph.NoData as exc:
        raise VcdError(Fault.MEINVAL, f"{exc} (is vstatd running?)") from None
    return xmlrpc.client.Binary(png)
