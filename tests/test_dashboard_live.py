"""The dashboard in a real browser (headless Chromium), as an operator runs
it: a secured mosquitto, two agents, a bridge to a cloud broker with a cloud
worker, each a ``fogmesh`` process; an actuator on MockFactory pins; the
dashboard started with the operator's login. And on the embedded broker with
no login: the same page, without buttons.

The tests of the secured site share one fleet and one page and run in file
order: the agent is killed last."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
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
from fogmesh.dashboard.server import Dashboard, may_drive_actuators
from fogmesh.devices.actuator import ActuatorDevice
from fogmesh.devices.client import FogClient
from fogmesh.devices.gpio import make_pin_factory, parse_pins
from fogmesh.mqtt import BrokerUrl, MqttClient
from fogmesh.topics import Topics
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ROOT = f"dash/{uuid.uuid4().hex[:8]}"
T = Topics(ROOT)
PERIOD = 1.0                 # the agents' --presence-period here
MARGIN = 2 * PERIOD          # a silent agent is offline after one period + this margin
TICK = 1.0                   # the dashboard's update interval
SCREENSHOT = os.environ.get("FOGMESH_DASHBOARD_SCREENSHOT")   # e.g. docs/dashboard.png, to refresh README's


def cli(*args: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "fogmesh", *args], stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)


class Site:
    """A secured edge mosquitto, a plain cloud mosquitto, and logins for every role."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fogmesh-dash-"))      # not under pytest's 0700 tree
        generate(self.dir, Logins(devices=("sensor-7", "relay-dev"), agents=("a1", "a2"), bridges=("farm",),
                                  operators=("ops",), root=ROOT), hosts=["127.0.0.1"])
        self.edge = Mosquitto(secure_dir=self.dir).start()
        self.cloud = Mosquitto().start()

    def url(self, login: str) -> str:
        return (f"mqtts://{login}@127.0.0.1:{self.edge.port}?ca={self.dir / 'ca.crt'}"
                f"&password_file={self.dir / 'credentials' / (login + '.password')}")

    def close(self) -> None:
        self.edge.cleanup()
        self.cloud.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def fleet():
    site = Site()
    logs = site.dir / "logs"
    logs.mkdir()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    factory = make_pin_factory("mock")
    relay = ActuatorDevice(site.url("relay-dev"), device="relay-dev", root=ROOT, pin_factory=factory,
                           specs=parse_pins("deterrent=relay:17,lamp=led:27")).start()
    try:
        for agent, battery in (("a1", "81"), ("a2", "34")):
            procs[agent] = cli("agent", "--id", agent, "--broker", site.url(agent), "--root", ROOT,
                               "--presence-period", str(PERIOD), "--concurrency", "1", "--battery", battery,
                               "--log-level", "WARNING", log=logs / f"{agent}.log")
        procs["bridge"] = cli("bridge", "--site", "farm", "--edge", site.url("bridge-farm"), "--cloud",
                              site.cloud.url, "--root", ROOT, "--cloud-root", f"{ROOT}-cloud", "--store",
                              str(site.dir / "outbox.db"), "--log-level", "WARNING", log=logs / "bridge.log")
        procs["worker"] = cli("cloud-worker", "--cloud", site.cloud.url, "--cloud-root", f"{ROOT}-cloud",
                              "--id", "cw-1", "--concurrency", "1", "--log-level", "WARNING",
                              log=logs / "worker.log")
        dash_log = logs / "dashboard.log"
        procs["dashboard"] = cli("dashboard", "--broker", site.url("ops"), "--root", ROOT, "--port", "0",
                                 "--window", "60",
                                 "--log-level", "WARNING", log=dash_log)
        address = wait_until(lambda: (m := re.search(r"dashboard on (http://\S+)", dash_log.read_text()))
                             and m.group(1), timeout=30, what="the dashboard's address")
        yield {"site": site, "procs": procs, "address": address, "factory": factory, "logs": logs}
    finally:
        relay.stop()
        stop_processes(list(procs.values()))
        site.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def page(fleet, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(fleet["address"])
    yield page
    page.close()


def agent_state(page, agent: str) -> str | None:
    return page.get_attribute(f'#agents tr[data-agent="{agent}"]', "data-state", timeout=1000)


def test_the_page_shows_both_agents_within_5_s(fleet, page):
    page.reload()
    started = time.monotonic()
    page.wait_for_selector('#agents tr[data-agent="a1"][data-state="online"]', timeout=5000)
    page.wait_for_selector('#agents tr[data-agent="a2"][data-state="online"]',
                           timeout=max(1, 5000 - 1000 * (time.monotonic() - started)))


def test_a_hundred_tasks_move_the_rate_chart_and_the_counts(fleet, page):
    done_before = sum(int(c) for c in page.locator("#agents td.done").all_inner_texts())
    with FogClient(fleet["site"].url("sensor-7"), root=ROOT, device="sensor-7", own_topic=True) as client:
        futures = []
        for i in range(100):                        # over about 5 s, so the chart draws a curve, not a spike
            heavy = i % 10 == 9
            futures.append(client.send("sha256" if heavy else "sum", {"size": 1000} if heavy else {"values": [i, 1]},
                                       weight="heavy" if heavy else None))
            time.sleep(0.05)     # paces the tasks over about 5 s, not a wait
        replies = [f.result(timeout=60) for f in futures]
    assert all(r.ok for r in replies), [r.error for r in replies if not r.ok]
    page.wait_for_function("() => fogmeshDashboard.stats().lastTick.agents"
                           f".reduce((n, a) => n + a.done, 0) > {done_before}", timeout=10_000)
    rates = page.evaluate("() => fogmeshDashboard.recent(60).map(p => p.tasks_per_s)")
    assert max(rates) > 0
    latencies = page.evaluate("() => fogmeshDashboard.recent(60).map(p => p.p50_ms).filter(v => v !== null)")
    assert latencies
    assert sum(int(c) for c in page.locator("#agents td.done").all_inner_texts()) > done_before


def test_a_malformed_task_appears_in_the_dead_letter_list(fleet, page):
    sender = MqttClient(fleet["site"].url("sensor-7"))
    sender.start()
    try:
        sender.publish(T.device_tasks("sensor-7"), b'{"id": "broken", "kind": ')
    finally:
        sender.stop()
    page.wait_for_selector('#events li[data-kind="dead letter"][data-code="bad_json"]', timeout=10_000)


def test_an_agents_deployment_report_appears_in_the_deployments_table(fleet, page):
    a1 = MqttClient(fleet["site"].url("a1"))
    a1.start()
    try:
        report = {"agent": "a1", "state": "rolled_back", "desired_serial": 9, "applied_serial": 8,
                  "reason": "health_check_failed", "bundles": {"plantcare": {"version": "1.1"}}}
        a1.publish(T.deploy_reported("a1"), orjson.dumps(report), retain=True).wait(5)
    finally:
        a1.stop()
    row = page.wait_for_selector('#deployments tr[data-agent="a1"]', timeout=10_000)
    text = row.inner_text()
    assert "plantcare 1.1" in text and "health_check_failed" in text and "rolled_back" in text


def test_clicking_an_actuator_button_drives_the_pin_and_shows_its_new_state(fleet, page):
    row = '#actuators tr[data-actuator="relay-dev/lamp"]'
    page.wait_for_selector(f"{row} .state .badge:text-is('off')", timeout=10_000)
    lamp = fleet["factory"].pin(27)
    assert lamp.state == 0
    page.click(f'{row} button[data-op="on"]')
    wait_until(lambda: lamp.state == 1, timeout=5, what="GPIO27 driven high")
    page.wait_for_selector(f"{row} .state .badge:text-is('on')", timeout=5000)
    if SCREENSHOT:
        page.screenshot(path=SCREENSHOT, full_page=True)


def post(address: str, path: str, body: bytes, *, ctype: str = "application/json",
         origin: str | None = None) -> tuple[int, str]:
    headers = {"Content-Type": ctype, **({"Origin": origin} if origin else {})}
    request = urllib.request.Request(address + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("path,body,kw,status", [
    ("/api/actuators/relay-dev/lamp", b'{"op": "on"}', {"origin": "http://evil.example"}, 403),
    ("/api/actuators/relay-dev/lamp", b'{"op": "on"}', {"ctype": "text/plain"}, 415),
    ("/api/actuators/relay-dev/lamp", b'{"op": "explode"}', {}, 400),
    ("/api/actuators/relay-dev/lamp", b'{"op": "pulse", "ms": 600000}', {}, 400),
    ("/api/actuators/relay-dev/lamp", b"not json", {}, 400),
    ("/api/actuators/relay.dev/lamp", b'{"op": "on"}', {}, 400),
    ("/api/agents/a1", b'{"op": "on"}', {}, 404),
])
def test_a_bad_or_cross_site_actuator_request_is_refused_and_moves_no_pin(fleet, path, body, kw, status):
    lamp = fleet["factory"].pin(27)
    before = lamp.state
    code, text = post(fleet["address"], path, body, **kw)
    assert code == status, text
    assert "error" in text
    assert lamp.state == before


def test_a_dashboard_on_a_busy_port_says_to_pick_another(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "fogmesh", "dashboard", "--port", str(port)],
                              capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "pick another --port" in done.stderr


def test_a_killed_agent_turns_offline_within_a_period_and_the_margin(fleet, page):
    fleet["procs"]["a2"].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    page.wait_for_selector('#agents tr[data-agent="a2"][data-state="offline"]',
                           timeout=1000 * (PERIOD + MARGIN + TICK + 1))
    assert agent_state(page, "a1") == "online"
    assert time.monotonic() - killed <= PERIOD + MARGIN + TICK + 1


@pytest.mark.parametrize("login", ["a1", "sensor-7"])
def test_an_agent_or_device_login_gets_no_buttons_on_the_secured_broker(fleet, login):
    allowed, why = may_drive_actuators(BrokerUrl.parse(fleet["site"].url(login)), T)
    assert not allowed and "not an operator" in why


def test_the_operator_login_gets_the_buttons(fleet):
    allowed, why = may_drive_actuators(BrokerUrl.parse(fleet["site"].url("ops")), T)
    assert allowed and "operator login ops" in why


def test_on_the_embedded_broker_without_a_login_the_page_works_and_has_no_buttons(amqtt_broker, agents, root,
                                                                                   browser):
    agents("e1", amqtt_broker.url, root)
    factory = make_pin_factory("mock")
    relay = ActuatorDevice(amqtt_broker.url, device="relay-dev", root=root, pin_factory=factory,
                           specs=parse_pins("lamp=led:27")).start()
    dash = Dashboard(amqtt_broker.url, root=root, port=0).start()
    try:
        page = browser.new_page()
        page.goto(dash.address)
        page.wait_for_selector('#agents tr[data-agent="e1"][data-state="online"]', timeout=5000)
        page.wait_for_selector('#actuators tr[data-actuator="relay-dev/lamp"]', timeout=5000)
        assert page.locator("#actuators button").count() == 0
        assert "read-only" in page.inner_text("#controls")
        status = page.evaluate("""() => fetch('/api/actuators/relay-dev/lamp', {method: 'POST',
            headers: {'Content-Type': 'application/json'}, body: '{"op": "on"}'}).then(r => r.status)""")
        assert status == 403
        assert factory.pin(27).state == 0
        page.close()
    finally:
        dash.stop()
        relay.stop()


def test_the_dashboard_follows_its_broker_through_a_restart(agents, root):
    with Mosquitto() as broker:
        agents("r1", broker.url, root)
        dash = Dashboard(broker.url, root=root, port=0).start()
        try:
            def snapshot():
                with urllib.request.urlopen(dash.address + "/api/snapshot", timeout=5) as r:
                    return orjson.loads(r.read())

            wait_until(lambda: [a["agent"] for a in snapshot().get("agents", [])] == ["r1"], timeout=10,
                       what="the agent on the page")
            broker.stop()
            wait_until(lambda: snapshot()["connected"] is False, timeout=10, what="the page saying unreachable")
            broker.start()
            wait_until(lambda: snapshot()["connected"] is True, timeout=30, what="the dashboard back")
            wait_until(lambda: [a["state"] for a in snapshot()["agents"]] == ["online"], timeout=30,
                       what="the agent online again on the page")
        finally:
            dash.stop()
