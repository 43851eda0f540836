"""Runs pipelines inside an agent process: the IO around :class:`PipelineCore`.

Frames come in on the camera's frame topic; each task goes to *this agent's*
direct task topic, so the agent places it with its policy like any other task
(a drained or low-battery Pi's camera work is offloaded); replies come back on
the pipeline's own reply topic; commands go to the actuator's ``set`` topic;
counters are announced (retained) on ``{root}/pipelines/{agent}/{name}``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from typing import Callable

from fogmesh import codec
from fogmesh.edge_agent.pipelines import PipelineCore, PipelineSpec, parse_reply
from fogmesh.edge_agent.triggers import TriggerCore, TriggerSpec
from fogmesh.errors import InvalidMessage
from fogmesh.frames import decode_frame
from fogmesh.mqtt import BrokerUrl, Message, MqttClient
from fogmesh.refusals import Refusals
from fogmesh.topics import Topics


class PipelineRunner:
    def __init__(self, broker: BrokerUrl | str, *, agent_id: str, specs: list[PipelineSpec],
                 root: str, wall_clock: Callable[[], float] = time.time,
                 task_topic: Callable[[], str] | None = None, status_period: float = 1.0,
                 triggers: list[TriggerSpec] | None = None) -> None:
        self.agent_id = agent_id
        self.topics = Topics(root)
        self.clock = wall_clock           # frames carry wall-clock capture times
        self.task_topic = task_topic or (lambda: self.topics.agent_tasks(agent_id))
        self.status_period = status_period
        run_tag = uuid.uuid4().hex[:6]
        self.cores = {s.name: PipelineCore(s, topics=self.topics, run_tag=run_tag,
                                           reply_to=self.topics.replies(f"pipeline-{agent_id}-{s.name}"))
                      for s in specs}
        self._by_source: dict[str, list[PipelineCore]] = {}
        for spec in specs:        # several pipelines may watch one camera
            self._by_source.setdefault(self.topics.frames(spec.device, spec.sensor), []).append(
                self.cores[spec.name])
        self._by_reply = {c.reply_to: c for c in self.cores.values()}
        self.triggers = [TriggerCore(t, topics=self.topics) for t in triggers or []]
        self._by_reading: dict[str, list[TriggerCore]] = {}
        for trig in self.triggers:
            self._by_reading.setdefault(self.topics.sensor(trig.spec.device, trig.spec.sensor), []).append(trig)
        self._lock = threading.Lock()
        self.refusals = Refusals()
        self._stop = threading.Event()
        self.log = logging.getLogger("fogmesh.pipeline")
        tag = hashlib.sha1(root.encode()).hexdigest()[:8]
        self.client = MqttClient(broker, client_id=f"fp-{agent_id}-{tag}", on_message=self._on_message)
        self._thread: threading.Thread | None = None

    def start(self, *, timeout: float = 10.0) -> PipelineRunner:
        self.client.start(timeout=timeout)
        for topic in [*self._by_reply, *self._by_source, *self._by_reading]:
            self.client.subscribe(topic, qos=1 if topic in self._by_reply else 0)
        self._thread = threading.Thread(target=self._status_loop, name=f"pipelines-{self.agent_id}",
                                        daemon=True)
        self._thread.start()
        for core in self.cores.values():
            s = core.spec
            self.log.info("%s: pipeline %s: %s/%s -> %s -> %s/%s", self.agent_id, s.name, s.device,
                          s.sensor, s.kind, s.then.device, s.then.actuator)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        self._publish_status()
        self.client.stop()

    def _on_message(self, m: Message) -> None:
        now = self.clock()
        for trig in self._by_reading.get(m.topic, ()):
            with self._lock:
                commands = trig.on_reading(m.payload, now)
            for topic, payload in commands:
                self.log.info("%s: trigger %s: %s", self.agent_id, trig.spec.name, payload.decode())
                self.client.publish(topic, payload)
        watchers = self._by_source.get(m.topic)
        if watchers:
            try:
                header, image = decode_frame(m.payload)
            except InvalidMessage as exc:
                self.refusals.refuse("frame", m.topic, exc.message)     # logged at most once a minute
                said = self.refusals.due(time.monotonic())
                if said is not None:
                    self.log.warning("%s: pipelines: %s", self.agent_id, said)
                return
            for watcher in watchers:
                with self._lock:
                    submits = watcher.on_frame(header.ts, image, now)
                for s in submits:
                    self.client.publish(self.task_topic(), s.task.encode())
            return
        core = self._by_reply.get(m.topic)
        reply = parse_reply(m.payload) if core is not None else None
        if core is None or reply is None:
            return
        with self._lock:
            commands = core.on_reply(reply, now)
        for c in commands:
            self.log.info("%s: pipeline %s fired: %s (%.0f ms after the frame)", self.agent_id,
                          core.spec.name, c.topic, c.latency_ms)
            self.client.publish(c.topic, c.payload)

    def _status_loop(self) -> None:
        last: dict[str, dict] = {}
        next_status = 0.0
        while not self._stop.wait(0.1):       # triggers wind down to the tenth of a second
            now = self.clock()
            with self._lock:
                commands = [c for trig in self.triggers for c in trig.on_tick(now)]
            for topic, payload in commands:
                self.client.publish(topic, payload)
            if now < next_status:
                continue
            next_status = now + self.status_period
            with self._lock:
                for core in self.cores.values():
                    core.expire(now)
            last = self._publish_status(last)

    def _publish_status(self, last: dict[str, dict] | None = None) -> dict[str, dict]:
        sent: dict[str, dict] = {}
        for name, core in self.cores.items():
            with self._lock:
                body = {**core.stats.to_dict(), "in_flight": core.in_flight, "agent": self.agent_id}
            sent[name] = body
            if last is None or last.get(name) != body:
                self.client.publish(self.topics.pipeline_status(self.agent_id, name),
                                    codec.encode(body), retain=True)
        return sent
