"""The dashboard process: one MQTT connection in, one small HTTP server out.

The page never talks MQTT. The process subscribes with the broker login it
was started with (TLS, password, ACL: as every other command), and pushes
each tick to the browsers as server-sent events; an actuator button is a
POST that this process turns into a command. So the broker credentials stay
on the host, and a browser needs nothing but HTTP(S) to this process.

Who may use the page is this process's business too (:mod:`.auth`): with a
users file, everyone logs in, and only operators press buttons; without
one, it serves this machine only (loopback), and how it may be exposed is
:mod:`.exposure`'s. Requests for a name it does not serve are refused first
(:mod:`.guard`: DNS rebinding). Logins are limited before their password is
hashed (:mod:`.attempts`), open pages per user (:mod:`.streams`), and the
users file is read again as soon as it changes (:mod:`.users_watch`): a
removed user's sessions end at once. Every press is
published on ``{root}/audit/dashboard`` with who, when, what and what came
of it (:mod:`.presses`), and shown on the page.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import ssl
import threading
import time
import uuid
from http import HTTPStatus
from typing import Any, Callable, Iterable

from fogmesh import codec
from fogmesh.dashboard.attempts import Attempt, LoginGate, Refused
from fogmesh.dashboard.auth import User, Users, UsersFileError
from fogmesh.dashboard.exposure import buttons_refused, refusal
from fogmesh.dashboard.guard import ANY, served_names
from fogmesh.dashboard.http_server import DashboardHTTPServer
from fogmesh.dashboard.lines import Lines
from fogmesh.dashboard.model import DashboardModel
from fogmesh.dashboard.presses import Presses
from fogmesh.dashboard.sessions import Session, Sessions
from fogmesh.dashboard.streams import StreamQuota
from fogmesh.dashboard.users_watch import FileStamp, UsersWatch, changes
from fogmesh.dashboard.web import event, handler_class
from fogmesh.errors import ConnectError, FogmeshError
from fogmesh.mqtt import BrokerUrl, Message, MqttClient, topic_round_trip
from fogmesh.topics import Topics, is_safe_id

log = logging.getLogger("fogmesh.dashboard")

OPS = ("on", "off", "toggle", "pulse")
MAX_PULSE_MS = 60_000
STREAM_QUEUE = 30            # ticks a slow browser may lag before it is dropped (it reconnects)
AUDIT_SOURCE = "dashboard"
NO_LOGIN = ("local", "operator")     # who and what a press is without logins (loopback only)


class DashboardRefused(FogmeshError):
    """The dashboard will not start as asked (a LAN without logins, a bad certificate)."""


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


def machine_addresses() -> tuple[list[str], str]:
    """This machine's addresses and host name, for a dashboard bound to every
    address: what its host name resolves to, and the address of the route
    out (a UDP socket "connected" to a documentation address picks it and
    sends nothing). Others are named with ``--server-name``."""
    hostname = socket.gethostname()
    addresses: set[str] = set()
    try:
        addresses.update(str(info[4][0]) for info in socket.getaddrinfo(hostname, None))
    except OSError:
        pass
    for family, probe in ((socket.AF_INET, ("192.0.2.1", 9)), (socket.AF_INET6, ("2001:db8::1", 9))):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect(probe)
                addresses.add(str(s.getsockname()[0]))
        except OSError:
            pass
    return sorted(addresses), hostname


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise DashboardRefused(f"cannot use the certificate {cert} with the key {key}: {exc}; "
                               "python -m fogmesh.broker.secure --out DIR --dashboard HOST issues a pair") from exc
    return ctx


class Dashboard:
    """Owns the MQTT client, the model and the HTTP server; ``start``/``stop``."""

    def __init__(self, broker: BrokerUrl | str, *, root: str, host: str = "127.0.0.1", port: int = 8080,
                 tick_s: float = 1.0, window_s: float = 600.0, controls: bool | None = None,
                 users: Users | None = None, server_names: Iterable[str] = (),
                 tls_cert: str | None = None, tls_key: str | None = None, insecure_http_logins: bool = False,
                 trusted_proxies: Iterable[str] = (),
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.users = users or Users({})
        self.login_required = bool(self.users)
        why_not = refusal(host=host, logins=self.login_required, tls=tls_cert is not None,
                          insecure_http_logins=insecure_http_logins)
        if why_not:
            raise DashboardRefused(why_not)
        self.url = broker if isinstance(broker, BrokerUrl) else BrokerUrl.parse(broker)
        self.topics = Topics(root)
        self.model = DashboardModel(self.topics, tick_s=tick_s, window_s=window_s)
        self.clock = clock
        self.monotonic = monotonic
        self.sessions = Sessions(clock=monotonic)
        self.gate = LoginGate(clock=monotonic)
        self.quota = StreamQuota()
        self.presses = Presses()
        self.lines = Lines(log, clock=monotonic)  # warnings a client can repeat: rate-limited per source
        self._users_lock = threading.Lock()       # the users, the sessions, the gate and the quota
        self._users_watch = UsersWatch()
        self._users_watch.read(self._stamp(), monotonic())
        self.server_names = tuple(server_names)
        self.trusted_proxies = frozenset(trusted_proxies)
        addresses, hostname = machine_addresses() if host in ANY else ([], None)
        self.names = served_names(host, self.server_names, addresses=addresses, hostname=hostname)
        self.tls = tls_cert is not None
        if (tls_cert is None) != (tls_key is None):
            raise DashboardRefused("give both --tls-cert and --tls-key")
        context = tls_context(tls_cert, tls_key) if tls_cert and tls_key else None
        self._lock = threading.Lock()
        self._streams: list[queue.Queue[bytes | None]] = []
        self._stop = threading.Event()
        self._last: bytes = b"{}"
        self._forced_controls = controls
        self.controls = False
        self.controls_why = "not started"
        self.client = MqttClient(self.url, client_id=f"fogmesh-dashboard-{uuid.uuid4().hex[:8]}",
                                 on_message=self._on_message)
        self.http = DashboardHTTPServer((host, port), handler_class(self), exempt=self.trusted_proxies)
        if context is not None:
            self.http.socket = context.wrap_socket(self.http.socket, server_side=True,
                                                   do_handshake_on_connect=False)
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        host, port = self.http.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    # -- MQTT side ---------------------------------------------------------------------
    def _on_message(self, m: Message) -> None:
        done: list[dict[str, Any]] = []
        with self._lock:
            self.model.on_message(m.topic, m.payload, self.clock(), retained=m.retain)
            if not m.retain:
                done = self._settles(m)
        for record in done:
            self._audit(record)

    def _settles(self, m: Message) -> list[dict[str, Any]]:
        """Presses this message settles: a live actuator state, or a dead letter for a command."""
        actuator = self.topics.actuator_of_state(m.topic)
        if actuator is not None and len(self.presses):
            body = self.model._decode(m.payload) or {}
            return self.presses.on_state(actuator[0], actuator[1], str(body.get("state")))
        if m.topic == self.topics.errors and len(self.presses):
            body = self.model._decode(m.payload) or {}
            error = body.get("error") if isinstance(body.get("error"), dict) else {}
            return self.presses.on_dead_letter(body.get("id"), error.get("code"), error.get("message"))
        return []

    def _audit(self, record: dict[str, Any]) -> None:
        """Publish one audit record (QoS 1; ``mosquitto_sub -t 'fog/v1/audit/#'`` follows them)."""
        result = record.get("result", {})
        log.info("dashboard audit: %s (%s) from %s: %s %s/%s -> %s", record["who"], record["role"], record["from"],
                 record["command"].get("op"), record["device"], record["actuator"], result.get("status"))
        try:
            self.client.publish(self.topics.audit(AUDIT_SOURCE), codec.encode(record), qos=1)
        except ConnectError as exc:
            log.error("dashboard: could not publish an audit record (%s): %s", exc, record)

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
        for f in [*self.model.filters, self.topics.audit_filter]:
            self.client.subscribe(f)
        for target, name in ((self._tick_loop, "dashboard-tick"), (self.http.serve_forever, "dashboard-http")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("dashboard on %s for %s (actuator buttons: %s; logins: %s)", self.address, self.url,
                 "on" if self.controls else "off",
                 f"{len(self.users)} user(s)" if self.login_required else "none (this machine only)")
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
            self.refresh_users()                # a removed user's open pages end within a tick
            with self._lock:
                unanswered = self.presses.due(self.monotonic())
                tick = self.model.tick(self.clock())
                said = self.model.refusals.due(self.clock())      # at most one line a minute
                if said is not None:
                    log.warning("dashboard: %s", said)
                tick["connected"] = self.client.wait_connected(0)
                self._last = codec.encode(tick)
                data = event("tick", self._last)
                for q in list(self._streams):
                    try:
                        q.put_nowait(data)
                    except queue.Full:          # a stalled browser: drop it; its EventSource reconnects
                        self._streams.remove(q)
                        q.queue.clear()
                        q.put_nowait(None)
            for record in unanswered:
                self._audit(record)

    # -- the users file, logins, open pages ----------------------------------------------
    def _stamp(self) -> FileStamp | None:
        if self.users.path is None:
            return None
        try:
            st = os.stat(self.users.path)
        except OSError:
            return None
        return FileStamp(st.st_ino, st.st_size, st.st_mtime_ns)

    def refresh_users(self) -> None:
        """Read the users file again if it changed (every request and tick
        asks: one stat); end the sessions of users it removed or changed. A
        file that cannot be read lets nobody in until it is fixed, as it
        would not let the dashboard start."""
        path = self.users.path
        if path is None:
            return
        stamp = self._stamp()
        with self._users_lock:
            now = self.monotonic()
            if not self._users_watch.reload(stamp, now):
                return
            self._users_watch.read(stamp, now)
            try:
                users = Users.load(path)
            except UsersFileError as exc:
                log.error("dashboard: %s; nobody logs in until the users file is fixed", exc)
                users = Users({}, path)
            changed = changes(self.users.users, users.users)
            self.users = users
            ended = self.sessions.keep_only(users.users)
            if users and not self.login_required:
                self.login_required = True
                changed.append("logins are on from now")
        for line in changed:
            log.warning("dashboard: users file %s: %s", path, line)
        for session in ended:
            log.warning("dashboard: ended a session of %s (%s): the users file changed", session.user, session.role)

    def session(self, token: str | None) -> Session | None:
        with self._users_lock:
            return self.sessions.get(token)

    def admit_login(self, address: str, name: str) -> Attempt | Refused:
        with self._users_lock:
            return self.gate.admit(address, name)

    def settle_login(self, attempt: Attempt, *, ok: bool) -> int:
        """The outcome of an admitted login; returns the failures in a row (its name, its source)."""
        with self._users_lock:
            return self.gate.settle(attempt, ok=ok)

    def open_session(self, user: User) -> Session:
        with self._users_lock:
            return self.sessions.open(user)

    def close_session(self, token: str | None) -> None:
        with self._users_lock:
            self.sessions.close(token)

    def exposure_refusal(self, *, relayed: bool = False) -> str | None:
        """Why buttons are off for how this dashboard is exposed (behind a proxy without logins), or None."""
        return buttons_refused(logins=self.login_required, server_names=self.server_names, relayed_request=relayed)

    def _who(self, session: Session | None) -> tuple[str, str]:
        return (session.user, session.role) if session is not None else NO_LOGIN

    def hello(self, session: Session | None = None, *, relayed: bool = False) -> dict[str, Any]:
        with self._lock:
            hello = self.model.hello()
        who, role = self._who(session)
        controls, why = self.controls, self.controls_why
        exposed = self.exposure_refusal(relayed=relayed)
        if controls and exposed:
            controls, why = False, exposed
        if controls and role != "operator":
            controls, why = False, f"{who} is a viewer; buttons need an operator login"
        return {**hello, "broker": str(self.url), "root": self.topics.root, "controls": controls,
                "controls_why": why, "user": who if self.login_required else None, "role": role}

    def actuate(self, device: str, actuator: str, body: Any, *, session: Session | None = None,
                address: str = "?", relayed: bool = False) -> tuple[int, dict[str, Any]]:
        who, role = self._who(session)
        if not self.controls:
            return HTTPStatus.FORBIDDEN, {"error": f"actuator buttons are off: {self.controls_why}"}
        exposed = self.exposure_refusal(relayed=relayed)
        if exposed:
            return HTTPStatus.FORBIDDEN, {"error": f"actuator buttons are off: {exposed}"}
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
        press = {"who": who, "role": role, "address": address, "device": device, "actuator": actuator,
                 "command": command, "wall": self.clock()}
        if role != "operator":
            self._audit(Presses.finished_now(**press, result={"status": "refused", "message": "not an operator"}))
            return HTTPStatus.FORBIDDEN, {"error": f"{who} is a viewer: buttons need an operator login"}
        topic = self.topics.actuator_set(device, actuator)
        try:
            self.client.publish(topic, codec.encode(command), qos=1)
        except ConnectError as exc:
            self._audit(Presses.finished_now(**press, result={"status": "not sent", "message": str(exc)}))
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"broker unreachable: {exc}"}
        with self._lock:
            self.presses.pressed(**press, now=self.monotonic())
        log.info("dashboard: %s pressed %s %s on %s", who, device, actuator, command["op"])
        return HTTPStatus.ACCEPTED, {"sent": topic, "command": command}

    def open_stream(self, user: str | None) -> queue.Queue[bytes | None] | str:
        """A queue of ticks for one open page of ``user`` (None: no logins),
        or why not: ``user`` (that user's pages are at their quota) or ``total``."""
        with self._users_lock:
            refused = self.quota.open(user)
        if refused:
            return refused
        q: queue.Queue[bytes | None] = queue.Queue(maxsize=STREAM_QUEUE)
        with self._lock:
            self._streams.append(q)
        return q

    def close_stream(self, q: queue.Queue[bytes | None], user: str | None) -> None:
        """Once for each queue :meth:`open_stream` gave."""
        with self._lock:
            if q in self._streams:
                self._streams.remove(q)
        with self._users_lock:
            self.quota.close(user)

    def snapshot(self) -> bytes:
        with self._lock:
            return self._last
