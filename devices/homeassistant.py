"""Home Assistant MQTT discovery for fogmesh devices (pure).

With ``--ha-discovery`` a sensor or actuator device publishes, retained, one
config per sensor or actuator on ``{prefix}/{component}/{node}/{object}/config``
(``prefix`` ``homeassistant`` by default): Home Assistant then shows each
sensor with fogmesh's own state topic and each actuator as a switch whose
commands go to fogmesh's command topic. Nothing is translated: the configs
point Home Assistant at the topics and payloads topics.md documents (readings
``{"value": n, "unit", "ts", "seq"}``, commands ``on``/``off``, states
``{"state": "on"|"off", ...}``).
"""

from __future__ import annotations

from typing import Any, Iterable

from fogmesh import codec
from fogmesh.topics import Topics

DEFAULT_PREFIX = "homeassistant"

# fogmesh sensor model -> (component, device_class, unit HA expects)
SENSOR_CLASSES: dict[str, tuple[str, str | None, str | None]] = {
    "temperature": ("sensor", "temperature", "°C"),
    "humidity": ("sensor", "humidity", "%"),
    "motion": ("binary_sensor", "motion", None),
}


def _object_id(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in text)


def _device_block(device: str) -> dict[str, Any]:
    return {"identifiers": [f"fogmesh_{_object_id(device)}"], "name": device, "manufacturer": "fogmesh"}


def sensor_configs(topics: Topics, device: str, sensors: Iterable[str], *,
                   prefix: str = DEFAULT_PREFIX) -> list[tuple[str, bytes]]:
    """(topic, retained payload) for each sensor of ``device``."""
    out = []
    node = _object_id(device)
    for name in sensors:
        component, device_class, unit = SENSOR_CLASSES.get(name, ("sensor", None, None))
        config: dict[str, Any] = {
            "name": name, "unique_id": f"fogmesh_{node}_{_object_id(name)}",
            "state_topic": topics.sensor(device, name), "device": _device_block(device)}
        if component == "binary_sensor":
            config.update(value_template="{{ 'ON' if value_json.value else 'OFF' }}",
                          payload_on="ON", payload_off="OFF")
        else:
            config["value_template"] = "{{ value_json.value }}"
        if device_class:
            config["device_class"] = device_class
        if unit:
            config["unit_of_measurement"] = unit
        out.append((f"{prefix}/{component}/{node}/{_object_id(name)}/config", codec.encode(config)))
    return out


def actuator_configs(topics: Topics, device: str, actuators: Iterable[str], *,
                     prefix: str = DEFAULT_PREFIX) -> list[tuple[str, bytes]]:
    """(topic, retained payload) for each actuator of ``device``: a switch."""
    out = []
    node = _object_id(device)
    for name in actuators:
        config = {
            "name": name, "unique_id": f"fogmesh_{node}_{_object_id(name)}",
            "command_topic": topics.actuator_set(device, name), "payload_on": "on", "payload_off": "off",
            "state_topic": topics.actuator_state(device, name), "value_template": "{{ value_json.state }}",
            "state_on": "on", "state_off": "off", "device": _device_block(device)}
        out.append((f"{prefix}/switch/{node}/{_object_id(name)}/config", codec.encode(config)))
    return out
