"""A RabbitMQ quorum queue in memory, for the agent's ``amqp`` dispatch
without RabbitMQ (the tests' fake of the queue engine; the MQTT side of the
agents stays on a real broker).

:class:`FakeQuorumQueue` is the broker side: one queue over named nodes; it
hands each message to one consumer at a time (round robin among those with
room in their prefetch window); what a consumer took and did not acknowledge
goes back to the front of the queue, ``redelivered``, when its connection
closes; a transaction publishes its answers and acknowledges its tasks
together or not at all. Faults are scripted: a node stopped (its
connections closed, no new ones until it starts), one connection dropped,
the next commits failing (nothing published, nothing acknowledged, and the
connection closed, as a channel error closes pika's).

:class:`FakeTaskQueue` is the client side, made by :meth:`FakeQuorumQueue.factory`
(``AgentOptions(amqp=["fake://n1", ...], amqp_queue=fake.factory)``): the
:class:`fogmesh.task_queue.TaskQueue` the agent uses, built like the pika one
(one thread owns the connection; settles queued to it) on the same pure
decisions (:mod:`fogmesh.queue_plan`), so the agent's tests run them too.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from fogmesh.errors import ConnectError
from fogmesh.queue_plan import NodeCycle, Settle, Settles, consumer_move, no_node_reason, where
from fogmesh.task_queue import OnConnection, OnTask, QueuedTask, Settled, queue_name


class NodeDown(ConnectionRefusedError):
    """The node does not take connections (stopped)."""


class CommitFailed(ConnectionError):
    """The transaction was not committed; the connection is closed."""


@dataclass
class _Message:
    topic: str
    payload: bytes
    redelivered: bool = False


@dataclass
class _Connection:
    id: int
    node: str
    client: FakeTaskQueue
    number: int                               # the client's number for it (QueuedTask.connection)
    prefetch: int
    consuming: bool = False
    closed: bool = False
    tags: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    unacked: dict[int, _Message] = field(default_factory=dict)


class FakeQuorumQueue:
    def __init__(self, nodes: Sequence[str] = ("n1", "n2", "n3"), *,
                 out: Callable[[str, bytes], None] | None = None) -> None:
        self.lock = threading.RLock()
        self.up = {n: True for n in nodes}
        self.ready: deque[_Message] = deque()
        self.connections: dict[int, _Connection] = {}
        self._ids = itertools.count(1)
        self._turn = 0                        # round robin among the consumers
        self._failing_commits = 0
        self._out = out                       # where committed answers go (amq.topic to MQTT)
        # each committed transaction: (the tasks it acknowledged, the answers it published)
        self.transactions: list[tuple[list[bytes], list[tuple[str, bytes]]]] = []
        self.failed_commits = 0
        self.errors: list[str] = []           # what the broker would have refused (a tag acked twice...)

    # -- what a test does ------------------------------------------------------------------
    def factory(self, urls: Sequence[str], *, root: str, on_task: OnTask, on_connection: OnConnection,
                prefetch: int) -> FakeTaskQueue:
        """A :class:`fogmesh.task_queue.QueueFactory`: ``fake://NODE`` URLs."""
        return FakeTaskQueue(self, urls, root=root, on_task=on_task, on_connection=on_connection,
                             prefetch=prefetch)

    def publish(self, topic: str, payload: bytes) -> None:
        """A device's task, routed by ``amq.topic`` into the queue."""
        with self.lock:
            self.ready.append(_Message(topic, payload))
            self._dispatch()

    def stop_node(self, node: str) -> None:
        with self.lock:
            self.up[node] = False
            for conn in [c for c in self.connections.values() if c.node == node]:
                self._close(conn)

    def start_node(self, node: str) -> None:
        with self.lock:
            self.up[node] = True

    def drop(self, client: FakeTaskQueue) -> None:
        """Close ``client``'s connection (a network cut): it reconnects by its failover list."""
        with self.lock:
            for conn in [c for c in self.connections.values() if c.client is client]:
                self._close(conn)

    def fail_commits(self, n: int = 1) -> None:
        """The next ``n`` transactions fail: nothing of them is published or acknowledged."""
        with self.lock:
            self._failing_commits += n

    def counts(self) -> tuple[int, int]:
        """(messages ready, messages taken and not acknowledged)."""
        with self.lock:
            return len(self.ready), sum(len(c.unacked) for c in self.connections.values())

    # -- what a client does ------------------------------------------------------------------
    def connect(self, client: FakeTaskQueue, node: str, *, number: int, prefetch: int) -> _Connection:
        with self.lock:
            if not self.up.get(node, False):
                raise NodeDown(f"connection refused: node {node} is down")
            conn = _Connection(next(self._ids), node, client, number, prefetch)
            self.connections[conn.id] = conn
            return conn

    def consume(self, conn: _Connection, want: bool) -> None:
        with self.lock:
            if not conn.closed:
                conn.consuming = want
                self._dispatch()

    def commit(self, conn: _Connection, settles: Sequence[Settle]) -> None:
        """Publish the answers and acknowledge the tasks of ``settles``: all or nothing."""
        with self.lock:
            if conn.closed:
                raise CommitFailed("the connection is closed")
            unknown = [s.task.tag for s in settles if s.task.tag not in conn.unacked]
            if unknown:                       # PRECONDITION_FAILED: the channel (and here the connection) closes
                self.errors.append(f"unknown delivery tag(s) {unknown} on connection {conn.number}")
            if unknown or self._failing_commits:
                if not unknown:
                    self._failing_commits -= 1
                self.failed_commits += 1
                self._close(conn)
                raise CommitFailed("the transaction was not committed")
            acked = [conn.unacked.pop(s.task.tag).payload for s in settles]
            out = [p for s in settles for p in s.publishes]
            self.transactions.append((acked, out))
            self._dispatch()
        if self._out is not None:
            for topic, payload in out:
                self._out(topic, payload)

    def close(self, conn: _Connection) -> None:
        with self.lock:
            self._close(conn)

    # -- inside (the lock held) ----------------------------------------------------------------
    def _close(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        del self.connections[conn.id]
        for tag in sorted(conn.unacked, reverse=True):     # back to the front, in their order
            message = conn.unacked[tag]
            message.redelivered = True
            self.ready.appendleft(message)
        conn.unacked.clear()
        conn.client.wake()
        self._dispatch()

    def _dispatch(self) -> None:
        while self.ready:
            takers = [c for c in self.connections.values() if c.consuming and len(c.unacked) < c.prefetch]
            if not takers:
                return
            conn = takers[self._turn % len(takers)]
            self._turn += 1
            message = self.ready.popleft()
            tag = next(conn.tags)
            conn.unacked[tag] = message
            conn.client.deliver(QueuedTask(message.topic, message.payload, message.redelivered, tag, conn.number))


class FakeTaskQueue:
    """One consumer's client, as :class:`fogmesh.amqp_queue.TaskQueue` works:
    a thread owns the connection, reconnects by the failover list
    (:class:`~fogmesh.queue_plan.NodeCycle`), commits the settles queued to it."""

    def __init__(self, broker: FakeQuorumQueue, urls: Sequence[str], *, root: str, on_task: OnTask,
                 on_connection: OnConnection, prefetch: int, retry_s: float = 0.1) -> None:
        self.broker, self.urls, self.prefetch, self.retry_s = broker, list(urls), prefetch, retry_s
        self.name = queue_name(root)
        self.url: str | None = None
        self._on_task, self._on_connection = on_task, on_connection
        self._settles = Settles()
        self._taking = True
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.connection_no = 0
        self._first_error: str | None = None

    # -- the TaskQueue interface -------------------------------------------------------------
    def start(self, *, timeout: float) -> FakeTaskQueue:
        self._thread = threading.Thread(target=self._run, name="fake-amqp-tasks", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise ConnectError(no_node_reason(self.urls, timeout=timeout, first_error=self._first_error))
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def taking(self, want: bool) -> None:
        self._taking = want
        self._wake.set()

    def settle(self, task: QueuedTask, publishes: Sequence[tuple[str, bytes]], done: Settled) -> None:
        self._settles.add(Settle.of(task, publishes, done))
        self._wake.set()

    # -- the broker's calls ---------------------------------------------------------------------
    def deliver(self, task: QueuedTask) -> None:
        self._on_task(task)

    def wake(self) -> None:
        self._wake.set()

    # -- the connection's thread ----------------------------------------------------------------
    def _run(self) -> None:
        cycle = NodeCycle(len(self.urls), retry_s=self.retry_s)
        while not self._stop.is_set():
            index, at = cycle.next()
            if self._stop.wait(max(0.0, at - time.monotonic())):
                break
            url = self.urls[index]
            try:
                conn = self.broker.connect(self, url.split("://", 1)[-1], number=self.connection_no + 1,
                                           prefetch=self.prefetch)
            except NodeDown as exc:
                self._first_error = self._first_error or f"{where(url)}: {exc}"
                cycle.failed(time.monotonic())
                continue
            self.connection_no = conn.number
            self.url = where(url)
            cycle.connected()
            self._ready.set()
            self._on_connection(True, conn.number)
            try:
                self._serve(conn)
            except CommitFailed:
                pass
            self.broker.close(conn)           # stopping: what it held goes back
            self._ready.clear()
            if not self._stop.is_set():
                self._on_connection(False, conn.number)
            for done, ok in self._settles.lost():
                done(ok)
            cycle.failed(time.monotonic())

    def _serve(self, conn: _Connection) -> None:
        consuming = False
        while not self._stop.is_set() and not conn.closed:
            self._wake.clear()
            move = consumer_move(want=self._taking, consuming=consuming)
            if move is not None:
                consuming = move == "consume"
                self.broker.consume(conn, consuming)
            if self._settles:
                commit = self._settles.take(conn.number)
                committed = False
                try:
                    if commit.live:
                        self.broker.commit(conn, commit.live)
                    committed = True
                finally:
                    for done, ok in commit.outcomes(committed):
                        done(ok)
            self._wake.wait(0.05)             # the next settle, a change of mind, or the connection's close
