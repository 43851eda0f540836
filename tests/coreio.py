"""The agent core's inputs as the tests write them: one function per kind of
event, each handing it to :meth:`AgentCore.handle` (the core's one input
surface). ``on_message(c, topic, payload, token, now)`` reads like what
happened to ``c``."""

from __future__ import annotations

from typing import Any

from fogmesh.edge_agent import events as ev
from fogmesh.edge_agent.actions import Action, Publish
from fogmesh.edge_agent.core import AgentCore
from fogmesh.messages import ErrorInfo


def on_message(c: AgentCore, topic: str, payload: bytes, token: Any, now: float, *, dup: bool = False,
               queue_connection: int | None = None) -> list[Action]:
    return c.handle(ev.MessageIn(topic, payload, token, dup, queue_connection), now)


def on_rescued(c: AgentCore, topic: str, payload: bytes, token: Any, now: float, *, holder: str) -> list[Action]:
    return c.handle(ev.RescuedIn(topic, payload, token, holder), now)


def on_finished(c: AgentCore, key: str, now: float, *, result: Any = None,
                error: ErrorInfo | None = None) -> list[Action]:
    return c.handle(ev.Finished(key, result, error), now)


def on_sent(c: AgentCore, keys: list[str], now: float) -> list[Action]:
    """The broker acknowledged these answers, one PUBACK each."""
    return [a for key in keys for a in c.handle(ev.Confirmed(key), now)]


def on_withdrawn(c: AgentCore, messages: list[Publish], now: float) -> list[Action]:
    return c.handle(ev.Withdrawn(messages), now)


def on_connected(c: AgentCore, now: float, *, control: bool = True, session_kept: bool = True) -> list[Action]:
    return c.handle(ev.LinkChanged(control=control, up=True, session_kept=session_kept), now)


def on_disconnect(c: AgentCore, now: float, *, control: bool = True) -> list[Action]:
    return c.handle(ev.LinkChanged(control=control, up=False), now)


def on_tick(c: AgentCore, now: float) -> list[Action]:
    return c.handle(ev.Tick(), now)


def on_clock(c: AgentCore, *, wall: float, now: float) -> list[Action]:
    return c.handle(ev.ClockRead(wall), now)


def take_marks(c: AgentCore, now: float = 0.0) -> list[Action]:
    return c.handle(ev.MarksDue(), now)


def start_order_probe(c: AgentCore, token: str, now: float) -> list[Action]:
    return c.handle(ev.OrderProbe(token), now)


def journal_failed(c: AgentCore, reason: str, now: float = 0.0) -> list[Action]:
    return c.handle(ev.JournalFailed(reason), now)


def stop_accepting(c: AgentCore, now: float = 0.0) -> list[Action]:
    return c.handle(ev.StopAsked(by=now + 10.0), now)


def restore(c: AgentCore, *, done: list[str], unfinished: list[bytes], now: float,
            answers: dict[str, Any] | None = None) -> list[Action]:
    return c.handle(ev.Restored(done, unfinished, answers or {}), now)


def on_battery(c: AgentCore, percent: float | None, now: float = 0.0) -> list[Action]:
    return c.handle(ev.BatteryRead(percent), now)


def on_queue_lost(c: AgentCore, connection: int, now: float) -> list[Action]:
    """The task queue's ``connection`` closed: the broker took back what it delivered."""
    return c.handle(ev.QueueLost(connection), now)
