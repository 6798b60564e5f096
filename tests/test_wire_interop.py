"""Answers every XML-RPC client can parse, and what old clients send (issue 12).

Each example of the issue, against a real daemon and a real vserver: Python's
xmlrpc.client, Perl's RPC::XML and a strict XML 1.0 parser (expat) read every answer.
"""
from __future__ import annotations

import gzip
import shutil
import subprocess
import xml.parsers.expat
import xmlrpc.client
import zlib

import pytest

from api_helpers import create_vserver, fault, unique
from vcdtest import http_request

# ESC, NUL, form feed (forbidden in XML 1.0) and carriage returns (allowed, but only as &#13;)
COMMAND = "printf 'a\\033[1mb\\0c\\fd\\r\\ne\\r'"
EXPECTED = "a\ufffd[1mb\ufffdc\ufffdd\r\ne\r"


@pytest.fixture(scope="module")
def running(vcd_module):
    name = create_vserver(vcd_module, unique("wire"))
    admin = vcd_module.proxy()
    admin.vx.start(name=name)
    yield name
    admin.vx.stop(name=name)


def post(daemon, body: bytes, path: str = "/RPC2", headers: dict | None = None):
    return http_request(daemon.host, daemon.port, "POST", path, body, headers=headers)


def strictly_parsed(body: bytes) -> None:
    """Raise unless `body` is well-formed XML 1.0 (expat refuses forbidden characters)."""
    parser = xml.parsers.expat.ParserCreate()
    parser.Parse(body, True)


def call_body(daemon, method: str, params: dict | list | None = None, password=None) -> bytes:
    auth = {"username": "admin", "password": daemon.admin_password if password is None
            else password}
    return xmlrpc.client.dumps((auth, {} if params is None else params), method,
                               allow_none=True).encode()


# -- every string valid XML ---------------------------------------------------------------

def test_control_characters_in_exec_output_reach_python_clients_as_replacement_characters(
        vcd_module, running):
    out = vcd_module.proxy().vx.exec(name=running, command=COMMAND)
    assert out == EXPECTED


def test_exec_answer_with_control_characters_is_well_formed_xml(vcd_module, running):
    status, _, body = post(vcd_module, call_body(vcd_module, "vx.exec",
                                                 {"name": running, "command": COMMAND}))
    assert status == 200
    strictly_parsed(body)
    assert b"&#13;" in body and b"\r" not in body


def test_a_fault_carrying_control_characters_is_well_formed_xml(vcd_module, running):
    command = "sh -c \"printf 'x\\033y\\r\\n'; exit 3\""
    f = fault(vcd_module.proxy().vx.exec, name=running, command=command)
    assert f.faultCode == 1003
    assert "x\ufffdy\r\n" in f.faultString
    status, _, body = post(vcd_module, call_body(vcd_module, "vx.exec",
                                                 {"name": running, "command": command}))
    strictly_parsed(body)


def test_control_characters_inside_a_multicall_answer_are_replaced(vcd_module, running):
    auth = {"username": "admin", "password": vcd_module.admin_password}
    calls = [{"methodName": "vx.exec", "params": [auth, {"name": running, "command": COMMAND}]},
             {"methodName": "vx.exec", "params": [auth, {"name": running,
                                                         "command": "sh -c \"printf '\\033'; exit 2\""}]}]
    body = xmlrpc.client.dumps((calls,), "system.multicall").encode()
    status, _, answer = post(vcd_module, body)
    strictly_parsed(answer)
    (results,), _ = xmlrpc.client.loads(answer)
    assert results[0] == [EXPECTED]
    assert results[1]["faultCode"] == 1002
    assert "\ufffd" in results[1]["faultString"]


def test_bytes_that_are_not_utf8_arrive_as_replacement_characters(vcd_module, running):
    out = vcd_module.proxy().vx.exec(name=running, command="printf 'a\\377b'")
    assert out == "a\ufffdb"


PERL_EXEC = r'''
use strict; use RPC::XML; use RPC::XML::Client;
my ($url, $pass, $name, $command) = @ARGV;
my $c = RPC::XML::Client->new($url);
my $auth = RPC::XML::struct->new(username => 'admin', password => $pass);
for my $cmd ($command, "sh -c \"printf 'q\\033\\r'; exit 4\"") {
    my $r = $c->send_request('vx.exec', $auth, RPC::XML::struct->new(name => $name, command => $cmd));
    die "no answer: $r\n" unless ref $r;
    my $v = $r->is_fault ? $r->value->{faultCode} . ":" . $r->value->{faultString} : $r->value;
    utf8::encode($v);
    print unpack("H*", $v), "\n";
}
'''


def _perl_rpc_xml() -> None:
    if shutil.which("perl") is None or subprocess.run(
            ["perl", "-MRPC::XML::Client", "-e", "1"], capture_output=True).returncode != 0:
        pytest.skip("Debian's librpc-xml-perl is not installed")


def test_perl_rpc_xml_reads_exec_output_and_faults_with_control_characters(
        vcd_module, running, tmp_path):
    _perl_rpc_xml()
    script = tmp_path / "exec.pl"
    script.write_text(PERL_EXEC)
    out = subprocess.run(["perl", str(script), vcd_module.url, vcd_module.admin_password,
                          running, COMMAND], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second = (bytes.fromhex(line).decode() for line in out.stdout.split())
    assert first == EXPECTED
    assert second.startswith("1004:") and "q\ufffd\r" in second


# -- void results for clients without <nil/> ------------------------------------------------

def test_void_results_are_nil_by_default_and_true_with_nil_0(vcd_module):
    params = {"username": unique("nil"), "password": "secret123"}
    _, _, body = post(vcd_module, call_body(vcd_module, "vcd.user.set", params))
    assert b"<nil/>" in body
    _, _, body = post(vcd_module, call_body(vcd_module, "vcd.user.set", params), "/RPC2?nil=0")
    assert b"<nil/>" not in body and b"<boolean>1</boolean>" in body
    assert xmlrpc.client.loads(body)[0] == (True,)
    proxy = xmlrpc.client.ServerProxy(vcd_module.url + "?nil=0")  # no allow_none
    assert proxy.vcd.user.set({"username": "admin", "password": vcd_module.admin_password},
                              params) is True


def test_void_results_inside_a_multicall_are_true_with_nil_0(vcd_module):
    auth = {"username": "admin", "password": vcd_module.admin_password}
    calls = [{"methodName": "vcd.user.set",
              "params": [auth, {"username": unique("nil"), "password": "secret123"}]},
             {"methodName": "vcd.status", "params": [auth, {}]}]
    body = xmlrpc.client.dumps((calls,), "system.multicall").encode()
    _, _, answer = post(vcd_module, body, "/RPC2?nil=0")
    assert b"<nil/>" not in answer
    (results,), _ = xmlrpc.client.loads(answer)
    assert results[0] == [True]
    assert isinstance(results[1][0], dict)
    _, _, answer = post(vcd_module, body)
    assert xmlrpc.client.loads(answer, use_builtin_types=True)[0][0][0] == [None]


def test_method_help_of_every_void_method_mentions_nil_0(vcd_module):
    server = xmlrpc.client.ServerProxy(vcd_module.url)
    assert "nil=0" in server.system.methodHelp("vx.start")
    assert "nil=0" in server.system.methodHelp("vcd.user.set")
    assert "nil=0" not in server.system.methodHelp("vx.status")


# -- what old clients send ------------------------------------------------------------------

def test_an_empty_array_where_the_params_struct_belongs_means_no_params(vcd_module):
    _, _, answer = post(vcd_module, call_body(vcd_module, "vcd.status", []))
    (status,), _ = xmlrpc.client.loads(answer)
    assert isinstance(status, dict)


def test_an_int_password_authenticates(vcd_module):
    username = unique("digits")
    vcd_module.proxy().vcd.user.set(username=username, password="12345678")
    _, _, answer = post(vcd_module, xmlrpc.client.dumps(
        ({"username": username, "password": 12345678}, {}), "vcd.login").encode())
    assert b"fault" not in answer, answer
    _, _, answer = post(vcd_module, xmlrpc.client.dumps(
        ({"username": username, "password": 87654321}, {}), "vcd.login").encode())
    assert b"first parameter" not in answer


def test_an_int_where_a_string_is_expected_is_converted(vcd_module):
    admin = vcd_module.proxy()
    create_vserver(vcd_module, "123")
    try:
        assert "123" in admin.vxdb.list(username="")
        xid = admin.call("vxdb.xid.get", {"name": 123})
        assert admin.call("vxdb.name.get", {"xid": xid}) == "123"
    finally:
        admin.vx.remove(name="123")


def test_a_gzip_request_body_is_decompressed(vcd_module):
    body = call_body(vcd_module, "vcd.status")
    status, _, answer = post(vcd_module, gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert status == 200
    assert isinstance(xmlrpc.client.loads(answer)[0][0], dict)
    deflated = zlib.compress(body)
    status, _, answer = post(vcd_module, deflated, headers={"Content-Encoding": "deflate"})
    assert status == 200 and b"fault" not in answer


def test_a_gzip_body_beyond_the_size_limit_after_decompression_is_413(vcd_module):
    # 64 MiB of spaces inside an XML comment compress to about 64 KiB
    body = b"<?xml version='1.0'?><!--" + b" " * (64 << 20) + b"--><methodCall/>"
    status, _, _ = post(vcd_module, gzip.compress(body, 9), headers={"Content-Encoding": "gzip"})
    assert status == 413


def test_a_body_that_is_not_gzip_is_400_and_an_unknown_encoding_is_415(vcd_module):
    body = call_body(vcd_module, "vcd.status")
    assert post(vcd_module, body, headers={"Content-Encoding": "gzip"})[0] == 400
    assert post(vcd_module, body, headers={"Content-Encoding": "br"})[0] == 415


def test_transfer_encoding_identity_is_not_chunked(vcd_module):
    body = call_body(vcd_module, "vcd.status")
    status, _, answer = post(vcd_module, body, headers={"Transfer-Encoding": "identity",
                                                        "Content-Length": str(len(body))})
    assert status == 200 and b"fault" not in answer


PERL_VOID = r'''
use strict; use RPC::XML; use RPC::XML::Client;
my ($url, $pass, $user) = @ARGV;
my $c = RPC::XML::Client->new($url);
my $auth = RPC::XML::struct->new(username => 'admin', password => $pass);
my $r = $c->send_request('vcd.user.set', $auth,
                         RPC::XML::struct->new(username => $user, password => 'secret123'));
if (!ref $r) { print "error\n"; exit 0 }
print $r->is_fault ? "fault\n" : ("value " . $r->value . "\n");
'''


def test_perl_rpc_xml_without_nil_support_reads_void_results_with_nil_0(vcd_module, tmp_path):
    _perl_rpc_xml()
    script = tmp_path / "void.pl"
    script.write_text(PERL_VOID)
    user = unique("perl")
    out = subprocess.run(["perl", str(script), vcd_module.url + "?nil=0",
                          vcd_module.admin_password, user], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "value 1"
    # the call ran: the user can log in
    assert vcd_module.proxy(user, "secret123").vcd.login() is None
