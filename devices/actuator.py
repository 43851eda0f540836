"""The actuator subscriber: commands in, pins driven, state out (retained).

``{root}/actuators/{device}/{actuator}/set`` -> validate (pins untouched on any
error) -> gpiozero -> ``.../state`` retained ``{"state": "on"|"off", ...}`` and,
if the command named a ``reply_to``, a reply there. Errors without a
``reply_to`` go to ``{root}/errors`` as dead letters. On start and whenever the
broker connection is lost, every actuator goes to its safe state: a relay must
not stay on because the network that would switch it off is gone.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any, Callable

from fogmesh import codec
from fogmesh.devices.commands import Command, command_ids, parse_command
from fogmesh.devices.gpio import Actuators, ActuatorSpec
from fogmesh.errors import DeviceError, InvalidMessage
from fogmesh.messages import DeadLetter, ErrorInfo, Reply, excerpt
from fogmesh.mqtt import BrokerUrl, Message, MqttClient
from fogmesh.refusals import Refusals
from fogmesh.topics import DEFAULT_ROOT, Topics, validate_segment


class ActuatorDevice:
    def __init__(self, broker: BrokerUrl | str, *, device: str, specs: list[ActuatorSpec],
                 pin_factory: Any, root: str = DEFAULT_ROOT,
                 clock: Callable[[], float] = time.time, ha_prefix: str | None = None) -> None:
        """``ha_prefix``: publish Home Assistant discovery configs there
        (``homeassistant``), so each actuator shows up as a switch."""
        self.device = validate_segment(device, what="device id")
        self.topics = Topics(root)
        self.clock = clock
        self.actuators = Actuators(specs, pin_factory=pin_factory)
        self.actuators.safe()
        self.ha_prefix = ha_prefix
        self.commands = 0
        self.rejected = 0
        self.refusals = Refusals()
        self.log = logging.getLogger("fogmesh.actuator")
        self._lock = threading.Lock()
        self._timers: dict[str, threading.Timer] = {}
        self._stopped = False
        tag = hashlib.sha1(root.encode()).hexdigest()[:8]
        # A clean session on purpose: a command sent while the actuator was away is
        # not carried out late (a deterrent pulse an hour after the bird left).
        self.client = MqttClient(broker, client_id=f"fx-{device}-{tag}", clean_session=True,
                                 on_message=self._on_message, on_connection=self._on_connection)

    def start(self, *, timeout: float | None = 10.0) -> ActuatorDevice:
        self.client.start(timeout=timeout)
        # Wait for the SUBACK: a command published right after start() returns must
        # reach us (CI once lost the first command to a broker still subscribing).
        self.client.subscribe(self.topics.actuator_set_filter(self.device), timeout=timeout)
        self._announce()
        self._publish_states()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for t in self._timers.values():
                t.cancel()
            self.actuators.safe()
        self._publish_states()
        self.client.stop()
        self.actuators.close()

    def __enter__(self) -> ActuatorDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- paho thread -------------------------------------------------------------------
    def _on_connection(self, up: bool) -> None:
        if up:
            self._announce()
            self._publish_states()
            return
        with self._lock:
            for t in self._timers.values():
                t.cancel()
            self.actuators.safe()
        self.log.warning("%s: broker connection lost: actuators in their safe state", self.device)

    def _on_message(self, m: Message) -> None:
        where = self.topics.actuator_of_set(m.topic)
        if where is None or where[0] != self.device:
            return
        name = where[1]
        if name not in self.actuators.names:
            task_id, reply_to = command_ids(m.payload)
            self._reject(m, InvalidMessage(
                "unknown_actuator", f"device {self.device} has no actuator {name!r}; it has: "
                f"{', '.join(self.actuators.names)}", task_id=task_id, reply_to=reply_to))
            return
        spec = self.actuators.specs[name]
        try:
            cmd = parse_command(name, m.payload, max_pulse_ms=spec.max_pulse_ms)
        except InvalidMessage as exc:
            self._reject(m, exc)
            return
        try:
            state = self._apply(cmd)
        except DeviceError as exc:
            self._reject(m, InvalidMessage("handler_error", str(exc), task_id=cmd.id, reply_to=cmd.reply_to))
            return
        self.commands += 1
        if cmd.reply_to:
            result = {"actuator": name, "op": cmd.op, "state": state}
            if cmd.op == "pulse":
                result["ms"] = cmd.ms
            self.client.publish(cmd.reply_to, Reply.ok(cmd.id or "", result, worker=self.device,
                                                       tier="device").encode())

    def _apply(self, cmd: Command) -> str:
        with self._lock:
            old = self._timers.pop(cmd.actuator, None)
            if old:
                old.cancel()
            state = self.actuators.apply(cmd)
            if cmd.op == "pulse":      # announce "off" when the pulse ends
                t = threading.Timer(cmd.ms / 1000 + 0.02, self._pulse_ended, args=(cmd.actuator,))
                t.daemon = True
                self._timers[cmd.actuator] = t
                t.start()
        self._publish_state(cmd.actuator, state)
        return state

    def _reject(self, m: Message, exc: InvalidMessage) -> None:
        self.rejected += 1
        self.refusals.refuse("command", m.topic, exc.message)        # logged at most once a minute
        said = self.refusals.due(time.monotonic())
        if said is not None:
            self.log.warning("%s: %s", self.device, said)
        if exc.reply_to:
            self.client.publish(exc.reply_to, Reply.failed(exc.task_id, exc.code, exc.message,
                                                           worker=self.device, tier="device").encode())
        else:
            letter = DeadLetter(agent=self.device, ts=self.clock(), error=ErrorInfo(exc.code, exc.message),
                                topic=m.topic, id=exc.task_id, excerpt=excerpt(m.payload))
            self.client.publish(self.topics.errors, letter.encode())

    def _pulse_ended(self, name: str) -> None:
        """A pulse's timer (its own thread): announce "off", unless the device
        stopped meanwhile (its pins are closed; stop() announced the states)."""
        with self._lock:
            if self._stopped:
                return
            state = self.actuators.state(name)
        self._publish_state(name, state)

    def _publish_state(self, name: str, state: str | None = None) -> None:
        state = state or self.actuators.state(name)
        body = {"state": state, "device": self.device, "actuator": name, "ts": round(self.clock(), 3)}
        self.client.publish(self.topics.actuator_state(self.device, name), codec.encode(body), retain=True)

    def _announce(self) -> None:
        """Home Assistant discovery configs, retained (again after a reconnect:
        a broker without persistence forgot them)."""
        if self.ha_prefix is None:
            return
        from fogmesh.devices.homeassistant import actuator_configs
        for topic, payload in actuator_configs(self.topics, self.device, self.actuators.names, prefix=self.ha_prefix):
            self.client.publish(topic, payload, qos=1, retain=True)

    def _publish_states(self) -> None:
        for name in self.actuators.names:
            self._publish_state(name)
