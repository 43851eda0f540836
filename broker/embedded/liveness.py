"""The keep-alive, kept: a client the broker has heard nothing from for 1.5 x
its keep-alive is disconnected as for a network failure, so its will goes
out [MQTT-3.1.2-24] (when: :class:`fogmesh.broker.keepalive.KeepAlive`).

Why: amqtt 0.12.1 waits on a silent client's socket for the keep-alive,
logs a read timeout and waits again, for ever. An agent frozen (SIGSTOP, or
a Pi that lost power behind a switch: no FIN, no RST) kept its retained
presence ``online`` and its tasks for as long as the broker ran; its peers
never took them over.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from fogmesh.broker.keepalive import KeepAlive

log = logging.getLogger("fogmesh.broker.embedded")


def close_now(writer: Any) -> None:
    """Close a connection at once, unsent data dropped (a frozen peer reads
    nothing: a graceful close would wait for it)."""
    stream = getattr(writer, "_writer", None) or getattr(writer, "_protocol", None)     # TCP / WebSockets
    transport = getattr(stream, "transport", None)
    if transport is not None:
        transport.abort()


def watch_keepalive(handler: Any, keep_alive_s: float) -> Callable[[], None]:
    """Watch ``handler``'s connection from now on; returns the call that stops
    watching (when the connection ends). Every read from the client counts
    as hearing from it; only one timer per connection, moved on lazily."""
    loop = asyncio.get_running_loop()
    watch = KeepAlive(keep_alive_s, loop.time())
    deadline = watch.deadline()
    if deadline is None:
        return lambda: None
    reader, writer = handler.reader, handler.writer
    read = reader.read

    async def heard_read(n: int = -1) -> bytes:
        data: bytes = await read(n)
        if data:
            watch.heard(loop.time())
        return data

    reader.read = heard_read
    timer: list[asyncio.TimerHandle] = []

    def check() -> None:
        now = loop.time()
        if watch.overdue(now):
            client_id = getattr(handler.session, "client_id", "?")
            log.info("client %s silent for %.1f s (keep-alive %g s): disconnected, its will goes out",
                     client_id, now - watch.last_heard, keep_alive_s)
            close_now(writer)
            return
        timer[:] = [loop.call_at(watch.deadline() or now, check)]

    timer.append(loop.call_at(deadline, check))

    def stop() -> None:
        for handle in timer:
            handle.cancel()

    return stop
