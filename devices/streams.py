"""Sensor firmware simulators: a device that streams readings (push), answers
requests for one fresh reading (pull), and changes its rate at run time on
its control topic; and a camera that streams frames in the binary frame format.

Control (``{root}/sensors/{device}/control``): ``{"op": "rate", "hz": 2}``
(``hz: 0`` = pull only). Pull (``{root}/sensors/{device}/{sensor}/get``):
``{"reply_to": "<topic>", "id": "<optional>"}`` -> one reading on ``reply_to``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from typing import Any, Callable

from fogmesh import codec
from fogmesh.devices.scenes import FrameSource
from fogmesh.devices.sensors import Reading, SensorModel
from fogmesh.errors import InvalidMessage
from fogmesh.frames import FrameHeader, encode_frame
from fogmesh.mqtt import BrokerUrl, Message, MqttClient
from fogmesh.refusals import Refusals
from fogmesh.topics import DEFAULT_ROOT, Topics, validate_publish_topic, validate_segment

MAX_HZ = 100.0


def parse_rate(payload: bytes) -> float:
    """A control message to a rate in Hz (0 = stop streaming), or InvalidMessage."""
    d: Any = codec.decode(payload)
    if not isinstance(d, dict) or d.get("op") != "rate":
        raise InvalidMessage("bad_command", 'control is {"op": "rate", "hz": <0..100>}')
    hz = d.get("hz")
    if isinstance(hz, bool) or not isinstance(hz, (int, float)) or not 0 <= hz <= MAX_HZ:
        raise InvalidMessage("bad_command", f"hz must be a number from 0 (pull only) to {MAX_HZ:g}")
    return float(hz)


class StreamingDevice:
    """A device that emits something every 1/hz seconds on its own thread,
    with its rate settable at run time. Subclasses implement ``emit``."""

    def __init__(self, broker: BrokerUrl | str, *, device: str, hz: float, root: str = DEFAULT_ROOT,
                 clock: Callable[[], float] = time.time) -> None:
        self.device = validate_segment(device, what="device id")
        self.topics = Topics(root)
        self.hz = hz
        self.clock = clock
        self.sent = 0
        self.log = logging.LoggerAdapter(logging.getLogger("fogmesh.device"), {"device": device})
        tag = hashlib.sha1(root.encode()).hexdigest()[:8]
        kind = type(self).__name__.replace("Device", "").lower()     # a camera and a sensor may share an id
        self.client = MqttClient(broker, client_id=f"fd-{kind}-{device}-{tag}", on_message=self._on_message,
                                 on_connection=self._on_connection)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refusals = Refusals()

    def subscriptions(self) -> list[str]:
        return [self.topics.sensor_control(self.device)]

    def _on_connection(self, up: bool) -> None:
        if up:
            self.on_connected()

    def on_connected(self) -> None:
        """After every CONNACK (paho's thread): what to (re)publish, retained."""

    def start(self, *, timeout: float | None = 10.0) -> StreamingDevice:
        """Connect (``timeout=None``: keep trying in the background) and start streaming."""
        self.client.start(timeout=timeout)
        for f in self.subscriptions():
            self.client.subscribe(f, timeout=timeout)
        self._thread = threading.Thread(target=self._run, name=f"device-{self.device}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(5)
        self.client.stop()

    def __enter__(self) -> StreamingDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_rate(self, hz: float) -> None:
        self.hz = hz
        self._wake.set()            # a new rate applies now, not after the old period
        self.log.info("%s: rate now %g Hz", self.device, hz)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            hz = self.hz            # once: a control message may set it to 0 meanwhile
            if hz <= 0:
                self._wake.wait()
                self._wake.clear()
                next_at = time.monotonic()
                continue
            delay = next_at - time.monotonic()
            if delay > 0:
                if self._wake.wait(delay):
                    self._wake.clear()
                    next_at = time.monotonic()
                    continue
            try:
                self.emit()
                self.sent += 1
            except Exception:     # a bad frame/reading must not end the stream
                self.log.exception("%s: emit failed", self.device)
            next_at = max(next_at + 1.0 / hz, time.monotonic() - 1.0 / hz)

    def emit(self) -> None:
        raise NotImplementedError

    def _on_message(self, m: Message) -> None:
        if m.topic == self.topics.sensor_control(self.device):
            try:
                self.set_rate(parse_rate(m.payload))
            except InvalidMessage as exc:
                self.refuse("control", m.topic, exc.message)
            return
        self.on_other(m)

    def on_other(self, m: Message) -> None:
        pass

    def refuse(self, kind: str, topic: str, reason: str) -> None:
        """A malformed control message or pull request: counted, logged at most once a minute."""
        self.refusals.refuse(kind, topic, reason)
        said = self.refusals.due(time.monotonic())
        if said is not None:
            self.log.warning("%s: %s", self.device, said)


class SensorDevice(StreamingDevice):
    """Temperature, humidity, PIR...: one reading per sensor per period."""

    def __init__(self, broker: BrokerUrl | str, *, device: str, sensors: list[SensorModel],
                 hz: float = 1.0, seed: int = 0, root: str = DEFAULT_ROOT,
                 clock: Callable[[], float] = time.time, ha_prefix: str | None = None) -> None:
        """``ha_prefix``: publish Home Assistant discovery configs there
        (``homeassistant``), so each sensor shows up with its readings."""
        self.sensors = {s.name: s for s in sensors}
        self.ha_prefix = ha_prefix
        super().__init__(broker, device=device, hz=hz, root=root, clock=clock)
        self._rng = random.Random(seed)
        self._seq = 0
        self._lock = threading.Lock()

    def subscriptions(self) -> list[str]:
        return super().subscriptions() + [self.topics.sensor_get(self.device, s) for s in self.sensors]

    def on_connected(self) -> None:
        if self.ha_prefix is None:
            return
        from fogmesh.devices.homeassistant import sensor_configs
        for topic, payload in sensor_configs(self.topics, self.device, self.sensors, prefix=self.ha_prefix):
            self.client.publish(topic, payload, qos=1, retain=True)

    def read(self, sensor: str) -> Reading:
        with self._lock:
            self._seq += 1
            now = self.clock()
            model = self.sensors[sensor]
            return Reading(sensor, model.value(now, self._rng), model.unit, round(now, 3), self._seq)

    def emit(self) -> None:
        for name in self.sensors:
            r = self.read(name)
            self.client.publish(self.topics.sensor(self.device, name), codec.encode(r.to_dict()), qos=0)

    def on_other(self, m: Message) -> None:
        for name in self.sensors:
            if m.topic == self.topics.sensor_get(self.device, name):
                try:
                    req = codec.decode(m.payload)
                    reply_to = validate_publish_topic(req.get("reply_to") if isinstance(req, dict) else None)
                except (InvalidMessage, ValueError):
                    self.refuse("pull", m.topic, 'a pull request needs {"reply_to": topic}')
                    return
                body: dict[str, Any] = self.read(name).to_dict()
                body["sensor"], body["device"] = name, self.device
                if isinstance(req.get("id"), str) and len(req["id"]) <= 128:
                    body["id"] = req["id"]
                self.client.publish(reply_to, codec.encode(body))
                return


class CameraDevice(StreamingDevice):
    """Publishes frames from ``source`` (JPEG, binary framing) at ``fps``."""

    def __init__(self, broker: BrokerUrl | str, *, device: str, source: FrameSource,
                 camera: str = "camera", fps: float = 1.0, quality: int = 80,
                 root: str = DEFAULT_ROOT, clock: Callable[[], float] = time.time) -> None:
        super().__init__(broker, device=device, hz=fps, root=root, clock=clock)
        self.camera = validate_segment(camera, what="camera name")
        self.source = source
        self.quality = quality
        self.seq = 0

    def emit(self) -> None:
        from fogmesh.devices import vision
        frame = self.source.next_frame()
        if frame is None:
            self.hz = 0
            return
        self.seq += 1
        h, w = frame.shape[:2]
        header = FrameHeader(self.device, self.camera, self.seq, round(self.clock(), 4), w, h)
        self.client.publish(self.topics.frames(self.device, self.camera),
                            encode_frame(header, vision.encode_jpeg(frame, quality=self.quality)), qos=0)
