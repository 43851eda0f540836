"""The raw paho-MQTT baseline: request/reply with nothing of fogmesh in it.

Deliberately bare paho (the one place besides fogmesh.mqtt that imports it),
with the same fast settings fogmesh uses (TCP_NODELAY, QoS 1), so the ratio
measures fogmesh's own overhead. Run as a module it is the responder process.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import uuid
from typing import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def _nodelay(_c, _u, sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _client(host: str, port: int) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:8]}",
                    protocol=paho.MQTTv311)
    c.on_socket_open = _nodelay
    c.max_inflight_messages_set(1000)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(host, port, keepalive=30)
    c.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"raw client cannot connect to {host}:{port}")
    return c


def responder(host: str, port: int, request_topic: str) -> None:
    """Echo every request payload to ``<request_topic>/reply``."""
    c = _client(host, port)
    reply_topic = request_topic + "/reply"
    c.on_message = lambda cl, _u, m: cl.publish(reply_topic, m.payload, qos=1)
    c.subscribe(request_topic, qos=1)
    print("ready", flush=True)
    try:
        sys.stdin.read()   # until the parent closes our stdin
    finally:
        c.disconnect()
        c.loop_stop()


class Requester:
    def __init__(self, host: str, port: int, request_topic: str) -> None:
        self.request_topic = request_topic
        self.c = _client(host, port)
        self._pending: dict[bytes, tuple[float, threading.Event, Callable[[], None] | None]] = {}
        self._latencies: dict[bytes, float] = {}
        self._lock = threading.Lock()
        self._done = threading.Semaphore(0)
        self.c.on_message = self._on_message
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.subscribe(request_topic + "/reply", qos=1)
        subscribed.wait(10)

    def _on_message(self, _c, _u, m) -> None:
        key = m.payload[:16]
        now = time.perf_counter()
        with self._lock:
            entry = self._pending.pop(key, None)
        if entry:
            self._latencies[key] = 1000 * (now - entry[0])
            entry[1].set()
            self._done.release()
            if entry[2] is not None:
                self._latencies.pop(key, None)
                entry[2]()

    def request(self, payload_size: int = 100, timeout: float = 10.0) -> float:
        key = uuid.uuid4().hex[:16].encode()
        ev = threading.Event()
        with self._lock:
            self._pending[key] = (time.perf_counter(), ev, None)
        self.c.publish(self.request_topic, key + b"x" * (payload_size - 16), qos=1)
        if not ev.wait(timeout):
            raise TimeoutError("raw MQTT responder did not answer")
        return self._latencies.pop(key)

    def pipelined(self, total: int, inflight: int, payload_size: int = 100) -> float:
        """Tasks/s with ``inflight`` requests outstanding at all times."""
        start = time.perf_counter()
        sent = 0
        for _ in range(min(inflight, total)):
            self._send_async(payload_size)
            sent += 1
        for _ in range(total):
            if not self._done.acquire(timeout=30):
                raise TimeoutError("raw MQTT pipelined run stalled")
            if sent < total:
                self._send_async(payload_size)
                sent += 1
        return total / (time.perf_counter() - start)

    def _send_async(self, payload_size: int) -> None:
        key = uuid.uuid4().hex[:16].encode()
        with self._lock:
            self._pending[key] = (time.perf_counter(), threading.Event(), None)
        self.c.publish(self.request_topic, key + b"x" * (payload_size - 16), qos=1)

    def send(self, done: Callable[[], None], payload_size: int = 100) -> None:
        """One request; ``done()`` when its reply came (for a shared pipelined driver)."""
        key = uuid.uuid4().hex[:16].encode()
        with self._lock:
            self._pending[key] = (time.perf_counter(), threading.Event(), done)
        self.c.publish(self.request_topic, key + b"x" * (payload_size - 16), qos=1)

    def drain_latencies(self) -> None:
        self._latencies.clear()
        while self._done.acquire(blocking=False):
            pass

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


if __name__ == "__main__":
    responder(sys.argv[1], int(sys.argv[2]), sys.argv[3])
