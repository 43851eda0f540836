"""Tasks from a RabbitMQ quorum queue, over AMQP 0-9-1 (the one module that
imports ``pika``).

Why: RabbitMQ's MQTT plugin has no shared subscriptions, but it routes every
MQTT publish through the ``amq.topic`` exchange (``fog/v1/tasks`` becomes the
routing key ``fog.v1.tasks``), where a quorum queue can be bound: replicated
over the cluster's nodes, one consumer gets each message, and a message a
consumer took but did not acknowledge goes back to the queue (``redelivered``)
when that consumer's connection closes. That is what shared subscriptions
give agents elsewhere, so devices stay plain MQTT and agents compete here.

One thread owns the connection (pika's is not thread-safe); ``ack`` and
``nack`` from other threads are queued to it. It connects to the first URL
that answers, and to the next one when its node goes; a delivery tag belongs
to one connection, so an ack for a tag of a closed one is dropped (the broker
gave that message back already).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pika
import pika.exceptions

from fogmesh.errors import ConnectError

log = logging.getLogger("fogmesh.amqp")

__all__ = ["QueuedTask", "TaskQueue", "queue_name", "routing_keys"]


def routing_keys(root: str) -> tuple[str, str]:
    """The ``amq.topic`` keys of ``{root}/tasks`` and ``{root}/tasks/{device}``."""
    base = root.replace("/", ".") + ".tasks"
    return base, base + ".*"


def queue_name(root: str) -> str:
    return f"fogmesh.{root.replace('/', '.')}.tasks"


@dataclass(frozen=True, slots=True)
class QueuedTask:
    """One message from the queue: its MQTT topic, payload, whether the broker
    gave it back after another consumer took it, and what acknowledges it."""

    topic: str
    payload: bytes
    redelivered: bool
    tag: int
    connection: int                   # which connection's delivery tag ``tag`` is


class TaskQueue:
    def __init__(self, urls: Sequence[str], *, root: str, on_task: Callable[[QueuedTask], None],
                 on_connection: Callable[[bool], None] | None = None, prefetch: int = 100,
                 retry_s: float = 0.5) -> None:
        if not urls:
            raise ValueError("TaskQueue needs at least one amqp:// URL")
        self.urls = list(urls)
        self.root = root
        self.queue = queue_name(root)
        self.keys = routing_keys(root)
        self._on_task, self._on_connection = on_task, on_connection
        self.prefetch, self.retry_s = prefetch, retry_s
        self._todo: deque[tuple[str, int, int]] = deque()    # ("ack" | "nack", connection, tag)
        # acks waiting on a condition: () -> True (ack), False (give back), None (not yet)
        self._waiting: list[tuple[QueuedTask, Callable[[], bool | None]]] = []
        self._lock = threading.Lock()
        self._taking = True
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.connection_no = 0
        self.url: str | None = None             # the node in use
        self._first_error: str | None = None

    # -- other threads -------------------------------------------------------------------
    def start(self, *, timeout: float = 30.0) -> TaskQueue:
        self._thread = threading.Thread(target=self._run, name="amqp-tasks", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise ConnectError(f"no AMQP node of {', '.join(self.urls)} took the task queue within {timeout:g} s"
                               + (f" ({self._first_error})" if self._first_error else ""))
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def ack(self, task: QueuedTask) -> None:
        self._todo.append(("ack", task.connection, task.tag))

    def nack(self, task: QueuedTask) -> None:
        """Give it back to the queue (another consumer, or this one, gets it again, redelivered)."""
        self._todo.append(("nack", task.connection, task.tag))

    def ack_after(self, task: QueuedTask, outcome: Callable[[], bool | None]) -> None:
        """Acknowledge once ``outcome()`` says True (its answer is confirmed),
        give it back if False (the answer was lost with its connection)."""
        with self._lock:
            self._waiting.append((task, outcome))

    def taking(self, want: bool) -> None:
        """Consume from the queue or not (a degraded or draining agent stops)."""
        self._taking = want

    def _settle(self) -> None:
        with self._lock:
            still = []
            for task, outcome in self._waiting:
                verdict = outcome()
                if verdict is None:
                    still.append((task, outcome))
                else:
                    self._todo.append(("ack" if verdict else "nack", task.connection, task.tag))
            self._waiting = still

    @property
    def connected(self) -> bool:
        return self._ready.is_set() and not self._stop.is_set()

    # -- the connection's thread ---------------------------------------------------------
    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            url = self.urls[i % len(self.urls)]
            i += 1
            try:
                self._serve(url)
            except (pika.exceptions.AMQPError, OSError) as exc:
                if self._first_error is None:
                    self._first_error = f"{type(exc).__name__}: {exc}"
                if self._ready.is_set():
                    log.warning("AMQP task queue: lost %s (%s); trying the next node", url, type(exc).__name__)
            if self._ready.is_set() and self._on_connection is not None:
                self._on_connection(False)
            self._ready.clear()
            self._todo.clear()           # the broker gives back what the lost connection held
            with self._lock:
                self._waiting.clear()
            if not self._stop.is_set():
                time.sleep(self.retry_s if i % len(self.urls) == 0 else 0.05)   # between rounds of the nodes

    def _serve(self, url: str) -> None:
        params = pika.URLParameters(url)
        params.heartbeat = 10
        params.blocked_connection_timeout = 30
        params.socket_timeout = 5
        conn = pika.BlockingConnection(params)
        try:
            ch = conn.channel()
            ch.basic_qos(prefetch_count=self.prefetch)
            ch.queue_declare(self.queue, durable=True, arguments={"x-queue-type": "quorum"})
            for key in self.keys:
                ch.queue_bind(self.queue, "amq.topic", routing_key=key)
            self.connection_no += 1
            number = self.connection_no

            def deliver(_ch: Any, method: Any, _props: Any, body: bytes) -> None:
                topic = str(method.routing_key).replace(".", "/")
                self._on_task(QueuedTask(topic, body, bool(method.redelivered), int(method.delivery_tag), number))

            consumer: str | None = ch.basic_consume(self.queue, deliver) if self._taking else None
            self.url = url
            self._ready.set()
            if self._on_connection is not None:
                self._on_connection(True)
            while not self._stop.is_set():
                conn.process_data_events(time_limit=0.02)
                if self._taking != (consumer is not None):
                    if consumer is None:
                        consumer = ch.basic_consume(self.queue, deliver)
                    else:
                        ch.basic_cancel(consumer)
                        consumer = None
                if self._waiting:
                    self._settle()
                while self._todo:
                    op, no, tag = self._todo.popleft()
                    if no != number:
                        continue              # a tag of a closed connection: already given back
                    if op == "ack":
                        ch.basic_ack(tag)
                    else:
                        ch.basic_nack(tag, requeue=True)
        finally:
            try:
                conn.close()
            except (pika.exceptions.AMQPError, OSError):
                pass
