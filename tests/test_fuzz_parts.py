"""Tier 1, fuzzing: the other consumers of the topic tree take hostile input
without raising (issue #37): the cloud bridge (edge and cloud side), the
actuator device (commands), the sensor device (control, pull requests),
pipelines and triggers (frames, readings, replies), the deploy receiver
(desired states, manifests, chunks, health replies) and the agent's
announcer after a flood of presences. Their handlers run as the network
thread would call them, with a stand-in for the MQTT client that records
what they publish (no broker: these are the handlers' decisions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogmesh.announcements import Presence
from fogmesh.cloud_bridge.bridge import Bridge
from fogmesh.devices.actuator import ActuatorDevice
from fogmesh.devices.gpio import make_pin_factory, parse_pins
from fogmesh.devices.sensors import make_models
from fogmesh.devices.streams import SensorDevice
from fogmesh.edge_agent import events as ev
from fogmesh.edge_agent.actions import AgentConfig
from fogmesh.edge_agent.announcer import Announcer
from fogmesh.edge_agent.core import AgentCore
from fogmesh.edge_agent.pipeline_runner import PipelineRunner
from fogmesh.edge_agent.pipelines import Actuation, PipelineSpec, Rule
from fogmesh.edge_agent.presence import HostStats
from fogmesh.edge_agent.triggers import TriggerSpec
from fogmesh.messages import Task
from fogmesh.mqtt import Message
from fogmesh.registry import Registry
from fogmesh.topics import Topics, validate_publish_topic
from tests.fuzzing import FUZZ, ROOT, VALID, catalogue, dumps, forged_presence, messages, payloads, topic_of

T = Topics(ROOT)
CLOUD = Topics("fogmesh/v1")


class Wire:
    """What a handler hands the MQTT client: every publish (checked to be a
    topic the broker would take) and every ack."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.acked = 0

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, **_: object) -> object:
        validate_publish_topic(topic)
        self.published.append((topic, payload))
        return _Confirmed()

    def ack(self, message: object) -> None:
        self.acked += 1

    def stop(self) -> None:
        pass


class _Confirmed:
    def confirmed(self) -> bool:
        return True

    def wait(self, timeout: float) -> bool:
        return True


def received(topic: str, payload: bytes) -> Message:
    return Message(topic, payload, qos=1, retain=False, mid=1, generation=1)


# -- the cloud bridge -----------------------------------------------------------------------------------
@pytest.fixture
def bridge(tmp_path):
    b = Bridge(site="farm", edge="mqtt://127.0.0.1:1", cloud="mqtt://127.0.0.1:1", root=ROOT,
               store_path=tmp_path / "outbox.db", wall_clock=lambda: 1795000000.0,
               aggregate=((f"{ROOT}/sensors/+/temperature", 60.0),))
    b.edge, b.cloud = Wire(), Wire()
    yield b
    b.outbox.close()


def cloud_messages() -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(
        st.tuples(st.just(CLOUD.site_results("farm")), payloads("reply")),
        st.tuples(topic_of("presence/{agent}", "fogmesh/v1"), payloads("presence")),
        st.tuples(topic_of("sites/farm/down/actuators/{device}/{actuator}/set", "fogmesh/v1"), payloads("command")),
        st.tuples(st.just("fogmesh/v1/sites/farm/down/a/+/#"), payloads("command")))


def test_the_catalogue_never_raises_out_of_the_bridge_and_every_message_is_acknowledged(bridge):
    edge = catalogue() + [(T.agent_inbox("bridge-farm"), body) for _, body in catalogue(names=("a1",))[:400]]
    for topic, payload in edge:
        bridge._edge_message(received(topic, payload))
    cloud = [(CLOUD.site_results("farm"), p) for _, p in catalogue(names=("a1",)) if True][:600]
    cloud += [(f"fogmesh/v1/presence/{n}", forged_presence(n, "someone-else")) for n in ("w1", "x" * 200)]
    for topic, payload in cloud:
        bridge._cloud_message(received(topic, payload))
    bridge._tick()
    assert bridge.edge.acked == len(edge) and bridge.cloud.acked == len(cloud)
    assert bridge.refusals.total > 0


@FUZZ
@given(st.lists(st.one_of(messages(only=("inbox", "reading")),
                          st.tuples(st.just(T.agent_inbox("bridge-farm")), payloads("inbox"))), max_size=10),
       st.lists(cloud_messages(), max_size=10))
def test_no_hostile_message_raises_out_of_the_bridge(tmp_path_factory, edge, cloud):
    b = Bridge(site="farm", edge="mqtt://127.0.0.1:1", cloud="mqtt://127.0.0.1:1", root=ROOT,
               store_path=tmp_path_factory.mktemp("bridge") / "o.db", wall_clock=lambda: 1795000000.0,
               aggregate=((f"{ROOT}/sensors/+/+", 60.0),))
    b.edge, b.cloud = Wire(), Wire()
    try:
        for topic, payload in edge:
            b._edge_message(received(topic, payload))
        for topic, payload in cloud:
            b._cloud_message(received(topic, payload))
        b._tick()
        assert b.edge.acked == len(edge) and b.cloud.acked == len(cloud)
    finally:
        b.outbox.close()


def test_an_offer_whose_cloud_id_would_be_over_the_limit_goes_back_to_the_fog(bridge):
    bridge.uplink.up = True
    task = Task(id="t" * 128, kind="echo", reply_to=f"{ROOT}/replies/dev")
    offer = dumps({"op": "offer", "offer": "a1:x:1", "origin": "a" * 100, "lease_ms": 1000, "task": task.to_dict()})
    bridge._edge_message(received(T.agent_inbox("bridge-farm"), offer))
    ((topic, payload),) = bridge.edge.published
    assert topic == T.agent_inbox("a" * 100) and b'"reject"' in payload and b"bad_offer" in payload
    assert bridge.outbox.rows == 0


def test_a_cloud_worker_is_known_by_its_presence_topic_not_its_payload(bridge):
    bridge._cloud_message(received("fogmesh/v1/presence/w1", forged_presence("w1", "w2")))
    assert bridge.uplink.workers == set()
    bridge._cloud_message(received("fogmesh/v1/presence/w1", forged_presence("w1", "w1")))
    assert bridge.uplink.workers == {"w1"}


# -- devices ------------------------------------------------------------------------------------------------
@pytest.fixture
def actuator():
    device = ActuatorDevice("mqtt://127.0.0.1:1", device="dev", specs=parse_pins("lamp=led:27,relay=relay:17"),
                            pin_factory=make_pin_factory("mock"), root=ROOT)
    device.client = Wire()
    yield device
    device.stop()


@FUZZ
@given(st.lists(st.one_of(messages(only=("command",)),
                          st.tuples(st.sampled_from([T.actuator_set("dev", "lamp"), T.actuator_set("dev", "nope")]),
                                    payloads("command"))), max_size=8))
def test_no_hostile_command_raises_out_of_the_actuator(actuator, sequence):
    for topic, payload in sequence:
        actuator._on_message(received(topic, payload))


def test_the_catalogue_of_commands_is_answered_or_dead_lettered_and_logged_once(actuator, caplog):
    bad = [(T.actuator_set("dev", "lamp"), p) for t, p in catalogue(names=("dev",)) if t.endswith("/set")]
    with caplog.at_level("WARNING", logger="fogmesh.actuator"):
        for topic, payload in bad:
            actuator._on_message(received(topic, payload))
    assert actuator.rejected + actuator.commands == len(bad) and actuator.rejected > 30
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1


@FUZZ
@given(st.lists(st.one_of(messages(only=("rate", "pull")),
                          st.tuples(st.sampled_from([T.sensor_control("dev"), T.sensor_get("dev", "temperature")]),
                                    st.one_of(payloads("rate"), payloads("pull")))), max_size=8))
def test_no_hostile_control_or_pull_request_raises_out_of_a_sensor(sequence):
    device = SensorDevice("mqtt://127.0.0.1:1", device="dev", sensors=make_models(["temperature"]), root=ROOT)
    device.client = Wire()
    for topic, payload in sequence:
        device._on_message(received(topic, payload))
    assert 0 <= device.hz <= 100


# -- pipelines and triggers ---------------------------------------------------------------------------------
@pytest.fixture
def pipelines():
    spec = PipelineSpec(name="deter", device="cam", sensor="camera", kind="echo", when=Rule("found"),
                        then=Actuation("dev", "lamp"))
    trigger = TriggerSpec(name="wake", device="pir", sensor="motion", when=Rule("value", 1.0), camera="cam")
    runner = PipelineRunner("mqtt://127.0.0.1:1", agent_id="a1", specs=[spec], root=ROOT, triggers=[trigger],
                            wall_clock=lambda: 1795000000.0)
    runner.client = Wire()
    return runner


@FUZZ
@given(st.lists(st.one_of(
    st.tuples(st.just(T.frames("cam", "camera")), st.one_of(
        payloads("frame"), payloads("frame").map(lambda header: header + b"\n\xff\xd8jpeg"))),
    st.tuples(st.just(T.sensor("pir", "motion")), payloads("reading")),
    st.tuples(st.just(T.replies("pipeline-a1-deter")), payloads("reply"))), max_size=10))
def test_no_hostile_frame_reading_or_reply_raises_out_of_the_pipelines(pipelines, sequence):
    for topic, payload in sequence:
        pipelines._on_message(received(topic, payload))
    pipelines._publish_status()


def test_a_frame_from_the_far_future_is_skipped_not_a_crash(pipelines):
    header = dict(VALID["frame"], device="cam", ts=1e308)
    pipelines._on_message(received(T.frames("cam", "camera"), dumps(header) + b"\n\xff\xd8"))
    assert pipelines.cores["deter"].stats.skipped == 1


# -- the deploy receiver ------------------------------------------------------------------------------------
def test_the_deploy_receivers_health_check_judges_only_replies_and_never_raises():
    from fogmesh.deploy.self_check import judge
    from fogmesh.errors import InvalidMessage
    from fogmesh.messages import Reply
    for _, payload in catalogue(names=("a1",)):
        try:
            reply = Reply.decode(payload)       # what the receiver does with its health topic
        except InvalidMessage:
            continue
        verdict = judge(reply.to_dict(), "k")
        assert verdict is None or isinstance(verdict, str)


def test_no_hostile_message_raises_out_of_the_deploy_receiver(tmp_path):
    from fogmesh.deploy.desired import Identity
    from fogmesh.deploy.env_store import EnvStore
    from fogmesh.deploy.receiver import DeployReceiver
    from fogmesh.deploy.signing import SigningKey, TrustStore
    key = SigningKey.generate()
    receiver = DeployReceiver(broker="mqtt://127.0.0.1:1", identity=Identity("a1"), topics=T,
                              store=EnvStore(tmp_path), trust=TrustStore([key.public]), base=Registry({}),
                              switch=lambda registry: None)
    receiver.client = Wire()
    for topic, payload in catalogue(names=("a1",)):
        if "/deploy/" in topic or topic.endswith("deploy-health"):
            receiver._take(received(topic, payload))
    assert receiver.report.state in ("idle", "refused")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_bad_deployment_documents_makes_a_few_reports_and_log_lines_not_one_each(tmp_path, caplog):
    """Found from outside: every bad desired state or timestamp made the agent
    log a warning and publish its retained report again (a storm, fleet-wide
    for a document on ``deploy/desired/all``). A document on the topic of a
    target the agent is not is not its business; refusals are reported when
    the report changes, at most one each REPORT_EVERY_S (the latest), and
    their lines are rate-limited."""
    from fogmesh.deploy.desired import Identity
    from fogmesh.deploy.env_store import EnvStore
    from fogmesh.deploy.receiver import REPORT_EVERY_S, DeployReceiver
    from fogmesh.deploy.signing import SigningKey, TrustStore
    clock = Clock()
    receiver = DeployReceiver(broker="mqtt://127.0.0.1:1", identity=Identity("a1", "farm"), topics=T,
                              store=EnvStore(tmp_path), trust=TrustStore([SigningKey.generate().public]),
                              base=Registry({}), switch=lambda registry: None, clock=clock)
    wire = receiver.client = Wire()
    reports = lambda: [p for t, p in wire.published if t == T.deploy_reported("a1")]   # noqa: E731
    with caplog.at_level("WARNING"):
        for i in range(100):
            receiver._take(received(T.deploy_desired("site:elsewhere"), b'{"signed": {"serial": %d}}' % i))
        assert reports() == [] and caplog.records == []             # not addressed to a1: nothing to say
        for i in range(100):
            for target in ("all", "site:farm", "agent:a1"):
                receiver._take(received(T.deploy_desired(target), b'{"signed": {"serial": %d}}' % i))
            receiver._take(received(T.deploy_timestamp, b'{"signed": {"serial": %d}}' % i))
            clock.now += 0.01
        assert len(reports()) == 1                                 # the first refusal, at once
        assert len(caplog.records) <= 2, [r.getMessage() for r in caplog.records]

        def turn() -> None:                                        # one turn of the receiver's thread
            receiver._inbox.put(None)
            receiver._turn()
        turn()
        assert len(reports()) == 1                                 # held
        clock.now += REPORT_EVERY_S
        turn()                                                     # the latest refusal, once its time came
        assert len(reports()) == 2 and b"deploy/desired/agent/a1" in reports()[1]   # the latest
        turn()
        assert len(reports()) == 2                                 # nothing new: nothing published


# -- the announcer, after a flood of presences -------------------------------------------------------------
class _Host:
    def read(self, *, running: int) -> HostStats:
        return HostStats()


def test_after_a_flood_of_hostile_presences_the_agent_still_announces_itself_validly():
    core = AgentCore(AgentConfig(agent_id="a1", topics=T), Registry.from_entry_points())
    for i, (topic, payload) in enumerate(catalogue()):
        if "/presence/" in topic:
            core.handle(ev.MessageIn(topic, payload, i, False), 0.0)
    for i in range(1500):
        core.handle(ev.MessageIn(T.presence(f"made-up-{i}"), forged_presence(f"made-up-{i}", f"made-up-{i}"),
                                 i, False), 0.0)
    sent: list[bytes] = []
    announcer = Announcer(agent_id="a1", monitor=_Host(), capacity=2, kinds=("echo",), period=5.0,
                          wall_clock=lambda: 1795000000.0, send=sent.append)
    announcer.maybe(0.0, core, "online")
    (mine,) = [Presence.decode(p, agent="a1") for p in sent]
    assert mine.state == "online" and len(core.peers) <= core.peers.max_peers
