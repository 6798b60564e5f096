"""vcc, vce, vgc and vcdadm's XML-RPC commands, run as programs against a real daemon."""
from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest

from api_helpers import create_vserver, ensure_busybox_template, unique
from vcdtest import REPO, VcdDaemon

BIN = Path(sys.executable).parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="contexts need root")


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory):
    daemon = VcdDaemon(tmp_path_factory.mktemp("clients"), workers=3, exec_timeout=10.0)
    try:
        daemon.start()
        ensure_busybox_template(daemon.templatedir)
        yield daemon
    finally:
        daemon.cleanup()


def env(daemon: VcdDaemon | None = None, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "VCD_PASSWORD"}
    # no ~/.config/vcd/vcc.conf of whoever runs the tests may leak in
    e["HOME"] = str(Path(daemon.root if daemon else "/nonexistent") / "home")
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    if daemon is not None:
        e["VCD_PASSWORD"] = daemon.admin_password
    e.update(extra)
    return e


def run(daemon: VcdDaemon, prog: str, *args: str, password: bool = True, stdin: str = "",
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = env(daemon if password else None, **(extra_env or {}))
    if not password:
        e["HOME"] = str(daemon.root / "home")
    return subprocess.run([str(BIN / prog), "-p", str(daemon.port), *args], input=stdin,
                          capture_output=True, text=True, env=e, timeout=120)


def ok(daemon: VcdDaemon, prog: str, *args: str, **kw: Any) -> str:
    r = run(daemon, prog, *args, **kw)
    assert r.returncode == 0, f"{prog} {args}: {r.returncode} {r.stderr}"
    return r.stdout


def fails(daemon: VcdDaemon, status: int, prog: str, *args: str, **kw: Any) -> str:
    r = run(daemon, prog, *args, **kw)
    assert r.returncode == status, f"{prog} {args}: {r.returncode} {r.stdout} {r.stderr}"
    return r.stderr


def table(text: str) -> list[dict[str, str]]:
    """Parse an aligned table by its header's column starts."""
    lines = text.splitlines()
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        rows.append(dict(zip(names, cells)))
    return rows


class Pty:
    """A program on a terminal of its own (its controlling tty), driven like a person."""

    def __init__(self, argv: list[str], environ: dict[str, str], rows: int = 24,
                 cols: int = 80) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=environ,
                                     start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.output = b""

    def expect(self, pattern: bytes, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while pattern not in self.output and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                self.output += chunk
        return pattern in self.output

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 20.0) -> int:
        try:
            self.expect(b"\0never\0", timeout=1.0)  # collect what is left
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.master)


# -- every command comes from the registry ------------------------------------------------

def test_every_method_of_a_namespace_is_a_command_with_its_params_in_order():
    from vcd.clients import vce, vcc, vgc
    from vcd import vcdadm
    from vcd.clients.commands import arguments
    from vcd.registry import load_all
    methods = load_all()
    for program, prefix in ((vcc.PROGRAM, "vx."), (vce.PROGRAM, "vxdb."), (vgc.PROGRAM, "vg."),
                            (vcdadm.PROGRAM, "vcd.")):
        # vcc launch (vx.create, then vx.start) is a command beside create
        by_method = {s.method: s for s in program.specs if s.command == s.method[len(prefix):]
                     or not s.method.startswith(prefix)}
        for name, method in methods.items():
            if not name.startswith(prefix):
                continue
            spec = by_method[name]
            args = [a.param.name for a in arguments(spec)]
            if not spec.order and not spec.options:
                assert args == [p.name for p in method.params], name


def test_original_argument_orders_are_kept_where_they_differ_from_the_methods():
    help_text = subprocess.run([str(BIN / "vce"), "--help"], capture_output=True, text=True,
                               env=env()).stdout
    assert "mount.set NAME SRC DST [TYPE [OPTS]]" in help_text
    assert "vx.limit.set NAME LIMIT SOFT [MAX]" in help_text
    assert "nx.addr.set NAME ADDR [NETMASK]" in help_text
    assert "list [USERNAME]" in help_text
    vcc_help = subprocess.run([str(BIN / "vcc"), "--help"], capture_output=True, text=True,
                              env=env()).stdout
    for usage in ("create NAME TEMPLATE [REBUILD [COPY [VDIR]]]",
                  "exec [--timeout TIMEOUT] NAME COMMAND [ARGS...]",
                  "kill NAME PID SIG", "list [USERNAME]", "login NAME", "rename NAME NEWNAME",
                  "templates [NAME]", "limstatus NAME", "netstatus NAME", "start NAME"):
        assert usage in vcc_help, usage
    assert "exit status:" in vcc_help and "7 wrong state" in vcc_help
    adm = subprocess.run([str(BIN / "vcdadm"), "--help"], capture_output=True, text=True,
                         env=env()).stdout
    assert "user.set USERNAME ADMIN [PASSWORD]" in adm and "user.caps.remove USERNAME [CAP]" in adm
    vgc_help = subprocess.run([str(BIN / "vgc"), "--help"], capture_output=True, text=True,
                              env=env()).stdout
    for usage in ("add GROUP [NAME]", "list [GROUP]", "remove GROUP [NAME]", "vx.start GROUP",
                  "vx.reboot GROUP"):
        assert usage in vgc_help, usage


# -- vcc -----------------------------------------------------------------------------------

@needs_root
def test_vcc_runs_a_vserver_through_its_whole_life(d):
    name = unique("cli")
    assert ok(d, "vcc", "create", name, "busybox") == f"{name}: created\n"
    assert ok(d, "vcc", "-q", "remove", name) == ""                 # -q: no confirmation
    ok(d, "vcc", "create", name, "busybox")
    assert "busybox" in ok(d, "vcc", "templates")
    assert json.loads(ok(d, "vcc", "--json", "templates", "busybox"))[0]["name"] == "busybox"
    ok(d, "vcc", "start", name)
    status = dict(line.split(":", 1) for line in ok(d, "vcc", "status", name).splitlines())
    assert status["running"].strip() == "yes" and re.fullmatch(r"\s*\d+s", status["uptime"])
    assert json.loads(ok(d, "vcc", "--json", "status", name))["running"] is True
    assert ok(d, "vcc", "exec", name, "echo", "two words", "-n") == "two words -n\n"
    assert set(json.loads(ok(d, "vcc", "--json", "load", name))) == {"1m", "5m", "15m"}
    assert "NPROC" in [r["TYPE"] for r in table(ok(d, "vcc", "limstatus", name))]
    assert table(ok(d, "vcc", "netstatus", name))[0]["TYPE"].startswith("net_")
    ok(d, "vcc", "exec", name, "sh", "-c", "sleep 300 & echo $! > /tmp/sleeper")
    pid = ok(d, "vcc", "exec", name, "cat", "/tmp/sleeper").strip()
    ok(d, "vcc", "kill", name, pid, "KILL")          # names work, numbers as in the original
    ok(d, "vcc", "kill", name, "0", "0")
    ok(d, "vcc", "reboot", name)
    ok(d, "vcc", "restart", name)
    ok(d, "vcc", "stop", name)
    assert json.loads(ok(d, "vcc", "--json", "status", name))["running"] is False
    new = unique("cli")
    ok(d, "vcc", "rename", name, new)
    ok(d, "vcc", "remove", new)
    assert new not in ok(d, "vcc", "-q", "list").split()


@needs_root
def test_vcc_list_shows_every_column_in_two_requests_however_many_vservers(d):
    names = [create_vserver(d, unique("lst")) for _ in range(4)]
    ok(d, "vcc", "start", names[0])
    try:
        before = json.loads(ok(d, "vcdadm", "--json", "status"))["requests"]
        out = ok(d, "vcc", "list")
        after = json.loads(ok(d, "vcdadm", "--json", "status"))["requests"]
        assert after - before == 3   # vxdb.list + one system.multicall + this vcd.status
        assert out.splitlines()[0].split() == ["NAME", "XID", "RUNNING", "ADDRESS", "NPROC",
                                               "UPTIME", "LOAD"]
        rows = {r["NAME"]: r for r in table(out)}
        assert rows[names[0]]["RUNNING"] == "yes" and int(rows[names[0]]["NPROC"]) >= 1
        assert re.fullmatch(r"\d+s|\d+m \d+s", rows[names[0]]["UPTIME"])
        assert re.fullmatch(r"\d+\.\d\d", rows[names[0]]["LOAD"])
        assert rows[names[1]]["RUNNING"] == "no" and rows[names[1]]["UPTIME"] == "-"
        listed = json.loads(ok(d, "vcc", "--json", "list"))
        again = json.loads(ok(d, "vcc", "list", "--json"))           # after the command too

        def steady(rows: list[dict]) -> list[dict]:   # uptime and load move between calls
            return [{k: v for k, v in r.items() if k not in ("uptime", "load")} for r in rows]
        assert steady(again) == steady(listed)
        by_name = {r["name"]: r for r in listed}
        assert by_name[names[0]]["xid"] == d.proxy().vxdb.xid.get(name=names[0])
        assert by_name[names[0]]["running"] is True and by_name[names[2]]["running"] is False
        assert set(ok(d, "vcc", "-q", "list").split()) >= set(names)
    finally:
        ok(d, "vcc", "stop", names[0])
        for n in names:
            ok(d, "vcc", "remove", n)


@needs_root
def test_exec_prints_the_output_of_a_failing_command_and_exits_with_its_status(d):
    name = create_vserver(d, unique("ex"))
    ok(d, "vcc", "start", name)
    try:
        r = run(d, "vcc", "exec", name, "sh", "-c", "echo partial; exit 3")
        assert r.returncode == 3 and r.stdout == "partial\n" and r.stderr == ""
        r = run(d, "vcc", "--json", "exec", name, "sh", "-c", "exit 4")
        assert json.loads(r.stdout) == {"status": 4, "output": ""} and r.returncode == 4
    finally:
        ok(d, "vcc", "stop", name)
        ok(d, "vcc", "remove", name)


# -- faults and exit statuses ---------------------------------------------------------------

def test_each_fault_class_has_its_own_exit_status_and_message(d):
    admin = d.proxy()
    admin.vcd.user.set(username="nocaps", password="nocaps-pw-1", admin=False)
    missing = unique("none")
    # auth (100): a wrong password
    err = fails(d, 3, "vcc", "list", extra_env={"VCD_PASSWORD": "wrong-password"})
    # the fault's text, then who was refused where, with the password from where
    assert err.startswith("vcc: vxdb.list: Unauthorized: ") and err.endswith(" (100)\n"), err
    assert "refused user admin with the password from $VCD_PASSWORD" in err
    # permission (101): a user without capabilities
    err = fails(d, 4, "vcdadm", "-u", "nocaps", "status",
                extra_env={"VCD_PASSWORD": "nocaps-pw-1"})
    assert re.fullmatch(r"vcdadm: vcd\.status: Operation not permitted: .* \(101\)\n", err)
    # not found (202, 203, 102)
    assert fails(d, 5, "vcc", "status", missing) == \
        f"vcc: vx.status: Virtual server does not exist: {missing} (202)\n"
    assert fails(d, 5, "vgc", "list", missing).endswith("(203)\n")
    assert fails(d, 5, "vcdadm", "user.caps.get", missing).endswith("(102)\n")
    # invalid (200): checked by the param's own type before anything is sent
    err = fails(d, 6, "vce", "vx.limit.set", missing, "NOPE", "10")
    assert err.startswith("vce: vxdb.vx.limit.set: Invalid argument: 'limit' is not a known")
    assert err.endswith("(200)\n")
    # usage: a missing argument, a config that does not parse
    assert "usage:" in fails(d, 2, "vcc", "kill", missing)
    # connection: nobody listening
    r = subprocess.run([str(BIN / "vcc"), "--url", "http://127.0.0.1:1/RPC2", "list"],
                       capture_output=True, text=True, env=env(d), timeout=60)
    assert r.returncode == 9 and r.stderr.startswith("vcc: vxdb.list: cannot talk to")


@needs_root
def test_state_and_system_faults_exit_7_and_8(d):
    name = create_vserver(d, unique("st"))
    assert fails(d, 7, "vcc", "create", name, "busybox").endswith("(201)\n")
    assert fails(d, 7, "vcc", "stop", name).endswith("(300)\n")
    shutil.rmtree(d.vbasedir / name)   # the root directory gone: starting fails in the system
    assert fails(d, 8, "vcc", "start", name).endswith("(500)\n")
    ok(d, "vcc", "remove", name)


# -- vce, vgc, vcdadm ------------------------------------------------------------------------

def test_vce_edits_each_area_with_the_original_argument_orders(d):
    name = create_vserver(d, unique("ce"))
    admin = d.proxy()
    ok(d, "vce", "mount.set", name, "/srv/data", "/mnt/data", "none", "bind,ro")
    assert admin.vxdb.mount.get(name=name, dst="/mnt/data") == [
        {"dst": "/mnt/data", "src": "/srv/data", "type": "none", "opts": "bind,ro"}]
    assert table(ok(d, "vce", "mount.get", name))[0]["SRC"] == "/srv/data"
    ok(d, "vce", "mount.remove", name, "/mnt/data")
    ok(d, "vce", "vx.limit.set", name, "NPROC", "50")          # max defaults to soft
    ok(d, "vce", "vx.limit.set", name, "RSS", "10000", "inf")
    limits = {r["limit"]: r for r in json.loads(ok(d, "vce", "--json", "vx.limit.get", name))}
    assert limits["NPROC"]["soft"] == "50" and limits["NPROC"]["max"] == "50"
    assert limits["RSS"]["max"] == "inf"
    ok(d, "vce", "vx.limit.remove", name)
    assert json.loads(ok(d, "vce", "--json", "vx.limit.get", name)) == []
    ok(d, "vce", "nx.addr.set", name, "10.9.8.7")
    assert table(ok(d, "vce", "nx.addr.get", name)) == [{"ADDR": "10.9.8.7",
                                                         "NETMASK": "255.255.255.0"}]
    ok(d, "vce", "nx.broadcast.set", name, "10.9.8.255")
    assert ok(d, "vce", "nx.broadcast.get", name) == "10.9.8.255\n"
    ok(d, "vce", "vx.bcaps.remove", name)
    ok(d, "vce", "vx.bcaps.add", name, "NET_ADMIN")
    assert ok(d, "vce", "vx.bcaps.get", name) == "NET_ADMIN\n"
    ok(d, "vce", "vx.uname.set", name, "NODENAME", "web")
    assert table(ok(d, "vce", "vx.uname.get", name, "NODENAME"))[0]["VALUE"] == "web"
    ok(d, "vce", "vx.sched.set", name, "0", "100", "30")
    assert json.loads(ok(d, "vce", "--json", "vx.sched.get", name))[0]["fillrate"] == 30
    ok(d, "vce", "init.set", name, "/sbin/init", "/sbin/halt", "/sbin/reboot", "5")
    assert json.loads(ok(d, "vce", "--json", "init.get", name))["timeout"] == 5
    ok(d, "vce", "init.set", name, "--halt_signal", "SIGRTMIN+3", "--reboot_signal", "SIGINT")
    assert re.search(r"halt_signal:\s+SIGRTMIN\+3", ok(d, "vce", "init.get", name))
    assert json.loads(ok(d, "vce", "--json", "init.get", name))["reboot_signal"] == "SIGINT"
    assert "SIGRTMIN+n" in fails(d, 6, "vce", "init.set", name, "--halt_signal", "TERM")
    ok(d, "vce", "dx.limit.set", name, "1048576", "10000", "5")
    assert re.search(r"space:\s+1\.0G", ok(d, "vce", "dx.limit.get", name))   # KiB, shown human
    ok(d, "vce", "vx.cpuset.set", name, "0")
    assert json.loads(ok(d, "vce", "--json", "vx.cpuset.get", name))["cpus"] == "0"
    assert name in ok(d, "vce", "list").split()
    assert ok(d, "vce", "xid.get", name).strip() == str(admin.vxdb.xid.get(name=name))
    admin.vx.remove(name=name)


def test_vgc_manages_groups_and_acts_on_their_members(d):
    group, name = unique("grp"), create_vserver(d, unique("gm"))
    ok(d, "vgc", "add", group, name)
    assert group in ok(d, "vgc", "list").split()
    assert ok(d, "vgc", "list", group) == f"{name}\n"
    assert json.loads(ok(d, "vgc", "--json", "list", group)) == [name]
    if os.geteuid() == 0:
        ok(d, "vgc", "vx.start", group)
        assert d.proxy().vx.status(name=name)["running"] is True
        ok(d, "vgc", "vx.stop", group)
        assert d.proxy().vx.status(name=name)["running"] is False
    ok(d, "vgc", "remove", group, name)
    assert ok(d, "vgc", "list", group) == ""
    ok(d, "vgc", "remove", group)
    assert fails(d, 5, "vgc", "list", group).endswith("(203)\n")
    d.proxy().vx.remove(name=name)


def test_vcdadm_manages_users_over_xmlrpc_with_the_original_argument_order(d):
    user = unique("usr")
    # the password from standard input ('-'), never from the command line
    r = run(d, "vcdadm", "user.set", user, "0", "-", stdin="first-password\n")
    assert r.returncode == 0 and r.stderr == ""
    assert d.proxy(user, "first-password").vcd.login() is None
    rows = {row["USERNAME"]: row for row in table(ok(d, "vcdadm", "user.get"))}
    assert rows[user]["ADMIN"] == "no" and rows[user]["CAPS"] == "-"
    ok(d, "vcdadm", "user.caps.add", user, "INFO")
    ok(d, "vcdadm", "user.caps.add", user, "EXEC")
    assert ok(d, "vcdadm", "user.caps.get", user) == "EXEC\nINFO\n"
    ok(d, "vcdadm", "user.caps.remove", user, "EXEC")
    assert json.loads(ok(d, "vcdadm", "--json", "user.get", user)) == [
        {"username": user, "uid": int(rows[user]["UID"]), "admin": False, "caps": ["INFO"]}]
    ok(d, "vcdadm", "user.set", user, "1")          # admin flag only; the password stays
    assert json.loads(ok(d, "vcdadm", "--json", "user.get", user))[0]["admin"] is True
    assert d.proxy(user, "first-password").vcd.login() is None
    # the original's positional password still works, with a warning
    r = run(d, "vcdadm", "user.set", user, "1", "second-password")
    assert r.returncode == 0 and "visible" in r.stderr
    assert d.proxy(user, "second-password").vcd.login() is None
    ok(d, "vcdadm", "user.caps.remove", user)
    assert ok(d, "vcdadm", "user.caps.get", user) == ""
    ok(d, "vcdadm", "user.remove", user)
    assert json.loads(ok(d, "vcdadm", "--json", "user.get", user)) == []
    info = json.loads(ok(d, "vcdadm", "--json", "hostinfo"))
    assert info["vbasedir"] == str(d.vbasedir) and info["cpus"] >= 1
    assert re.search(r"memtotal:\s+[\d.]+[KMGT]", ok(d, "vcdadm", "hostinfo"))
    assert re.search(r"uptime:\s+\d+(s|m \d+s|h \d+m)", ok(d, "vcdadm", "status"))


# -- password and config ---------------------------------------------------------------------

def test_the_password_prompt_does_not_echo_and_logs_in(d):
    name = create_vserver(d, unique("pw"))
    term = Pty([str(BIN / "vcc"), "-p", str(d.port), "-q", "list"], env(None, HOME=str(d.root)))
    assert term.expect(b"Password for admin: "), term.output
    term.send(d.admin_password.encode() + b"\n")
    assert term.finish() == 0, term.output
    assert name.encode() in term.output
    assert d.admin_password.encode() not in term.output
    d.proxy().vx.remove(name=name)


def test_non_interactive_without_a_password_fails_as_unauthorized(d):
    r = run(d, "vcc", "--non-interactive", "list", password=False)
    assert r.returncode == 3 and "VCD_PASSWORD" in r.stderr


def test_config_file_gives_url_user_and_password_file(d, tmp_path):
    pw = tmp_path / "admin.password"
    pw.write_text(d.admin_password + "\n")
    conf = tmp_path / "vcc.conf"
    conf.write_text(f'url = "{d.url}"\nuser = "admin"\npassword_file = "{pw}"\n')
    r = subprocess.run([str(BIN / "vcc"), "-c", str(conf), "--non-interactive", "--json", "list"],
                       capture_output=True, text=True, env=env(None), timeout=60)
    assert r.returncode == 0, r.stderr
    assert isinstance(json.loads(r.stdout), list)
    # the default location is used without -c
    home = tmp_path / "home"
    (home / ".config" / "vcd").mkdir(parents=True)
    shutil.copy(conf, home / ".config" / "vcd" / "vcc.conf")
    r = subprocess.run([str(BIN / "vcdadm"), "--non-interactive", "hostinfo"], capture_output=True,
                       text=True, env=env(None, HOME=str(home)), timeout=60)
    assert r.returncode == 0 and "vbasedir" in r.stdout, r.stderr
    conf.write_text('url = "http://127.0.0.1:1/RPC2"\nno_such = 1\n')
    r = subprocess.run([str(BIN / "vcc"), "-c", str(conf), "list"], capture_output=True,
                       text=True, env=env(None), timeout=60)
    assert r.returncode == 2 and "no_such" in r.stderr


# -- completion -------------------------------------------------------------------------------

def complete(d: VcdDaemon, *words: str) -> list[str]:
    script = (f"source {REPO / 'completion' / 'vcc.bash'}\n"
              f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
              "_vcd_complete; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env(d),
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return sorted(filter(None, r.stdout.splitlines()))


def test_completion_script_in_the_repo_is_the_generated_one():
    out = subprocess.run([str(BIN / "vcc"), "completion", "bash"], capture_output=True,
                         text=True, env=env(), timeout=60)
    assert out.returncode == 0
    assert out.stdout == (REPO / "completion" / "vcc.bash").read_text(), \
        "regenerate: vcc completion bash > completion/vcc.bash"
    assert subprocess.run(["bash", "-n", "-c", out.stdout]).returncode == 0


def test_completion_offers_commands_choices_and_vserver_names_from_the_daemon(d):
    name = create_vserver(d, unique("cmp"))
    port = str(d.port)
    assert complete(d, "vcc", "st") == ["start", "stats", "status", "stop"]
    assert complete(d, "vcc", "-p", port, "start", "") == sorted(d.proxy().vxdb.list())
    assert name in complete(d, "vcc", "-p", port, "start", name[:3])
    assert complete(d, "vce", "-p", port, "vx.limit.set", name, "NP") == ["NPROC"]
    assert {"admin", "vshelper"} <= set(complete(d, "vcdadm", "-p", port, "user.caps.get", ""))
    assert complete(d, "vgc", "x") == []
    assert "--json" in complete(d, "vce", "--")
    d.proxy().vx.remove(name=name)


# -- vcc login ---------------------------------------------------------------------------------

@needs_root
def test_login_opens_a_shell_on_a_pty_with_our_window_size_and_ends_with_exit(d):
    name = create_vserver(d, unique("lg"))
    ok(d, "vcc", "start", name)
    try:
        # a config naming another daemon (here: the defaults) is refused, not entered
        err = fails(d, 2, "vcc", "login", name, "--vcd-config", str(d.root / "other.conf"),
                    extra_env={})
        assert "other.conf" in err
        (d.root / "other.conf").write_text('vbasedir = "/srv/elsewhere"\n')
        assert "is not the daemon" in fails(d, 2, "vcc", "login", name, "--vcd-config",
                                            str(d.root / "other.conf"))
        hostname = ok(d, "vcc", "exec", name, "hostname").strip()
        nproc = d.proxy().vx.status(name=name)["nproc"]
        term = Pty([str(BIN / "vcc"), "-p", str(d.port), "login", name,
                    "--vcd-config", str(d.config_path)], env(d), rows=33, cols=101)
        assert term.expect(b"# "), term.output
        term.send(b"hostname; stty size; echo in-$((6*7))\n")
        assert term.expect(b"in-42"), term.output
        # a resized window reaches the shell too (SIGWINCH relayed to the inner pty)
        fcntl.ioctl(term.master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        time.sleep(0.3)
        term.send(b"stty size\n")
        assert term.expect(b"40 120"), term.output
        term.send(b"exit\n")
        assert term.finish() == 0, term.output
        text = term.output.decode(errors="replace")
        assert f"\n{hostname}\r\n" in text.replace("\r\r", "\r")
        assert "33 101" in text
        # input from a pipe: the shell reads it, and its end ends the shell
        r = run(d, "vcc", "login", name, "--vcd-config", str(d.config_path),
                stdin="echo piped-$((2+3))\n")
        assert r.returncode == 0 and "piped-5" in r.stdout, r.stderr
        # the shell and its helpers are gone; the vserver runs on
        status = d.proxy().vx.status(name=name)
        assert status["running"] is True and status["nproc"] == nproc
    finally:
        ok(d, "vcc", "stop", name)
        ok(d, "vcc", "remove", name)


@needs_root
def test_login_of_a_stopped_vserver_exits_7(d):
    name = create_vserver(d, unique("lg"))
    err = fails(d, 7, "vcc", "login", name, "--vcd-config", str(d.config_path))
    assert err.endswith("(300)\n")
    d.proxy().vx.remove(name=name)


# -- vcc stats and graph (vx.stats / vx.graph over what vstatd recorded) -----------------------

@needs_root
def test_stats_and_graph_show_what_vstatd_recorded(make_vcd, tmp_path):
    if not (BIN / "vstatd").exists():
        pytest.skip("vstatd is not installed in this environment yet")
    daemon = make_vcd(start=False)
    with open(daemon.config_path, "a") as fh:
        fh.write(f'\n[vstatd]\nrrddir = "{daemon.root / "rrd"}"\nstep = 1\n'
                 f'pidfile = "{daemon.rundir / "vstatd.pid"}"\n')
    daemon.start()
    if "vx.graph" not in daemon.proxy().raw("system.listMethods"):
        pytest.skip("this daemon has no vx.stats / vx.graph yet")
    name = create_vserver(daemon, unique("gr"))
    ok(daemon, "vcc", "start", name)
    stats = subprocess.Popen([str(BIN / "vstatd"), "-c", str(daemon.config_path), "-f"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline, r = time.monotonic() + 30, None
        while time.monotonic() < deadline:
            r = run(daemon, "vcc", "--json", "stats", name, "thread_TOTAL", "--period", "1h")
            # the client's part is shown once the RRD exists; vstatd's tests judge the values
            if r.returncode == 0:
                break
            time.sleep(1)
        assert r is not None and r.returncode == 0, r.stderr if r else "no attempt"
        data = json.loads(r.stdout)
        assert data["metric"] == "thread_TOTAL" and data["timestamps"]
        people = ok(daemon, "vcc", "stats", name, "thread_TOTAL", "--period", "1h")
        assert people.splitlines()[0].startswith(f"{name} thread_TOTAL over 1h")
        assert people.splitlines()[1].split()[0] == "TIME"
        png = tmp_path / "g.png"
        out = ok(daemon, "vcc", "graph", name, "thread_TOTAL", "--period", "1h", "-o", str(png))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
        assert out == f"{png}: {png.stat().st_size} bytes\n"
        assert fails(daemon, 6, "vcc", "graph", name, "no_such_metric", "-o", str(png))
    finally:
        stats.terminate()
        stats.wait(timeout=20)
        run(daemon, "vcc", "stop", name)
        daemon.teardown_contexts()


# -- transports ---------------------------------------------------------------------------------

def test_unix_socket_url(make_vcd, tmp_path):
    sock = tmp_path / "vcd.sock"
    try:
        daemon = make_vcd(unix_socket=str(sock))
    except RuntimeError as exc:
        pytest.skip(f"this daemon does not take unix_socket yet: {exc}")
    if not sock.exists():
        pytest.skip("this daemon does not serve a Unix socket yet")
    r = subprocess.run([str(BIN / "vcdadm"), "--url", f"unix://{sock}", "--json", "hostinfo"],
                       capture_output=True, text=True, env=env(daemon), timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["vbasedir"] == str(daemon.vbasedir)


def test_https_url_with_cacert(make_vcd, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                           "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                           "-keyout", str(key), "-out", str(cert)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate")
    try:
        daemon = make_vcd(tls_cert=str(cert), tls_key=str(key), start=False)
        daemon.start(wait=False)
    except RuntimeError as exc:
        pytest.skip(f"this daemon does not take tls_cert yet: {exc}")
    url = f"https://127.0.0.1:{daemon.port}/RPC2"
    deadline = time.monotonic() + 30
    r = None
    while time.monotonic() < deadline:
        if (daemon.datadir / "admin.password").exists():
            if daemon.answers():    # plain HTTP on the TLS port
                pytest.skip("this daemon answers plain HTTP with tls_cert set: no TLS yet")
            r = subprocess.run([str(BIN / "vcc"), "--url", url, "--cacert", str(cert), "--json",
                                "list"], capture_output=True, text=True, env=env(daemon),
                               timeout=60)
            if r.returncode == 0:
                break
        time.sleep(0.2)
    assert r is not None and r.returncode == 0, r.stderr if r else "the daemon never came up"
    assert json.loads(r.stdout) == []
    # without the CA the certificate is refused: daemon unreachable (9), not a silent downgrade
    r = subprocess.run([str(BIN / "vcc"), "--url", url, "list"], capture_output=True, text=True,
                       env=env(daemon), timeout=60)
    assert r.returncode == 9 and "CERTIFICATE_VERIFY_FAILED" in r.stderr
