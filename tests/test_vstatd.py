"""vstatd: real contexts sampled into real RRD files, graphs, and the vx.stats/vx.graph API.

One vcd and one vstatd (step 1 s) are shared by the module; every vserver a test
starts is stopped by the test (or by the daemon's cleanup at the end, whatever failed).
"""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import xmlrpc.client
import zlib
from pathlib import Path
from typing import Any, Callable

import pytest
import rrdtool

from api_helpers import create_vserver, fault_code, unique
from vcdtest import REPO, VcdDaemon, _alive, _toml

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")

STEP = 1
LINE_COLORS = {"cpu": (0x00, 0x66, 0xCC)}     # first line colour of vstatd.graph.COLORS


class StatsVcd(VcdDaemon):
    """A vcd whose config file also carries a [vstatd] table."""

    def __init__(self, root: Path, vstatd: dict[str, Any], **config: Any) -> None:
        self.vstatd_table = dict(vstatd)
        super().__init__(root, **config)

    def write_config(self, **changes: Any) -> None:
        super().write_config(**changes)
        with open(self.config_path, "a") as f:
            f.write("\n[vstatd]\n")
            f.writelines(f"{k} = {_toml(v)}\n" for k, v in self.vstatd_table.items())


class Vstatd:
    """A vstatd process for a config file; never outlives the test module."""

    def __init__(self, config_path: Path, pidfile: Path, log: Path) -> None:
        self.config_path = config_path
        self.pidfile = pidfile
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    def start(self, foreground: bool = True) -> None:
        argv = [sys.executable, "-m", "vstatd.main", "-c", str(self.config_path)]
        if foreground:
            argv.append("-f")
        with open(self.log, "ab") as err:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err,
                                            stderr=err, cwd=REPO)
        if foreground:
            self.pid = self.process.pid
        else:
            assert self.process.wait(timeout=30) == 0, self.log.read_text()
            self.pid = int(self.pidfile.read_text())
        wait_until(lambda: self.pidfile.exists() and self.pidfile.read_text().strip()
                   == str(self.pid), 10, "vstatd pidfile")

    def stop(self) -> None:
        if self.pid is None:
            return
        if _alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.poll()
        self.pid = None


def wait_until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("vstatd")
    rrddir = root / "rrd"
    # samples wait up to 2 s in memory: batched writes are part of every test below
    daemon = StatsVcd(root / "vcd", {"rrddir": str(rrddir), "step": STEP, "flush_interval": 2,
                                     "pidfile": str(root / "vstatd.pid"),
                                     "logfile": str(root / "vstatd.log"),
                                     "loglevel": "debug"}, workers=3, exec_timeout=10.0)
    stats = Vstatd(daemon.config_path, root / "vstatd.pid", root / "vstatd.stderr")
    try:
        daemon.start()
        stats.start()
        yield daemon, stats, rrddir
    finally:
        stats.stop()
        daemon.cleanup()


@pytest.fixture
def running(env):
    """A started vserver; stopped after the test."""
    daemon, _, _ = env
    admin = daemon.proxy()
    name = create_vserver(daemon)
    admin.vx.start(name=name)
    try:
        yield name
    finally:
        if admin.vx.status(name=name)["running"]:
            admin.vx.stop(name=name)


def last_values(path: Path) -> dict[str, float | None]:
    return rrdtool.lastupdate(str(path))["ds"]


def known_rows(path: Path, seconds: int) -> list[tuple]:
    end = rrdtool.last(str(path))
    _, _, rows = rrdtool.fetch(str(path), "AVERAGE", "-s", str(end - seconds), "-e", str(end))
    return [r for r in rows if r[0] is not None]


def exec_in(daemon: VcdDaemon, name: str, command: str) -> None:
    try:
        daemon.proxy().vx.exec(name=name, command=command)
    except xmlrpc.client.Fault as fault:
        assert fault.faultCode > 1000, fault  # a command's own exit status is fine here


# -- PNG, decoded far enough to look at the pixels -------------------------------------

def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, palette, header = 8, b"", None, None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = [tuple(body[i:i + 3]) for i in range(0, len(body), 3)]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
        if kind == b"IEND":
            break
    assert header is not None and kind == b"IEND"
    width, height, depth, ctype, _, _, interlace = header
    assert depth == 8 and interlace == 0 and ctype in (2, 3, 6), header
    bpp = {2: 3, 3: 1, 6: 4}[ctype]
    raw, stride = zlib.decompress(idat), width * bpp
    prev, rows, i = bytearray(stride), [], 0
    for _ in range(height):
        ftype, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 0xFF
            elif ftype == 2:
                line[x] = (line[x] + b) & 0xFF
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    pixels = []
    for row in rows:
        for x in range(width):
            px = row[x * bpp:(x + 1) * bpp]
            pixels.append(tuple(palette[px[0]]) if ctype == 3 else tuple(px[:3]))
    return width, height, pixels


def assert_graph_draws(png: bytes, color: tuple[int, int, int], rising: bool = False) -> None:
    width, height, pixels = png_pixels(png)
    assert width > 400 and height > 150
    assert len(set(pixels)) > 10, "a blank image"
    # the series line itself, in the plot area above the legend (which has a swatch of
    # the same colour): drawn across a good part of the width
    plot = [(i % width, i // width) for i, px in enumerate(pixels)
            if px == color and i // width < height * 0.75]
    assert len({x for x, _ in plot}) > width // 4, "the line covers hardly any of the plot"
    if rising:
        assert any(y < height * 0.4 for _, y in plot), "the line never leaves the bottom"


# -- the tests ---------------------------------------------------------------------------

def test_rrd_files_appear_within_two_steps_with_the_reference_layout(env, running):
    daemon, _, rrddir = env
    started = time.monotonic()
    d = rrddir / running
    wanted = ["thread_TOTAL", "thread_RUNNING", "thread_UNINTR", "thread_ONHOLD",
              "sys_LOADAVG", "cpu", "mem", "sys_NPROC", "mem_RSS"]
    wait_until(lambda: all((d / f"{w}.rrd").exists() for w in wanted), 2 * STEP + 2.0,
               "the RRD files")
    assert time.monotonic() - started <= 2 * STEP + 2.0
    info = rrdtool.info(str(d / "sys_LOADAVG.rrd"))
    assert info["step"] == STEP
    assert [info[f"ds[{n}].type"] for n in ("1MIN", "5MIN", "15MIN")] == ["GAUGE"] * 3
    assert rrdtool.info(str(d / "cpu.rrd"))["ds[user].type"] == "DERIVE"
    assert {"min", "cur", "max"} <= {k[3:-6] for k in rrdtool.info(str(d / "mem_RSS.rrd"))
                                     if k.endswith("].type")}
    rras = [(info[f"rra[{i}].cf"], info[f"rra[{i}].pdp_per_row"], info[f"rra[{i}].rows"])
            for i in range(13)]
    assert rras[0] == ("AVERAGE", 1, 1800)                       # every step for 30 min
    for i, (per_row, rows) in enumerate(((60, 360), (240, 360), (7200, 360), (86400, 365))):
        assert {cf for cf, p, r in rras[1 + 3 * i:4 + 3 * i]} == {"MIN", "MAX", "AVERAGE"}
        assert {(p, r) for cf, p, r in rras[1 + 3 * i:4 + 3 * i]} == {(per_row, rows)}
    # updates land on step boundaries, and the values are the context's
    assert rrdtool.last(str(d / "thread_TOTAL.rrd")) % STEP == 0
    wait_until(lambda: (last_values(d / "thread_TOTAL.rrd")["value"] or 0) >= 1, 5,
               "init counted")
    wait_until(lambda: (last_values(d / "mem.rrd")["rss"] or 0) > 0, 5, "memory in use")
    wait_until(lambda: (last_values(d / "sys_NPROC.rrd")["cur"] or 0) >= 1, 5, "nproc >= 1")
    assert (d / "cpu.rrd").stat().st_mode & 0o777 == 0o640


def test_ten_sleeping_processes_show_thread_total_of_at_least_ten(env, running):
    daemon, _, rrddir = env
    exec_in(daemon, running, "sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do "
                             "sleep 600 </dev/null >/dev/null 2>&1 & done'")
    path = rrddir / running / "thread_TOTAL.rrd"
    wait_until(lambda: path.exists() and (last_values(path)["value"] or 0) >= 10, 5,
               "thread_TOTAL >= 10")


def test_traffic_in_the_vservers_own_network_namespace_is_counted(env):
    daemon, _, rrddir = env
    admin = daemon.proxy()
    name = create_vserver(daemon)
    # an address: a network namespace with loopback up and eth0 on a veth pair
    admin.vxdb.nx.addr.set(name=name, addr="10.213.0.2", netmask="255.255.255.0")
    admin.vx.start(name=name)
    try:
        path = rrddir / name / "net_lo.rrd"
        wait_until(lambda: path.exists() and last_values(path)["recvb"] is not None, 5,
                   "a first net_lo sample")
        before = last_values(path)["recvb"]
        # busybox's httpd and wget: TCP over the vserver's own loopback
        admin.vx.exec(name=name, command="sh -c 'httpd -p 127.0.0.1:8080 -h / && wget -q "
                                         "-O /dev/null http://127.0.0.1:8080/bin/busybox'")
        size = (daemon.vbasedir / name / "bin/busybox").stat().st_size
        wait_until(lambda: last_values(path)["recvb"] >= before + size, 5, "counted traffic")
        rates = admin.vx.stats(name=name, metric="net_lo", period="1h")["series"]
        assert max(v or 0 for v in next(s for s in rates if s["ds"] == "recvb")["values"]) > 0
        assert (rrddir / name / "net_eth0.rrd").exists()
        assert not any((rrddir / name).glob("net_veth*.rrd")), "a host interface counted"
    finally:
        admin.vx.stop(name=name)


def test_busy_loop_shows_cpu_rising_in_the_file_and_in_vx_stats(env, running):
    daemon, _, rrddir = env
    path = rrddir / running / "cpu.rrd"
    before = wait_until(lambda: path.exists() and last_values(path)["user"] is not None, 5,
                        "a first cpu sample") and last_values(path)["user"]
    # longer than the 5 s of the supervisor's load sampling, so the load must rise too
    exec_in(daemon, running, "timeout 6 sh -c 'while :; do :; done'")
    # over a second of user time (µs) more than before
    wait_until(lambda: last_values(path)["user"] > before + 1_000_000, 5, "cpu rising")
    # one load average, decayed once by libvserver's supervisor: vx.load and sys_LOADAVG
    loadavg = rrddir / running / "sys_LOADAVG.rrd"
    wait_until(lambda: (last_values(loadavg)["1MIN"] or 0) > 0, 5, "sys_LOADAVG rising")
    assert float(daemon.proxy().vx.load(name=running)["1m"]) > 0
    stats = daemon.proxy().vx.stats(name=running, metric="cpu", period="1h")
    user = next(s for s in stats["series"] if s["ds"] == "user")
    assert user["unit"] == "% of one CPU"
    assert len(user["values"]) == len(stats["timestamps"])
    assert max(v for v in user["values"] if v is not None) > 50     # a busy core, in percent
    assert all(b - a == stats["step"] for a, b in zip(stats["timestamps"], stats["timestamps"][1:]))


def test_graphs_are_valid_pngs_of_the_data_from_cli_and_api(env, running, tmp_path):
    daemon, _, rrddir = env
    exec_in(daemon, running, "timeout 3 sh -c 'while :; do :; done'")
    time.sleep(2 * STEP)
    out = tmp_path / "cpu.png"
    r = subprocess.run([sys.executable, "-m", "vstatd.main", "-c", str(daemon.config_path),
                        "graph", running, "cpu", "--period", "1h", "-o", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.returncode == 0, r.stderr
    assert_graph_draws(out.read_bytes(), LINE_COLORS["cpu"], rising=True)
    png = daemon.proxy().vx.graph(name=running, metric="cpu", period="1h")
    assert isinstance(png, xmlrpc.client.Binary)
    assert_graph_draws(png.data, LINE_COLORS["cpu"], rising=True)
    # every period renders
    for period in ("1d", "1w", "1m", "1y"):
        assert daemon.proxy().vx.graph(name=running, metric="thread_TOTAL",
                                       period=period).data[:4] == b"\x89PNG"
    r = subprocess.run([sys.executable, "-m", "vstatd.main", "-c", str(daemon.config_path),
                        "graph", running, "../../etc/passwd", "-o", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.returncode == 2 and "unknown metric" in r.stderr


def test_stats_and_graph_check_capability_owner_metric_and_period(env, running):
    daemon, _, rrddir = env
    admin = daemon.proxy()
    wait_until((rrddir / running / "mem.rrd").exists, 5, "mem.rrd")
    wait_until(lambda: any(admin.vx.stats(name=running, metric="mem", period="1h")
                           ["series"][0]["values"]), 5, "mem history")
    user = unique("viewer")
    admin.vcd.user.set(username=user, password="password1", admin=False)
    client = daemon.proxy(user, "password1")
    assert fault_code(client.vx.stats, name=running, metric="mem") == 101   # no INFO
    admin.vcd.user.caps.add(username=user, cap="INFO")
    for call in (client.vx.stats, client.vx.graph):
        assert fault_code(call, name=running, metric="mem") == 202          # not an owner
        assert fault_code(call, name="no-such-vserver", metric="mem") == 202
    admin.vxdb.owner.add(name=running, username=user)
    rss = next(s for s in client.vx.stats(name=running, metric="mem")["series"]
               if s["ds"] == "rss")
    assert any(v for v in rss["values"] if v)
    assert client.vx.graph(name=running, metric="mem", period="1w").data[:4] == b"\x89PNG"
    for metric in ("../../../etc/passwd", "cpu.rrd", "net_..", "", "thread_total"):
        assert fault_code(client.vx.stats, name=running, metric=metric) == 200
    assert fault_code(client.vx.graph, name=running, metric="cpu", period="2d") == 200
    # a metric the kernel does not count for this vserver: a clear fault, no file made
    assert fault_code(client.vx.stats, name=running, metric="ipc_SEMARY") == 200


def test_restart_of_vstatd_continues_the_same_files(env, running):
    daemon, stats, rrddir = env
    path = rrddir / running / "thread_TOTAL.rrd"
    wait_until(lambda: path.exists() and len(known_rows(path, 10)) >= 2, 10, "a few samples")
    inode, first_sample = path.stat().st_ino, rrdtool.last(str(path))
    stats.stop()
    stopped_at = rrdtool.last(str(path))
    stats.start(foreground=False)       # detached this time, through python-daemon
    try:
        wait_until(lambda: rrdtool.last(str(path)) > stopped_at + STEP, 10,
                   "updates after the restart")
        assert path.stat().st_ino == inode
        (start, _, step), _, rows = rrdtool.fetch(str(path), "AVERAGE", "-s",
                                                  str(first_sample - 2 * STEP), "-e",
                                                  str(first_sample))
        assert any(r[0] is not None for r in rows), "history from before the restart is gone"
    finally:
        stats.stop()
        stats.start()


def test_rename_moves_the_directory_and_remove_keeps_then_deletes_as_configured(env):
    daemon, stats, rrddir = env
    admin = daemon.proxy()
    name, new = create_vserver(daemon), unique("renamed")
    admin.vx.start(name=name)
    try:
        wait_until(lambda: (rrddir / name / "cpu.rrd").exists(), 5, "files of the vserver")
    finally:
        admin.vx.stop(name=name)
    admin.vx.rename(name=name, newname=new)
    wait_until(lambda: (rrddir / new / "cpu.rrd").exists(), 5, "the renamed directory")
    assert not (rrddir / name).exists()
    admin.vx.remove(name=new)
    time.sleep(3 * STEP)
    # on_remove = keep: vx.remove moved them into the archive, out of the name's way
    assert not (rrddir / new).exists()
    assert any((rrddir / ".removed").glob(f"{new}.*/cpu.rrd")), "on_remove = keep lost the files"

    # a new vserver of that name sees none of the kept history, and gets files of its own
    create_vserver(daemon, name=new)
    assert fault_code(admin.vx.stats, name=new, metric="cpu") == 200
    admin.vx.start(name=new)
    try:
        wait_until(lambda: any(admin.vx.stats(name=new, metric="thread_TOTAL")["series"][0]
                               ["values"]) if (rrddir / new / "thread_TOTAL.rrd").exists()
                   else False, 5, "history of the new vserver")
    finally:
        admin.vx.stop(name=new)
    admin.vx.remove(name=new)

    # SIGHUP picks up on_remove = delete
    daemon.vstatd_table["on_remove"] = "delete"
    daemon.write_config()
    os.kill(stats.pid, signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in (stats.log.parent / "vstatd.log").read_text(),
               5, "the reload")
    other = create_vserver(daemon)
    admin.vx.start(name=other)
    try:
        wait_until(lambda: (rrddir / other / "cpu.rrd").exists(), 5, "files of the vserver")
    finally:
        admin.vx.stop(name=other)
    admin.vx.remove(name=other)
    wait_until(lambda: not (rrddir / other).exists(), 5, "deletion of the files")
    daemon.vstatd_table["on_remove"] = "keep"
    daemon.write_config()
    os.kill(stats.pid, signal.SIGHUP)


def test_unknown_vstatd_key_is_refused_with_exit_2_naming_it(tmp_path):
    conf = tmp_path / "vcd.conf"
    conf.write_text(f'[vstatd]\nrrddir = "{tmp_path}/rrd"\nstepp = 5\n')
    r = subprocess.run([sys.executable, "-m", "vstatd.main", "-c", str(conf), "-f"],
                       capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.returncode == 2 and "'stepp'" in r.stderr
    conf.write_text('[vstatd]\nstep = 0\n')
    r = subprocess.run([sys.executable, "-m", "vstatd.main", "-c", str(conf), "-f"],
                       capture_output=True, text=True, cwd=REPO, timeout=30)
    assert r.returncode == 2 and "'step'" in r.stderr


def test_batched_samples_reach_the_file_in_one_update_on_their_turn_or_on_flush(tmp_path):
    from vstatd.store import Identity, Store
    store = Store(tmp_path, step=1, on_remove="keep", flush_interval=10)
    d = store.claim("vs", Identity(2, 1), 1000)
    t0 = (int(time.time()) // 1) * 1
    for k in range(5):
        store.write(d, t0 + k, {"thread_TOTAL": (k,)})
    path = d / "thread_TOTAL.rrd"
    assert path.stat().st_mode & 0o777 == 0o640
    assert rrdtool.last(str(path)) == t0 - 1          # created, aligned, nothing written yet
    written = sum(store.flush(t) for t in range(t0, t0 + 10))   # one full interval
    assert written == 5 and rrdtool.last(str(path)) == t0 + 4
    store.write(d, t0 + 5, {"thread_TOTAL": (7,)})
    assert store.flush_all() == 1
    _, _, rows = rrdtool.fetch(str(path), "AVERAGE", "-s", str(t0 - 1), "-e", str(t0 + 5))
    assert [r[0] for r in rows][:6] == [0.0, 1.0, 2.0, 3.0, 4.0, 7.0]


def test_a_guest_naming_ever_new_interfaces_gets_max_net_dbs_files_and_no_more(tmp_path):
    """Root inside with NET_ADMIN names interfaces at will (ip link add, ip link set name):
    each new name would be another ~220 KB file on the host's disk."""
    from vstatd.layout import MAX_NET_DBS
    from vstatd.store import Identity, Store
    store = Store(tmp_path, step=1, on_remove="keep")
    d = store.claim("vs", Identity(2, 1), 1000)
    t0 = int(time.time())
    for k in range(3):
        # every step a fresh batch of names, as a guest renaming its interfaces would
        recs = {f"net_if{k}x{i}": (1, 2, 3, 4, 0, None) for i in range(MAX_NET_DBS)}
        recs["thread_TOTAL"] = (k,)
        store.write(d, t0 + k, recs)
    store.flush_all()
    made = sorted(p.name for p in d.glob("net_*.rrd"))
    assert made == sorted(f"net_if0x{i}.rrd" for i in range(MAX_NET_DBS))
    assert rrdtool.last(str(d / "thread_TOTAL.rrd")) == t0 + 2   # the rest goes on
    # the first names keep their history; a new store (a restart) counts what is there
    store = Store(tmp_path, step=1, on_remove="keep")
    d = store.claim("vs", Identity(2, 1), 1000)
    assert store.write(d, t0 + 3, {"net_if0x0": (5, 6, 7, 8, 0, None),
                                   "net_other": (1, 1, 1, 1, 0, None)}) == 1
    store.flush_all()
    assert rrdtool.last(str(d / "net_if0x0.rrd")) == t0 + 3
    assert not (d / "net_other.rrd").exists()


def test_check_config_of_vcd_also_validates_the_vstatd_table(tmp_path):
    import subprocess
    import sys
    conf = tmp_path / "vcd.conf"
    conf.write_text("[vstatd]\nstepp = 5\n")
    out = subprocess.run([sys.executable, "-m", "vcd.daemon", "--check-config", "-c", str(conf)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "stepp" in out.stderr
