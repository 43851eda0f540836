"""The embedded broker (amqtt): what ``fogmesh broker`` and ``fogmesh up`` run.

Why amqtt: it is pure Python, so a fresh machine needs nothing but ``pip
install`` to run the whole system. amqtt has no shared subscriptions; this
module adds them (the decisions live in :mod:`fogmesh.broker.shared`), so agents on
the embedded broker split tasks as they do on mosquitto, without a claim per
task. It keeps MQTT 3.1.1's contract where amqtt 0.12.1 did not (sessions,
keep-alive, QoS 2, what is resent), and with a persistence directory its
state across a restart. Its other limits (MQTT 3.1.1 only, ~1 ms per hop)
are why production sites run mosquitto or EMQX. All amqtt-specific code
lives in this package: ``server`` (the amqtt subclass), ``sharing`` (shared
subscriptions), ``sessions`` (sessions and routing), ``inflight`` (what a
session keeps in flight), ``liveness`` (the keep-alive), ``connections``
(what it changes per connection), ``persistence`` (its state on disk),
``mqtt5`` (an MQTT 5 client refused with a reason), ``framing`` (each
packet checked before amqtt reads it: a protocol violation closes the
connection).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Callable

from fogmesh.broker.embedded.auth import LoginFiles
from fogmesh.broker.embedded.persistence import state_path
from fogmesh.broker.embedded.server import (
    AUTOSAVE_S,
    CONNECT_DEADLINE_S,
    SHUTDOWN_BUDGET_S,
    FogmeshBroker,
    OpenAuthPlugin,
)
from fogmesh.errors import BrokerError

__all__ = ["AUTOSAVE_S", "EmbeddedBroker", "FogmeshBroker", "OpenAuthPlugin", "broker_config", "serve",
           "state_path"]

log = logging.getLogger("fogmesh.broker.embedded")


def broker_config(host: str, port: int, ws_port: int | None = None) -> dict:
    """MQTT on ``port``; with ``ws_port``, MQTT over WebSockets there too
    (browsers, Node-RED dashboards: ``ws://host:ws_port/mqtt``)."""
    listeners: dict[str, dict[str, str]] = {"default": {"type": "tcp", "bind": f"{host}:{port}"}}
    if ws_port is not None:
        listeners["ws"] = {"type": "ws", "bind": f"{host}:{ws_port}"}
    return {"listeners": listeners, "plugins": {f"{OpenAuthPlugin.__module__}.OpenAuthPlugin": {}}}


def quiet_amqtt_logs() -> None:
    """amqtt logs every connection at INFO; keep fogmesh's output readable."""
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def serve(host: str, port: int, stop: asyncio.Event,
                on_ready: Callable[[], None] | None = None, *, ws_port: int | None = None,
                persistence: str | Path | None = None, autosave_s: float = AUTOSAVE_S,
                auth: str | Path | None = None, connect_deadline_s: float = CONNECT_DEADLINE_S) -> None:
    """Run a broker on ``host:port`` (and WebSockets on ``ws_port``) until ``stop``
    is set. ``persistence``: a directory where it keeps its state across
    restarts (:func:`state_path`; None: nothing kept), written every
    ``autosave_s`` while it changes and when it stops. ``auth``: a directory
    with ``passwd`` and ``acl`` in mosquitto's formats (None: every client is
    let in), read again whenever they change (:mod:`.auth`).
    ``connect_deadline_s``: how long a connection has to send its CONNECT whole."""
    quiet_amqtt_logs()
    state_file = state_path(persistence, port) if persistence is not None else None
    logins = LoginFiles(auth) if auth is not None else None
    broker = FogmeshBroker(broker_config(host, port, ws_port), state_file=state_file, autosave_s=autosave_s,
                           logins=logins, connect_deadline_s=connect_deadline_s)
    ports = f"{port}" + (f" and {ws_port} (WebSockets)" if ws_port is not None else "")
    try:
        await broker.start()
    except BrokerError:
        raise                   # fogmesh's own (its state file): it says what to do
    except Exception as exc:  # amqtt raises its own BrokerError / OSError variants
        if isinstance(exc.__cause__, BrokerError):
            raise exc.__cause__ from None
        raise BrokerError(f"cannot start the embedded broker on {host}, port {ports}: {exc}. "
                          "Is the port already in use? Pick another with --port / --ws-port.") from exc
    log.info("embedded amqtt broker listening on %s, port %s", host, ports)
    if on_ready:
        on_ready()
    try:
        await stop.wait()
    finally:
        try:
            # amqtt 0.12.1 can wait for ever on a connection's reader while it
            # shuts down under load; what is left is closed with the process.
            await asyncio.wait_for(broker.shutdown(), SHUTDOWN_BUDGET_S)
        except asyncio.TimeoutError:
            log.warning("the embedded broker did not shut down within %g s; closing its listeners",
                        SHUTDOWN_BUDGET_S)
            for server in broker._servers.values():
                await server.close_instance()


class EmbeddedBroker:
    """The embedded broker on a background thread (for ``fogmesh up`` and tests)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 1883, ws_port: int | None = None,
                 persistence: str | Path | None = None, autosave_s: float = AUTOSAVE_S,
                 auth: str | Path | None = None, connect_deadline_s: float = CONNECT_DEADLINE_S) -> None:
        self.host = host
        self.auth = auth
        self.connect_deadline_s = connect_deadline_s
        self.port = port
        self.ws_port = ws_port
        self.persistence = persistence
        self.autosave_s = autosave_s
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise BrokerError(f"embedded broker did not start within {timeout:g} s")
        if self._error:
            raise self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._stop = asyncio.Event()

        try:
            loop.run_until_complete(serve(self.host, self.port, self._stop, self._ready.set,
                                          ws_port=self.ws_port, persistence=self.persistence,
                                          autosave_s=self.autosave_s, auth=self.auth,
                                          connect_deadline_s=self.connect_deadline_s))
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop and self._stop and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
