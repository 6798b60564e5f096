"""Persistence, concurrency, hostile input, introspection and a client in another language."""
from __future__ import annotations

import concurrent.futures
import shutil
import signal
import subprocess
import xmlrpc.client

import pytest

from api_helpers import create_vserver, fault_code, unique
from vcdtest import http_request


def test_writes_survive_a_restart_and_a_sigkill(vcd):
    admin = vcd.proxy()
    name = create_vserver(vcd)
    admin.vxdb.nx.addr.set(name=name, addr="10.7.7.7")
    admin.vcd.user.set(username="persist", password="password1", admin=False)
    vcd.restart()
    admin = vcd.proxy()
    assert admin.vxdb.nx.addr.get(name=name)[0]["addr"] == "10.7.7.7"
    admin.vxdb.vx.limit.set(name=name, limit="NPROC", max=42)
    vcd.kill(signal.SIGKILL)
    vcd.start()
    admin = vcd.proxy()
    assert admin.vxdb.vx.limit.get(name=name, limit="NPROC")[0]["max"] == "42"
    assert admin.vcd.user.get(username="persist")[0]["username"] == "persist"
    assert vcd.proxy("persist", "password1").vcd.login() is None
    # a restart keeps the first-start passwords: no second set of users
    assert sorted(u["username"] for u in admin.vcd.user.get()) == ["admin", "persist", "vshelper"]


def test_32_concurrent_clients_lose_no_write_and_see_no_fault(vcd):
    names = [create_vserver(vcd) for _ in range(4)]
    shared = names[0]

    def writer(i: int) -> None:
        client = vcd.proxy()
        own = names[i % 4]
        for j in range(10):
            client.vxdb.mount.set(name=shared, dst=f"/mnt/c{i}-{j}", src=f"s{i}")
            client.vxdb.vx.uname.set(name=own, uname="NODENAME", value=f"c{i}")
            client.vxdb.nx.addr.set(name=own, addr=f"10.{i}.{j}.1")

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        for future in [pool.submit(writer, i) for i in range(32)]:
            future.result()   # re-raises any fault
    admin = vcd.proxy()
    assert len(admin.vxdb.mount.get(name=shared)) == 32 * 10
    addrs = sum(len(admin.vxdb.nx.addr.get(name=n)) for n in names)
    assert addrs == 32 * 10


def test_malformed_xml_gets_a_parse_fault_and_the_daemon_keeps_serving(vcd_module):
    for body in (b"<methodCall><methodName>vcd.login", b"not xml at all", b"",
                 b"<methodCall><params/></methodCall>"):
        status, _, data = http_request("127.0.0.1", vcd_module.port, "POST", "/RPC2", body)
        assert status == 200
        with pytest.raises(xmlrpc.client.Fault) as info:
            xmlrpc.client.loads(data)
        assert info.value.faultCode == -32700
        assert b"Traceback" not in data
    assert vcd_module.proxy().vcd.login() is None


def test_entity_expansion_and_dtds_are_refused(vcd_module):
    bomb = (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
            b'<methodCall><methodName>vcd.login</methodName><params><param><value>&c;'
            b'</value></param></params></methodCall>')
    external = (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b'<methodCall><methodName>&x;</methodName></methodCall>')
    for body in (bomb, external):
        status, _, data = http_request("127.0.0.1", vcd_module.port, "POST", "/RPC2", body)
        assert status == 200 and b"root:" not in data
        with pytest.raises(xmlrpc.client.Fault) as info:
            xmlrpc.client.loads(data)
        assert info.value.faultCode == -32700


def test_params_that_are_not_a_struct_are_refused(vcd_module):
    server = xmlrpc.client.ServerProxy(vcd_module.url, allow_none=True)
    creds = {"username": "admin", "password": vcd_module.admin_password}
    assert fault_code(server.vxdb.list, creds, ["a"]) == 200
    assert fault_code(server.vxdb.list, creds, 5) == 200


def test_introspection_comes_from_the_registry(vcd_module):
    server = xmlrpc.client.ServerProxy(vcd_module.url, allow_none=True)
    methods = server.system.listMethods()
    for name in ("vcd.login", "vx.create", "vxdb.vx.limit.set", "vg.add", "system.multicall"):
        assert name in methods
    assert "Start" in server.system.methodHelp("vx.create") or \
        "template" in server.system.methodHelp("vx.create")
    assert "limit" in server.system.methodHelp("vxdb.vx.limit.set")
    assert server.system.methodSignature("vxdb.list") == [["array", "struct", "struct"]]
    assert fault_code(server.system.methodHelp, "no.such") == -32601


def test_multicall_runs_each_call_with_its_own_credentials(vcd_module):
    server = xmlrpc.client.ServerProxy(vcd_module.url, allow_none=True)
    creds = {"username": "admin", "password": vcd_module.admin_password}
    results = server.system.multicall([
        {"methodName": "vcd.login", "params": [creds, {}]},
        {"methodName": "vxdb.xid.get", "params": [creds, {"name": "ghost"}]},
        {"methodName": "vcd.login", "params": [{"username": "admin", "password": "x"}, {}]},
        {"methodName": "vxdb.list", "params": [creds, {}]},
    ])
    assert results[0] == [None]
    assert results[1]["faultCode"] == 202
    assert results[2]["faultCode"] == 100
    assert isinstance(results[3][0], list)


PERL_CLIENT = r'''
use strict; use RPC::XML; use RPC::XML::Client;
my ($url, $pass) = @ARGV;
my $c = RPC::XML::Client->new($url);
my $auth = RPC::XML::struct->new(username => 'admin', password => $pass);
my $r = $c->send_request('vxdb.list', $auth, RPC::XML::struct->new(username => ''));
die "no answer: $r\n" unless ref $r;
die "fault: " . $r->value->{faultString} . "\n" if $r->is_fault;
print join(",", @{$r->value}), "\n";
$r = $c->send_request('vxdb.xid.get', $auth, RPC::XML::struct->new(name => 'ghost'));
print "fault ", $r->value->{faultCode}, "\n" if $r->is_fault;
'''


@pytest.mark.skipif(shutil.which("perl") is None, reason="perl is not installed")
def test_a_perl_client_calls_vcd(vcd_module, tmp_path):
    probe = subprocess.run(["perl", "-MRPC::XML::Client", "-e", "1"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("Debian's librpc-xml-perl is not installed")
    name = create_vserver(vcd_module, unique("perl"))
    script = tmp_path / "client.pl"
    script.write_text(PERL_CLIENT)
    out = subprocess.run(["perl", str(script), vcd_module.url, vcd_module.admin_password],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert name in lines[0].split(",")
    assert lines[1] == "fault 202"
