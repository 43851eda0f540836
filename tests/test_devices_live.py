"""Tier 3 (real brokers): sensors in push and pull mode with a run-time rate
change, every actuator command and every bad one (mock pins read back), the
safe state on broker loss, and the camera -> pipeline -> relay loop."""

import threading

import orjson
import pytest

from fogmesh.devices.actuator import ActuatorDevice
from fogmesh.devices.gpio import make_pin_factory, parse_pins
from fogmesh.devices.scenes import GeneratedScene
from fogmesh.devices.sensors import make_models
from fogmesh.devices.streams import CameraDevice, SensorDevice, StreamingDevice
from fogmesh.edge_agent.pipelines import Actuation, PipelineSpec, Rule
from fogmesh.topics import Topics
from tests.listener import Listener
from tests.netcut import CuttableLink
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def listener(broker):
    made = []

    def make(*filters):
        made.append(Listener(broker.url, *filters))
        return made[-1]
    yield make
    for item in made:
        item.close()


# -- sensors ------------------------------------------------------------------------
def test_a_sensor_pushes_readings_at_its_rate(broker, root, listener):
    t = Topics(root)
    watch = listener(t.sensor("room-1", "temperature"))
    with SensorDevice(broker.url, device="room-1", sensors=make_models(["temperature"]), hz=20, root=root):
        readings = [orjson.loads(watch.next()) for _ in range(3)]
    assert [r["unit"] for r in readings] == ["C"] * 3
    assert readings[0]["seq"] < readings[1]["seq"] < readings[2]["seq"]


def test_a_pull_request_gets_one_fresh_reading_on_its_reply_topic(broker, root, listener):
    t = Topics(root)
    watch = listener(f"{root}/replies/#", f"{root}/sensors/room-1/+")
    with SensorDevice(broker.url, device="room-1", sensors=make_models(["humidity"]), hz=0, root=root):
        watch.publish(t.sensor_get("room-1", "humidity"), {"reply_to": f"{root}/replies/me", "id": "q1"})
        reading = orjson.loads(watch.next(f"{root}/replies/me"))
    assert reading["id"] == "q1" and reading["sensor"] == "humidity" and reading["unit"] == "%"
    assert [item for item in watch.drain() if "/sensors/" in item[0]] == []   # pull only: no stream


def test_the_rate_changes_at_run_time(broker, root, listener):
    t = Topics(root)
    watch = listener(t.sensor("room-1", "motion"))
    with SensorDevice(broker.url, device="room-1", sensors=make_models(["motion"]), hz=0, root=root) as dev:
        watch.publish(t.sensor_control("room-1"), {"op": "rate", "hz": 25})
        for _ in range(3):
            watch.next()
        watch.publish(t.sensor_control("room-1"), {"op": "rate", "hz": 0})
        wait_until(lambda: dev.hz == 0, what="the stop")
        sent = dev.sent
        watch.publish(t.sensor_control("room-1"), {"op": "rate", "hz": -3})    # refused, ignored
        watch.publish(t.sensor_control("room-1"), {"op": "rate", "hz": 0})
        wait_until(lambda: dev.hz == 0, what="the last control")
        assert dev.sent <= sent + 1


def test_a_rate_set_to_zero_mid_emit_does_not_end_the_stream(broker, root):
    class Slow(StreamingDevice):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.entered, self.release = threading.Event(), threading.Event()

        def emit(self):
            self.entered.set()
            self.release.wait(10)

    with Slow(broker.url, device="slow-1", hz=50, root=root) as dev:
        assert dev.entered.wait(10)
        dev.set_rate(0)                 # as a control message would, mid-emit
        dev.release.set()
        wait_until(lambda: dev.sent == 1, what="the emit to finish")
        dev.set_rate(50)
        dev.entered.clear()
        assert dev.entered.wait(10)     # still streaming: the thread survived
        dev.release.set()


# -- actuators ----------------------------------------------------------------------------
@pytest.fixture
def relay(broker, root):
    factory = make_pin_factory("mock")
    dev = ActuatorDevice(broker.url, device="farm-relay", root=root, pin_factory=factory,
                         specs=parse_pins("deterrent=relay:17,lamp=led:27:max_pulse_ms=1000")).start()
    yield dev, factory
    dev.stop()


def command(watch, root, actuator, body):
    reply_to = f"{root}/replies/ops"
    watch.publish(Topics(root).actuator_set("farm-relay", actuator), {**body, "reply_to": reply_to, "id": "c"})
    return orjson.loads(watch.next(reply_to))


@pytest.mark.parametrize("op,pin", [("on", True), ("toggle", True), ("off", False)])
def test_each_command_drives_the_pin_and_publishes_the_retained_state(broker, root, relay, listener, op, pin):
    dev, factory = relay
    t = Topics(root)
    watch = listener(f"{root}/replies/#")
    reply = command(watch, root, "lamp", {"op": op})
    assert reply["status"] == "ok" and reply["result"]["state"] == ("on" if pin else "off")
    assert factory.pin(27).state is pin
    late = listener(t.actuator_state("farm-relay", "lamp"))       # a late subscriber still learns it
    assert orjson.loads(late.next())["state"] == ("on" if pin else "off")


def test_a_pulse_switches_on_then_off_and_says_so(broker, root, relay, listener):
    dev, factory = relay
    t = Topics(root)
    watch = listener(f"{root}/replies/#", t.actuator_state("farm-relay", "deterrent"))
    assert orjson.loads(watch.next(t.actuator_state("farm-relay", "deterrent")))["state"] == "off"
    assert command(watch, root, "deterrent", {"op": "pulse", "ms": 300})["result"]["state"] == "on"
    assert factory.pin(17).state is True
    states: list[str] = []
    while len(states) < 2:
        state = orjson.loads(watch.next(t.actuator_state("farm-relay", "deterrent")))["state"]
        if states or state == "on":     # an "off" before it: the start-up announcement of the connection
            states.append(state)
    assert states == ["on", "off"] and factory.pin(17).state is False


@pytest.mark.parametrize("actuator,body,code", [
    ("fan", {"op": "on"}, "unknown_actuator"),
    ("lamp", {"op": "explode"}, "bad_command"),
    ("lamp", {"op": "pulse", "ms": "long"}, "bad_command"),
    ("lamp", {"op": "pulse", "ms": 5000}, "bad_command"),          # over this lamp's max_pulse_ms
])
def test_bad_commands_get_an_error_and_leave_the_pins_alone(broker, root, relay, listener, actuator, body, code):
    dev, factory = relay
    watch = listener(f"{root}/replies/#")
    reply = command(watch, root, actuator, body)
    assert reply["status"] == "error" and reply["error"]["code"] == code
    assert (factory.pin(17).state, factory.pin(27).state) == (False, False)
    assert dev.rejected == 1 and dev.commands == 0


def test_a_bad_command_without_a_reply_topic_becomes_a_dead_letter(broker, root, relay, listener):
    t = Topics(root)
    watch = listener(t.errors)
    watch.publish(t.actuator_set("farm-relay", "lamp"), b"{not json")
    letter = orjson.loads(watch.next(t.errors))
    assert letter["error"]["code"] == "bad_json" and letter["agent"] == "farm-relay"


def test_losing_the_broker_puts_every_actuator_in_its_safe_state(broker, root, listener):
    link = CuttableLink(broker.host, broker.port)
    factory = make_pin_factory("mock")
    dev = ActuatorDevice(link.url, device="farm-relay", root=root, pin_factory=factory,
                         specs=parse_pins("deterrent=relay:17")).start()
    try:
        watch = listener(f"{root}/replies/#")
        command(watch, root, "deterrent", {"op": "on"})
        assert factory.pin(17).state is True
        link.cut()
        wait_until(lambda: factory.pin(17).state is False, what="the safe state")
    finally:
        dev.stop()
        link.close()


# -- the sensing -> analysis -> actuation loop --------------------------------------------
def loop(broker, root, agents, *, people):
    factory = make_pin_factory("mock")
    spec = PipelineSpec(name="deter", device="farm-cam", sensor="camera", kind="motion",
                        when=Rule("moving"), then=Actuation("farm-relay", "deterrent", "pulse", 400),
                        args={"min_area": 200}, max_age_ms=3000, cooldown_ms=0)
    agent = agents("pi-1", broker.url, root, pipelines=[spec])
    relay = ActuatorDevice(broker.url, device="farm-relay", root=root, pin_factory=factory,
                           specs=parse_pins("deterrent=relay:17")).start()
    camera = CameraDevice(broker.url, device="farm-cam", root=root, fps=5,
                          source=GeneratedScene(people=people, speed=10, seed=4)).start()
    return agent, relay, camera, factory


def test_a_moving_figure_on_camera_pulses_the_deterrent_relay(broker, root, agents):
    agent, relay, camera, factory = loop(broker, root, agents, people=1)
    try:
        pulses = []
        wait_until(lambda: pulses.append(factory.pin(17).state) or relay.commands >= 1, timeout=30,
                   what="the relay to be commanded")
        stats = agent.pipelines.cores["deter"].stats
        assert stats.actuations >= 1 and stats.last_latency_ms is not None
    finally:
        camera.stop()
        relay.stop()


def test_a_static_scene_never_pulses_the_relay(broker, root, agents):
    agent, relay, camera, factory = loop(broker, root, agents, people=0)
    try:
        stats = agent.pipelines.cores["deter"].stats
        wait_until(lambda: stats.processed >= 5, timeout=30, what="five frames analysed")
        assert stats.actuations == 0 and relay.commands == 0 and factory.pin(17).state is False
    finally:
        camera.stop()
        relay.stop()


def test_pipeline_tasks_are_placed_by_the_policy_so_a_low_battery_pi_offloads_them(broker, root, agents):
    from fogmesh.edge_agent.battery import BatteryModel
    from fogmesh.edge_agent.host_monitor import HostMonitor
    from fogmesh.edge_agent.placement import EnergyPolicy

    def battery(percent):
        return HostMonitor(battery_model=BatteryModel(percent=percent, idle_w=0.0, task_w=0.0))
    spec = PipelineSpec(name="deter", device="farm-cam", sensor="camera", kind="motion",
                        when=Rule("moving"), then=Actuation("farm-relay", "deterrent", "pulse", 200),
                        args={"min_area": 200}, max_age_ms=3000)
    opts = dict(presence_period=0.3, policy=EnergyPolicy())
    low = agents("pi-low", broker.url, root, pipelines=[spec], monitor=battery(30), **opts)
    full = agents("pi-full", broker.url, root, monitor=battery(90), **opts)
    wait_until(lambda: (peer := low.core.peers.get("pi-full")) is not None
               and peer.battery_percent == 90, what="pi-full's presence")
    camera = CameraDevice(broker.url, device="farm-cam", root=root, fps=5,
                          source=GeneratedScene(people=1, speed=10, seed=4)).start()
    try:
        stats = low.pipelines.cores["deter"].stats
        wait_until(lambda: stats.processed >= 3, timeout=30, what="three frames analysed")
        assert full.core.counters.completed >= 3          # the charged Pi ran them
        assert low.core.counters.offers_sent >= 3
    finally:
        camera.stop()


@pytest.mark.timeout(60)
def test_a_device_started_before_its_broker_waits_then_streams(root, tmp_path):
    import subprocess
    import sys

    from fogmesh.broker.mosquitto import Mosquitto
    from fogmesh.broker.ports import free_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fogmesh", "device", "sensor", "--id", "early",
                             "--sensors", "temperature", "--hz", "10", "--root", root,
                             "--broker", f"mqtt://127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
    broker = None
    try:
        assert "waiting for the broker" in proc.stderr.readline() + proc.stderr.readline()
        broker = Mosquitto(port=port, workdir=tmp_path / "m").start()
        watch = Listener(broker.url, Topics(root).sensor("early", "temperature"))
        try:
            assert orjson.loads(watch.next(timeout=20))["unit"] == "C"
        finally:
            watch.close()
    finally:
        proc.terminate()
        proc.wait(10)
        if broker:
            broker.cleanup()


def test_a_pir_reading_wakes_the_idle_camera_through_a_trigger(broker, root, agents, listener):
    from fogmesh.edge_agent.triggers import TriggerSpec
    spec = TriggerSpec("wake", "farm-pir", "motion", Rule("value", min=1), camera="farm-cam", hz=20, for_s=0.5)
    agents("pi-1", broker.url, root, triggers=[spec])
    t = Topics(root)
    frames = listener(t.frames("farm-cam", "camera"))
    with CameraDevice(broker.url, device="farm-cam", root=root, fps=0,
                      source=GeneratedScene(people=0, seed=1)) as camera:
        pir = listener()
        pir.publish(t.sensor("farm-pir", "motion"), {"value": 1, "unit": "bool"})
        frames.next(timeout=10)                           # woken: frames flow
        wait_until(lambda: camera.hz == 0, timeout=10, what="the camera back to idle")
