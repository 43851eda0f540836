"""Tasks from a RabbitMQ quorum queue, over AMQP 0-9-1 (the one module that
imports ``pika``).

Why: RabbitMQ's MQTT plugin has no shared subscriptions, but it routes every
MQTT publish through the ``amq.topic`` exchange (``fog/v1/tasks`` becomes the
routing key ``fog.v1.tasks``), where a quorum queue can be bound: replicated
over the cluster's nodes, one consumer gets each message, and a message a
consumer took but did not acknowledge goes back to the queue (``redelivered``)
when that consumer's connection closes. That is what shared subscriptions
give agents elsewhere, so devices stay plain MQTT and agents compete here.

One thread owns the connection (pika's is not thread-safe); ``settle``
calls from other threads are queued to it. It connects to the first URL
that answers, and to the next one when its node goes; a delivery tag belongs
to one connection, so an ack for a tag of a closed one is dropped (the broker
gave that message back already).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import (
    AMQPConnectionWorkflowFailed,
    AMQPConnectorException,
    AMQPConnectorPhaseErrorBase,
    AMQPConnectorStackTimeout,
)

from fogmesh.errors import ConnectError

log = logging.getLogger("fogmesh.amqp")

__all__ = ["QueuedTask", "Settled", "TaskQueue", "amqp_reason", "probe_queue", "queue_name", "routing_keys"]

#: What opening an AMQP connection raises: pika's errors, socket errors, and
#: the connection workflow's own (a handshake timeout is none of the others).
CONNECT_ERRORS = (pika.exceptions.AMQPError, OSError, AMQPConnectorException)


#: Told whether a settle was committed (True) or lost with its connection (False).
Settled = Callable[[bool], None]


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
                 retry_s: float = 0.5, connect_timeout_s: float = 5.0) -> None:
        if not urls:
            raise ValueError("TaskQueue needs at least one amqp:// URL")
        logging.getLogger("pika").setLevel(logging.WARNING)    # its INFO is a line per socket state
        self.urls = list(urls)
        self.root = root
        self.queue = queue_name(root)
        self._on_task, self._on_connection = on_task, on_connection
        self.prefetch, self.retry_s = prefetch, retry_s
        # a node that takes TCP and never completes the handshake (one still starting) is
        # given up on after this, for the next one in the list (pika's own default: 15 s)
        self.connect_timeout_s = connect_timeout_s
        # settles to commit: (connection, tag, publishes, done)
        self._todo: deque[tuple[int, int, Sequence[tuple[str, bytes]], Settled]] = deque()
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
            nodes = ", ".join(_where(u) for u in self.urls)        # not the URLs: they hold the password
            raise ConnectError(f"no AMQP node of {nodes} took the task queue within {timeout:g} s"
                               + (f" ({self._first_error})" if self._first_error else ""))
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def settle(self, task: QueuedTask, publishes: Sequence[tuple[str, bytes]], done: Settled) -> None:
        """Publish ``publishes`` (MQTT topic, payload: the task's answer, through
        ``amq.topic``, so MQTT subscribers get it) and acknowledge the task in
        one transaction: the broker takes both or neither, so an agent killed
        in between leaves the task in the queue and no answer out, and another
        agent answers it once. ``done(True)`` once committed, ``done(False)``
        if the connection went first (the task comes back, redelivered; so for
        a task taken on a connection since lost: its answer is not sent).
        RabbitMQ does not make a transaction atomic across queues: a node
        stopping mid-commit can take the answer and lose the ack (topics.md)."""
        self._todo.append((task.connection, task.tag, publishes, done))

    def taking(self, want: bool) -> None:
        """Consume from the queue or not (a degraded or draining agent stops)."""
        self._taking = want

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
            except CONNECT_ERRORS as exc:         # a handshake timeout too: the thread goes on
                if self._first_error is None:
                    self._first_error = f"{_where(url)}: {amqp_reason(exc, timeout=self.connect_timeout_s)}"
                if self._ready.is_set():
                    log.warning("AMQP task queue: lost %s (%s); trying the next node", _where(url),
                                amqp_reason(exc))
            if self._ready.is_set() and self._on_connection is not None and not self._stop.is_set():
                self._on_connection(False)
            self._ready.clear()
            while self._todo:            # the broker gives back what the lost connection held
                self._todo.popleft()[3](False)
            if not self._stop.is_set():
                time.sleep(self.retry_s if i % len(self.urls) == 0 else 0.05)   # between rounds of the nodes

    def _commit(self, ch: Any, number: int) -> None:
        """Everything queued so far, in one transaction; then the ``done`` calls."""
        batch = []
        while self._todo:
            batch.append(self._todo.popleft())
        try:
            for no, tag, publishes, _done in batch:
                if no != number:
                    # A tag of a closed connection: the broker gave that task back, and
                    # another agent (or this one, redelivered) answers it. Not this copy.
                    continue
                for topic, payload in publishes:
                    ch.basic_publish("amq.topic", topic.replace("/", "."), payload,
                                     pika.BasicProperties(delivery_mode=2))
                ch.basic_ack(tag)
            ch.tx_commit()
        except BaseException:
            for entry in batch:
                entry[3](False)
            raise
        for no, _tag, _publishes, done in batch:
            done(no == number)

    def _serve(self, url: str) -> None:
        params = pika.URLParameters(url)
        params.heartbeat = 10
        params.blocked_connection_timeout = 30
        params.socket_timeout = self.connect_timeout_s
        params.stack_timeout = self.connect_timeout_s
        conn = pika.BlockingConnection(params)
        try:
            ch = conn.channel()
            ch.tx_select()            # an answer and its task's ack: both or neither (settle)
            ch.basic_qos(prefetch_count=self.prefetch)
            _declare(ch, self.root)
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
                if self._todo:
                    self._commit(ch, number)
        finally:
            _close(conn)


def probe_queue(url: str, *, root: str, timeout: float = 5.0) -> tuple[int, int]:
    """(messages waiting, consumers) of the task queue at one node, declaring
    it as agents do; :class:`ConnectError` saying why not in words (for
    ``fogmesh doctor``: :func:`amqp_reason`; pika's own error log, tracebacks
    and all, is held back meanwhile: the reason says it)."""
    try:
        params = pika.URLParameters(url)
    except (ValueError, TypeError) as exc:
        raise ConnectError(f"not an AMQP URL ({exc}): write amqp://USER:PASS@HOST:5672/") from exc
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = timeout
    pika_log = logging.getLogger("pika")
    level = pika_log.level
    pika_log.setLevel(logging.CRITICAL + 1)
    try:
        try:
            conn = pika.BlockingConnection(params)
        except CONNECT_ERRORS as exc:
            raise ConnectError(amqp_reason(exc, timeout=timeout)) from exc
        try:
            ch = conn.channel()
            ok = _declare(ch, root)
            return int(ok.method.message_count), int(ok.method.consumer_count)
        except CONNECT_ERRORS as exc:
            raise ConnectError(f"the task queue: {amqp_reason(exc, timeout=timeout)}") from exc
        finally:
            _close(conn)
    finally:
        pika_log.setLevel(level)


def amqp_reason(exc: BaseException, *, timeout: float | None = None) -> str:
    """Why an AMQP connection or declare failed, in words: pika wraps the
    cause in layers (a connection error holding the workflow's failure
    holding the connector's holding the socket's), often with an empty
    message; this finds the cause and names it."""
    while True:
        inner: BaseException | None = None
        if isinstance(exc, AMQPConnectionWorkflowFailed) and exc.exceptions:
            inner = exc.exceptions[-1]
        elif isinstance(exc, AMQPConnectorPhaseErrorBase):
            inner = exc.exception
        elif type(exc) is pika.exceptions.AMQPConnectionError and exc.args \
                and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if inner is None:
            break
        exc = inner
    within = f" within {timeout:g} s" if timeout is not None else ""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens on that port (is the node running? is it the AMQP port, 5672?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    if isinstance(exc, (TimeoutError, socket.timeout, AMQPConnectorStackTimeout)):
        if isinstance(exc, AMQPConnectorStackTimeout) and "handshake" in str(exc):
            return (f"the port took the connection but no AMQP handshake came{within} "
                    "(a node still starting, overloaded, or not an AMQP port)")
        return f"no answer{within} (is the host up? does a firewall drop the port?)"
    if isinstance(exc, ssl.SSLError):
        return (f"TLS failed: {exc.reason or exc} (amqps:// needs the node's TLS port, usually 5671; "
                "amqp:// the plain one)")
    if isinstance(exc, ConnectionResetError):
        return "the node reset the connection"
    if isinstance(exc, OSError):
        return f"cannot connect: {exc.strerror or exc}"
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return f"login refused ({_broker_words(exc)}): check the user and password in the URL"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return f"virtual host refused ({_broker_words(exc)}): check the path of the URL (/ is the default vhost)"
    if isinstance(exc, pika.exceptions.IncompatibleProtocolError):
        return "not an AMQP 0-9-1 server: it closed the connection at the protocol header (the MQTT port?)"
    if isinstance(exc, (pika.exceptions.ConnectionClosedByBroker, pika.exceptions.ChannelClosedByBroker)):
        return f"the node refused: {exc.reply_code} {exc.reply_text}"
    if isinstance(exc, pika.exceptions.StreamLostError):
        return "the connection was lost mid-handshake"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _where(url: str) -> str:
    """``host:port`` of an AMQP URL, without its login (for logs and reasons)."""
    rest = url.split("://", 1)[-1].rsplit("@", 1)[-1]
    return rest.split("/", 1)[0]


def _broker_words(exc: BaseException) -> str:
    """The broker's own words inside pika's 'probable' errors: ``ACCESS_REFUSED - ...``."""
    text = " ".join(str(a) for a in exc.args)
    for code in ("ACCESS_REFUSED", "NOT_ALLOWED"):
        if code in text:
            return code + text.split(code, 1)[1].split("'", 1)[0].split(". For details", 1)[0]
    return text or type(exc).__name__


def _declare(ch: Any, root: str) -> Any:
    """The task queue of ``root``, as agents and doctor declare it: quorum,
    bound to ``amq.topic`` for the task topics. Returns the declare's answer."""
    ok = ch.queue_declare(queue_name(root), durable=True, arguments={"x-queue-type": "quorum"})
    for key in routing_keys(root):
        ch.queue_bind(queue_name(root), "amq.topic", routing_key=key)
    return ok


def _close(conn: Any) -> None:
    """Close an AMQP connection if it is still open (pika logs closing a closed one as an error)."""
    try:
        if conn.is_open:
            conn.close()
    except (pika.exceptions.AMQPError, OSError):
        pass
