"""Graphs (PNG) and series of one metric, as `vstatd graph` and vx.graph / vx.stats show them.

Both go through the same definitions (`view()`), so the numbers of vx.stats are the
lines of the graph: counters as rates, cpu as percent of one CPU, memory limits in
bytes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import rrdtool

from libvserver import MEMORY_LIMIT_TYPES
from vstatd.layout import LIMIT_OF_DB, LOADAVG_DB, RAW_COVERAGE, THREAD_DBS, rrd_path
from vstatd.store import Identity, read_identity, read_since

PERIODS = {"1h": 3600, "1d": 86400, "1w": 7 * 86400, "1m": 30 * 86400, "1y": 365 * 86400}
PERIOD_TEXT = {"1h": "last hour", "1d": "last day", "1w": "last week", "1m": "last month",
               "1y": "last year"}
COLORS = ("#0066CC", "#CC3300", "#009933", "#9933CC", "#CC9900", "#666666")
MAX_ROWS = 800
# Only a Linux-VServer kernel keeps a low watermark; elsewhere the line would be a
# legend of "nan" (vx.stats still has the series)
MIN_DRAWN = False
FINE_ROWS_MAX = 200_000


class NoData(Exception):
    """No database for this vserver and metric (never sampled, or not counted here)."""


@dataclass(frozen=True)
class Line:
    ds: str
    label: str
    scale: float = 1.0          # applied to the stored value (after DERIVE's per-second rate)
    graph: bool = True          # drawn; every line is in vx.stats either way


@dataclass(frozen=True)
class View:
    title: str
    unit: str
    lines: tuple[Line, ...]
    base: int = 1000
    # rrdtool's legend format: %s scales to an SI prefix, which reads well for bytes
    # but turns 0.2 % into "200.00m"; percentages and loads are plain numbers
    legend: str = "%8.2lf %s"


def view(metric: str) -> View:
    if metric in THREAD_DBS:
        return View(f"threads {metric.split('_', 1)[1].lower()}", "threads",
                    (Line("value", "threads"),), legend="%6.0lf")
    if metric == LOADAVG_DB:
        return View("load average", "load", (Line("1MIN", "1 min"), Line("5MIN", "5 min"),
                                             Line("15MIN", "15 min")), legend="%6.2lf")
    if metric == "cpu":
        # stored in microseconds per second: /10^4 is percent of one CPU
        return View("CPU usage", "% of one CPU", (Line("user", "user", 1e-4),
                                                  Line("system", "system", 1e-4)),
                    legend="%6.2lf%%")
    if metric == "mem":
        return View("memory", "bytes", (Line("rss", "rss"), Line("cache", "cache"),
                                        Line("swap", "swap")), base=1024)
    if metric in LIMIT_OF_DB:
        ltype = LIMIT_OF_DB[metric]
        if ltype in MEMORY_LIMIT_TYPES:
            return View(f"limit {ltype}", "bytes", (Line("cur", "current", 1024),
                                                    Line("max", "peak", 1024),
                                                    Line("min", "minimum", 1024, MIN_DRAWN)),
                        base=1024)
        unit = "processes" if ltype == "NPROC" else "count"
        return View(f"limit {ltype}", unit, (Line("cur", "current"), Line("max", "peak"),
                                             Line("min", "minimum", graph=MIN_DRAWN)),
                    legend="%8.0lf")
    if metric.startswith("net_"):
        return View(f"network {metric[4:]}", "bytes/s", (
            Line("recvb", "received"), Line("sendb", "sent"),
            Line("recvp", "received packets/s", graph=False),
            Line("sendp", "sent packets/s", graph=False),
            Line("failp", "failed packets/s", graph=False),
            Line("failb", "failed bytes/s", graph=False)))
    raise ValueError(f"unknown metric {metric!r}")


def _escape(path: Path) -> str:
    # rrdtool splits DEF on ':'; a colon in rrddir must not end the file name
    return str(path).replace("\\", "\\\\").replace(":", "\\:")


def _defs(path: Path, v: View, only_graphed: bool, start: int, end: int,
          step: int) -> list[str]:
    """DEF/CDEF per line: the archive rrdtool picks for the whole window, overlaid with
    the every-step archive where that one has data.

    rrdtool takes one archive per DEF, the one covering the whole window: for 1 h
    that is the 1-minute archive, which has no row for the last, still open minute
    (nor anything for a vserver started minutes ago). The overlay keeps the recent
    past at full resolution; it is left out where it would mean millions of rows.
    """
    fine = (end - start) // step <= FINE_ROWS_MAX
    fine_start = max(start, end - math.ceil(RAW_COVERAGE / step) * step)
    args = []
    for i, line in enumerate(v.lines):
        if only_graphed and not line.graph:
            continue
        args.append(f"DEF:c{i}={_escape(path)}:{line.ds}:AVERAGE")
        if fine:
            args.append(f"DEF:f{i}={_escape(path)}:{line.ds}:AVERAGE:step={step}"
                        f":start={fine_start}:end={end}")
            args.append(f"CDEF:v{i}=f{i},UN,c{i},f{i},IF,{line.scale!r},*")
        else:
            args.append(f"CDEF:v{i}=c{i},{line.scale!r},*")
    return args


def _window(path: Path, step: int, period: str, now: float | None) -> tuple[int, int, bool]:
    """(start, end, clamped): the period, or less when the vserver's history is shorter.

    A vserver recorded for two minutes gets a graph of those two minutes rather
    than a line two pixels wide at the right edge of an empty hour.
    """
    end = int(now if now is not None else time.time())
    start = end - PERIODS[period]
    since = read_since(path.parent)
    if since is not None and since - step > start:
        return min(since - step, end - 2 * step), end, True
    return start, end, False


def _step_of(path: Path) -> int:
    return int(rrdtool.info(str(path))["step"])


def _path(rrddir: Path, name: str, metric: str, owner: Identity | None) -> Path:
    """The file, only if it belongs to `owner` (when given): a kept directory of a
    removed vserver must not show its history to the next owner of the name."""
    path = rrd_path(rrddir, name, metric)
    if not path.is_file() or (owner is not None and read_identity(path.parent) != owner):
        raise NoData(f"no statistics of {metric} for {name}")
    return path


def render(rrddir: Path, name: str, metric: str, period: str = "1d",
           now: float | None = None, width: int = 640, height: int = 200,
           owner: Identity | None = None) -> bytes:
    """The PNG of one metric of one vserver over a period."""
    args = graph_args(rrddir, name, metric, period, now, width, height, owner)
    return bytes(rrdtool.graphv(*args)["image"])


def legends(rrddir: Path, name: str, metric: str, period: str = "1d",
            now: float | None = None) -> list[str]:
    """The legend texts the PNG shows ("user", "last   0.20%", ...), in order."""
    info = rrdtool.graphv(*graph_args(rrddir, name, metric, period, now))
    count = sum(1 for k in info if k.startswith("legend["))
    return [str(info[f"legend[{i}]"]) for i in range(count)]


def graph_args(rrddir: Path, name: str, metric: str, period: str = "1d",
               now: float | None = None, width: int = 640, height: int = 200,
               owner: Identity | None = None) -> list[str]:
    """rrdtool graph's arguments for `render`."""
    path = _path(rrddir, name, metric, owner)
    v = view(metric)
    step = _step_of(path)
    start, end, clamped = _window(path, step, period, now)
    span = time.strftime("since %Y-%m-%d %H:%M:%S", time.localtime(start)) if clamped \
        else PERIOD_TEXT[period]
    args = ["-", "--imgformat", "PNG", "--start", str(start), "--end", str(end),
            "--title", f"{name}: {v.title} ({span})",
            "--vertical-label", v.unit, "--base", str(v.base),
            "--width", str(width), "--height", str(height), "--lower-limit", "0",
            "--slope-mode", *_defs(path, v, True, start, end, step)]
    if "%s" not in v.legend:
        # percent and load read as plain numbers on the axis too, not "800 m"
        args[args.index("--slope-mode"):args.index("--slope-mode")] = ["--units-exponent", "0"]
    # rrdtool prints a line without a single sample as "-nan": say so in words instead
    known = _known_lines(path, v, start)
    for i, line in enumerate(v.lines):
        if not line.graph:
            continue
        color = COLORS[i % len(COLORS)]
        args.append(f"LINE2:v{i}{color}:{line.label:<10}")
        if i in known:
            args += [f"GPRINT:v{i}:LAST:last {v.legend}",
                     f"GPRINT:v{i}:AVERAGE:avg {v.legend}",
                     f"GPRINT:v{i}:MAX:max {v.legend}\\n"]
        else:
            args.append("COMMENT:no sample in this period (is vstatd running? it writes "
                        "every flush_interval)\\n")
    return args


def _known_lines(path: Path, v: View, start: int) -> set[int]:
    """The indexes of the view's lines that may have a sample in a window from `start`:
    the file was updated within it, with a value for that line's data source (a file
    vstatd made but has not flushed to yet says "U" for each)."""
    info = rrdtool.info(str(path))
    if int(info.get("last_update", 0)) <= start:
        return set()
    return {i for i, line in enumerate(v.lines)
            if str(info.get(f"ds[{line.ds}].last_ds", "U")) not in ("U", "")}


def series(rrddir: Path, name: str, metric: str, period: str = "1d",
           now: float | None = None, owner: Identity | None = None) -> dict:
    """{start, end, step, timestamps, series: [{ds, label, unit, values}]}; an unknown
    value is None."""
    path = _path(rrddir, name, metric, owner)
    v = view(metric)
    step = _step_of(path)
    start, end, _ = _window(path, step, period, now)
    args = ["--start", str(start), "--end", str(end), "--maxrows", str(MAX_ROWS),
            *_defs(path, v, False, start, end, step)]
    args += [f"XPORT:v{i}:{line.label}" for i, line in enumerate(v.lines)]
    out = rrdtool.xport(*args)
    meta, rows = out["meta"], out["data"]
    step = int(meta["step"])
    # xport's row i covers (start + i*step, start + (i+1)*step]; its time is the end
    stamps = [int(meta["start"]) + (i + 1) * step for i in range(len(rows))]
    unit_of = {"failp": "packets/s", "recvp": "packets/s", "sendp": "packets/s"}
    return {
        "start": int(meta["start"]), "end": int(meta["end"]), "step": step,
        "timestamps": stamps,
        "series": [{"ds": line.ds, "label": line.label, "unit": unit_of.get(line.ds, v.unit),
                    "values": [_num(row[i]) for row in rows]}
                   for i, line in enumerate(v.lines)],
    }


def _num(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)
