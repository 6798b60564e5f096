"""HTTPS on the TCP port: real handshakes against a real daemon, with a throw-away CA."""
from __future__ import annotations

import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import xmlrpc.client
from pathlib import Path
from typing import Callable

import pytest

from pki import Pki, Pair
from vcd import tls as vtls
from vcd.transport import client_context, server_proxy
from vcdtest import REPO, VcdDaemon, http_request

LISTMETHODS = (b"<?xml version='1.0'?><methodCall><methodName>system.listMethods</methodName>"
               b"<params></params></methodCall>")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server_pair(pki: Pki) -> Pair:
    return pki.issue("server", ["127.0.0.1", "localhost"])


@pytest.fixture(scope="module")
def client_pair(pki: Pki) -> Pair:
    return pki.issue("client")


def https_daemon(make_vcd: Callable[..., VcdDaemon], server: Pair, **config: object) -> VcdDaemon:
    return make_vcd(tls_cert=str(server.cert), tls_key=str(server.key), **config)


def admin_call(daemon: VcdDaemon, proxy: xmlrpc.client.ServerProxy) -> object:
    return proxy.vcd.login({"username": "admin", "password": daemon.admin_password}, {})


def test_https_call_is_verified_against_the_ca_file(make_vcd: Callable[..., VcdDaemon], pki: Pki,
                                                    server_pair: Pair) -> None:
    daemon = https_daemon(make_vcd, server_pair)
    assert daemon.url.startswith("https://")
    proxy = server_proxy(daemon.url, cacert=pki.ca.cert, timeout=10)
    admin_call(daemon, proxy)
    assert "vcd.login" in proxy.system.listMethods()
    # without the CA the server is not trusted: no silent fallback to an unverified channel
    with pytest.raises(ssl.SSLCertVerificationError):
        server_proxy(daemon.url, timeout=10).system.listMethods()
    assert f"serving on https://{daemon.host}:{daemon.port}" in daemon.log()


def test_plain_http_to_the_https_port_is_told_to_use_https(make_vcd: Callable[..., VcdDaemon],
                                                          server_pair: Pair) -> None:
    daemon = https_daemon(make_vcd, server_pair)
    status, _, body = http_request(daemon.host, daemon.port, "POST", "/RPC2", LISTMETHODS)
    assert status == 400
    assert b"HTTPS" in body
    # and no plain-HTTP XML-RPC answer is given on that port at all
    assert b"methodResponse" not in body


def test_client_without_certificate_is_refused_when_client_ca_is_set(
        make_vcd: Callable[..., VcdDaemon], pki: Pki, server_pair: Pair, client_pair: Pair,
        tmp_path: Path) -> None:
    daemon = make_vcd(start=False, tls_cert=str(server_pair.cert), tls_key=str(server_pair.key),
                      tls_client_ca=str(pki.ca.cert))
    daemon.client_ssl = client_context(pki.ca.cert, client_pair.cert, client_pair.key)
    daemon.start()
    # with a certificate from the CA: served
    good = server_proxy(daemon.url, cacert=pki.ca.cert, cert=client_pair.cert, key=client_pair.key,
                        timeout=10)
    admin_call(daemon, good)
    # without one: the handshake fails (TLS 1.3 reports it on the first read)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        server_proxy(daemon.url, cacert=pki.ca.cert, timeout=10).system.listMethods()
    # with one from another CA: refused as well
    rogue = Pki(tmp_path / "rogue", name="rogue-ca").issue("intruder")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        server_proxy(daemon.url, cacert=pki.ca.cert, cert=rogue.cert, key=rogue.key,
                     timeout=10).system.listMethods()
    assert "TLS handshake with 127.0.0.1 failed" in daemon.log()
    admin_call(daemon, good)  # still serving


def _tls11_client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 won't offer TLS 1.1 at higher levels
    return ctx


def _tls11_usable(pair: Pair) -> bool:
    """Whether this OpenSSL can speak TLS 1.1 at all: a control server that allows it."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    server_ctx.load_cert_chain(str(pair.cert), str(pair.key))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    result: list[str] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                result.append(tls_conn.version() or "")
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with _tls11_client().wrap_socket(raw) as tls_conn:
                version = tls_conn.version()
        thread.join(10)
        return version == "TLSv1.1"
    except (OSError, ssl.SSLError):
        return False
    finally:
        listener.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused_and_tls_1_2_accepted(make_vcd: Callable[..., VcdDaemon],
                                                 server_pair: Pair) -> None:
    if not _tls11_usable(server_pair):
        pytest.skip("this OpenSSL cannot speak TLS 1.1 even to a server allowing it")
    daemon = https_daemon(make_vcd, server_pair)
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError) as refused:
            _tls11_client().wrap_socket(raw)
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value)  # refused by the server, not by us
    only12 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    only12.check_hostname = False
    only12.verify_mode = ssl.CERT_NONE
    only12.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as raw:
        with only12.wrap_socket(raw) as tls_conn:
            assert tls_conn.version() == "TLSv1.2"


def test_slow_tls_handshake_is_dropped_at_the_deadline_and_others_are_served(
        make_vcd: Callable[..., VcdDaemon], pki: Pki, server_pair: Pair) -> None:
    daemon = https_daemon(make_vcd, server_pair, timeout=2.0, workers=1)
    proxy = server_proxy(daemon.url, cacert=pki.ca.cert, timeout=10)
    stalled = [socket.create_connection((daemon.host, daemon.port), timeout=10) for _ in range(4)]
    try:
        for s in stalled:
            s.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # one worker, four stalled handshakes: still served
            assert proxy.system.listMethods()
        for s in stalled:
            s.settimeout(10)
            assert s.recv(100) == b""  # closed by the server ...
        assert time.monotonic() - started < 8  # ... at its deadline, not the client's
    finally:
        for s in stalled:
            s.close()
    assert "TLS handshake with 127.0.0.1 timed out" in daemon.log()


def test_reload_picks_up_a_renewed_certificate(make_vcd: Callable[..., VcdDaemon], tmp_path: Path) -> None:
    cert, key = tmp_path / "tls" / "vcd.crt", tmp_path / "tls" / "vcd.key"
    assert vtls.main(["--cert", str(cert), "--key", str(key), "--name", "127.0.0.1"]) == 0
    daemon = make_vcd(tls_cert=str(cert), tls_key=str(key))
    before = ssl.DER_cert_to_PEM_cert(_peer_cert(daemon))
    assert vtls.main(["--cert", str(cert), "--key", str(key), "--name", "127.0.0.1"]) == 1  # exists
    assert vtls.main(["--cert", str(cert), "--key", str(key), "--name", "127.0.0.1", "--force"]) == 0
    daemon.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while ssl.DER_cert_to_PEM_cert(_peer_cert(daemon)) == before:
        assert time.monotonic() < deadline, "the reloaded daemon still presents the old certificate"
        time.sleep(0.1)
    assert server_proxy(daemon.url, cacert=cert, timeout=10).system.listMethods()


def _peer_cert(daemon: VcdDaemon) -> bytes:
    with socket.create_connection((daemon.host, daemon.port), timeout=10) as raw:
        with daemon.probe_context().wrap_socket(raw) as tls_conn:
            der = tls_conn.getpeercert(binary_form=True)
    assert der
    return der


def test_tls_init_makes_a_usable_self_signed_pair_with_a_private_key(tmp_path: Path) -> None:
    conf = tmp_path / "vcd.conf"
    cert, key = tmp_path / "etc" / "vcd.crt", tmp_path / "private" / "vcd.key"
    conf.write_text(f'tls_cert = "{cert}"\ntls_key = "{key}"\n')
    result = subprocess.run([sys.executable, "-m", "vcd.tls", "-c", str(conf)], capture_output=True,
                            text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cert).st_mode) == 0o644
    assert "PRIVATE KEY" in key.read_text() and "PRIVATE" not in cert.read_text()
    assert not [p for p in key.parent.iterdir() if p.name.startswith(".vcd-tls-")]  # no leftovers
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))  # the pair matches
    assert vtls.fingerprint(cert) in result.stdout


def test_check_config_and_start_reject_an_unreadable_certificate(make_vcd: Callable[..., VcdDaemon],
                                                                 tmp_path: Path) -> None:
    daemon = make_vcd(start=False, tls_cert=str(tmp_path / "missing.crt"),
                      tls_key=str(tmp_path / "missing.key"))
    check = subprocess.run([sys.executable, "-m", "vcd.daemon", "-c", str(daemon.config_path),
                            "--check-config"], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert check.returncode == 2
    assert "missing.crt" in check.stderr and "Traceback" not in check.stderr
    start = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=30, cwd=REPO)
    assert start.returncode == 1
    assert "TLS" in start.stderr and "Traceback" not in start.stderr


def test_sighup_turns_the_tcp_port_into_https_and_back(make_vcd: Callable[..., VcdDaemon], pki: Pki,
                                                       server_pair: Pair) -> None:
    daemon = make_vcd()
    port = daemon.port
    daemon.write_config(tls_cert=str(server_pair.cert), tls_key=str(server_pair.key))
    daemon.send_signal(signal.SIGHUP)
    proxy = server_proxy(f"https://127.0.0.1:{port}/RPC2", cacert=pki.ca.cert, timeout=10)
    deadline = time.monotonic() + 20
    while True:  # old workers may still answer plain HTTP for a moment
        try:
            admin_call(daemon, proxy)
            break
        except (OSError, xmlrpc.client.ProtocolError):  # ssl.SSLError is an OSError
            assert time.monotonic() < deadline, "HTTPS never came up after the reload"
            time.sleep(0.1)
    assert daemon.port == port
    daemon.write_config(tls_cert=None, tls_key=None)
    daemon.send_signal(signal.SIGHUP)
    while not daemon.answers():
        assert time.monotonic() < deadline + 20, "plain HTTP never came back"
        time.sleep(0.1)
