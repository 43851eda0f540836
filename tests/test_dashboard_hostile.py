"""Hostile input against the real dashboard process (issue #37): no login or
web request may take it down or lock others out. A secured mosquitto, a
relay on MockFactory pins, `fogmesh dashboard` as a process with a users
file; plain HTTP clients from several loopback addresses (127.0.0.0/8 is
all this machine's), no browser. What each limit decides is tested pure, on
a fake clock, in tests/test_dashboard_limits.py."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.processes import stop_processes
from fogmesh.broker.secure import Logins, generate
from fogmesh.dashboard.streams import STREAMS_PER_USER
from fogmesh.devices.actuator import ActuatorDevice
from fogmesh.devices.gpio import make_pin_factory, parse_pins
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = f"dashhostile/{uuid.uuid4().hex[:8]}"
PASSWORDS = {"alice": "alice-operator-pw", "bob": "bob-viewer-pw", "op-1": "op-1-operator-pw",
             "op-2": "op-2-operator-pw", "carol": "carol-viewer-pw"}
ROLES = {"alice": "operator", "bob": "viewer", "op-1": "operator", "op-2": "operator"}
GROWTH_MB = 100      # what the dashboard's memory may grow by while it is flooded with logins (2 hashes: 64 MiB)
PROXY = "127.0.0.9"  # the fixture's dashboard believes this address about the clients it relays


def users_cli(path: Path, *args: str, password: str | None = None) -> None:
    subprocess.run([sys.executable, "-m", "fogmesh", "dashboard", "users", "--users", str(path), *args],
                   input=(password + "\n") if password else None, text=True, check=True, capture_output=True,
                   timeout=30)


def add_user(path: Path, name: str, role: str) -> None:
    users_cli(path, "add", name, "--role", role, "--password-stdin", password=PASSWORDS[name])


def start_dashboard(broker_url: str, *extra: str, log: Path, env: dict[str, str] | None = None):
    proc = subprocess.Popen([sys.executable, "-m", "fogmesh", "dashboard", "--broker", broker_url, "--root", ROOT,
                             "--port", "0", "--log-level", "INFO", *extra],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
    address = wait_until(lambda: (m := re.search(r"dashboard on (https?://\S+)", log.read_text())) and m.group(1),
                         timeout=30, what="the dashboard's address")
    return proc, address


@pytest.fixture(scope="module")
def site():
    directory = Path(tempfile.mkdtemp(prefix="fogmesh-dashhostile-"))
    generate(directory, Logins(devices=("relay-dev",), operators=("ops",), root=ROOT), hosts=["127.0.0.1"])
    broker = Mosquitto(secure_dir=directory).start()
    ops = (f"mqtts://ops@127.0.0.1:{broker.port}?ca={directory / 'ca.crt'}"
           f"&password_file={directory / 'credentials' / 'ops.password'}")
    relay_url = (f"mqtts://relay-dev@127.0.0.1:{broker.port}?ca={directory / 'ca.crt'}"
                 f"&password_file={directory / 'credentials' / 'relay-dev.password'}")
    factory = make_pin_factory("mock")
    relay = ActuatorDevice(relay_url, device="relay-dev", root=ROOT, pin_factory=factory,
                           specs=parse_pins("lamp=led:27")).start()
    users = directory / "dashboard-users"
    for name, role in ROLES.items():
        add_user(users, name, role)
    log = directory / "dashboard.log"
    proc, address = start_dashboard(ops, "--users", str(users), "--trusted-proxy", PROXY, log=log)
    try:
        yield {"dir": directory, "ops": ops, "users": users, "factory": factory, "proc": proc,
               "address": address, "log": log}
    finally:
        stop_processes([proc])
        relay.stop()
        broker.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def connect(address: str, source: str = "127.0.0.1") -> http.client.HTTPConnection:
    return http.client.HTTPConnection(address.split("//", 1)[1], timeout=10, source_address=(source, 0))


def request(address: str, path: str, *, method: str = "GET", body: bytes | None = None, cookie: str | None = None,
            ctype: str = "application/json", source: str = "127.0.0.1", host: str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request, as a script sends it, from the loopback address ``source``; no redirect followed."""
    conn = connect(address, source)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": ctype, "Host": host or address.split("//")[1],
                                                        **({"Cookie": cookie} if cookie else {}), **(headers or {})})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read(4000)
    finally:
        conn.close()


def log_in(site: dict, user: str, password: str | None = None, *, source: str = "127.0.0.1",
           headers: dict[str, str] | None = None) -> tuple[int, dict]:
    form = f"user={user}&password={password or PASSWORDS[user]}".encode()
    status, headers, _ = request(site["address"], "/login", method="POST", body=form, source=source,
                                 ctype="application/x-www-form-urlencoded", headers=headers)
    return status, headers


def cookie_of(site: dict, user: str, *, source: str = "127.0.0.1") -> str:
    status, headers = log_in(site, user, source=source)
    assert status == 303, f"{user} could not log in: {status}"
    return headers["Set-Cookie"].split(";")[0]


def press(site: dict, cookie: str, op: str = "toggle") -> int:
    return request(site["address"], "/api/actuators/relay-dev/lamp", method="POST", body=f'{{"op": "{op}"}}'.encode(),
                   cookie=cookie)[0]


def open_stream(site: dict, cookie: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    conn = connect(site["address"])
    conn.request("GET", "/events", headers={"Cookie": cookie})
    return conn, conn.getresponse()


def close(stream: tuple[http.client.HTTPConnection, http.client.HTTPResponse]) -> None:
    stream[1].close()          # the response holds the socket open too
    stream[0].close()


def read_to_the_end(response: http.client.HTTPResponse) -> bool:
    """Whether the server ends this event stream (it sends a tick a second while it lasts)."""
    try:
        return wait_until(lambda: response.readline() == b"", timeout=10, what="the event stream to end")
    except AssertionError:
        return False


class PeakMemory:
    """The dashboard process's largest resident size while the block runs, sampled every few ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.before = self.peak = self.process.memory_info().rss
        self._done = threading.Event()

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.before) / 2**20


def in_parallel(n: int, send) -> list:
    """``send(i)`` from ``n`` threads let go at the same instant."""
    start = threading.Barrier(n)

    def one(i: int):
        start.wait()
        return send(i)
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


# -- logins ----------------------------------------------------------------------------------------

def test_fifty_wrong_passwords_at_once_from_one_address_are_refused_before_any_hash(site):
    form = b"user=alice&password=guess-guess"
    with PeakMemory(site["proc"].pid) as memory:
        answers = in_parallel(50, lambda i: request(site["address"], "/login", method="POST", body=form,
                                                    source="127.0.0.3", ctype="application/x-www-form-urlencoded"))
    codes = [status for status, _, _ in answers]
    assert set(codes) <= {401, 429}, codes
    assert codes.count(401) <= 3, codes               # the address's free tries; the rest waited for no hash
    assert all(int(headers["Retry-After"]) >= 1 for status, headers, _ in answers if status == 429)
    assert memory.growth_mb < GROWTH_MB, f"dashboard memory grew by {memory.growth_mb:.0f} MB"


def test_fifty_wrong_passwords_at_once_from_fifty_addresses_hash_a_few_at_a_time(site):
    form = b"user=alice&password=guess-guess"
    with PeakMemory(site["proc"].pid) as memory:
        answers = in_parallel(50, lambda i: request(site["address"], "/login", method="POST", body=form,
                                                    source=f"127.0.1.{i + 1}",
                                                    ctype="application/x-www-form-urlencoded"))
    codes = [status for status, _, _ in answers]
    assert set(codes) <= {401, 503}, codes            # a wrong password, or "busy: try again in a second"
    assert all(int(headers["Retry-After"]) >= 1 for status, headers, _ in answers if status == 503)
    assert memory.growth_mb < GROWTH_MB, f"dashboard memory grew by {memory.growth_mb:.0f} MB"
    assert site["proc"].poll() is None
    assert log_in(site, "alice", source="127.0.0.1")[0] == 303       # and the right password still logs in


def test_an_attackers_failed_logins_do_not_lock_out_the_user_elsewhere(site):
    codes = [log_in(site, "alice", "not-her-password", source="127.0.0.4")[0] for _ in range(5)]
    assert codes[:3] == [401, 401, 401] and codes[3:] == [429, 429]           # the attacker's address waits
    assert log_in(site, "alice", source="127.0.0.5")[0] == 303                # alice, from hers, does not
    assert log_in(site, "bob", source="127.0.0.6")[0] == 303


def test_behind_a_trusted_proxy_logins_count_by_the_client_it_names(site):
    attacker, alice = {"X-Forwarded-For": "198.51.100.7"}, {"X-Forwarded-For": "198.51.100.8"}
    codes = [log_in(site, "alice", "not-her-password", source=PROXY, headers=attacker)[0] for _ in range(5)]
    assert codes == [401, 401, 401, 429, 429]
    assert log_in(site, "alice", source=PROXY, headers=alice)[0] == 303
    assert "failed login for 'alice' from 198.51.100.7" in site["log"].read_text()
    # Another peer's forwarding headers are not believed: it is counted as itself.
    codes = [log_in(site, "bob", "wrong", source="127.0.0.10", headers={"X-Forwarded-For": f"198.51.100.{20 + i}"})[0]
             for i in range(4)]
    assert codes == [401, 401, 401, 429]


def test_a_flood_of_refused_requests_writes_a_few_log_lines_not_one_each(site):
    """Found from outside: every refused login and every bad Host header was a
    warning line of its own, so a flood filled the disk. Each kind of line, per
    source, is written a few times, then at most one each 10 s saying how many
    were left out; another source's line is still written."""
    before = len(site["log"].read_text().splitlines())
    port = site["address"].rsplit(":", 1)[1]
    assert {request(site["address"], "/", source="127.0.0.11", host=f"evil.example:{port}")[0]
            for _ in range(40)} == {403}
    codes = [log_in(site, "alice", "guess", source="127.0.0.12")[0] for _ in range(40)]
    assert codes[:3] == [401] * 3 and set(codes[3:]) == {429}
    assert request(site["address"], "/", source="127.0.0.13", host=f"other.example:{port}")[0] == 403
    lines = site["log"].read_text().splitlines()[before:]
    hosts = [line for line in lines if "for host 'evil.example'" in line]
    refused = [line for line in lines if "login for 'alice' from 127.0.0.12 not tried" in line]
    assert 1 <= len(hosts) <= 5 and 1 <= len(refused) <= 5, "\n".join(lines)
    assert sum("failed login for 'alice' from 127.0.0.12" in line for line in lines) == 3
    assert any("for host 'other.example'" in line for line in lines)        # another source is not hidden


def test_a_dashboard_on_an_ipv6_address_serves_it(site, tmp_path):
    """Found from outside: `--host ::1` failed ("Address family for hostname
    not supported")."""
    proc, address = start_dashboard(site["ops"], "--host", "::1", "--users", str(site["users"]),
                                    log=tmp_path / "v6.log")
    try:
        assert address.startswith("http://[::1]:"), address
        host, port = "::1", int(address.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", "/login")
            assert conn.getresponse().status == 200
        finally:
            conn.close()
    finally:
        stop_processes([proc])


# -- the users file, changed while the dashboard runs ------------------------------------------------

def test_a_removed_user_is_logged_out_at_once_and_presses_nothing(site):
    cookie = cookie_of(site, "op-1")
    assert press(site, cookie, "off") == 202
    conn, stream = opened = open_stream(site, cookie)
    try:
        assert stream.status == 200
        users_cli(site["users"], "remove", "op-1")
        pin = site["factory"].pin(27).state
        assert press(site, cookie, "toggle") == 401                # the very next request
        assert site["factory"].pin(27).state == pin
        assert read_to_the_end(stream), "the removed user's event stream went on"
        assert log_in(site, "op-1")[0] == 401
        assert "op-1 is no longer in the users file" in site["log"].read_text()
    finally:
        close(opened)


def test_a_changed_role_ends_the_users_sessions_and_a_new_user_logs_in_at_once(site):
    cookie = cookie_of(site, "op-2")
    assert press(site, cookie, "off") == 202
    add_user(site["users"], "op-2", "viewer")                    # same password, now a viewer
    assert press(site, cookie, "on") == 401
    viewer = cookie_of(site, "op-2")
    assert press(site, viewer, "on") == 403
    add_user(site["users"], "carol", "viewer")
    assert log_in(site, "carol")[0] == 303


# -- event streams -------------------------------------------------------------------------------------

def test_one_viewer_opening_forty_streams_gets_a_quota_and_others_are_unaffected(site):
    bob = cookie_of(site, "bob")
    opened = [open_stream(site, bob) for _ in range(40)]
    try:
        codes = [r.status for _, r in opened]
        assert codes.count(200) == STREAMS_PER_USER and codes.count(429) == 40 - STREAMS_PER_USER, codes
        alices = open_stream(site, cookie_of(site, "alice"))
        assert alices[1].status == 200
        close(alices)
    finally:
        for stream in opened:
            close(stream)

    def opens() -> bool:                 # bob's closed pages are noticed at the next tick: then he may again

        stream = open_stream(site, bob)
        close(stream)
        return stream[1].status == 200

    wait_until(opens, timeout=10, what="a stream for bob once he closed his")


# -- how it may be exposed -------------------------------------------------------------------------------

def test_logins_over_plain_http_on_a_lan_are_refused_without_the_flag_that_says_the_risk(site, tmp_path):
    done = subprocess.run([sys.executable, "-m", "fogmesh", "dashboard", "--broker", site["ops"], "--root", ROOT,
                           "--host", "0.0.0.0", "--port", "0", "--users", str(site["users"])],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "--tls-cert" in done.stderr and "--insecure-http-logins" in done.stderr
    helped = subprocess.run([sys.executable, "-m", "fogmesh", "dashboard", "--help"], capture_output=True, text=True,
                            timeout=30)
    text = " ".join(helped.stdout.split())
    assert "--insecure-http-logins" in text and "passwords and session cookies cross the network in clear" in text
    log = tmp_path / "insecure.log"
    proc, address = start_dashboard(site["ops"], "--host", "0.0.0.0", "--users", str(site["users"]),
                                    "--insecure-http-logins", log=log)
    try:
        assert address.startswith("http://")
        assert "passwords and session cookies cross the network in clear" in log.read_text()
        assert log_in({"address": address.replace("0.0.0.0", "127.0.0.1")}, "bob")[0] == 303
    finally:
        stop_processes([proc])


def test_behind_a_proxy_without_logins_the_page_has_no_buttons(site, tmp_path):
    env = {**os.environ, "FOGMESH_DASHBOARD_USERS": str(tmp_path / "no-such-users-file")}
    proc, address = start_dashboard(site["ops"], "--server-name", "dash.example", log=tmp_path / "proxy.log",
                                    env=env)
    try:
        port = address.rsplit(":", 1)[1]
        pin = site["factory"].pin(27).state
        status, _, body = request(address, "/api/actuators/relay-dev/lamp", method="POST", body=b'{"op": "toggle"}',
                                  host=f"dash.example:{port}")
        assert status == 403 and b"logins" in body
        status, _, body = request(address, "/api/hello", host=f"dash.example:{port}")
        assert status == 200 and b'"controls": false' in body
        assert site["factory"].pin(27).state == pin
    finally:
        stop_processes([proc])


def test_without_logins_a_press_relayed_by_a_proxy_is_refused(site, tmp_path):
    env = {**os.environ, "FOGMESH_DASHBOARD_USERS": str(tmp_path / "no-such-users-file")}
    proc, address = start_dashboard(site["ops"], log=tmp_path / "local.log", env=env)
    try:
        pin = site["factory"].pin(27).state
        status, _, body = request(address, "/api/actuators/relay-dev/lamp", method="POST", body=b'{"op": "toggle"}',
                                  headers={"X-Forwarded-For": "203.0.113.9"})
        assert status == 403 and b"proxy" in body
        assert site["factory"].pin(27).state == pin
        assert request(address, "/api/actuators/relay-dev/lamp", method="POST", body=b'{"op": "off"}')[0] == 202
    finally:
        stop_processes([proc])
