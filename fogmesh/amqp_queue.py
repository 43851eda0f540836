"""Tasks from a RabbitMQ quorum queue, over AMQP 0-9-1 (the one module that
imports ``pika``): the real :class:`fogmesh.task_queue.TaskQueue`.

Why: RabbitMQ's MQTT plugin has no shared subscriptions, but it routes every
MQTT publish through the ``amq.topic`` exchange (``fog/v1/tasks`` becomes the
routing key ``fog.v1.tasks``), where a quorum queue can be bound: replicated
over the cluster's nodes, one consumer gets each message, and a message a
consumer took but did not acknowledge goes back to the queue (``redelivered``)
when that consumer's connection closes. That is what shared subscriptions
give agents elsewhere, so devices stay plain MQTT and agents compete here.

One thread owns the connection (pika's is not thread-safe); ``settle``
calls from other threads are queued to it. Which node next and when, what
goes into a transaction and what a failed one means are
:mod:`fogmesh.queue_plan`'s (pure, and shared with the tests' in-memory
queue); pika's errors end here, as a lost connection or, at start, a
:class:`~fogmesh.errors.ConnectError` with the reason in words
(:func:`amqp_reason`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
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
from fogmesh.queue_plan import Commit, NodeCycle, Settle, Settles, consumer_move, no_node_reason, where
from fogmesh.task_queue import OnConnection, OnTask, QueuedTask, Settled, queue_name, routing_keys

log = logging.getLogger("fogmesh.amqp")

__all__ = ["QueuedTask", "Settled", "TaskQueue", "amqp_reason", "probe_queue", "queue_name", "routing_keys"]

#: What opening an AMQP connection raises: pika's errors, socket errors, and
#: the connection workflow's own (a handshake timeout is none of the others).
CONNECT_ERRORS = (pika.exceptions.AMQPError, OSError, AMQPConnectorException)


class TaskQueue:
    def __init__(self, urls: Sequence[str], *, root: str, on_task: OnTask,
                 on_connection: OnConnection | None = None, prefetch: int = 100,
                 retry_s: float = 0.5, connect_timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not urls:
            raise ValueError("TaskQueue needs at least one amqp:// URL")
        logging.getLogger("pika").setLevel(logging.WARNING)    # its INFO is a line per socket state
        self.urls = list(urls)
        self.root = root
        self.name = queue_name(root)
        self._on_task, self._on_connection = on_task, on_connection
        self.prefetch, self.retry_s, self.clock = prefetch, retry_s, clock
        # a node that takes TCP and never completes the handshake (one still starting) is
        # given up on after this, for the next one in the list (pika's own default: 15 s)
        self.connect_timeout_s = connect_timeout_s
        self._settles = Settles()
        self._taking = True
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.connection_no = 0
        self.url: str | None = None             # the node in use (host:port: the URL holds the password)
        self._first_error: str | None = None

    # -- other threads -------------------------------------------------------------------
    def start(self, *, timeout: float = 30.0) -> TaskQueue:
        self._thread = threading.Thread(target=self._run, name="amqp-tasks", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise ConnectError(no_node_reason(self.urls, timeout=timeout, first_error=self._first_error))
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
        if not (:meth:`fogmesh.queue_plan.Commit.outcomes`). RabbitMQ does not
        make a transaction atomic across queues: a node stopping mid-commit
        can take the answer and lose the ack (topics.md)."""
        self._settles.add(Settle.of(task, publishes, done))

    def taking(self, want: bool) -> None:
        """Consume from the queue or not (a degraded or draining agent stops)."""
        self._taking = want

    @property
    def connected(self) -> bool:
        return self._ready.is_set() and not self._stop.is_set()

    # -- the connection's thread ---------------------------------------------------------
    def _run(self) -> None:
        cycle = NodeCycle(len(self.urls), retry_s=self.retry_s)
        while not self._stop.is_set():
            index, at = cycle.next()
            if self._stop.wait(max(0.0, at - self.clock())):
                break
            url = self.urls[index]
            try:
                self._serve(url, cycle)
            except CONNECT_ERRORS as exc:         # a handshake timeout too: the thread goes on
                if self._first_error is None:
                    self._first_error = f"{where(url)}: {amqp_reason(exc, timeout=self.connect_timeout_s)}"
                if self._ready.is_set():
                    log.warning("AMQP task queue: lost %s (%s); trying the next node", where(url), amqp_reason(exc))
            except Exception as exc:              # a bug (a callback's, say): the connection goes, not the thread
                log.error("AMQP task queue: %s at %s; reconnecting", type(exc).__name__, where(url), exc_info=True)
            up = self._ready.is_set()
            self._ready.clear()
            if up and self._on_connection is not None and not self._stop.is_set():
                self._on_connection(False, self.connection_no)
            for done, ok in self._settles.lost():     # the broker gives back what the lost connection held
                done(ok)
            cycle.failed(self.clock())

    def _commit(self, ch: Any, commit: Commit) -> None:
        """One transaction: the live settles' answers and acks; then every ``done``."""
        committed = False
        try:
            for s in commit.live:
                for topic, payload in s.publishes:
                    ch.basic_publish("amq.topic", topic.replace("/", "."), payload,
                                     pika.BasicProperties(delivery_mode=2))
                ch.basic_ack(s.task.tag)
            if commit.live:
                ch.tx_commit()
            committed = True
        finally:
            for done, ok in commit.outcomes(committed):
                done(ok)

    def _serve(self, url: str, cycle: NodeCycle) -> None:
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

            consumer: str | None = None
            self.url = where(url)
            cycle.connected()
            self._ready.set()
            if self._on_connection is not None:
                self._on_connection(True, number)
            while not self._stop.is_set():
                move = consumer_move(want=self._taking, consuming=consumer is not None)
                if move == "consume":
                    consumer = ch.basic_consume(self.name, deliver)
                elif move == "cancel":
                    ch.basic_cancel(consumer)
                    consumer = None
                conn.process_data_events(time_limit=0.02)
                if self._settles:
                    self._commit(ch, self._settles.take(number))
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
