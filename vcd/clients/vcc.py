"""vcc: the VServer Control Client - create, run and watch vservers.

Every `vx.*` method is a command named after it (vx.start -> `vcc start NAME`); the
table below only lists where the original client's command line differs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from vcd.clients import common, completion, login
from vcd.clients.commands import Program, Spec, collect, derived
from vcd.clients.common import Client, ClientError
from vcd.clients.output import Output
from vcd.params import Param, Text, VServerName


def _list(spec: Spec, client: Client, ns: argparse.Namespace, out: Output) -> int:
    """Names from vxdb.list, then xid and status of all of them in one system.multicall."""
    names = client.call(spec.method, collect(spec, ns))
    if out.quiet and not out.json:
        for name in names:
            out.out.write(name + "\n")
        return common.OK
    calls: list[tuple[str, dict[str, Any]]] = []
    for name in names:
        calls += [("vxdb.xid.get", {"name": name}), ("vx.status", {"name": name})]
    answers = client.multicall(calls)
    rows = []
    for i, name in enumerate(names):
        xid, status = answers[2 * i], answers[2 * i + 1]
        status = status if isinstance(status, dict) else {}
        rows.append({"name": name, "xid": None if isinstance(xid, ClientError) else xid,
                     "running": status.get("running"), "nproc": status.get("nproc"),
                     "uptime": status.get("uptime") if status.get("running") else None,
                     "load": status.get("load1m") if status.get("running") else None})
    if not rows and not out.json:
        return common.OK
    out.rows(rows, ["name", "xid", "running", "nproc", "uptime", "load"])
    return common.OK


def _exec(spec: Spec, client: Client, ns: argparse.Namespace, out: Output) -> int:
    """Like running the command: its output on stdout whether or not it failed; a
    non-zero exit N (fault 1000+N) is reported and gives exit status EXEC."""
    try:
        out.text(client.call(spec.method, collect(spec, ns)))
    except ClientError as error:
        if error.code is None or error.code <= 1000:
            raise
        if out.json:
            out.json_value({"status": error.code - 1000, "output": error.text})
        else:
            out.text(error.text)
        raise ClientError(error.method, f"command exited with status {error.code - 1000}",
                          error.code) from None
    return common.OK


FOLLOW_INTERVAL = 0.5  # seconds between polls of `vcc console -f`


def _console_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing what the console writes until Ctrl-C")


def _console(spec: Spec, client: Client, ns: argparse.Namespace, out: Output) -> int:
    """The last lines of the console log; with -f, follow it like `tail -f`."""
    params = collect(spec, ns)
    answer = client.call(spec.method, params)
    if out.json and not ns.follow:
        out.json_value(answer)
        return common.OK
    stream = out.out
    stream.write(answer.get("data", ""))
    stream.flush()
    try:
        while ns.follow:
            time.sleep(FOLLOW_INTERVAL)
            answer = client.call(spec.method, {"name": params["name"],
                                               "offset": answer.get("offset", 0)})
            if answer.get("data"):
                stream.write(answer["data"])
                stream.flush()
    except KeyboardInterrupt:
        pass
    return common.OK


def _graph_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", dest="output", metavar="FILE", required=True,
                        help="where the PNG goes ('-' = standard output)")


def _write_graph(result: Any, ns: argparse.Namespace, out: Output) -> None:
    data = bytes(result or b"")
    if ns.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    tmp = f"{ns.output}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, ns.output)
    if out.json:
        out.json_value({"file": ns.output, "bytes": len(data)})
    elif not out.quiet:
        out.out.write(f"{ns.output}: {len(data)} bytes\n")


def _show_stats(result: Any, ns: argparse.Namespace, out: Output) -> None:
    """vx.stats' {timestamps, series: [{label, unit, values}]} as one row per sample."""
    if out.json or not isinstance(result, dict) or not isinstance(result.get("series"), list):
        return out.result(result)
    series = [s for s in result["series"] if isinstance(s, dict)]
    columns = ["time"] + [f"{s.get('label') or s.get('ds')}" + (f" ({s['unit']})" if s.get("unit")
                                                                 else "") for s in series]
    rows = []
    for i, stamp in enumerate(result.get("timestamps") or []):
        row: dict[str, Any] = {"time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))}
        for column, s in zip(columns[1:], series):
            values = s.get("values") or []
            value = values[i] if i < len(values) else None
            row[column] = None if value is None else f"{value:.6g}"
        rows.append(row)
    if not out.quiet:
        out.out.write(f"{result.get('name')} {result.get('metric')} over {result.get('period')}"
                      f" (step {result.get('step')} s)\n")
    out.rows(rows, columns)


_METRIC = (Param("name", VServerName, doc="vserver name"),
           Param("metric", Text(max_len=64), doc="RRD name, e.g. thread_TOTAL, sys_LOADAVG"),
           Param("period", Text(max_len=8), required=False, default="1d",
                 doc="1h, 1d, 1w, 1m or 1y"))

# Where vcc differs from "one command per vx.* method with its params in order".
OVERRIDES = (
    Spec("exec", "vx.exec", rest="command", run=_exec),
    Spec("list", "vxdb.list", run=_list),
    Spec("console", "vx.console", options=("lines", "offset"), setup=_console_options, run=_console),
    Spec("graph", "vx.graph", options=("period",), setup=_graph_options, show=_write_graph,
         fallback=_METRIC),
    Spec("stats", "vx.stats", options=("period",), show=_show_stats, fallback=_METRIC),
)

PROGRAM = Program(
    "vcc", "VServer Control Client: create, start, stop, enter and watch vservers.",
    derived("vx.", OVERRIDES),
    [login.LOCAL, completion.local_command("vcc")])


def main(argv: list[str] | None = None) -> int:
    return PROGRAM.main(argv)


if __name__ == "__main__":
    sys.exit(main())
