"""The dashboard served beyond loopback, as an operator sets it up: a secured
mosquitto, a relay on MockFactory pins, `fogmesh dashboard` as a process with
a users file (an operator and a viewer), in headless Chromium. Then what an
attacker tries: a page of another site pointing its own name here (DNS
rebinding), wrong passwords, a viewer pressing anyway. And the same page over
TLS with a certificate from `broker.secure`."""

from __future__ import annotations

import http.client
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest

from fogmesh.bench.browser import chromium
from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.processes import stop_processes
from fogmesh.broker.secure import Logins, generate
from fogmesh.devices.actuator import ActuatorDevice
from fogmesh.devices.gpio import make_pin_factory, parse_pins
from fogmesh.mqtt import MqttClient
from fogmesh.topics import Topics
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = f"dashsec/{uuid.uuid4().hex[:8]}"
T = Topics(ROOT)
PASSWORDS = {"alice": "alice-operator-pw", "bob": "bob-viewer-pw"}


def add_users(path: Path) -> None:
    for name, role in (("alice", "operator"), ("bob", "viewer")):
        subprocess.run([sys.executable, "-m", "fogmesh", "dashboard", "users", "--users", str(path), "add", name,
                        "--role", role, "--password-stdin"], input=PASSWORDS[name] + "\n", text=True, check=True,
                       capture_output=True, timeout=30)


def start_dashboard(site: dict, *extra: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([sys.executable, "-m", "fogmesh", "dashboard", "--broker", site["ops"], "--root", ROOT,
                             "--port", "0", "--users", str(site["users"]), "--log-level", "INFO", *extra],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    address = wait_until(lambda: (m := re.search(r"dashboard on (https?://\S+)", log.read_text())) and m.group(1),
                         timeout=30, what="the dashboard's address")
    return proc, address


@pytest.fixture(scope="module")
def site():
    directory = Path(tempfile.mkdtemp(prefix="fogmesh-dashsec-"))
    generate(directory, Logins(devices=("relay-dev",), operators=("ops",), root=ROOT), hosts=["127.0.0.1"])
    broker = Mosquitto(secure_dir=directory).start()

    def url(login: str) -> str:
        return (f"mqtts://{login}@127.0.0.1:{broker.port}?ca={directory / 'ca.crt'}"
                f"&password_file={directory / 'credentials' / (login + '.password')}")
    factory = make_pin_factory("mock")
    relay = ActuatorDevice(url("relay-dev"), device="relay-dev", root=ROOT, pin_factory=factory,
                           specs=parse_pins("lamp=led:27")).start()
    users = directory / "dashboard-users"
    add_users(users)
    info = {"dir": directory, "ops": url("ops"), "users": users, "factory": factory}
    proc, address = start_dashboard(info, log=directory / "dashboard.log")
    info.update(proc=proc, address=address, log=directory / "dashboard.log")
    try:
        yield info
    finally:
        stop_processes([proc])
        relay.stop()
        broker.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def log_in(browser, address: str, user: str, password: str, **context):
    page = browser.new_context(**context).new_page()
    page.goto(address)
    page.wait_for_url(re.compile(r".*/login$"))
    page.fill('input[name="user"]', user)
    page.fill('input[name="password"]', password)
    page.click('button[type="submit"]')
    return page


def request(address: str, path: str, *, method: str = "GET", host: str | None = None, origin: str | None = None,
            body: bytes | None = None, cookie: str | None = None, ctype: str = "application/json",
            source: str = "127.0.0.1"):
    """One request as a script (or an attacker's page) sends it, no redirect
    followed; ``source``: the client's own loopback address (the throttle
    counts failed logins per address)."""
    netloc = address.split("//", 1)[1]
    headers = {"Content-Type": ctype, "Host": host or netloc}
    if origin:
        headers["Origin"] = origin
    if cookie:
        headers["Cookie"] = cookie
    conn = http.client.HTTPConnection(netloc, timeout=10, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read(2000)
    finally:
        conn.close()


def login_cookie(site: dict, user: str) -> str:
    status, headers, _ = request(site["address"], "/login", method="POST",
                                 body=f"user={user}&password={PASSWORDS[user]}".encode(),
                                 ctype="application/x-www-form-urlencoded")
    assert status == 303, status
    return headers["Set-Cookie"]


# -- logins ---------------------------------------------------------------------------------

def test_the_page_asks_for_a_login_first(site, browser):
    page = browser.new_page()
    page.goto(site["address"])
    page.wait_for_url(re.compile(r".*/login$"))
    assert page.locator('input[name="password"]').count() == 1
    assert request(site["address"], "/api/snapshot")[0] == 401
    assert request(site["address"], "/events")[0] == 401
    page.close()


def test_a_wrong_password_is_refused_and_logged(site, browser):
    page = log_in(browser, site["address"], "alice", "not-her-password")
    page.wait_for_selector("#login-error:text('wrong user name or password')")
    assert page.url.endswith("/login")
    assert "failed login for 'alice'" in site["log"].read_text()
    page.close()


def test_a_viewer_sees_the_fleet_and_no_buttons_and_cannot_press_anyway(site, browser):
    page = log_in(browser, site["address"], "bob", PASSWORDS["bob"])
    page.wait_for_selector('#actuators tr[data-actuator="relay-dev/lamp"]', timeout=10_000)
    page.wait_for_selector("#who:text('bob (viewer)')")
    assert page.locator("#actuators button").count() == 0
    assert "viewer" in page.inner_text("#actuators-note")
    status = page.evaluate("""() => fetch('/api/actuators/relay-dev/lamp', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: '{"op": "on"}'}).then(r => r.status)""")
    assert status == 403 and site["factory"].pin(27).state == 0
    page.close()


def test_an_operator_presses_a_button_the_pin_moves_and_the_press_is_audited(site, browser):
    audit: list[dict] = []
    heard = threading.Event()
    watcher = MqttClient(site["ops"], on_message=lambda m: (audit.append(orjson.loads(m.payload)), heard.set()))
    watcher.start()
    watcher.subscribe(T.audit_filter)
    try:
        page = log_in(browser, site["address"], "alice", PASSWORDS["alice"])
        row = '#actuators tr[data-actuator="relay-dev/lamp"]'
        page.wait_for_selector(f"{row} .state .badge:text-is('off')", timeout=10_000)
        page.click(f'{row} button[data-op="on"]')
        wait_until(lambda: site["factory"].pin(27).state == 1, timeout=5, what="GPIO27 driven high")
        page.wait_for_selector('#audit li[data-who="alice"][data-status="done"]', timeout=10_000)
        assert heard.wait(10)
        (record,) = [a for a in audit if a["who"] == "alice" and a["command"]["op"] == "on"]
        assert record["role"] == "operator" and record["device"] == "relay-dev" and record["actuator"] == "lamp"
        assert record["result"] == {"status": "done", "state": "on"} and record["ts"] > 0
        page.click('#logout button[type="submit"]')
        page.wait_for_url(re.compile(r".*/login$"))
        page.close()
    finally:
        watcher.stop()


def test_failed_logins_are_slowed(site):
    # From an address of its own (127.0.0.2): the throttle counts per address and per name.
    form = b"user=mallory&password=guess"
    codes = [request(site["address"], "/login", method="POST", body=form, source="127.0.0.2",
                     ctype="application/x-www-form-urlencoded")[0] for _ in range(4)]
    assert codes[:3] == [401, 401, 401]
    status, headers, _ = request(site["address"], "/login", method="POST", body=form, source="127.0.0.2",
                                 ctype="application/x-www-form-urlencoded")
    assert codes[3] == 429 and status == 429 and int(headers["Retry-After"]) >= 1
    assert "failed login for 'mallory' from 127.0.0.2 (3 in a row)" in site["log"].read_text()


# -- what an attacker's page can send ---------------------------------------------------------

@pytest.mark.parametrize("method,path", [("GET", "/"), ("GET", "/events"), ("GET", "/api/snapshot"),
                                         ("GET", "/api/hello"), ("POST", "/api/actuators/relay-dev/lamp"),
                                         ("POST", "/login")])
def test_a_request_for_a_name_this_dashboard_does_not_serve_is_refused_first(site, method, path):
    port = site["address"].rsplit(":", 1)[1]
    status, _, body = request(site["address"], path, method=method, host=f"evil.example:{port}",
                              origin=f"http://evil.example:{port}", body=b'{"op": "on"}' if method == "POST" else None)
    assert status == 403 and b"does not answer to the name 'evil.example'" in body


def test_a_rebinding_page_moves_no_pin_even_with_an_operators_session_cookie(site):
    cookie = login_cookie(site, "alice").split(";")[0]
    before = site["factory"].pin(27).state
    port = site["address"].rsplit(":", 1)[1]
    status, _, _ = request(site["address"], "/api/actuators/relay-dev/lamp", method="POST",
                           host=f"evil.example:{port}", origin=f"http://evil.example:{port}",
                           body=b'{"op": "toggle"}', cookie=cookie)
    assert status == 403 and site["factory"].pin(27).state == before
    # The same cookie from this server's own page would press it: the name is what was refused.
    status, _, _ = request(site["address"], "/api/actuators/relay-dev/lamp", method="POST",
                           body=b'{"op": "off"}', cookie=cookie)
    assert status == 202


def test_every_answer_carries_the_headers_a_review_expects(site):
    _, headers, _ = request(site["address"], "/login")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_the_session_cookie_is_httponly_and_samesite_strict(site):
    cookie = login_cookie(site, "bob")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie   # plain HTTP here


# -- starting it -------------------------------------------------------------------------------

def test_serving_the_lan_without_a_users_file_is_refused_with_what_to_do(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fogmesh", "dashboard", "--host", "0.0.0.0", "--port", "0"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "needs logins" in done.stderr and "fogmesh dashboard users add NAME --role operator" in done.stderr


def test_tls_serves_the_page_with_a_certificate_from_the_sites_ca(site, browser, tmp_path):
    issued = subprocess.run([sys.executable, "-m", "fogmesh.broker.secure", "--out", str(site["dir"]),
                             "--dashboard", "127.0.0.1"], capture_output=True, text=True, timeout=60)
    assert issued.returncode == 0, issued.stderr
    log = tmp_path / "tls.log"
    proc, address = start_dashboard(site, "--tls-cert", str(site["dir"] / "dashboard.crt"), "--tls-key",
                                    str(site["dir"] / "dashboard.key"), log=log)
    try:
        assert address.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(site["dir"] / "ca.crt"))      # verifies chain and name
        with urllib.request.urlopen(address + "/login", context=trusted, timeout=5) as r:
            assert r.status == 200 and b'name="password"' in r.read()
        req = urllib.request.Request(address + "/login", data=f"user=bob&password={PASSWORDS['bob']}".encode(),
                                     headers={"Content-Type": "application/x-www-form-urlencoded"}, method="POST")
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=trusted),
                                             _NoRedirect())
        with pytest.raises(urllib.error.HTTPError) as answer:      # the login's 303, not followed
            opener.open(req, timeout=5)
        assert answer.value.code == 303 and "Secure" in answer.value.headers.get("Set-Cookie", "")
        page = log_in(browser, address, "bob", PASSWORDS["bob"], ignore_https_errors=True)
        page.wait_for_selector('#actuators tr[data-actuator="relay-dev/lamp"]', timeout=10_000)
        assert page.url.startswith("https://")
        page.close()
    finally:
        stop_processes([proc])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
