"""Real XML-RPC clients of other languages against a real daemon (README "What every
XML-RPC client can read", issue 12).

Each client (its script in tests/interop_clients/) runs one scene against one daemon and
prints a line per step, strings as hex of their UTF-8 bytes: log in, vcd.status,
vxdb.list, a void method (nil, or boolean true through ``/RPC2?nil=0`` for clients that
cannot read ``<nil/>``), a fault (202, its code and text), vx.exec output with an escape
character and ``\\r\\n`` from a running busybox vserver (and every byte of an output as
``<base64>``), a login whose password is all digits with leading zeros (Perl's clients
send it as ``<int>00123456</int>``), the vserver named ``123`` sent as ``<int>``, and a
compressed request body where the client can send one. `make setup` installs every client (Makefile APT_PACKAGES, npm for Node); a test skips
only when its client is missing.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from api_helpers import create_vserver, fault, unique

CLIENTS = Path(__file__).parent / "interop_clients"
COMMAND_OUTPUT = "a\ufffd[1mb\r\nc"      # printf 'a\033[1mb\r\nc': ESC is forbidden in XML 1.0
DIGIT_PASSWORD = "00123456"               # an <int> that int() would turn into 123456
VSERVER_123 = "123"


@dataclass(frozen=True)
class Scene:
    url: str
    password: str
    running: str
    digit_user: str
    status_keys: str
    names: set[str]
    fault_text: str
    xid: int


@pytest.fixture(scope="module")
def scene(vcd_module) -> Scene:
    admin = vcd_module.proxy()
    running = create_vserver(vcd_module, unique("interop"))
    create_vserver(vcd_module, VSERVER_123)
    admin.vx.start(name=running)
    digit_user = unique("digits")
    admin.vcd.user.set(username=digit_user, password=DIGIT_PASSWORD)
    try:
        yield Scene(
            url=vcd_module.url, password=vcd_module.admin_password, running=running,
            digit_user=digit_user,
            status_keys=",".join(sorted(admin.vcd.status())),
            names=set(admin.vxdb.list(username="")),
            fault_text=fault(admin.vxdb.xid.get, name="nosuchvserver").faultString,
            xid=admin.call("vxdb.xid.get", {"name": VSERVER_123}))
    finally:
        admin.vx.stop(name=running)
        admin.vx.remove(name=running)
        admin.vx.remove(name=VSERVER_123)


@dataclass(frozen=True)
class Client:
    name: str
    present: Callable[[], str | None]      # None when installed, else why the test skips
    command: Callable[[Path], list[str]]   # argv before the scene's arguments (tmp dir given)
    void: str                              # how the client shows a void result
    nil_0: bool = False                    # posts to /RPC2?nil=0 (cannot read <nil/>)
    fault_prefix: str = ""                 # what the client puts before the fault string
    fault_suffix: str = ""                 # and after it
    compresses: bool = False               # also sends vcd.status with a compressed body
    extra: dict[str, str] = field(default_factory=dict)


def _runs(argv: list[str], why: str) -> str | None:
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} is not installed ({why})"
    if subprocess.run(argv, capture_output=True, timeout=60).returncode != 0:
        return f"{' '.join(argv)} fails: {why} is not installed"
    return None


def _files(*paths: str, why: str) -> str | None:
    missing = [p for p in paths if not Path(p).exists()]
    return f"{', '.join(missing)} missing ({why})" if missing else None


def _c_binary(tmp: Path) -> list[str]:
    binary = tmp / "xmlrpc_c"
    # libxmlrpc_client.so brings libcurl itself: no libcurl -dev package needed
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", str(binary), str(CLIENTS / "xmlrpc_c.c"),
                    "-lxmlrpc_client", "-lxmlrpc", "-lxmlrpc_util"], check=True, timeout=120)
    return [str(binary)]


AXMLRPC_JAR = "/usr/share/java/axmlrpc.jar"
NODE_DIR = CLIENTS / "node"

CLIENT_LIST = [
    Client("perl-frontier",
           lambda: _runs(["perl", "-MFrontier::Client", "-e", "1"],
                         "Debian's libfrontier-rpc-perl"),
           lambda tmp: ["perl", str(CLIENTS / "frontier.pl")],
           void="Frontier::RPC2::Boolean:1", nil_0=True),
    Client("perl-rpc-xml",
           lambda: _runs(["perl", "-MRPC::XML::Client", "-e", "1"], "Debian's librpc-xml-perl"),
           lambda tmp: ["perl", str(CLIENTS / "rpcxml.pl")],
           void="nil", compresses=True, extra={"compress": "deflate"}),
    Client("ruby-xmlrpc",
           lambda: _runs(["ruby", "-rxmlrpc/client", "-e", "1"], "Debian's ruby-xmlrpc"),
           lambda tmp: ["ruby", str(CLIENTS / "ruby.rb")],
           void="true", nil_0=True, extra={"multicall": "struct,true,fault:202"}),
    Client("ruby-xmlrpc-nil-parser",
           lambda: _runs(["ruby", "-rxmlrpc/client", "-e", "1"], "Debian's ruby-xmlrpc"),
           lambda tmp: ["env", "RUBY_XMLRPC_NIL=1", "ruby", str(CLIENTS / "ruby.rb")],
           void="nil", extra={"multicall": "struct,nil,fault:202"}),
    Client("php-xmlrpc",
           lambda: _runs(["php", "-r", "exit(function_exists('xmlrpc_encode_request') ? 0 : 1);"],
                         "Debian's php-xmlrpc"),
           lambda tmp: ["php", str(CLIENTS / "php.php")],
           void="NULL", compresses=True, extra={"empty_params": "array"}),
    Client("c-xmlrpc-c",
           lambda: _runs(["gcc", "--version"], "gcc") or _files(
               "/usr/include/xmlrpc-c/client.h", why="Debian's libxmlrpc-core-c3-dev"),
           _c_binary, void="nil", fault_prefix="RPC failed at server.  ",
           # xmlrpc_read_string normalises line ends to LF; its _crlf form gives CRLF
           extra={"exec_crlf": COMMAND_OUTPUT.encode().hex()}),
    Client("java-axmlrpc",
           lambda: _runs(["javac", "-version"], "a JDK (default-jdk-headless)") or _files(
               AXMLRPC_JAR, why="Debian's libaxmlrpc-java"),
           lambda tmp: ["java", "-cp", AXMLRPC_JAR, str(CLIENTS / "AxmlrpcClient.java")],
           void="true", nil_0=True, fault_suffix=" [202]"),
    Client("java-axmlrpc-flags-nil",
           lambda: _runs(["javac", "-version"], "a JDK (default-jdk-headless)") or _files(
               AXMLRPC_JAR, why="Debian's libaxmlrpc-java"),
           lambda tmp: ["java", "-Daxmlrpc.nil=true", "-cp", AXMLRPC_JAR,
                        str(CLIENTS / "AxmlrpcClient.java")],
           void="null", fault_suffix=" [202]"),
    Client("node-xmlrpc",
           lambda: _runs(["node", "--version"], "nodejs") or _files(
               str(NODE_DIR / "node_modules" / "xmlrpc" / "package.json"),
               why="npm's xmlrpc: make setup runs npm ci in tests/interop_clients/node"),
           lambda tmp: ["node", str(NODE_DIR / "client.js")],
           void="null"),
]


def _run_scene(client: Client, scene: Scene, tmp_path: Path) -> dict[str, str]:
    reason = client.present()
    if reason:
        pytest.skip(reason)
    new_user = unique("via")
    url = scene.url + ("?nil=0" if client.nil_0 else "")
    out = subprocess.run(client.command(tmp_path) + [url, scene.password, scene.running,
                                                     scene.digit_user, DIGIT_PASSWORD, new_user],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{client.name} failed:\n{out.stdout}\n{out.stderr}"
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    lines["new_user"] = new_user
    return lines


def _text(hexed: str) -> str:
    return bytes.fromhex(hexed).decode("utf-8")


@pytest.mark.parametrize("client", CLIENT_LIST, ids=[c.name for c in CLIENT_LIST])
def test_a_real_client_logs_in_lists_gets_faults_and_reads_exec_output(
        client, scene, vcd_module, tmp_path):
    got = _run_scene(client, scene, tmp_path)
    assert got["login"] == client.void
    assert _text(got["status"]) == scene.status_keys
    assert {scene.running, VSERVER_123} <= set(_text(got["list"]).split(","))
    assert scene.names <= set(_text(got["list"]).split(","))
    # the void call ran: the user it created can log in
    assert got["void"] == client.void
    assert vcd_module.proxy(got["new_user"], "secret123").vcd.login() is None
    code, text = got["fault"].split(" ")
    assert code == "202"
    assert _text(text) == client.fault_prefix + scene.fault_text + client.fault_suffix
    expected = COMMAND_OUTPUT if client.name != "c-xmlrpc-c" else COMMAND_OUTPUT.replace("\r\n", "\n")
    assert _text(got["exec"]) == expected
    # every byte, as <base64>: printf 'a\033\r\n\377'
    assert got["exec_raw"] == "611b0d0aff"
    # an all-digit password with leading zeros (an <int> from Perl) and the name 123
    assert got["digits"] == client.void
    assert int(got["xid"]) == scene.xid
    for step, value in client.extra.items():
        assert got[step] == value, step
    if client.compresses:
        assert _text(got["compressed"]) == scene.status_keys


FRONTIER_LOGIN = r"""
use strict; use Frontier::Client; use Frontier::RPC2;
my ($url, $user, $password) = @ARGV;
print Frontier::RPC2->new->encode_call('vcd.login', {username => $user, password => $password});
my $r = eval { Frontier::Client->new(url => $url)->call('vcd.login',
                                                        {username => $user, password => $password}, {}) };
print "\nanswer ", ($@ ? "fault $@" : $r->value), "\n";
"""


@pytest.mark.parametrize("password, tag", [("00123456", "i4"), ("+1234567", "i4"),
                                           ("+1.50000", "double"), ("2.000000", "double")])
def test_a_number_like_password_from_perl_frontier_is_taken_as_the_characters_sent(
        vcd_module, scene, tmp_path, password, tag):
    """Frontier::Client writes the password 00123456 as <i4>00123456</i4> and +1.50000 as
    <double>+1.50000</double>; int() and float() would make them 123456 and 1.5."""
    reason = CLIENT_LIST[0].present()
    if reason:
        pytest.skip(reason)
    user = unique("numeric")
    vcd_module.proxy().vcd.user.set(username=user, password=password)
    script = tmp_path / "login.pl"
    script.write_text(FRONTIER_LOGIN)
    out = subprocess.run(["perl", str(script), scene.url + "?nil=0", user, password],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"<{tag}>{password}</{tag}>" in out.stdout
    assert "answer 1" in out.stdout, out.stdout
