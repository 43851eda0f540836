"""The device-side client: submit a task, wait for its one reply.

What a phone app, a gateway script or a test uses instead of hand-writing
MQTT. One connection and one reply topic per client; many tasks in flight at
once (``send`` returns a future); sync (``submit``) and asyncio
(``submit_async``) front ends over the same machinery. Sensor firmware does not
need this module at all: one ``mosquitto_pub`` is a valid submission.

End to end, not only to the broker: a task whose reply has not come within
``retry_s`` is published again with the same id (``attempt`` 2, 3, ...) until
it is answered or its caller stops waiting. A broker can lose a task it
acknowledged (a restart before the agents subscribed again, a crash before it
saved), and a reply can be lost the same way; the agents' idempotency keys
make the re-send safe: a held task is answered once, an answered one is
answered again with the same bytes (handed to the caller once).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, replace
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
class _Answered:
    state: str                   # "answered" | "timed_out"
    extra: int = 0               # further identical replies owed to re-sends
    payload: bytes = b""         # the first reply, to tell a re-send's answer from a second run
    sends: int = 1               # times the task was published


@dataclass
class _Pending:
    future: Future[Result]
    sent_at: float
    topic: str
    task: Task
    last_sent: float


class FogClient:
    """A connected submitter. Use as a context manager or call ``connect``/``close``."""

    def __init__(self, broker: BrokerUrl | str = DEFAULT_BROKER, *, root: str = DEFAULT_ROOT,
                 device: str | None = None, reply_to: str | None = None,
                 own_topic: bool = False, retry_s: float | None = 5.0) -> None:
        """``own_topic``: submit on ``tasks/{device}``, the topic a secured broker
        lets only this device's login publish to (replies stay on ``replies/{device}``).
        ``retry_s``: send a task again (same id) when no reply came within this
        many seconds while connected (None: never)."""
        self.topics = Topics(root)
        self.device = device
        if own_topic and not device:
            raise ValueError("own_topic needs a device id")
        self.task_topic = self.topics.device_tasks(device) if own_topic and device else self.topics.tasks
        self.client_id = f"fogmesh-dev-{uuid.uuid4().hex[:12]}"
        self.reply_to = reply_to or self.topics.replies(device or self.client_id)
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        # Replies for ids already answered are never handed to the caller. A task
        # sent n times (``resent``) may be answered n times, each with the same
        # bytes (``answered_again``); anything beyond that, or a different
        # answer, is a duplicate (``duplicates``): a task run twice.
        self.duplicates = 0
        self.duplicate_replies: deque[Reply] = deque(maxlen=1000)   # the last ones, for diagnosis
        self.answered_again = 0
        self.late = 0         # replies that came after their submit timed out
        # id -> what is known of it after its first reply (or its timeout), bounded:
        # enough to tell duplicates from late replies and from answers to a re-send
        self._answered: OrderedDict[str, _Answered] = OrderedDict()
        if retry_s is not None and retry_s <= 0:
            raise ValueError("retry_s must be positive (or None: never send a task again)")
        self.retry_s = retry_s
        self.resent = 0       # tasks published again because their reply was late
        self._closed = threading.Event()
        self._retrier: threading.Thread | None = None
        self._mqtt = MqttClient(broker, client_id=self.client_id, on_message=self._on_message,
                                on_connection=self._on_connection)

    def connect(self, *, timeout: float = 10.0) -> FogClient:
        self._mqtt.start(timeout=timeout, fail_fast=True)
        self._mqtt.subscribe(self.reply_to, 1, timeout=timeout)
        if self.retry_s is not None:
            self._retrier = threading.Thread(target=self._retry_loop, name=f"{self.client_id}-retry",
                                             daemon=True)
            self._retrier.start()
        return self

    def close(self) -> None:
        self._closed.set()
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
        topic = self.topics.agent_tasks(agent) if agent else self.task_topic
        payload = task.encode()
        now = time.perf_counter()
        with self._lock:
            if task.id in self._pending:
                raise ValueError(f"task id {task.id!r} is already in flight")
            self._pending[task.id] = _Pending(future, now, topic, task, now)
        self._mqtt.publish(topic, payload, qos=1)
        return future

    def attempts(self, task_id: str) -> int:
        """How many times ``task_id`` was published (1, or more after re-sends)."""
        with self._lock:
            p = self._pending.get(task_id)
            if p is not None:
                return p.task.attempt or 1
            known = self._answered.get(task_id)
            return 1 + (known.sends - 1 if known is not None else 0)

    # -- sending again ---------------------------------------------------------
    def _on_connection(self, up: bool) -> None:
        """Back after a drop: paho sends what the broker had not acknowledged
        itself, so every task's reply gets a full ``retry_s`` from now."""
        if up:
            now = time.perf_counter()
            with self._lock:
                for p in self._pending.values():
                    p.last_sent = now

    def _retry_after(self, p: _Pending) -> float:
        """``retry_s``, doubling with each re-send up to a minute: a long task
        is asked about a few times, not every few seconds."""
        assert self.retry_s is not None
        return min(self.retry_s * 2 ** ((p.task.attempt or 1) - 1), max(60.0, self.retry_s))

    def _retry_loop(self) -> None:
        assert self.retry_s is not None
        while not self._closed.wait(min(0.25, self.retry_s / 4)):
            if not self._mqtt.connected.is_set():
                continue
            now = time.perf_counter()
            with self._lock:
                due = [p for p in self._pending.values()
                       if now - p.last_sent >= self._retry_after(p) and not p.future.done()]
                for p in due:
                    p.task = replace(p.task, attempt=(p.task.attempt or 1) + 1)
                    p.last_sent = now
            for p in due:
                self.resent += 1
                self._mqtt.publish(p.topic, p.task.encode(), qos=1)

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
                    self._remember(key, _Answered("timed_out", (p.task.attempt or 1) - 1,
                                                  sends=p.task.attempt or 1))

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
                known = self._answered.get(reply.id)
                if known is None:
                    return
                if known.state == "timed_out":
                    self.late += 1
                    self._remember(reply.id, _Answered("answered", known.extra, message.payload, known.sends))
                elif known.extra > 0 and message.payload == known.payload:
                    known.extra -= 1          # the answer to a re-send: the same bytes again
                    self.answered_again += 1
                else:
                    self.duplicates += 1
                    self.duplicate_replies.append(reply)
                return
            self._remember(reply.id, _Answered("answered", (pending.task.attempt or 1) - 1, message.payload,
                                               pending.task.attempt or 1))
        if not pending.future.done():
            pending.future.set_result(Result(reply, 1000 * (now - pending.sent_at)))

    def _remember(self, task_id: str, state: _Answered) -> None:
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
