"""vcc: the VServer Control Client - create, run and watch vservers.

Every `vx.*` method is a command named after it (vx.start -> `vcc start NAME`); the
table below only lists where the original client's command line differs.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Any

from vcd import progress
from vcd.clients import common, login
from vcd.clients.commands import Program, Spec, collect, confirmation, derived
from vcd.clients.follow import follow
from vcd.clients.common import Client, ClientError
from vcd.clients.output import HUMAN, Output, human_kib
from vcd.errors import exec_output
from vcd.params import Param, Text, VServerName


def _list(spec: Spec, client: Client, ns: argparse.Namespace, out: Output) -> int:
    """Names from vxdb.list, then xid, status and addresses of all of them in one
    system.multicall (an address the caller may not read, without NET, shows as -)."""
    names = client.call(spec.method, collect(spec, ns))
    if out.quiet and not out.json:
        for name in names:
            out.out.write(name + "\n")
        return common.OK
    calls: list[tuple[str, dict[str, Any]]] = []
    for name in names:
        calls += [("vxdb.xid.get", {"name": name}), ("vx.status", {"name": name}),
                  ("vxdb.nx.addr.get", {"name": name})]
    answers = client.multicall(calls)
    rows = []
    for i, name in enumerate(names):
        xid, status, addrs = answers[3 * i: 3 * i + 3]
        status = status if isinstance(status, dict) else {}
        addrs = addrs if isinstance(addrs, list) else []
        rows.append({"name": name, "xid": None if isinstance(xid, ClientError) else xid,
                     "running": status.get("running"),
                     "address": [a.get("addr") for a in addrs if isinstance(a, dict)],
                     "nproc": status.get("nproc"),
                     "uptime": status.get("uptime") if status.get("running") else None,
                     "load": status.get("load1m") if status.get("running") else None})
    out.rows(rows, ["name", "xid", "running", "address", "nproc", "uptime", "load"])
    return common.OK


def _launch(spec: Spec, client: Client, ns: argparse.Namespace, out: Output) -> int:
    """Create and start in one command (as `incus launch`): vx.create, then vx.start."""
    values = collect(spec, ns)
    client.call("vx.create", values)
    out.done(f"{values['name']}: created from {values['template']}")
    client.call("vx.start", {"name": values["name"]})
    out.done(f"{values['name']}: started")
    return common.OK


def _exec(spec: Spec, client: Client, ns: argparse.Namespace, out: Output) -> int:
    """Like running the command: its output on stdout as it comes (a task followed
    through task.log), our stdin fed to it when it is not a terminal, and the
    command's own exit status (as ssh and incus exec). With --json: one answer,
    {status, output}."""
    params = collect(spec, ns)
    if not ns.no_stdin and sys.stdin is not None and not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
        if data:
            params["stdin"] = data.decode("utf-8", errors="replace")
    if out.json:
        try:
            output, status = client.call(spec.method, params), 0
        except ClientError as error:
            if error.code is None or error.code <= 1000:
                raise
            output, status = exec_output(error.text), error.code - 1000
        out.json_value({"status": status, "output": output})
        return status
    task_id = client.call(spec.method, {**params, "background": True})
    shown: list[str] = []

    def write(text: str) -> None:
        shown.append(text)
        out.out.write(text)
        out.out.flush()

    task = follow(client, task_id, write)
    code = int(task.get("fault_code") or 0)
    if code == 0:
        return common.OK
    text = str(task.get("fault_string", ""))
    streamed = "".join(shown)
    if code > 1000:
        text = exec_output(text)
        # the output was shown as it came; say more only when the fault says more (timeout)
        note = text[:len(text) - len(streamed)] if text.endswith(streamed) else text
        if note.strip():
            # the daemon speaks of the API's param; a vcc user types an option
            note = note.replace("give vx.exec a 'timeout' in seconds",
                                "vcc exec --timeout SECONDS")
            print(f"vcc: {spec.method}: {note.rstrip(': ')}", file=sys.stderr)
        return min(code - 1000, 255)
    raise ClientError(spec.method, text, code)


def _exec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--no-stdin", dest="no_stdin", action="store_true",
                        help="do not forward standard input (the command reads /dev/null)")


def _create(spec: Spec, client: Client, ns: argparse.Namespace, out: Output) -> int:
    """On a terminal: run as a task and draw the extraction's progress as a bar."""
    params = collect(spec, ns)
    if out.json or not out.out.isatty():
        out.result(client.call(spec.method, params))
        out.done(confirmation(spec, params))
        return common.OK
    bar = progress.Bar(out.out)
    pending = ""

    def write(text: str) -> None:
        nonlocal pending
        *lines, pending = (pending + text).split("\n")
        for line in lines:
            step = progress.parse(line)
            if step is not None:
                bar.update(step)
            elif line:
                bar.close()
                out.out.write(line + "\n")

    try:
        task = follow(client, client.call(spec.method, {**params, "background": True}), write)
    finally:
        bar.close()
    if task.get("fault_code"):
        raise ClientError(spec.method, str(task.get("fault_string", "")),
                          int(task["fault_code"]))
    out.done(confirmation(spec, params))
    return common.OK


FOLLOW_INTERVAL = 0.5  # seconds between polls of `vcc console -f`


def _console_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing what the console writes until Ctrl-C")


# What a guest writes to its console reaches the admin's terminal through `vcc console`.
# The daemon already replaces C0 controls (ESC among them) with U+FFFD because XML 1.0
# forbids them; C1 controls (U+0080..U+009F: CSI, OSC, DCS as single characters) and DEL
# are legal XML, and terminals that honour 8-bit controls would run them. Newline, tab and
# carriage return stay (console output is full of CR LF).
_TERMINAL_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """``text`` with every control character a terminal could act on (other than
    newline, tab and carriage return) replaced by U+FFFD."""
    return _TERMINAL_CONTROLS.sub("\ufffd", text)


def _console(spec: Spec, client: Client, ns: argparse.Namespace, out: Output) -> int:
    """The last lines of the console log; with -f, follow it like `tail -f`."""
    params = collect(spec, ns)
    answer = client.call(spec.method, params)
    if out.json and not ns.follow:
        out.json_value(answer)
        return common.OK
    stream = out.out
    if answer.get("data"):
        stream.write(terminal_safe(answer["data"]))
        stream.flush()
    elif not ns.follow and not out.quiet:
        # an empty log is an answer too: say so, and how to wait for output
        out.err.write(f"(none: nothing written to the console of {params['name']} since "
                      f"its last start; vcc console {params['name']} -f waits for it)\n")
    try:
        while ns.follow:
            time.sleep(FOLLOW_INTERVAL)
            answer = client.call(spec.method, {"name": params["name"],
                                               "offset": answer.get("offset", 0)})
            if answer.get("data"):
                stream.write(terminal_safe(answer["data"]))
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
    columns = ["time"]
    for s in series:
        label = f"{s.get('label') or s.get('ds')}"
        # "threads (threads)" says nothing twice: the unit only where it adds something
        columns.append(label + (f" ({s['unit']})" if s.get("unit") and s["unit"] != label else ""))
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
    if not out.quiet and any(v is None for r in rows for k, v in r.items() if k != "time"):
        out.err.write("- = no sample for that time: vstatd was not running, or the vserver "
                      "had not run long enough (rates need two samples, averages a minute "
                      "of them), or vstatd has not written it yet (it writes its samples "
                      "every flush_interval, 60 s by default)\n")


def _show_limstatus(result: Any, ns: argparse.Namespace, out: Output) -> None:
    """The peak beside the configured limit, memory with a unit (KiB from the daemon)."""
    if out.json or not isinstance(result, list):
        return out.result(result)
    rows = []
    for r in result:
        memory = isinstance(r, dict) and r.get("unit") == "KiB"
        shown = {k: (human_kib(v) if memory and v not in ("", "inf", None) else v)
                 for k, v in r.items()}
        rows.append({"type": shown.get("type"), "current": shown.get("cur"),
                     "peak": shown.get("max"), "limit": shown.get("limit", "")})
    out.rows(rows, ["type", "current", "peak", "limit"])


def _show_tasks(result: Any, ns: argparse.Namespace, out: Output) -> None:
    """task.list as a table a person reads: times, and one state word instead of
    running/fault_code/fault_string (the result stays for --json and task.get)."""
    if out.json or not isinstance(result, list):
        return out.result(result)
    def when(stamp: Any) -> str | None:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else None
    rows = [{"id": t.get("id"), "method": t.get("method"), "name": t.get("name"),
             "user": t.get("user"), "started": when(t.get("started")),
             "state": "running" if t.get("running") else
             ("done" if not t.get("fault_code") else f"fault {t.get('fault_code')}")}
            for t in result if isinstance(t, dict)]
    out.rows(rows, ["id", "method", "name", "user", "started", "state"])


def _show_task(result: Any, ns: argparse.Namespace, out: Output) -> None:
    """task.get with its times as local time (0 = not ended yet: -)."""
    if out.json or not isinstance(result, dict):
        return out.result(result)
    stamp = lambda v: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v)) if v else "-"
    out.mapping(result, {**HUMAN, "started": stamp, "ended": stamp})


def _follow_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing the log until the task ends (Ctrl-C stops "
                             "following, not the task)")


def _task_log(spec: Spec, client: Client, ns: argparse.Namespace, out: Output) -> int:
    """A task's log from OFFSET; with -f, as it grows until the task has ended."""
    params = collect(spec, ns)
    if out.json and not ns.follow:
        out.json_value(client.call(spec.method, params))
        return common.OK
    offset = int(params.get("offset", 0))
    shown = False
    try:
        while True:
            part = client.call(spec.method, {"id": params["id"], "offset": offset})
            if part.get("data"):
                out.out.write(part["data"])
                out.out.flush()
                shown = True
            moved = part.get("offset", offset) != offset
            offset = part.get("offset", offset)
            if part.get("eof") or not ns.follow:
                break
            if not moved:
                time.sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:
        pass
    if not shown:
        out.nothing()
    return common.OK


# Tasks (background: true) are vcc's too: it starts most of them (exec, create, start...)
TASKS = (
    Spec("task.list", "task.list", show=_show_tasks),
    Spec("task.get", "task.get", show=_show_task),
    Spec("task.log", "task.log", options=("offset",), setup=_follow_option, run=_task_log,
         usage="[-f]"),
    Spec("task.stop", "task.stop"),
)

_METRIC = (Param("name", VServerName, doc="vserver name"),
           Param("metric", Text(max_len=64), doc="RRD name, e.g. thread_TOTAL, sys_LOADAVG"),
           Param("period", Text(max_len=8), required=False, default="1d",
                 doc="1h, 1d, 1w, 1m or 1y"))

# Where vcc differs from "one command per vx.* method with its params in order".
OVERRIDES = (
    Spec("exec", "vx.exec", order=("name", "command"), rest="command", options=("timeout",),
         setup=_exec_options, run=_exec),
    Spec("list", "vxdb.list", run=_list),
    Spec("launch", "vx.create", order=("name", "template"), run=_launch,
         doc="Create a vserver from a template and start it (vx.create, then vx.start)."),
    Spec("limstatus", "vx.limstatus", show=_show_limstatus),
    Spec("create", "vx.create", run=_create),
    Spec("console", "vx.console", options=("lines", "offset"), setup=_console_options,
         run=_console, usage="[-f]"),
    Spec("graph", "vx.graph", options=("period",), setup=_graph_options, show=_write_graph,
         fallback=_METRIC, usage="-o FILE"),
    Spec("stats", "vx.stats", options=("period",), show=_show_stats, fallback=_METRIC),
)

PROGRAM = Program(
    "vcc", "VServer Control Client: create, start, stop, enter and watch vservers.",
    [*derived("vx.", OVERRIDES), *TASKS],
    [login.LOCAL])


def main(argv: list[str] | None = None) -> int:
    return PROGRAM.main(argv)


if __name__ == "__main__":
    sys.exit(main())
