"""Home Assistant MQTT discovery: `--ha-discovery` devices announce their
sensors and actuators with configs that point at fogmesh's own topics, and
what Home Assistant would send to an advertised command topic drives the pin
(MockFactory), with the state it reads back from the advertised state topic."""

from __future__ import annotations

import queue
import uuid

import orjson
import pytest

from fogmesh.devices.actuator import ActuatorDevice
from fogmesh.devices.gpio import make_pin_factory, parse_pins
from fogmesh.devices.homeassistant import actuator_configs, sensor_configs
from fogmesh.devices.sensors import make_models
from fogmesh.devices.streams import SensorDevice
from fogmesh.mqtt import MqttClient
from fogmesh.topics import Topics
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def test_sensor_configs_point_at_fogmesh_reading_topics():
    t = Topics("fog/v1")
    (topic, payload), (motion_topic, motion) = sensor_configs(t, "greenhouse", ["temperature", "motion"])
    config = orjson.loads(payload)
    assert topic == "homeassistant/sensor/greenhouse/temperature/config"
    assert config["state_topic"] == t.sensor("greenhouse", "temperature")
    assert config["value_template"] == "{{ value_json.value }}" and config["device_class"] == "temperature"
    assert motion_topic.startswith("homeassistant/binary_sensor/")
    assert orjson.loads(motion)["payload_on"] == "ON"


def test_actuator_configs_are_switches_on_fogmesh_command_and_state_topics():
    t = Topics("fog/v1")
    [(topic, payload)] = actuator_configs(t, "farm-relay", ["deterrent"], prefix="ha")
    config = orjson.loads(payload)
    assert topic == "ha/switch/farm-relay/deterrent/config"
    assert config["command_topic"] == t.actuator_set("farm-relay", "deterrent")
    assert config["state_topic"] == t.actuator_state("farm-relay", "deterrent")
    assert (config["payload_on"], config["state_on"]) == ("on", "on")


class Watch:
    def __init__(self, url: str, *filters: str) -> None:
        self.got: queue.SimpleQueue = queue.SimpleQueue()
        self.client = MqttClient(url, on_message=lambda m: self.got.put((m.topic, m.payload)))
        self.client.start()
        for f in filters:
            self.client.subscribe(f)
        self.seen: dict[str, list[bytes]] = {}

    def latest(self, topic: str) -> bytes | None:
        while True:
            try:
                t, p = self.got.get_nowait()
            except queue.Empty:
                break
            self.seen.setdefault(t, []).append(p)
        return self.seen.get(topic, [None])[-1]

    def discovered(self, config_topic: str) -> dict:
        """The retained config Home Assistant would read; its state topic watched too."""
        wait_until(lambda: self.latest(config_topic) is not None, what=f"the retained config {config_topic}")
        config = orjson.loads(self.latest(config_topic))
        self.client.subscribe(config["state_topic"])
        return config


def test_an_actuator_appears_as_a_switch_that_home_assistant_can_drive(broker, root):
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    factory = make_pin_factory("mock")
    dev = ActuatorDevice(broker.url, device="farm-relay", root=root, pin_factory=factory,
                         specs=parse_pins("deterrent=relay:17"), ha_prefix=prefix).start()
    watch = Watch(broker.url, f"{prefix}/#")
    try:
        config = watch.discovered(f"{prefix}/switch/farm-relay/deterrent/config")
        watch.client.publish(config["command_topic"], config["payload_on"].encode())   # Home Assistant's "turn on"
        wait_until(lambda: factory.pin(17).state is True, what="the pin driven from the advertised topic")
        wait_until(lambda: (watch.latest(config["state_topic"]) or b"{}") != b"{}"
                   and orjson.loads(watch.latest(config["state_topic"]))["state"] == config["state_on"],
                   what="the advertised state topic to say on")
        watch.client.publish(config["command_topic"], config["payload_off"].encode())
        wait_until(lambda: factory.pin(17).state is False, what="the pin off again")
    finally:
        watch.client.stop()
        dev.stop()


def test_a_sensor_appears_with_its_readings_on_the_advertised_topic(broker, root):
    prefix = f"ha-{uuid.uuid4().hex[:8]}"
    dev = SensorDevice(broker.url, device="greenhouse", sensors=make_models(["temperature"]), hz=10, root=root,
                       ha_prefix=prefix).start()
    watch = Watch(broker.url, f"{prefix}/#")
    try:
        config = watch.discovered(f"{prefix}/sensor/greenhouse/temperature/config")
        wait_until(lambda: watch.latest(config["state_topic"]) is not None, what="a reading on the state topic")
        assert isinstance(orjson.loads(watch.latest(config["state_topic"]))["value"], float)   # value_json.value
    finally:
        watch.client.stop()
        dev.stop()
