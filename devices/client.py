"""The device-side client: submit a task, wait for its one reply.

What a phone app, a gateway script or a test uses instead of hand-writing
MQTT. One connection and one reply topic per client; many tasks in flight at
once (``send`` returns a future); sync (``submit``) and asyncio
(``submit_async``) front ends over the same machinery. Sensor firmware does not
need this module at all: one ``mosquitto_pub`` is a valid submission.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import Future
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Mapping

from fogmesh.errors import InvalidMessage, SubmitTimeout, TaskFailed
from fogmesh.messages import ErrorInfo, Reply, Task, Timing
from fogmesh.mqtt import BrokerUrl, Message, MqttClient
from fogmesh.topics import DEFAULT_ROOT, Topics

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


@dataclass(frozen=True)
class Result:
    """A reply plus what the submitter measured."""

    reply: Reply
    latency_ms: float

    @property
    def ok(self) -> bool:
        return self.reply.status == "ok"

    @property
    def value(self) -> Any:
        return self.reply.result

    @property
    def error(self) -> ErrorInfo | None:
        return self.reply.error

    @property
    def worker(self) -> str:
        return self.reply.worker

    @property
    def tier(self) -> str:
        return self.reply.tier

    @property
    def ms(self) -> Timing:
        return self.reply.ms


@dataclass
class _Pending:
    future: Future[Result]
    sent_at: float


class FogClient:
    """A connected submitter. Use as a context manager or call ``connect``/``close``."""

    def __init__(self, broker: BrokerUrl | str = DEFAULT_BROKER, *, root: str = DEFAULT_ROOT,
                 device: str | None = None, reply_to: str | None = None,
                 own_topic: bool = False) -> None:
        """``own_topic``: submit on ``tasks/{device}``, the topic a secured broker
        lets only this device's login publish to (replies stay on ``replies/{device}``)."""
        self.topics = Topics(root)
        self.device = device
        if own_topic and not device:
            raise ValueError("own_topic needs a device id")
        self.task_topic = self.topics.device_tasks(device) if own_topic and device else self.topics.tasks
        self.client_id = f"fogmesh-dev-{uuid.uuid4().hex[:12]}"
        self.reply_to = reply_to or self.topics.replies(device or self.client_id)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self.duplicates = 0   # replies for ids already answered (never handed to the caller)
        self.duplicate_replies: deque[Reply] = deque(maxlen=1000)   # the last ones, for diagnosis
        self.late = 0         # replies that came after their submit timed out
        # id -> "answered" | "timed_out", bounded: enough to tell duplicates from late replies
        self._answered: OrderedDict[str, str] = OrderedDict()
        self._mqtt = MqttClient(broker, client_id=self.client_id, on_message=self._on_message)

    def connect(self, *, timeout: float = 10.0) -> FogClient:
        self._mqtt.start(timeout=timeout, fail_fast=True)
        self._mqtt.subscribe(self.reply_to, 1, timeout=timeout)
        return self

    def close(self) -> None:
        self._mqtt.stop()
        with self._lock:
            pending, self._pending = self._pending, {}
        for p in pending.values():
            p.future.cancel()

    def __enter__(self) -> FogClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- submitting --------------------------------------------------------
    def send(self, kind: str, args: Mapping[str, Any] | None = None, *, task_id: str | None = None,
             weight: str | None = None, deadline_ms: int | None = None,
             agent: str | None = None) -> Future[Result]:
        """Publish a task and return a future of its :class:`Result` (no timeout here).

        With ``agent`` the task goes to that agent's direct topic (a camera
        bound to its own Pi) instead of the shared task topic; that agent's
        placement policy may still offload it."""
        task = Task(id=task_id or uuid.uuid4().hex, kind=kind, args=dict(args or {}),
                    reply_to=self.reply_to, weight=weight, deadline_ms=deadline_ms,
                    device=self.device)
        future: Future[Result] = Future()
        with self._lock:
            if task.id in self._pending:
                raise ValueError(f"task id {task.id!r} is already in flight")
            self._pending[task.id] = _Pending(future, time.perf_counter())
        topic = self.topics.agent_tasks(agent) if agent else self.task_topic
        self._mqtt.publish(topic, task.encode(), qos=1)
        return future

    def submit(self, kind: str, args: Mapping[str, Any] | None = None, *, timeout: float = 10.0,
               raise_on_error: bool = False, **options: Any) -> Result:
        """Submit and block until the reply; ``SubmitTimeout`` after ``timeout`` s.

        With ``raise_on_error`` an error reply raises :class:`TaskFailed`."""
        future = self.send(kind, args, **options)
        return self._wait(future, timeout, raise_on_error)

    async def submit_async(self, kind: str, args: Mapping[str, Any] | None = None, *,
                           timeout: float = 10.0, raise_on_error: bool = False,
                           **options: Any) -> Result:
        future = self.send(kind, args, **options)
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except asyncio.TimeoutError:
            self._forget(future)
            raise self._timed_out(timeout) from None
        return self._checked(result, raise_on_error)

    def _wait(self, future: Future[Result], timeout: float, raise_on_error: bool) -> Result:
        try:
            result = future.result(timeout)
        except TimeoutError:
            self._forget(future)
            raise self._timed_out(timeout) from None
        return self._checked(result, raise_on_error)

    def _timed_out(self, timeout: float) -> SubmitTimeout:
        return SubmitTimeout(f"no reply within {timeout:g} s; is an agent running "
                             f"(fogmesh agent) on root {self.topics.root!r}?")

    @staticmethod
    def _checked(result: Result, raise_on_error: bool) -> Result:
        if raise_on_error and not result.ok:
            raise TaskFailed(result.reply)
        return result

    def _forget(self, future: Future[Result]) -> None:
        with self._lock:
            for key, p in list(self._pending.items()):
                if p.future is future:
                    del self._pending[key]
                    self._remember(key, "timed_out")

    # -- replies (paho thread) ---------------------------------------------------
    def _on_message(self, message: Message) -> None:
        try:
            reply = Reply.decode(message.payload)
        except InvalidMessage:
            return
        if reply.id is None:
            return
        now = time.perf_counter()
        with self._lock:
            pending = self._pending.pop(reply.id, None)
            if pending is None:
                state = self._answered.get(reply.id)
                if state == "timed_out":
                    self.late += 1
                    self._remember(reply.id, "answered")
                elif state == "answered":
                    self.duplicates += 1
                    self.duplicate_replies.append(reply)
                return
            self._remember(reply.id, "answered")
        if not pending.future.done():
            pending.future.set_result(Result(reply, 1000 * (now - pending.sent_at)))

    def _remember(self, task_id: str, state: str) -> None:
        self._answered[task_id] = state
        self._answered.move_to_end(task_id)
        while len(self._answered) > 100_000:
            self._answered.popitem(last=False)


def submit(kind: str, args: Mapping[str, Any] | None = None, *, broker: str = DEFAULT_BROKER,
           root: str = DEFAULT_ROOT, timeout: float = 10.0, device: str | None = None,
           **options: Any) -> Result:
    """One-shot: connect, submit one task, wait for its reply, disconnect. With
    ``device``: on that device's own task topic (see ``FogClient(own_topic=True)``)."""
    with FogClient(broker, root=root, device=device, own_topic=device is not None) as client:
        return client.submit(kind, args, timeout=timeout, **options)


async def submit_async(kind: str, args: Mapping[str, Any] | None = None, *,
                       broker: str = DEFAULT_BROKER, root: str = DEFAULT_ROOT,
                       timeout: float = 10.0, **options: Any) -> Result:
    """One-shot, asyncio: the connection is made off the event loop."""
    client = FogClient(broker, root=root)
    await asyncio.to_thread(client.connect)
    try:
        return await client.submit_async(kind, args, timeout=timeout, **options)
    finally:
        await asyncio.to_thread(client.close)
