"""Authentication, capabilities, owner checks, throttling and the user database."""
from __future__ import annotations

import concurrent.futures
import http.client
import stat
import time
import xmlrpc.client

import pytest
import whirlpool

from api_helpers import create_vserver, fault, fault_code, unique


def test_first_start_writes_password_files_readable_only_by_root(vcd_module):
    for user in ("admin", "vshelper"):
        path = vcd_module.datadir / f"{user}.password"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(path.read_text().strip()) >= 16
    assert str(vcd_module.datadir / "admin.password") in vcd_module.log()


def test_first_start_password_is_never_logged(vcd_module):
    vcd_module.proxy().vcd.login()
    assert vcd_module.admin_password not in vcd_module.log()
    assert vcd_module.admin_password not in vcd_module.stderr()


def test_login_succeeds_with_the_admin_password(vcd_module):
    assert vcd_module.proxy().vcd.login() is None


def test_login_accepts_a_client_side_whirlpool_hash(vcd_module):
    digest = whirlpool.new(vcd_module.admin_password.encode()).hexdigest()
    assert vcd_module.proxy("admin", "WHIRLPOOLENC//" + digest.lower()).vcd.login() is None
    assert vcd_module.proxy("admin", "WHIRLPOOLENC//" + digest.upper()).vcd.login() is None


def test_wrong_password_and_unknown_user_give_the_same_fault(vcd_module):
    wrong = fault(vcd_module.proxy("admin", "not-the-password").vcd.login)
    unknown = fault(vcd_module.proxy("nobody", "whatever1").vcd.login)
    assert wrong.faultCode == unknown.faultCode == 100
    assert wrong.faultString == unknown.faultString


def test_missing_credentials_are_unauthorized(vcd_module):
    server = xmlrpc.client.ServerProxy(vcd_module.url, allow_none=True)
    assert fault_code(server.vcd.login) == 100
    assert fault_code(server.vcd.login, "admin") == 100
    assert fault_code(server.vcd.login, {"username": "admin"}) == 100


def test_method_without_params_accepts_empty_struct_empty_string_or_nothing(vcd_module):
    server = xmlrpc.client.ServerProxy(vcd_module.url, allow_none=True)
    creds = {"username": "admin", "password": vcd_module.admin_password}
    assert server.vcd.login(creds) is None
    assert server.vcd.login(creds, "") is None
    assert server.vcd.login(creds, {}) is None
    assert isinstance(server.vcd.status(creds, {"unknown_key": 1}), dict)


def test_missing_capability_is_fault_101(vcd_module):
    admin = vcd_module.proxy()
    user = unique("capless")
    admin.vcd.user.set(username=user, password="password1", admin=False)
    client = vcd_module.proxy(user, "password1")
    assert client.vcd.login() is None
    assert fault_code(client.vcd.status) == 101
    admin.vcd.user.caps.add(username=user, cap="INFO")
    assert client.vcd.status()["requests"] > 0


def test_helper_capability_is_enforced_even_for_admins(vcd_module):
    # admin holds every capability but HELPER
    caps = vcd_module.proxy().vcd.user.caps.get(username="admin")
    assert "HELPER" not in caps
    assert fault_code(vcd_module.proxy("vshelper", vcd_module.vshelper_password).vcd.status) == 101


def test_owner_check_hides_vservers_of_others_and_missing_ones_alike(vcd_module):
    admin = vcd_module.proxy()
    name = create_vserver(vcd_module)
    user = unique("owner")
    admin.vcd.user.set(username=user, password="password1", admin=False)
    admin.vcd.user.caps.add(username=user, cap="NET")
    client = vcd_module.proxy(user, "password1")
    not_mine = fault(client.vxdb.nx.addr.get, name=name)
    missing = fault(client.vxdb.nx.addr.get, name="no-such-vserver")
    assert not_mine.faultCode == missing.faultCode == 202
    assert client.vxdb.list() == []
    admin.vxdb.owner.add(name=name, username=user)
    assert client.vxdb.nx.addr.get(name=name) == []
    assert client.vxdb.list() == [name]
    assert client.vxdb.list(username="admin") == []
    assert user in admin.vxdb.owner.get(name=name)
    admin.vxdb.owner.remove(name=name, username=user)
    assert fault_code(client.vxdb.nx.addr.get, name=name) == 202


def test_only_admins_create_new_vservers(vcd_module):
    admin = vcd_module.proxy()
    user = unique("creator")
    admin.vcd.user.set(username=user, password="password1", admin=False)
    admin.vcd.user.caps.add(username=user, cap="CREATE")
    assert fault_code(vcd_module.proxy(user, "password1").vx.create,
                      name=unique(), template="busybox") == 202


def test_admin_flag_passes_owner_checks(vcd_module):
    admin = vcd_module.proxy()
    name = create_vserver(vcd_module)
    user = unique("boss")
    admin.vcd.user.set(username=user, password="password1", admin=True)
    admin.vcd.user.caps.add(username=user, cap="NET")
    assert vcd_module.proxy(user, "password1").vxdb.nx.addr.get(name=name) == []
    assert name in vcd_module.proxy(user, "password1").vxdb.list()


def _login_from(daemon, source: str, password: str) -> int:
    """vcd.login from a chosen loopback source address; 0 on success, else the fault code."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10,
                                      source_address=(source, 0))
    body = xmlrpc.client.dumps(({"username": "admin", "password": password}, {}), "vcd.login")
    conn.request("POST", "/RPC2", body, {"Content-Type": "text/xml"})
    data = conn.getresponse().read()
    conn.close()
    try:
        xmlrpc.client.loads(data)
        return 0
    except xmlrpc.client.Fault as f:
        return f.faultCode


def test_failed_logins_are_throttled_per_address_and_cleared_by_success(vcd):
    good = vcd.admin_password
    for _ in range(10):
        assert _login_from(vcd, "127.0.0.5", "wrong-password") == 100
    # past ten failures even the right password is refused for a while...
    assert _login_from(vcd, "127.0.0.5", good) == 100
    # ...from that address only
    assert _login_from(vcd, "127.0.0.6", good) == 0
    deadline = time.monotonic() + 10
    while _login_from(vcd, "127.0.0.5", good) != 0:
        assert time.monotonic() < deadline, "throttling never ended"
        time.sleep(0.5)
    # a success clears the count: one new failure is not throttled
    assert _login_from(vcd, "127.0.0.5", "wrong-password") == 100
    assert _login_from(vcd, "127.0.0.5", good) == 0
    assert vcd.proxy().vcd.status()["flogins"] >= 12


def test_status_counts_every_request_exactly_under_concurrency(vcd):
    admin = vcd.proxy()
    before = admin.vcd.status()
    n = 200

    def one(i: int) -> None:
        if i % 10 == 0:
            with pytest.raises(xmlrpc.client.Fault):
                vcd.proxy().call("no.such.method")
        else:
            vcd.proxy().vcd.login()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))
    after = admin.vcd.status()
    assert after["requests"] - before["requests"] == n + 1
    assert after["nomethod"] - before["nomethod"] == n // 10
    assert after["uptime"] >= before["uptime"]


def test_unknown_method_is_interoperable_fault(vcd_module):
    assert fault_code(vcd_module.proxy().call, "vx.frobnicate") == -32601


# -- the user database -------------------------------------------------------------------

def test_user_set_get_remove_round_trip(vcd_module):
    admin = vcd_module.proxy()
    user = unique("user")
    admin.vcd.user.set(username=user, password="password1", admin=False)
    [row] = admin.vcd.user.get(username=user)
    assert row["username"] == user and row["admin"] is False and row["caps"] == []
    assert "password" not in row and isinstance(row["uid"], int)
    # an empty password keeps the old one; admin flag changes
    admin.vcd.user.set(username=user, password="", admin=True)
    assert admin.vcd.user.get(username=user)[0]["admin"] is True
    assert vcd_module.proxy(user, "password1").vcd.login() is None
    admin.vcd.user.set(username=user, password="password2")
    assert fault_code(vcd_module.proxy(user, "password1").vcd.login) == 100
    assert {u["username"] for u in admin.vcd.user.get(username="")} >= {"admin", "vshelper", user}
    admin.vcd.user.remove(username=user)
    assert admin.vcd.user.get(username=user) == []
    assert fault_code(vcd_module.proxy(user, "password2").vcd.login) == 100


def test_new_user_needs_a_password_of_eight_characters(vcd_module):
    admin = vcd_module.proxy()
    f = fault(admin.vcd.user.set, username=unique("short"), password="short", admin=False)
    assert f.faultCode == 200 and "password" in f.faultString
    assert fault_code(admin.vcd.user.set, username=unique("nopw"), admin=False) == 200


def test_user_caps_add_get_remove(vcd_module):
    admin = vcd_module.proxy()
    user = unique("caps")
    admin.vcd.user.set(username=user, password="password1", admin=False)
    admin.vcd.user.caps.add(username=user, cap="INFO")
    admin.vcd.user.caps.add(username=user, cap="EXEC")
    admin.vcd.user.caps.add(username=user, cap="EXEC")
    assert admin.vcd.user.caps.get(username=user) == ["EXEC", "INFO"]
    admin.vcd.user.caps.remove(username=user, cap="EXEC")
    assert admin.vcd.user.caps.get(username=user) == ["INFO"]
    admin.vcd.user.caps.remove(username=user, cap="")
    assert admin.vcd.user.caps.get(username=user) == []
    f = fault(admin.vcd.user.caps.add, username=user, cap="ROOT")
    assert f.faultCode == 200 and "cap" in f.faultString


def test_user_methods_on_a_missing_user_give_102(vcd_module):
    admin = vcd_module.proxy()
    assert fault_code(admin.vcd.user.remove, username="ghost") == 102
    assert fault_code(admin.vcd.user.caps.get, username="ghost") == 102
    assert fault_code(admin.vcd.user.caps.add, username="ghost", cap="INFO") == 102


@pytest.mark.parametrize("bad", ["", "-x", "a b", "x" * 65, "a/b", "x'; DROP TABLE users;--"])
def test_invalid_usernames_are_refused_naming_the_param(vcd_module, bad):
    f = fault(vcd_module.proxy().vcd.user.set, username=bad, password="password1", admin=False)
    assert f.faultCode == 200 and "username" in f.faultString
