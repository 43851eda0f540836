"""Tier 3 (real mosquitto with the shipped TLS + password + ACL setup, made by
``python -m fogmesh.broker.secure``): who may connect, publish and read what; and the
whole stack still working over TLS with logins."""

import json
import shutil
import tempfile
import uuid
from pathlib import Path

import orjson
import pytest

from fogmesh.broker.mosquitto import Mosquitto
from fogmesh.broker.secure import Logins, acl_text, generate
from fogmesh.devices.client import FogClient
from fogmesh.edge_agent.agent import Agent
from fogmesh.edge_agent.options import AgentOptions
from fogmesh.errors import ConnectError
from fogmesh.mqtt import MqttClient
from fogmesh.topics import Topics
from tests.listener import Listener

pytestmark = pytest.mark.timeout(60)

ROOT = f"sec/{uuid.uuid4().hex[:8]}"
T = Topics(ROOT)


@pytest.fixture(scope="module")
def site():
    out = Path(tempfile.mkdtemp(prefix="fogmesh-secure-"))   # not under pytest's 0700 tree
    generate(out, Logins(devices=("sensor-7", "sensor-8"), agents=("pi-1", "pi-2"), bridges=("farm",),
                         operators=("ops",), root=ROOT), hosts=["localhost", "127.0.0.1"])
    broker = Mosquitto(secure_dir=out).start()
    yield out, broker
    broker.cleanup()
    shutil.rmtree(out, ignore_errors=True)


def url(site, login):
    out, broker = site
    return (f"mqtts://{login}@127.0.0.1:{broker.port}?ca={out / 'ca.crt'}"
            f"&password_file={out / 'credentials' / (login + '.password')}")


@pytest.fixture
def clients():
    made = []
    yield made
    for c in made:
        c.stop() if isinstance(c, MqttClient) else c.close()


def connect(site, login, clients):
    c = MqttClient(url(site, login))
    c.start()
    clients.append(c)
    return c


def test_connecting_without_a_login_is_refused(site):
    _, broker = site
    out = site[0]
    with pytest.raises(ConnectError, match="Not authorized"):
        MqttClient(f"mqtts://127.0.0.1:{broker.port}?ca={out / 'ca.crt'}").start(timeout=5)


def test_a_wrong_password_is_refused_with_what_to_check(site, tmp_path):
    wrong = tmp_path / "pw"
    wrong.write_text("not-the-password")
    _, broker = site
    with pytest.raises(ConnectError, match="FOGMESH_PASSWORD"):
        MqttClient(f"mqtts://sensor-7@127.0.0.1:{broker.port}?ca={site[0] / 'ca.crt'}&password_file={wrong}"
                   ).start(timeout=5)


def test_plain_mqtt_without_tls_is_refused(site):
    _, broker = site
    with pytest.raises(ConnectError):
        MqttClient(f"mqtt://127.0.0.1:{broker.port}").start(timeout=3)


def test_a_device_cannot_publish_on_another_devices_topics(site, clients):
    ops = Listener(url(site, "ops"), f"{ROOT}/#")
    clients.append(ops)
    dev = connect(site, "sensor-7", clients)
    # QoS 0: mosquitto 2.0 closes an MQTT 3.1.1 connection that publishes where its ACL
    # forbids, and a QoS 1 message goes again at every reconnect (topics.md, Security).
    dev.publish(T.device_tasks("sensor-8"), b'{"forged": 1}', qos=0)
    dev.publish(T.sensor("sensor-8", "temperature"), b"99", qos=0)
    dev.publish(T.actuator_set("sensor-8", "relay"), b"on", qos=0)
    own = T.sensor("sensor-7", "temperature")                       # its own: allowed
    assert set(ops.topics_until(own, lambda: dev.publish(own, b"21"))) == {own}


def test_a_device_cannot_read_another_devices_replies(site, clients):
    mine = Listener(url(site, "sensor-7"), T.replies("sensor-8"), T.replies("sensor-7"), f"{ROOT}/#")
    clients.append(mine)
    agent = connect(site, "pi-1", clients)
    agent.publish(T.replies("sensor-8"), b'{"secret": true}')
    own = T.replies("sensor-7")
    assert set(mine.topics_until(own, lambda: agent.publish(own, b'{"mine": true}'))) == {own}


def test_nobody_can_forge_an_agents_presence(site, clients):
    ops = Listener(url(site, "ops"), T.presence_filter)
    clients.append(ops)
    connect(site, "sensor-7", clients).publish(T.presence("pi-1"), b'{"state": "online"}', retain=True)
    connect(site, "pi-2", clients).publish(T.presence("pi-1"), b'{"state": "online"}', retain=True)
    pi1 = connect(site, "pi-1", clients)

    def announce():
        pi1.publish(T.presence("pi-1"), b'{"agent": "pi-1"}', retain=True)
    assert ops.topics_until(T.presence("pi-1"), announce) == [T.presence("pi-1")]
    # and what the broker keeps for late subscribers is pi-1's own announcement
    late = Listener(url(site, "ops"), T.presence("pi-1"))
    clients.append(late)
    assert orjson.loads(late.next()) == {"agent": "pi-1"}


def test_the_stack_works_end_to_end_over_tls_with_logins(site, clients):
    agent = Agent("pi-1", url(site, "pi-1"), AgentOptions(root=ROOT, concurrency=1, presence_period=1.0)).start()
    try:
        ops = Listener(url(site, "ops"), T.errors)
        clients.append(ops)
        with FogClient(url(site, "sensor-7"), root=ROOT, device="sensor-7", own_topic=True) as dev:
            result = dev.submit("sum", {"values": [1, 2, 3]}, timeout=15)
            assert result.ok and result.value == 6 and result.worker == "pi-1"
        # a device that names another's reply topic gets a dead letter, not an agent as accomplice
        forged = connect(site, "sensor-7", clients)
        forged.publish(T.device_tasks("sensor-7"), orjson.dumps(
            {"id": "f1", "kind": "echo", "args": {}, "reply_to": T.replies("sensor-8")}))
        topic, payload = ops.got.get(timeout=15)
        letter = orjson.loads(payload)
        assert topic == T.errors and letter["id"] == "f1" and "must reply to" in letter["error"]["message"]
    finally:
        agent.stop(timeout=5)


@pytest.mark.timeout(90)
def test_a_bridge_under_its_own_role_carries_a_heavy_task_to_the_cloud(site, clients, tmp_path):
    from fogmesh.cloud_bridge.bridge import Bridge
    from fogmesh.edge_agent.placement import LocalPolicy
    from tests.waiting import wait_until
    cloud = Mosquitto(workdir=tmp_path / "cloud").start()
    cloud_root = f"cloud/{uuid.uuid4().hex[:6]}"
    agent = Agent("pi-1", url(site, "pi-1"), AgentOptions(root=ROOT, concurrency=1, presence_period=0.3)).start()
    worker = Agent("cloud-1", cloud.url, AgentOptions(root=cloud_root, concurrency=1, policy=LocalPolicy())).start()
    bridge = Bridge(site="farm", edge=url(site, "bridge-farm"), cloud=cloud.url, root=ROOT,
                    cloud_root=cloud_root, store_path=tmp_path / "outbox.db", health_period=0.3).start()
    try:
        wait_until(lambda: agent.core.offers.cloud_for("sha256", agent.clock(), exclude=set()) is not None,
                   timeout=30, what="the agent to see the bridge")
        with FogClient(url(site, "sensor-7"), root=ROOT, device="sensor-7", own_topic=True) as dev:
            result = dev.send("sha256", {"size": 100}, weight="heavy").result(timeout=30)
        assert result.ok and result.tier == "cloud" and result.worker == "cloud-1"
    finally:
        bridge.stop()
        worker.stop(timeout=5)
        agent.stop(timeout=5)
        cloud.cleanup()


def test_fogmesh_submit_works_as_a_device_login_over_tls(site):
    import os
    import subprocess
    import sys
    out, broker = site
    agent = Agent("pi-2", url(site, "pi-2"), AgentOptions(root=ROOT, concurrency=1, presence_period=1.0)).start()
    try:
        env = {**os.environ, "FOGMESH_PASSWORD_FILE": str(out / "credentials" / "sensor-8.password")}
        done = subprocess.run([sys.executable, "-m", "fogmesh", "submit", "sum", "--args", '{"values": [2, 3]}',
                               "--device", "sensor-8", "--root", ROOT, "--broker",
                               f"mqtts://sensor-8@127.0.0.1:{broker.port}?ca={out / 'ca.crt'}"],
                              capture_output=True, text=True, timeout=30, env=env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"] == 5
    finally:
        agent.stop(timeout=5)


def test_the_acl_gives_each_role_only_its_own_topics():
    acl = acl_text(Logins(devices=("d1",), agents=("a1",), bridges=("farm",), operators=("ops",), root="fog/v1"))
    d1 = acl.split("user d1\n")[1].split("\n\n")[0]
    assert "topic write fog/v1/tasks/d1" in d1 and "fog/v1/tasks\n" not in d1
    assert "presence" not in d1 and "claims" not in d1
    assert "topic write fog/v1/presence/a1" in acl and "topic write fog/v1/presence/+" not in acl
    assert "user bridge-farm" in acl
    a1 = acl.split("user a1\n")[1].split("\n\n")[0]
    ops = acl.split("user ops\n")[1].split("\n\n")[0]
    assert "topic read fog/v1/deploy/timestamp" in a1 and "topic write fog/v1/deploy/timestamp" in ops


def test_a_bridge_login_may_send_actuator_commands_down_but_no_drain():
    """Issue #37: what the cloud sends down is actuator commands (topics.md,
    Cloud bridge); a bridge's login that could write agents' control topics
    would let a cloud-side publisher (or a stolen bridge password) stop
    every agent of the site."""
    acl = acl_text(Logins(agents=("a1",), bridges=("farm",), operators=("ops",), root="fog/v1"))
    bridge = acl.split("user bridge-farm\n")[1].split("\n\n")[0]
    assert "topic write fog/v1/actuators/+/+/set" in bridge
    assert "control" not in bridge and "deploy" not in bridge
    assert "topic write fog/v1/agents/+/control" in acl.split("user ops\n")[1]


def test_the_limits_topics_md_states_are_those_of_the_acl_and_the_dashboard():
    """Issue #37: what the ACL does not bind, and what a flood can still do,
    is said in topics.md (Security), as the code has it: a change of either
    fails here until the other says the same."""
    from fogmesh.dashboard.attempts import HASHES_AT_ONCE
    from fogmesh.edge_agent.peers import PeerRegistry
    acl = acl_text(Logins(agents=("a1", "a2"), operators=("ops",), root="fog/v1"))
    a1 = acl.split("user a1\n")[1].split("\n\n")[0]
    assert "%c" not in acl and "clientid" not in acl.lower()         # client ids are bound to no login
    assert "topic readwrite fog/v1/claims" in a1 and "topic write fog/v1/agents/+/inbox" in a1
    text = (Path(__file__).resolve().parent.parent / "topics.md").read_text()
    limits = " ".join(text.split("**Limits of the ACL and of the checks**", 1)[1]
                      .split("Every fogmesh command takes", 1)[0].split())
    assert "Client ids are bound to no login" in limits and "rescue" in limits
    assert "name their sender in the payload" in limits and "`claims` and `agents/+/inbox`" in limits
    assert "Made-up peers slow placement" in limits
    assert f"checks at most {HASHES_AT_ONCE} passwords at once" in limits
    assert f"at most {PeerRegistry(me='a').max_peers:,} peers" in limits


def test_the_bridges_login_cannot_drain_an_agent(site, clients):
    watcher = Listener(url(site, "ops"), f"{ROOT}/agents/+/control")
    clients.append(watcher)
    # MQTT 5: mosquitto answers a forbidden QoS 1 publish "not authorized" (3.1.1: it closes
    # the connection): once answered, the broker has routed or dropped it.
    bridge = MqttClient(url(site, "bridge-farm"), mqtt5=True)
    bridge.start()
    clients.append(bridge)
    sent = bridge.publish(T.agent_control("pi-1"), b'{"op": "drain"}', qos=1)
    assert sent is not None and sent.wait(10)
    ops = connect(site, "ops", clients)
    mark = T.agent_control("nobody")
    assert watcher.topics_until(mark, lambda: ops.publish(mark, b'{"op": "noop"}')) == [mark]


def test_only_an_operator_can_publish_a_desired_state_or_a_bundle(site, clients):
    watcher = Listener(url(site, "ops"), f"{ROOT}/deploy/#")
    clients.append(watcher)
    for login in ("sensor-7", "pi-1"):
        c = connect(site, login, clients)
        c.publish(T.deploy_desired("site:farm"), b'{"signed": {}}', retain=True)
        c.publish(T.deploy_timestamp, b'{"signed": {}}', retain=True)
        c.publish(T.deploy_chunk("d" * 64, 0), b"payload", retain=True)
    ops = connect(site, "ops", clients)
    mark = T.deploy_desired("agent:marker")
    seen = watcher.topics_until(mark, lambda: ops.publish(mark, b'{"signed": {}}'))
    assert seen == [mark]


def test_every_per_box_topic_is_written_only_by_that_boxs_login(site, clients):
    """Issue #37: a box's identity comes from its topic, so each per-box topic
    (presence, deployment report, pipeline counters, deploy health, a bridge's
    health, an actuator's state) must be writable by that box's login only."""
    owners = {T.presence("pi-1"): "pi-1", T.deploy_reported("pi-1"): "pi-1",
              T.pipeline_status("pi-1", "deter"): "pi-1", T.agent_topic("pi-1", "deploy-health"): "pi-1",
              T.bridge_health("farm"): "bridge-farm", T.actuator_state("sensor-7", "relay"): "sensor-7"}
    logins = ("sensor-7", "sensor-8", "pi-1", "pi-2", "bridge-farm", "ops")
    watcher = Listener(url(site, "ops"), *owners)
    clients.append(watcher)
    forgers = {login: connect(site, login, clients) for login in logins}
    for topic, owner in owners.items():
        sent = [c.publish(topic, b'{"forged": true}', retain=True) for login, c in forgers.items() if login != owner]
        # The broker routes (or drops) a QoS 1 publish before it acknowledges it: once acknowledged,
        # a forgery that got through is ahead of the owner's marker below.
        assert all(d is not None and d.wait(10) for d in sent)
    for topic, owner in owners.items():
        forgers[owner].publish(topic, b'{"own": true}', retain=True)
    for topic in owners:          # what came on each topic up to its owner's marker (an earlier test's
        got = [watcher.next(topic)]    # agents may still say something there): no forgery
        while got[-1] != b'{"own": true}':
            got.append(watcher.next(topic))
        assert b'{"forged": true}' not in got, topic
    late = Listener(url(site, "ops"), *owners)        # what the broker keeps is each owner's own
    clients.append(late)
    assert sorted(orjson.loads(late.next()) == {"own": True} for _ in owners) == [True] * len(owners)


def test_a_login_has_one_role():
    """Two roles under one login would merge their ACL blocks (an agent named
    like a device, or like a site's bridge, could write both's topics)."""
    for logins in (Logins(devices=("pi-1",), agents=("pi-1",)), Logins(agents=("bridge-farm",), bridges=("farm",)),
                   Logins(agents=("pi-1", "pi-1"))):
        with pytest.raises(ValueError, match="one login"):
            acl_text(logins)


def test_an_agent_reports_only_its_own_deployment_state(site, clients):
    watcher = Listener(url(site, "ops"), T.deploy_reported_filter)
    clients.append(watcher)
    connect(site, "pi-2", clients).publish(T.deploy_reported("pi-1"), b'{"agent": "pi-1"}')
    pi1 = connect(site, "pi-1", clients)
    own = T.deploy_reported("pi-1")
    assert watcher.topics_until(own, lambda: pi1.publish(own, b'{"agent": "pi-1"}')) == [own]
