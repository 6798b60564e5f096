"""The web panel: served by a real vcd, driven in a real headless Chromium, as an admin
and as a tenant, against real vservers; plus its HTTP headers and its XML-RPC codec.

Screenshots of every page land in tests/artifacts/panel/ (ignored by git).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import xmlrpc.client
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from api_helpers import ensure_busybox_template, unique
from test_vstatd import StatsVcd, Vstatd
from pki import Pki
from vcdtest import REPO, VcdDaemon, http_request

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (StaleElementReferenceException,  # noqa: E402
                                        TimeoutException)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="vservers need root"),
    pytest.mark.skipif(not os.path.exists("/usr/bin/chromedriver"),
                       reason="Debian's chromium-driver is not installed (make setup)"),
]

PANEL = REPO / "vcd" / "panel"
ARTIFACTS = REPO / "tests" / "artifacts" / "panel"
WAIT = 60.0
TENANT_PASSWORD = "tenant-pass-1"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatsVcd]:
    """One vcd (with a Unix socket too) and a vstatd sampling every second, for graphs."""
    root = tmp_path_factory.mktemp("panel")
    daemon = StatsVcd(root / "vcd", {"rrddir": str(root / "rrd"), "step": 1, "flush_interval": 2,
                                     "pidfile": str(root / "vstatd.pid"),
                                     "logfile": str(root / "vstatd.log")},
                      workers=3, unix_socket=str(root / "vcd.sock"))
    stats = Vstatd(daemon.config_path, root / "vstatd.pid", root / "vstatd.stderr")
    try:
        daemon.start()
        stats.start()
        ensure_busybox_template(daemon.templatedir)
        yield daemon
    finally:
        stats.stop()
        daemon.cleanup()


class Browser:
    """A headless Chromium on the panel, with the waits and screenshots the tests use."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver = driver
        self.base = base

    def open(self, fragment: str = "") -> None:
        self.driver.get(self.base + fragment)

    def wait(self, predicate: Callable[[], Any], what: str | Callable[[], str],
             timeout: float = WAIT) -> Any:
        """`what` names the awaited state in the failure (a callable: computed then)."""
        def attempt(_: Any) -> Any:
            try:
                return predicate()
            except StaleElementReferenceException:
                return False  # the list was redrawn while we looked
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(attempt)
        except TimeoutException:
            raise TimeoutException(f"waiting for {what() if callable(what) else what}") from None

    def find(self, css: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def visible(self, css: str) -> Any:
        return self.wait(lambda: next((e for e in self.all(css) if e.is_displayed()), None), css)

    def click(self, css: str) -> None:
        self.visible(css).click()

    def type(self, css: str, text: str) -> None:
        element = self.visible(css)
        element.clear()
        element.send_keys(text)

    def confirm(self) -> None:
        self.click("#confirm-yes")
        self.wait(lambda: not self.find("#confirm").is_displayed(), "the dialog to close")

    def login(self, username: str, password: str, remember: bool = False) -> None:
        self.open("#/")
        self.driver.execute_script("sessionStorage.clear()")
        self.open("#/")
        self.type("#login input[name=username]", username)
        self.type("#login input[name=password]", password)
        if remember:
            self.click("#login input[name=remember]")
        self.click("#login button[type=submit]")
        self.visible("#logout")

    def logout(self) -> None:
        self.click("#logout")
        self.visible("#login")

    def row(self, name: str) -> Any:
        return self.visible(f'tr[data-vserver="{name}"]')

    def click_in_row(self, name: str, css: str) -> None:
        """Click `css` inside the vserver's row of the list (again if a refresh redrew it)."""
        def attempt() -> bool:
            found = self.row(name).find_elements(By.CSS_SELECTOR, css)
            if not found:
                return False
            found[0].click()
            return True
        self.wait(attempt, f"{css} in the row of {name}")

    def listed(self) -> list[str]:
        return [r.get_attribute("data-vserver") for r in self.all("tr[data-vserver]")]

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        print(f"screenshot: {path}")
        return path

    def full_shot(self, name: str) -> Path:
        """The whole page, however long: the window grows to it for the picture."""
        width, height = self.driver.get_window_size().values()
        full = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(width, max(height, full + 140))
        try:
            return self.shot(name)
        finally:
            self.driver.set_window_size(width, height)


@pytest.fixture(scope="module")
def browser(env: StatsVcd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    profile = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"),
                              options=options)
    try:
        yield Browser(driver, f"http://{env.host}:{env.port}/")
    finally:
        driver.quit()


def no_console_errors(browser: Browser) -> None:
    """No script error and no CSP violation was reported by the page."""
    errors = [e for e in browser.driver.get_log("browser") if e["level"] == "SEVERE"
              and "favicon" not in e["message"]]
    assert not errors, errors


# -- HTTP ---------------------------------------------------------------------------------

def test_panel_page_and_assets_carry_a_strict_csp_and_set_no_cookie(env: StatsVcd) -> None:
    status, headers, body = http_request(env.host, env.port, "GET", "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert body == (PANEL / "dist" / "index.html").read_bytes()
    csp = headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'",
                      "img-src 'self' data:", "frame-ancestors 'none'", "form-action 'none'"):
        assert directive in csp
    assert "unsafe" not in csp and "*" not in csp and "http" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert "set-cookie" not in headers
    # every asset the page loads comes from vcd itself, each with its own type
    refs = re.findall(rb'(?:src|href)="([^"]+)"', body)
    assert refs and all(ref.startswith(b"/static/") for ref in refs), refs
    types = {b"/static/panel.js": "text/javascript; charset=utf-8",
             b"/static/panel.css": "text/css; charset=utf-8",
             b"/static/favicon.svg": "image/svg+xml"}
    assert set(refs) == set(types)
    for ref, ctype in types.items():
        status, headers, data = http_request(env.host, env.port, "GET", ref.decode())
        assert (status, headers["content-type"]) == (200, ctype)
        assert data == (PANEL / "dist" / ref.decode().removeprefix("/static/")).read_bytes()
        assert headers["x-content-type-options"] == "nosniff"
        assert "set-cookie" not in headers
    # the page itself has no inline script or style for the CSP to refuse
    assert b"<script>" not in body and b"style=" not in body and b"<style" not in body
    body = (b"<?xml version='1.0'?><methodCall><methodName>vcd.login</methodName><params>"
            b"<param><value><struct><member><name>username</name><value>admin</value></member>"
            b"<member><name>password</name><value>" + env.admin_password.encode() +
            b"</value></member></struct></value></param></params></methodCall>")
    status, headers, _ = http_request(env.host, env.port, "POST", "/RPC2", body)
    assert status == 200 and "set-cookie" not in headers


def test_head_answers_the_headers_without_the_body(env: StatsVcd) -> None:
    status, headers, body = http_request(env.host, env.port, "HEAD", "/")
    assert status == 200 and body == b""
    assert int(headers["content-length"]) == len((PANEL / "dist" / "index.html").read_bytes())
    assert "content-security-policy" in headers


@pytest.mark.parametrize("path", ["/index.html", "/static/", "/static/index.html",
                                  "/static/../vcd.conf", "/static/%2e%2e/vcd.conf",
                                  "/static//panel.js", "/static/panel.js/", "/favicon.ico",
                                  "/static/node_modules/esbuild/package.json", "/admin", "//"])
def test_paths_outside_the_manifest_are_404(env: StatsVcd, path: str) -> None:
    status, headers, body = http_request(env.host, env.port, "GET", path)
    assert status == 404
    assert headers["content-type"] == "text/plain"
    assert headers["x-content-type-options"] == "nosniff"


def test_panel_is_served_on_the_unix_socket_too(env: StatsVcd) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(env.overrides["unix_socket"])
        s.sendall(b"GET /static/panel.js HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Security-Policy: default-src 'self'" in head
    assert body == (PANEL / "dist" / "panel.js").read_bytes()


def test_panel_is_served_over_https(make_vcd: Callable[..., VcdDaemon],
                                     tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    server = pki.issue("server", ["127.0.0.1"])
    daemon = make_vcd(tls_cert=str(server.cert), tls_key=str(server.key))
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    status, headers, body = http_request(daemon.host, daemon.port, "GET", "/", context=context)
    assert status == 200 and body == (PANEL / "dist" / "index.html").read_bytes()
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    status, _, _ = http_request(daemon.host, daemon.port, "GET", "/static/x.js", context=context)
    assert status == 404


def test_whoami_tells_the_caller_its_name_admin_flag_and_caps(env: StatsVcd) -> None:
    admin = env.proxy()
    me = admin.vcd.whoami()
    assert me["username"] == "admin" and me["admin"] is True
    assert {"AUTH", "CREATE", "EXEC", "INFO", "INIT"} <= set(me["caps"])
    user = unique("who")
    admin.vcd.user.set(username=user, password="password1", admin=False)
    assert env.proxy(user, "password1").vcd.whoami() == {"username": user, "admin": False,
                                                         "caps": []}
    admin.vcd.user.caps.add(username=user, cap="INFO")
    admin.vcd.user.caps.add(username=user, cap="EXEC")
    assert env.proxy(user, "password1").vcd.whoami()["caps"] == ["EXEC", "INFO"]
    with pytest.raises(xmlrpc.client.Fault) as fault:
        env.proxy(user, "wrong-password").vcd.whoami()
    assert fault.value.faultCode == 100


def test_xmlrpc_codec_round_trips_with_python() -> None:
    """The panel's own codec (vcd/panel/src/xmlrpc.js) under node's test runner."""
    if shutil.which("node") is None or not (PANEL / "node_modules").exists():
        pytest.skip("node or the panel's node_modules are missing (make setup)")
    r = subprocess.run(["node", "--test", "test/"], cwd=PANEL, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "# fail 0" in r.stdout and "# pass 0" not in r.stdout


# -- in the browser ---------------------------------------------------------------------------

def test_admin_creates_starts_execs_edits_graphs_stops_and_removes(env: StatsVcd,
                                                                    browser: Browser) -> None:
    admin = env.proxy()
    name = unique("panel")
    b = browser
    b.open()
    b.visible("#login")
    b.shot("01-login")
    b.login("admin", env.admin_password)
    assert env.admin_password not in b.driver.current_url
    b.shot("02-list-empty")

    b.click("#create")
    b.type("#create-form input[name=name]", name)
    b.wait(lambda: "busybox" in b.find("#create-form select[name=template]").text, "templates")
    b.click("#create-form input[name=start]")          # unticked: started below by its button
    b.shot("03-create")
    b.click("#create-form button[type=submit]")
    b.wait(lambda: b.driver.current_url.endswith(f"#/vx/{name}"), "the new vserver's page")
    assert name in admin.vxdb.list()
    b.wait(lambda: b.find("#state").text == "stopped", "state stopped")

    b.click('#actions button[data-action="start"]')
    b.wait(lambda: b.find("#state").text == "running", "state running")
    assert admin.vx.status(name=name)["running"] is True

    b.type("#exec-command", "hostname")
    b.click("#exec-form button[type=submit]")
    expected = admin.vx.exec(name=name, command="hostname").strip()
    assert expected
    b.wait(lambda: b.find("#exec-output").text.strip() == expected, "hostname output")
    assert "exit status 0" in b.find("#exec-result").text

    # a bad limit value: the daemon's fault message appears under the field it names
    b.driver.find_element(By.CSS_SELECTOR, "#limits-form select[name=limit] option[value=NPROC]").click()
    b.type("#limits-form input[name=max]", "lots")
    b.click("#limits-form button[type=submit]")
    slot = b.wait(lambda: b.find('#limits-form [data-fault-for="max"]').text and
                  b.find('#limits-form [data-fault-for="max"]'), "the fault under 'max'")
    assert "'max'" in slot.text and "lots" in slot.text
    assert b.find("#limits-form input[name=max]").get_attribute("aria-invalid") == "true"
    b.driver.execute_script("arguments[0].scrollIntoView()", b.find("#limits"))
    b.shot("04-limit-fault")
    b.type("#limits-form input[name=max]", "300")
    b.click("#limits-form button[type=submit]")
    b.visible('#limits tr[data-key="NPROC"]')
    assert b.find('#limits-form [data-fault-for="max"]').text == ""
    assert admin.vxdb.vx.limit.get(name=name, limit="NPROC") == [
        {"limit": "NPROC", "soft": "300", "max": "300"}]

    # graphs: vstatd samples every second; redraw until the first samples are on disk
    b.click("#graphs-details summary")

    def graph_shown() -> bool:
        img = b.find("#graph")
        if img.is_displayed() and (img.get_attribute("src") or "").startswith("data:image/png;base64,"):
            return True
        if "fault" in b.find("#graph-note").get_attribute("innerHTML"):
            b.find('button[data-period="1h"]').click()
        return False
    b.wait(graph_shown, "a graph image")
    # (a young vserver's graphs show its whole life: the week's may equal the hour's)
    b.click('button[data-period="1w"]')
    b.wait(lambda: b.find("#graph").get_attribute("alt") == f"cpu of {name} over 1 week"
           and b.find("#graph").is_displayed(),
           lambda: f"the week's graph; shown: {b.find('#graph').get_attribute('alt')!r}, "
                   f"note: {b.find('#graph-note').text!r}")
    assert b.driver.execute_script("return document.getElementById('graph').naturalWidth") > 100
    b.driver.execute_script("arguments[0].scrollIntoView()", b.find("#graphs"))
    b.shot("05-graph")
    b.driver.execute_script("window.scrollTo(0, 0)")
    b.full_shot("06-vserver-admin")

    b.click('#actions button[data-action="stop"]')
    b.visible("#confirm")
    b.shot("07-confirm-stop")
    b.confirm()
    b.wait(lambda: b.find("#state").text == "stopped", "state stopped after stop")
    assert admin.vx.status(name=name)["running"] is False

    b.click('#actions button[data-action="remove"]')
    b.confirm()
    b.wait(lambda: b.driver.current_url.endswith("#/"), "back on the list")
    b.wait(lambda: name not in b.listed() and b.all("#vservers tr"), "the list without it")
    assert name not in admin.vxdb.list()
    b.click("#nav-users")
    b.visible('tr[data-user="admin"]')
    b.full_shot("08-users")
    b.click("#nav-groups")
    b.visible("#group-form")
    b.shot("09-groups")
    no_console_errors(b)
    b.logout()


def test_tenant_sees_only_its_vserver_and_only_the_buttons_its_caps_allow(
        env: StatsVcd, browser: Browser) -> None:
    admin = env.proxy()
    ensure_busybox_template(env.templatedir)
    mine, other = unique("tenantvx"), unique("othervx")
    tenant = unique("tenant")
    for vx in (mine, other):
        admin.vx.create(name=vx, template="busybox")
    admin.vxdb.nx.addr.set(name=mine, addr="10.77.0.2")
    admin.vcd.user.set(username=tenant, password=TENANT_PASSWORD, admin=False)
    for cap in ("INIT", "EXEC", "INFO"):
        admin.vcd.user.caps.add(username=tenant, cap=cap)
    admin.vxdb.owner.add(name=mine, username=tenant)
    b = browser
    try:
        b.login(tenant, TENANT_PASSWORD)
        b.row(mine)
        assert b.listed() == [mine]
        # no CREATE: no create link, no remove; no AUTH: no users or groups
        assert not b.all("#create") and not b.all('button[data-action="remove"]')
        assert not b.all("#nav-users") and not b.all("#nav-groups")
        b.shot("10-tenant-list")
        b.open("#/users")                                   # typed by hand: still the list
        b.row(mine)
        assert not b.all("#user-form")
        b.open("#/create")
        b.row(mine)
        assert not b.all("#create-form")

        b.click_in_row(mine, 'button[data-action="start"]')
        b.wait(lambda: b.row(mine).find_element(By.CSS_SELECTOR, ".state").text == "running",
               "running in the list")
        b.wait(lambda: b.row(mine).find_elements(By.CSS_SELECTOR, 'button[data-action="stop"]'),
               "the stop button")
        b.shot("11-tenant-running")
        b.click_in_row(mine, "a")
        b.wait(lambda: b.find("#state").text == "running", "its page")
        # caps it lacks: no settings forms (RLIM, NET, UNAME), no owners (AUTH), no remove
        for css in ("#limits", "#addresses", "#uname", "#owners",
                    '#actions button[data-action="remove"]'):
            assert not b.all(css), css
        assert b.all("#init") and b.all("#exec") and b.all("#graphs")
        b.type("#exec-command", "echo hello from $0")
        b.click("#exec-form button[type=submit]")
        b.wait(lambda: b.find("#exec-output").text.strip() == "hello from $0", "exec output")
        b.type("#exec-command", "sh -c 'echo failing; exit 3'")
        b.click("#exec-form button[type=submit]")
        b.wait(lambda: "exit status 3" in b.find("#exec-result").text, "the exit status")
        assert "failing" in b.find("#exec-output").text
        b.full_shot("12-tenant-vserver")
        b.click('#actions button[data-action="stop"]')
        b.confirm()
        b.wait(lambda: b.find("#state").text == "stopped", "stopped")
        assert admin.vx.status(name=mine)["running"] is False
        # the other vserver does not exist for this tenant, even by URL
        b.open(f"#/vx/{other}")
        b.wait(lambda: "202" in b.find("#status").text, "'does not exist'")
        no_console_errors(b)
        b.logout()
    finally:
        for vx in (mine, other):
            if admin.vx.status(name=vx)["running"]:
                admin.vx.stop(name=vx)
            admin.vx.remove(name=vx)


def test_password_stays_out_of_urls_logs_and_storage_unless_asked(env: StatsVcd,
                                                                   browser: Browser) -> None:
    b = browser
    b.open("#/")
    b.driver.execute_script("sessionStorage.clear()")
    b.open("#/")
    b.type("#login input[name=username]", "admin")
    b.type("#login input[name=password]", "not-the-password")
    b.click("#login button[type=submit]")
    refused = b.wait(lambda: b.find('#login [data-fault-for=""]').text, "the login fault")
    assert "Unauthorized" in refused and "not-the-password" not in b.driver.current_url
    assert not b.all("#logout")
    b.login("admin", env.admin_password)
    assert b.driver.execute_script("return sessionStorage.length") == 0
    assert b.driver.get_cookies() == []
    b.open("#/")                                             # a reload forgets the password
    b.driver.refresh()
    b.visible("#login")
    b.login("admin", env.admin_password, remember=True)
    stored = b.driver.execute_script("return JSON.stringify(sessionStorage)")
    assert env.admin_password in stored
    b.driver.refresh()
    b.visible("#logout")                                     # kept for this tab, as asked
    b.logout()
    assert b.driver.execute_script("return sessionStorage.length") == 0
    assert env.admin_password not in b.driver.current_url
    assert env.admin_password not in env.log() and env.admin_password not in env.stderr()


def test_list_fits_a_phone_width_window(env: StatsVcd, browser: Browser) -> None:
    admin = env.proxy()
    name = unique("phone")
    admin.vx.create(name=name, template="busybox")
    b = browser
    try:
        b.login("admin", env.admin_password)
        b.row(name)
        b.driver.set_window_size(390, 844)
        b.wait(lambda: b.driver.execute_script("return window.innerWidth") <= 400, "narrow window")
        overflow = b.driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth")
        wide = b.driver.execute_script(
            "return [...document.querySelectorAll('body *')].filter(e => "
            "e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.outerHTML.slice(0, 80))")
        assert overflow <= 1, f"the page is {overflow}px wider than the phone: {wide}"
        b.shot("13-phone-list")
        b.click_in_row(name, "a")
        b.visible("#exec-form")
        assert b.driver.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth") <= 1
        b.full_shot("14-phone-vserver")
        b.logout()
    finally:
        b.driver.set_window_size(1280, 900)
        admin.vx.remove(name=name)


def test_admin_manages_users_caps_owners_and_groups(env: StatsVcd, browser: Browser) -> None:
    admin = env.proxy()
    name, user, group = unique("owned"), unique("newuser"), unique("grp")
    admin.vx.create(name=name, template="busybox")
    b = browser
    try:
        b.login("admin", env.admin_password)
        b.click("#nav-users")
        b.type("#user-form input[name=username]", user)
        b.type("#user-form input[name=password]", "short")
        b.click("#user-form button[type=submit]")
        fault = b.wait(lambda: b.find('#user-form [data-fault-for="password"]').text,
                       "the fault under 'password'")
        assert "at least 8 characters" in fault
        b.type("#user-form input[name=password]", "long-enough-1")
        b.click("#user-form button[type=submit]")
        b.visible(f'tr[data-user="{user}"]')
        assert env.proxy(user, "long-enough-1").vcd.whoami()["caps"] == []
        for cap in ("EXEC", "INFO"):
            b.click(f'tr[data-user="{user}"] input[data-cap="{cap}"]')
            b.wait(lambda: cap in admin.vcd.user.caps.get(username=user), f"{cap} granted")
        b.click(f'tr[data-user="{user}"] input[data-cap="EXEC"]')
        b.wait(lambda: admin.vcd.user.caps.get(username=user) == ["INFO"], "EXEC taken")
        b.full_shot("15-users-edited")

        b.open(f"#/vx/{name}")
        b.type("#owners-form input[name=username]", user)
        b.click("#owners-form button[type=submit]")
        b.wait(lambda: user in b.find("#owners-list").text, "the new owner listed")
        assert admin.vxdb.owner.get(name=name) == [user]
        b.type("#owners-form input[name=username]", "nobody-such")
        b.click("#owners-form button[type=submit]")
        b.wait(lambda: b.find('#owners-form [data-fault-for=""]').text
               or b.find('#owners-form [data-fault-for="username"]').text, "unknown user fault")

        b.click("#nav-groups")
        b.type("#group-form input[name=group]", group)
        b.type("#group-form input[name=name]", name)
        b.click("#group-form button[type=submit]")
        b.wait(lambda: group in b.find("#groups").text and name in b.find("#groups").text,
               "the group with its member")
        assert admin.vg.list(group=group) == [name]
        b.shot("16-groups")
        b.click(f'#groups button[data-group="{group}"]')
        b.confirm()
        b.wait(lambda: group not in b.find("#groups").text, "the group gone")
        assert group not in admin.vg.list()

        b.click("#nav-users")
        b.click(f'tr[data-user="{user}"] button')
        b.confirm()
        b.wait(lambda: not b.all(f'tr[data-user="{user}"]'), "the user gone")
        assert admin.vcd.user.get(username=user) == []
        no_console_errors(b)
        b.logout()
    finally:
        admin.vx.remove(name=name)
        if admin.vcd.user.get(username=user):
            admin.vcd.user.remove(username=user)


def test_an_unbuilt_panel_answers_503_saying_how_to_build_it(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from http import HTTPStatus
    from vcd import webpanel
    monkeypatch.setattr(webpanel, "DIST", tmp_path / "dist")
    monkeypatch.setattr(webpanel, "_cache", {})
    found = webpanel.answer("/")
    assert found.status == HTTPStatus.SERVICE_UNAVAILABLE and b"make setup" in found.body
    assert b"Content-Security-Policy" in found.extra
    assert webpanel.answer("/static/other.js").status == HTTPStatus.NOT_FOUND
