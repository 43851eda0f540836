"""The dashboard process: one MQTT connection in, one small HTTP server out.

The page never talks MQTT. The process subscribes with the login it was
started with (TLS, password, ACL: as every other command), and pushes each
tick to the browsers as server-sent events; an actuator button is a POST that
this process turns into a command. So credentials stay on the host, the page
works behind any broker ACL the login passes, and a browser needs nothing but
HTTP to localhost (or wherever ``--host`` binds).

Cross-site requests cannot drive a pin: the POST must carry
``Content-Type: application/json`` (a cross-origin page cannot send that
without a CORS preflight, which is never granted) and, when the browser sends
an ``Origin``, it must be this server's.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable

from fogmesh import codec
from fogmesh.dashboard.model import DashboardModel
from fogmesh.errors import ConnectError
from fogmesh.mqtt import BrokerUrl, MqttClient, topic_round_trip
from fogmesh.topics import Topics, is_safe_id

log = logging.getLogger("fogmesh.dashboard")

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/style.css": ("style.css", "text/css; charset=utf-8")}
OPS = ("on", "off", "toggle", "pulse")
MAX_PULSE_MS = 60_000
MAX_STREAMS = 32             # browsers watching at once; more are refused, not queued
STREAM_QUEUE = 30            # ticks a slow browser may lag before it is dropped (it reconnects)


def may_drive_actuators(url: BrokerUrl, topics: Topics, *, timeout: float = 3.0) -> tuple[bool, str]:
    """Actuator buttons need an operator: a login (so the broker is secured)
    that may both send a command to any actuator and read it back, which only
    the operator role of ``python -m fogmesh.broker.secure`` may. Asked of the broker
    with a command to an actuator nobody has, so no pin moves."""
    if url.username is None:
        return False, "no login: actuator buttons need an operator login on a secured broker"
    probe = topics.actuator_set(f"dashboard-check-{uuid.uuid4().hex[:8]}", "probe")
    if topic_round_trip(url, probe, payload=b'{"op": "noop"}', timeout=timeout):
        return True, f"operator login {url.username}"
    return False, f"login {url.username} may not drive every actuator (not an operator login)"


class Dashboard:
    """Owns the MQTT client, the model and the HTTP server; ``start``/``stop``."""

    def __init__(self, broker: BrokerUrl | str, *, root: str, host: str = "127.0.0.1", port: int = 8080,
                 tick_s: float = 1.0, window_s: float = 600.0, controls: bool | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = broker if isinstance(broker, BrokerUrl) else BrokerUrl.parse(broker)
        self.topics = Topics(root)
        self.model = DashboardModel(self.topics, tick_s=tick_s, window_s=window_s)
        self.clock = clock
        self._lock = threading.Lock()
        self._streams: list[queue.Queue[bytes | None]] = []
        self._stop = threading.Event()
        self._last: bytes = b"{}"
        self._forced_controls = controls
        self.controls = False
        self.controls_why = "not started"
        self.client = MqttClient(self.url, client_id=f"fogmesh-dashboard-{uuid.uuid4().hex[:8]}",
                                 on_message=self._on_message)
        self.http = ThreadingHTTPServer((host, port), self._handler_class())
        self.http.daemon_threads = True
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        host, port = self.http.server_address[:2]
        return f"http://{host}:{port}"

    # -- MQTT side ---------------------------------------------------------------------
    def _on_message(self, m: Any) -> None:
        with self._lock:
            self.model.on_message(m.topic, m.payload, self.clock())

    def start(self, *, timeout: float = 10.0) -> Dashboard:
        if self._forced_controls is False:
            self.controls, self.controls_why = False, "--read-only"
        else:
            self.controls, self.controls_why = may_drive_actuators(self.url, self.topics)
        try:
            self.client.start(timeout=timeout, fail_fast=True)
        except BaseException:
            self.http.server_close()
            raise
        for f in self.model.filters:
            self.client.subscribe(f)
        for target, name in ((self._tick_loop, "dashboard-tick"), (self.http.serve_forever, "dashboard-http")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("dashboard on %s for %s (actuator buttons: %s)", self.address, self.url,
                 "on" if self.controls else "off")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._threads:                        # shutdown() waits for serve_forever, which may never have run
            self.http.shutdown()
        with self._lock:
            for q in self._streams:
                q.put(None)
        self.http.server_close()
        self.client.stop()

    def _tick_loop(self) -> None:
        next_at = self.clock()
        while not self._stop.is_set():
            next_at += self.model.tick_s
            self._stop.wait(max(0.0, next_at - self.clock()))
            with self._lock:
                tick = self.model.tick(self.clock())
                tick["connected"] = self.client.wait_connected(0)
                self._last = codec.encode(tick)
                data = _event("tick", self._last)
                for q in list(self._streams):
                    try:
                        q.put_nowait(data)
                    except queue.Full:          # a stalled browser: drop it; its EventSource reconnects
                        self._streams.remove(q)
                        q.queue.clear()
                        q.put_nowait(None)

    def hello(self) -> dict[str, Any]:
        with self._lock:
            hello = self.model.hello()
        return {**hello, "broker": str(self.url), "root": self.topics.root,
                "controls": self.controls, "controls_why": self.controls_why}

    def actuate(self, device: str, actuator: str, body: Any) -> tuple[int, dict[str, Any]]:
        if not self.controls:
            return HTTPStatus.FORBIDDEN, {"error": f"actuator buttons are off: {self.controls_why}"}
        if not (is_safe_id(device) and is_safe_id(actuator)):
            return HTTPStatus.BAD_REQUEST, {"error": "device and actuator: letters, digits, '-' and '_'"}
        if not isinstance(body, dict) or body.get("op") not in OPS:
            return HTTPStatus.BAD_REQUEST, {"error": f"body: {{\"op\": one of {', '.join(OPS)}}}"}
        command: dict[str, Any] = {"op": body["op"], "id": f"dashboard-{uuid.uuid4().hex[:12]}"}
        if body["op"] == "pulse":
            ms = body.get("ms")
            if not isinstance(ms, int) or isinstance(ms, bool) or not 1 <= ms <= MAX_PULSE_MS:
                return HTTPStatus.BAD_REQUEST, {"error": f"pulse needs \"ms\": 1..{MAX_PULSE_MS}"}
            command["ms"] = ms
        topic = self.topics.actuator_set(device, actuator)
        try:
            self.client.publish(topic, codec.encode(command), qos=1)
        except ConnectError as exc:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"broker unreachable: {exc}"}
        log.info("dashboard: %s %s on %s", device, actuator, command["op"])
        return HTTPStatus.ACCEPTED, {"sent": topic, "command": command}

    def open_stream(self) -> queue.Queue[bytes | None] | None:
        q: queue.Queue[bytes | None] = queue.Queue(maxsize=STREAM_QUEUE)
        with self._lock:
            if len(self._streams) >= MAX_STREAMS:
                return None
            self._streams.append(q)
        return q

    def close_stream(self, q: queue.Queue[bytes | None]) -> None:
        with self._lock:
            if q in self._streams:
                self._streams.remove(q)

    def snapshot(self) -> bytes:
        with self._lock:
            return self._last

    # -- HTTP side ---------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        dashboard = self

        class Handler(_Handler):
            app = dashboard
        return Handler


def _event(name: str, data: bytes) -> bytes:
    """One server-sent event; ``data`` is JSON (one line: orjson writes no newlines)."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


class _Handler(BaseHTTPRequestHandler):
    app: Dashboard
    protocol_version = "HTTP/1.1"
    server_version = "fogmesh-dashboard"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("http %s " + fmt, self.client_address[0], *args)

    def _send(self, status: int, body: bytes, ctype: str, *, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; img-src 'self' data:; style-src 'self'; connect-src 'self'")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path in STATIC:
            name, ctype = STATIC[path]
            body = resources.files("fogmesh.dashboard").joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, body, ctype)
        elif path == "/events":
            self._stream()
        elif path == "/api/snapshot":
            self._send(HTTPStatus.OK, self.app.snapshot(), "application/json")
        elif path == "/api/hello":
            self._json(HTTPStatus.OK, self.app.hello())
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["api", "actuators"]:
            self._json(HTTPStatus.NOT_FOUND, {"error": "POST /api/actuators/{device}/{actuator}"})
            return
        origin = self.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != self.headers.get("Host"):
            self._json(HTTPStatus.FORBIDDEN, {"error": "cross-origin request refused"})
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send Content-Type: application/json"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > 4096:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body over 4 KiB"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "body is not JSON"})
            return
        status, answer = self.app.actuate(parts[2], parts[3], body)
        self._json(status, answer)

    def _stream(self) -> None:
        q = self.app.open_stream()
        if q is None:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"over {MAX_STREAMS} pages open"})
            return
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(b"retry: 1000\n" + _event("hello", codec.encode(self.app.hello())))
            self.wfile.flush()
            while True:
                try:
                    data = q.get(timeout=15)
                except queue.Empty:
                    data = b": keep-alive\n\n"
                if data is None:
                    return
                self.wfile.write(data)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return                                   # the page went away
        finally:
            self.app.close_stream(q)
