"""A new user's first hour, reading only the README: every stumble reported in issue 14
(clients not found, no hint where the password is, -h/help, silent changes, missing
columns, units, vstatd not started, one config error at a time) as the fixed behaviour,
with the clients run as programs the way a person types them."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest

from api_helpers import ensure_busybox_template, unique
from test_clients import Pty
from vcdtest import CGROUP_PARENT, REPO, VcdDaemon, free_port

BIN = Path(sys.executable).parent
README = (REPO / "README.md").read_text()
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory):
    """A daemon with its Unix socket, as `make run` serves it."""
    sockdir = Path(tempfile.mkdtemp(prefix="vcd-first-", dir="/tmp"))
    daemon = VcdDaemon(tmp_path_factory.mktemp("first"), unix_socket=str(sockdir / "vcd.sock"),
                       exec_timeout=20.0)
    try:
        daemon.start()
        ensure_busybox_template(daemon.templatedir)
        yield daemon
    finally:
        daemon.cleanup()
        shutil.rmtree(sockdir, ignore_errors=True)


def user_env(daemon: VcdDaemon | None = None, **extra: str) -> dict[str, str]:
    """A root shell with nothing configured: no client config, no password; the daemon's
    socket stands in for /run/vcd/vcd.sock."""
    env = {k: v for k, v in os.environ.items() if k not in ("VCD_PASSWORD", "VCD_SOCKET")}
    env["HOME"] = tempfile.gettempdir() + "/vcd-no-home"
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    if daemon is not None:
        env["VCD_SOCKET"] = str(daemon.overrides["unix_socket"])
    env.update(extra)
    return env


def typed(daemon: VcdDaemon | None, line: str, input: str = "",
          **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(shlex.split(line), capture_output=True, text=True, input=input,
                          env=user_env(daemon, **extra), timeout=180)


def ok(daemon: VcdDaemon | None, line: str, **extra: str) -> str:
    r = typed(daemon, line, **extra)
    assert r.returncode == 0, f"{line}: {r.returncode} {r.stdout} {r.stderr}"
    return r.stdout


def readme_block(heading: str, lang: str) -> str:
    """The first ```lang block after a heading of the README."""
    section = README.split(heading, 1)[1]
    return section.split(f"```{lang}\n", 1)[1].split("```", 1)[0]


# -- 1. finding the clients, the password, the config ----------------------------------------

def test_make_links_puts_the_clients_where_a_user_finds_them(tmp_path):
    bindir = tmp_path / "bin"
    r = subprocess.run(["make", "-s", "-o", "setup", "links", f"BINDIR={bindir}"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert str(bindir) in r.stdout and ". .venv/bin/activate" in r.stdout
    for prog in ("vcc", "vce", "vgc", "vcdadm", "vcd", "vstatd"):
        assert (bindir / prog).is_symlink(), prog
    # a shell whose PATH has only the link directory and the system finds and runs them
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run(["vcc", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and "launch NAME TEMPLATE" in r.stdout, r.stderr
    # a file of someone else's is never replaced
    (bindir / "vgc").unlink()
    (bindir / "vgc").write_text("#!/bin/sh\necho mine\n")
    r = subprocess.run(["make", "-s", "-o", "setup", "links", f"BINDIR={bindir}"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "not replaced" in r.stdout
    assert (bindir / "vgc").read_text() == "#!/bin/sh\necho mine\n"


def test_the_readme_client_config_points_at_the_password_file_make_run_writes():
    from vcd.config import load
    example = load(REPO / "vcd.conf.example")
    conf = tomllib.loads(readme_block("read from `-c`", "toml"))
    assert conf["password_file"] == str(example.password_file("admin"))
    assert conf["url"] == f"http://{example.host}:{example.port}/RPC2"
    # and make run's config serves the socket the clients look for first
    assert str(example.unix_socket) == "/run/vcd/vcd.sock"
    assert example.unix_socket_trusted_uids == (0,)


def test_a_password_prompt_says_where_the_first_start_password_is(d):
    term = Pty([str(BIN / "vcc"), "-p", str(d.port), "-q", "list"], user_env())
    assert term.expect(b"Password for admin: "), term.output
    assert b"admin.password" in term.output and b"password_file" in term.output
    term.send(d.admin_password.encode() + b"\n")
    assert term.finish() == 0, term.output


# -- 2. help ---------------------------------------------------------------------------------

@pytest.mark.parametrize("prog", ["vcc", "vce", "vgc", "vcdadm"])
def test_help_dash_h_alone_and_dash_dash_help_all_print_the_help(prog):
    for line in (f"{prog} help", f"{prog} -h", f"{prog} --help"):
        out = ok(None, line)
        assert out.startswith(f"usage: {prog}") and "commands:" in out, line
        assert "help [COMMAND]" in out


def test_help_of_one_command_and_dash_h_after_a_command():
    assert ok(None, "vcc help exec").startswith("usage: vcc exec [--timeout TIMEOUT] NAME COMMAND [ARGS...]")
    assert ok(None, "vcc start -h").startswith("usage: vcc start NAME")
    assert ok(None, "vce help vx.limit.set").startswith("usage: vce vx.limit.set NAME LIMIT SOFT")
    r = typed(None, "vcc help no-such-command")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_dash_h_with_a_host_is_still_the_host(d):
    out = ok(None, f"vcc -h 127.0.0.1 -p {d.port} --json list", VCD_PASSWORD=d.admin_password)
    assert isinstance(json.loads(out), list)


def test_vce_help_reads_without_typos():
    text = ok(None, "vce --help")
    assert not re.search(r"addresss|capabilitys|\bys\b", text)
    assert "network addresses" in text and "system capabilities" in text


# -- 3. first commands, confirmations, columns -----------------------------------------------

@needs_root
def test_the_readme_first_commands_work_verbatim_as_local_root(d):
    lines = [ln.split("#")[0].strip() for ln in readme_block("## First commands", "sh").splitlines()]
    lines = [ln for ln in lines if ln]
    assert lines[:3] == ["vcc list", "vcc launch web busybox", "vcc exec web hostname"]
    outputs = {}
    try:
        for line in lines:
            outputs[line] = ok(d, line)
    finally:
        typed(d, "vcc stop web")
        typed(d, "vcc remove web")
    assert outputs["vcc launch web busybox"] == "web: created from busybox\nweb: started\n"
    assert outputs["vcc exec web hostname"] == "web\n"


@needs_root
def test_every_change_is_confirmed_and_list_shows_addresses(d):
    name = unique("fh")
    try:
        assert ok(d, f"vcc create {name} busybox") == f"{name}: created\n"
        assert ok(d, f"vce nx.addr.set {name} 10.77.0.2") == f"{name}: nx.addr set\n"
        assert ok(d, f"vce vx.limit.set {name} NPROC 64") == f"{name}: vx.limit set\n"
        assert ok(d, f"vcc start {name}") == f"{name}: started\n"
        header, *rows = ok(d, "vcc list").splitlines()
        assert header.split() == ["NAME", "XID", "RUNNING", "ADDRESS", "NPROC", "UPTIME", "LOAD"]
        row = next(r for r in rows if r.startswith(name + " "))
        assert "10.77.0.2" in row.split()
        assert json.loads(ok(d, "vcc --json list"))[0]["address"] is not None
        assert ok(d, f"vcc -q stop {name}") == ""
        ok(d, f"vcc start {name}")
        assert ok(d, f"vcc stop {name}").endswith(f"{name}: stopped\n")  # after halt's output
        assert ok(d, f"vcc rename {name} {name}x") == f"{name}: renamed to {name}x\n"
        assert ok(d, f"vcc remove {name}x") == f"{name}x: removed\n"
    finally:
        typed(d, f"vcc stop {name}")
        typed(d, f"vcc remove {name}")


@needs_root
def test_limstatus_shows_the_limit_beside_the_peak_with_units(d):
    name = unique("ls")
    try:
        ok(d, f"vcc create {name} busybox")
        ok(d, f"vce vx.limit.set {name} RSS 102400 102400")      # KiB: 100M
        ok(d, f"vcc start {name}")
        rows = {r["type"]: r for r in json.loads(ok(d, f"vcc --json limstatus {name}"))}
        # the manual's max stays the observed peak; the limit is a field of its own
        assert rows["RSS"]["limit"] == "102400" and rows["RSS"]["unit"] == "KiB"
        assert int(rows["RSS"]["max"]) < 102400 and rows["NPROC"]["limit"] == "4096"  # default_nproc
        header, *lines = ok(d, f"vcc limstatus {name}").splitlines()
        assert header.split() == ["TYPE", "CURRENT", "PEAK", "LIMIT"]
        rss = next(ln.split() for ln in lines if ln.startswith("RSS"))
        assert rss[3] == "100.0M" and re.fullmatch(r"[\d.]+[KMG]", rss[1]), rss
    finally:
        typed(d, f"vcc stop {name}")
        typed(d, f"vcc remove {name}")


def test_an_empty_answer_says_so_where_a_script_does_not_read(d):
    name = unique("em")
    try:
        ok(d, f"vcc create {name} busybox")
        ok(d, f"vce vx.flags.remove {name}")
        r = typed(d, f"vce vx.flags.get {name}")
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "(none)\n"
        r = typed(d, f"vce -q vx.flags.get {name}")
        assert r.stdout == "" and r.stderr == ""
    finally:
        typed(d, f"vcc remove {name}")


def test_vcdadm_confirms_user_changes_and_explains_its_local_commands(d):
    user = unique("fu")
    r = typed(d, f"vcdadm user.set {user} 0 -", input="a-long-password\n")
    assert r.returncode == 0 and r.stdout == f"{user}: user set\n", r.stderr
    assert ok(d, f"vcdadm user.caps.add {user} INFO") == f"{user}: user.caps added\n"
    assert ok(d, f"vcdadm user.remove {user}") == f"{user}: user removed\n"
    assert "build" in ok(None, "vcdadm help template")
    assert ok(None, "vcdadm help tls").startswith("usage: vcdadm")


def test_vcdadm_status_prints_each_counter_once(d):
    keys = [ln.split(":")[0] for ln in ok(d, "vcdadm status").splitlines()]
    assert sorted(keys) == sorted(set(keys)) and "flogins" in keys
    # DESIGN.md's four keys, no second name for the same counter
    assert set(json.loads(ok(d, "vcdadm --json status"))) == {"uptime", "requests", "flogins",
                                                              "nomethod"}


# -- 4. statistics ----------------------------------------------------------------------------

def test_graph_usage_shows_the_output_option():
    assert ok(None, "vcc graph --help").splitlines()[0] == \
        "usage: vcc graph NAME METRIC [--period PERIOD] -o FILE"
    assert "graph NAME METRIC [--period PERIOD] -o FILE" in ok(None, "vcc help")


def test_graph_legends_read_as_percent_of_a_cpu_and_load_as_a_number(tmp_path):
    import rrdtool
    from vstatd import graph
    from vstatd.layout import rrd_path
    now = int(time.time())
    values = {"cpu": ("user", "system", 2000.0), "sys_LOADAVG": ("1MIN", "5MIN", 0.24)}
    for metric, (ds1, ds2, value) in values.items():
        path = rrd_path(tmp_path, "web", metric)
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = ["DS:15MIN:GAUGE:20:0:U"] if metric == "sys_LOADAVG" else []
        rrdtool.create(str(path), "--start", str(now - 300), "--step", "5",
                       f"DS:{ds1}:GAUGE:20:0:U", f"DS:{ds2}:GAUGE:20:0:U", *extra,
                       "RRA:AVERAGE:0.5:1:200", "RRA:AVERAGE:0.5:12:200")
        for t in range(now - 295, now, 5):
            rrdtool.update(str(path), f"{t}:" + ":".join([str(value)] * (2 + len(extra))))
    cpu = " ".join(graph.legends(tmp_path, "web", "cpu", "1h", now=now))
    assert "0.20%" in cpu and not re.search(r"\d\s?m\b", cpu), cpu   # not "200.00m"
    load = " ".join(graph.legends(tmp_path, "web", "sys_LOADAVG", "1h", now=now))
    assert "0.24" in load and not re.search(r"\d\s?m\b", load), load  # not "240 m"


def test_stats_says_why_a_time_has_no_sample():
    import argparse
    import io
    from vcd.clients.output import Output
    from vcd.clients.vcc import _show_stats
    now = int(time.time())
    answer = {"name": "web", "metric": "cpu", "period": "1h", "step": 5,
              "timestamps": [now - 5, now],
              "series": [{"ds": "user", "label": "user", "unit": "% of one CPU",
                          "values": [None, 0.2]}]}
    out, err = io.StringIO(), io.StringIO()
    _show_stats(answer, argparse.Namespace(), Output(out=out, err=err))
    assert out.getvalue().splitlines()[2].split()[-1] == "-"
    assert "no sample for that time" in err.getvalue() and "vstatd" in err.getvalue()
    # nothing to explain when every time has its sample
    answer["series"][0]["values"] = [0.1, 0.2]
    err = io.StringIO()
    _show_stats(answer, argparse.Namespace(), Output(out=io.StringIO(), err=err))
    assert err.getvalue() == ""


def check_config(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    conf = tmp_path / "vcd.conf"
    conf.write_text(text)
    return subprocess.run([str(BIN / "vcd"), "--check-config", "-c", str(conf)],
                          capture_output=True, text=True, timeout=60)


def test_check_config_reports_every_bad_key_at_once_with_a_suggestion(tmp_path):
    r = check_config(tmp_path, 'prot = 1\nworkers = -1\nunix_socket_trusted_uids = ["root"]\n'
                               '[vstatd]\nstep = 0\nrrdir = "/srv"\n')
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 5, r.stderr
    assert all(ln.startswith(f"vcd: {tmp_path / 'vcd.conf'}: ") for ln in lines)
    assert "unknown key 'prot' (did you mean 'port'?)" in r.stderr
    assert "'workers': must be between 0 and 256" in r.stderr
    assert "'unix_socket_trusted_uids'" in r.stderr
    assert "'step' in [vstatd]" in r.stderr
    assert "unknown key 'rrdir' in [vstatd] (did you mean 'rrddir'?)" in r.stderr
    # a name far from every key gets no guess
    r = check_config(tmp_path, "zzzzzz = 1\n")
    assert r.returncode == 2 and "did you mean" not in r.stderr


# -- 5. make run: vcd and vstatd together -----------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _wait(check: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    return check()


@needs_root
def test_make_run_starts_vstatd_beside_vcd_and_one_ctrl_c_stops_both(tmp_path):
    sockdir = Path(tempfile.mkdtemp(prefix="vcd-run-", dir="/tmp"))
    root = tmp_path
    ensure_busybox_template(root / "templates")
    conf = root / "vcd.conf"
    conf.write_text("\n".join([
        'host = "127.0.0.1"', f"port = {free_port()}", "workers = 2",
        f'datadir = "{root / "data"}"', f'templatedir = "{root / "templates"}"',
        f'vbasedir = "{root / "vservers"}"', f'rundir = "{root / "run"}"',
        f'pidfile = "{root / "run" / "vcd.pid"}"', f'logfile = "{root / "vcd.log"}"',
        f'cgroup_parent = "{CGROUP_PARENT}"', f'unix_socket = "{sockdir / "vcd.sock"}"',
        "[vstatd]", f'rrddir = "{root / "rrd"}"', f'pidfile = "{root / "run" / "vstatd.pid"}"',
        f'logfile = "{root / "vstatd.log"}"', "step = 1", "flush_interval = 0", ""]))
    out = open(root / "make.out", "wb")
    make = subprocess.Popen(["make", "-o", "setup", "run", f"CONF={conf}",
                             f"BINDIR={root / 'bin'}"], cwd=REPO, stdout=out, stderr=out,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    env = user_env(None, VCD_SOCKET=str(sockdir / "vcd.sock"))
    name = unique("run")
    try:
        vcd_pid = _wait(lambda: _pid(root / "run" / "vcd.pid"))
        vstatd_pid = _wait(lambda: _pid(root / "run" / "vstatd.pid"))
        assert vcd_pid and vstatd_pid, (root / "make.out").read_text()
        assert _wait(lambda: subprocess.run([str(BIN / "vcc"), "list"], env=env,
                                            capture_output=True).returncode == 0)
        # vstatd records a vserver started through the daemon; the first rows say why "-"
        subprocess.run([str(BIN / "vcc"), "launch", name, "busybox"], env=env, check=True,
                       capture_output=True, timeout=180)
        assert _wait(lambda: (root / "rrd" / name / "cpu.rrd").exists())
        stats = subprocess.run([str(BIN / "vcc"), "stats", name, "cpu", "--period", "1h"],
                               env=env, capture_output=True, text=True, timeout=60)
        assert stats.returncode == 0, stats.stderr
        if "-" in stats.stdout.split():
            assert "no sample for that time" in stats.stderr
        subprocess.run([str(BIN / "vcc"), "stop", name], env=env, capture_output=True, timeout=120)
        subprocess.run([str(BIN / "vcc"), "remove", name], env=env, capture_output=True,
                       timeout=120)
        os.killpg(make.pid, signal.SIGINT)       # what Ctrl-C in its terminal sends
        make.wait(timeout=120)
        assert _wait(lambda: not _alive(vcd_pid) and not _alive(vstatd_pid), 60), \
            (root / "make.out").read_text()
    finally:
        if make.poll() is None:
            for command in ("stop", "remove"):
                subprocess.run([str(BIN / "vcc"), command, name], env=env, capture_output=True,
                               timeout=120)
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
        out.close()
        for pidfile in (root / "run" / "vcd.pid", root / "run" / "vstatd.pid"):
            pid = _pid(pidfile)
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        # the supervisor outlives vcd by design: end it, its contexts and its mounts
        import libvserver
        libvserver.get_backend(state_dir=root / "run" / "libvserver",
                               cgroup_parent=CGROUP_PARENT).shutdown()
        shutil.rmtree(sockdir, ignore_errors=True)


# -- 6. a second new user's trial (branch newuser): what still stumbled ------------------------

@needs_root
def test_an_empty_console_says_so_on_stderr_and_its_usage_shows_follow(d):
    name = unique("cn")
    try:
        ok(d, f"vcc launch {name} busybox")
        r = typed(d, f"vcc console {name}")
        # busybox init writes nothing: not a silent exit 0, but a line a script does not read
        assert r.returncode == 0 and r.stdout == "", (r.stdout, r.stderr)
        assert r.stderr.startswith("(none") and f"vcc console {name} -f" in r.stderr, r.stderr
        assert typed(d, f"vcc -q console {name}").stderr == ""
        ok(d, f"vcc exec {name} sh -c 'echo booted > /dev/console'")
        r = typed(d, f"vcc console {name}")
        assert r.stdout == "booted\n" and r.stderr == "", (r.stdout, r.stderr)
    finally:
        typed(d, f"vcc stop {name}")
        typed(d, f"vcc remove {name}")
    usage = ok(None, "vcc console --help")
    assert usage.splitlines()[0] == "usage: vcc console NAME [--lines LINES] [--offset OFFSET] [-f]"
    assert "console NAME [--lines LINES] [--offset OFFSET] [-f]" in ok(None, "vcc help")
    # a default or a choice list the doc already gives is not repeated after it
    assert "default 100); default 100" not in usage
    assert ok(None, "vcc help graph").count("1h, 1d, 1w") == 1


def test_vcdadm_passwd_keeps_the_first_start_password_file_current(d):
    """The README's first session reads /var/lib/vcd/admin.password; after `vcdadm passwd
    admin` that file held the old password and every client using it got 'Unauthorized'."""
    old = d.admin_password
    new = "a-changed-password-7"
    try:
        r = typed(None, f"vcdadm -c {d.config_path} passwd admin --password-stdin", input=new + "\n")
        assert r.returncode == 0, r.stderr
        assert f"{d.datadir / 'admin.password'} now holds the new password" in r.stdout
        assert d.admin_password == new
        assert (d.datadir / "admin.password").stat().st_mode & 0o777 == 0o600
        assert d.proxy().vcd.whoami()["username"] == "admin"   # the file's password works
    finally:
        typed(None, f"vcdadm -c {d.config_path} passwd admin --password-stdin", input=old + "\n")
    assert d.admin_password == old
    assert "USER" in ok(None, "vcdadm help passwd")


def test_a_refused_or_missing_password_says_whose_where_and_where_to_look(d):
    r = typed(None, f"vcc -h 127.0.0.1 -p {d.port} list", VCD_PASSWORD="wrong-password")
    assert r.returncode == 3
    assert r.stderr.startswith("vcc: vxdb.list: Unauthorized: ") and r.stderr.endswith("(100)\n")
    assert f"127.0.0.1:{d.port}" in r.stderr and "user admin" in r.stderr
    assert "$VCD_PASSWORD" in r.stderr and "admin.password" in r.stderr
    r = typed(None, f"vcc -h 127.0.0.1 -p {d.port} --non-interactive list")
    assert r.returncode == 3
    assert "admin.password" in r.stderr and "password_file" in r.stderr, r.stderr


def test_check_config_checks_the_vshelper_table_too(tmp_path):
    r = check_config(tmp_path, '[vshelper]\nurll = "unix:///run/vcd/vcd.sock"\n'
                               'password_file = "vshelper.password"\n')
    assert r.returncode == 2
    assert "unknown key 'urll' in [vshelper] (did you mean 'url'?)" in r.stderr
    assert "'password_file' in [vshelper]: must be an absolute path" in r.stderr
    r = check_config(tmp_path, '[vshelper]\nurl = "unix:///run/vcd/vcd.sock"\nusername = "vshelper"\n')
    assert r.returncode == 0, r.stderr
    # and vcd.conf.example documents the table
    assert "# [vshelper]" in (REPO / "vcd.conf.example").read_text()


def test_a_graph_without_samples_says_so_instead_of_nan_and_percent_axes_have_no_milli(tmp_path):
    import rrdtool
    from vstatd import graph
    from vstatd.layout import rrd_path
    now = int(time.time())
    path = rrd_path(tmp_path, "web", "cpu")
    path.parent.mkdir(parents=True)
    # what vstatd leaves before its first flush: the file, not a single update
    rrdtool.create(str(path), "--start", str(now - 300), "--step", "5",
                   "DS:user:DERIVE:20:0:U", "DS:system:DERIVE:20:0:U", "RRA:AVERAGE:0.5:1:200")
    legends = " ".join(graph.legends(tmp_path, "web", "cpu", "1h", now=now))
    assert "nan" not in legends and "no sample in this period" in legends, legends
    for t in range(now - 295, now, 5):
        rrdtool.update(str(path), f"{t}:{(t - now + 300) * 2000}:{(t - now + 300) * 1000}")
    legends = " ".join(graph.legends(tmp_path, "web", "cpu", "1h", now=now))
    assert "nan" not in legends and "0.20%" in legends, legends
    # the axis of a percent reads 0.8, not "800 m"
    assert "--units-exponent" in graph.graph_args(tmp_path, "web", "cpu", "1h", now=now)


def test_stats_names_a_unit_only_where_it_adds_to_the_label():
    import argparse
    import io
    from vcd.clients.output import Output
    from vcd.clients.vcc import _show_stats
    now = int(time.time())
    answer = {"name": "web", "metric": "thread_TOTAL", "period": "1h", "step": 5,
              "timestamps": [now - 5, now],
              "series": [{"ds": "value", "label": "threads", "unit": "threads", "values": [2, None]},
                         {"ds": "x", "label": "user", "unit": "% of one CPU", "values": [1, 2]}]}
    out, err = io.StringIO(), io.StringIO()
    _show_stats(answer, argparse.Namespace(), Output(out=out, err=err))
    header = [c for c in out.getvalue().splitlines()[1].split("  ") if c.strip()]
    assert [c.strip() for c in header] == ["TIME", "THREADS", "USER (% OF ONE CPU)"]
    assert "flush_interval" in err.getvalue()


@needs_root
def test_the_readme_first_session_runs_as_printed_and_can_run_again(d):
    """The README's Python session, only its daemon URL and password file pointed at the
    test daemon: twice, since a user who tries it again must not meet 'exists'."""
    code = readme_block("## A first session", "python")
    assert "http://127.0.0.1:13386/RPC2" in code and "/var/lib/vcd/admin.password" in code
    code = code.replace("http://127.0.0.1:13386/RPC2", d.url)
    code = code.replace("/var/lib/vcd/admin.password", str(d.datadir / "admin.password"))
    try:
        for _ in range(2):
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=300)
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith("web1\n"), r.stdout      # vx.exec hostname
    finally:
        admin = d.proxy()
        for call in (admin.vx.stop, admin.vx.remove):
            try:
                call(name="web1")
            except xmlrpc.client.Fault:
                pass


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_panel_login_says_where_the_first_password_is(d, tmp_path):
    r = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                        f"--user-data-dir={tmp_path}", "--virtual-time-budget=5000",
                        "--dump-dom", f"http://{d.host}:{d.port}/"],
                       capture_output=True, text=True, timeout=120)
    dom = re.sub(r"<[^>]+>", "", r.stdout)
    assert "Log in to vcd" in dom, r.stdout[-2000:]
    assert "First time? User admin: its password is in admin.password" in dom
    assert "logged in in" not in dom


def test_vcdadm_help_explains_tls_options_and_lists_every_template_command():
    text = ok(None, "vcdadm help tls")
    assert text.startswith("usage: vcdadm tls init") and "--days" in text and "validity" in text
    assert ok(None, "vcdadm tls init --help") == text
    assert "template build|unpack|list|remove" in ok(None, "vcdadm help")
    # the exit statuses read one per line, each with its number first
    lines = ok(None, "vcc --help").split("exit status:\n", 1)[1].splitlines()
    assert [ln.split()[0] for ln in lines if ln[:4].strip().isdigit()] == [str(n) for n in range(11)]
    assert "7 wrong state" in "\n".join(lines)


@needs_root
def test_tasks_have_commands_of_their_own_in_vcc(d):
    """A task started with background: true (or by vcc exec) could only be seen over the API."""
    name = unique("tk")
    admin = d.proxy()
    try:
        ok(d, f"vcc launch {name} busybox")
        task = admin.vx.exec(name=name, command="sh -c 'echo one; sleep 1; echo two'",
                             background=True)
        # -f follows the log as it grows, until the task has ended
        assert ok(d, f"vcc task.log {task} -f") == "one\ntwo\n"
        assert ok(d, f"vcc task.log --offset 4 {task}") == "two\n"
        header, *rows = ok(d, f"vcc task.list {name}").splitlines()
        assert header.split() == ["ID", "METHOD", "NAME", "USER", "STARTED", "STATE"]
        assert rows[0].split()[:4] == [task, "vx.exec", name, "admin"] and rows[0].endswith("done")
        shown = ok(d, f"vcc task.get {task}")
        assert re.search(r"^started: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", shown, re.M), shown
        long = admin.vx.exec(name=name, command="sleep 60", background=True)
        assert ok(d, f"vcc task.stop {long}") == f"{long}: task stopped\n"
        # the stop is sent at once; the task ends when its command is gone
        assert _wait(lambda: not json.loads(ok(d, f"vcc --json task.get {long}"))["running"], 60)
        assert json.loads(ok(d, f"vcc --json task.get {long}"))["fault_code"] == 500
    finally:
        typed(d, f"vcc stop {name}")
        typed(d, f"vcc remove {name}")


@needs_root
def test_an_exec_timeout_tells_a_vcc_user_the_option_to_type(d):
    name = unique("to")
    try:
        ok(d, f"vcc launch {name} busybox")
        r = typed(d, f"vcc exec --timeout 1 {name} sh -c 'echo a; sleep 30'")
        assert r.returncode != 0 and r.stdout == "a\n", (r.returncode, r.stdout, r.stderr)
        assert "timed out after 1 s" in r.stderr and "vcc exec --timeout SECONDS" in r.stderr
        assert "give vx.exec" not in r.stderr
    finally:
        typed(d, f"vcc stop {name}")
        typed(d, f"vcc remove {name}")


@needs_root
def test_options_with_underscores_also_take_dashes(d):
    name = unique("op")
    try:
        ok(d, f"vcc create {name} busybox")
        assert ok(d, f"vce init.set {name} --halt-signal SIGPWR") == f"{name}: init set\n"
        assert json.loads(ok(d, f"vce --json init.get {name}"))["halt_signal"] == "SIGPWR"
        ok(d, f"vce init.set {name} --halt_signal none")          # the README's spelling
        assert json.loads(ok(d, f"vce --json init.get {name}"))["halt_signal"] == ""
    finally:
        typed(d, f"vcc remove {name}")


def test_an_unknown_option_after_a_command_shows_that_commands_usage():
    r = typed(None, "vce init.set web --bogus x")
    assert r.returncode == 2
    assert r.stderr.startswith("usage: vce init.set NAME"), r.stderr
    assert "vce init.set: error: unrecognized arguments: --bogus x" in r.stderr


def test_vstatd_drops_samples_of_a_removed_vserver_without_an_error(tmp_path, caplog):
    """After `vcc remove`, vstatd's next flush (or its exit) logged an ERROR per RRD file
    of the removed vserver: a wall of 'No such file' for a user who did nothing wrong."""
    import logging
    from vstatd.store import Identity, Store
    store = Store(tmp_path, step=1, on_remove="keep", flush_interval=10)
    d = store.claim("gone", Identity(2, 1), 1000)
    t0 = int(time.time())
    store.write(d, t0, {"thread_TOTAL": (1,), "sys_LOADAVG": (0.1, 0.1, 0.1)})
    shutil.rmtree(d)                                   # what vx.remove's archiving does
    with caplog.at_level(logging.DEBUG, logger="vcd.vstatd"):
        assert store.flush_all() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "gone (vserver removed)" in caplog.text
