"""The embedded broker (amqtt): what ``fogmesh broker`` and ``fogmesh up`` run.

Why amqtt: it is pure Python, so a fresh machine needs nothing but ``pip
install`` to run the whole system. Its limits (MQTT 3.1.1 only, no shared
subscriptions, ~2 ms per hop) are why agents detect shared-subscription
support and fall back to claims; production sites run mosquitto or EMQX.
All amqtt-specific code lives in this module.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Callable

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

from fogmesh.errors import BrokerError

log = logging.getLogger(__name__)


class OpenAuthPlugin(BaseAuthPlugin):
    """Accept every client, and keep its persistent session.

    amqtt's stock anonymous-auth plugin marks sessions anonymous, and amqtt
    then drops QoS 1 messages for offline ``clean_session=False`` clients: an
    agent restart would lose queued tasks. Auth and ACLs belong to the
    production (mosquitto) configuration.
    """

    @dataclass
    class Config:
        pass

    async def authenticate(self, *, session: Session) -> bool:
        session.is_anonymous = False
        return True


class FogmeshBroker(Broker):
    """amqtt's broker with one fix (amqtt is pinned, so this stays valid).

    On every CONNECT amqtt 0.12.1 sends the connecting client the retained
    messages matching *every* client's subscriptions, not just its own: a
    device would receive every agent's presence. Only the session's own
    subscriptions are honoured here.
    """

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        subscribers = self._subscriptions.get(subscription[0], [])
        if any(s.client_id == session.client_id for s, _ in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)


def broker_config(host: str, port: int) -> dict:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {f"{__name__}.OpenAuthPlugin": {}},
    }


def quiet_amqtt_logs() -> None:
    """amqtt logs every connection at INFO; keep fogmesh's output readable."""
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def serve(host: str, port: int, stop: asyncio.Event,
                on_ready: Callable[[], None] | None = None) -> None:
    """Run a broker on ``host:port`` until ``stop`` is set."""
    quiet_amqtt_logs()
    broker = FogmeshBroker(broker_config(host, port))
    try:
        await broker.start()
    except Exception as exc:  # amqtt raises its own BrokerError / OSError variants
        raise BrokerError(f"cannot start the embedded broker on {host}:{port}: {exc}. "
                          "Is the port already in use? Pick another with --port.") from exc
    log.info("embedded amqtt broker listening on %s:%d", host, port)
    if on_ready:
        on_ready()
    try:
        await stop.wait()
    finally:
        await broker.shutdown()


class EmbeddedBroker:
    """The embedded broker on a background thread (for ``fogmesh up`` and tests)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
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
            loop.run_until_complete(serve(self.host, self.port, self._stop, self._ready.set))
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
