"""The fence between publishes and drops: which tagged messages the broker has
not confirmed (what a drop withdraws), the unconfirmed watch, and the one lock
that keeps a publish and a drop apart.

Locks of a client, and the one order every thread takes them in (a lock is
only waited for while holding those above it; ``tests/test_lock_order.py``
checks it on real clients through storms, cuts and reconnects):

1. ``_Client._batch``, held by a caller inside ``MqttClient.together()``.
   paho's network thread only tries it (it writes nothing meanwhile).
2. paho's ``_out_message_mutex`` (reentrant), which is also the fence
   (:attr:`Fence.lock`): ``MqttClient.publish`` holds it from its look at
   ``connected`` until a message is in paho's queue and tracked, and a drop
   holds it to withdraw the tracked ones, so a tagged message is either sent
   on a live connection and tracked, or withdrawn and reported, never both
   and never neither. paho holds it while it reports a PUBACK (so
   ``on_confirmed`` and the watch run under it) and while it resends its
   queue after a CONNACK (a drop in there is handled once paho is out:
   ``_Client.after_resend``).
3. The ``_lock`` of the client's subscription book
   (:class:`~fogmesh.mqtt.subscriptions.Subscriptions`) and paho's short ones
   (``_mid_generate_mutex``, ``_callback_mutex``, ``_msgtime_mutex``): a
   thread holding one of them waits for no lock above.

paho's ``_in_callback_mutex`` (held around every callback),
``_in_message_mutex`` and ``_reconnect_delay_mutex`` stand outside the order:
only the network thread waits for them (other threads only try
``_in_callback_mutex``), and a thread does not wait for itself. Callbacks must
therefore never wait for a lock that a thread holds while it calls the client.

Before issue #36, publishing took a lock of its own and then paho's, and a
drop inside paho's resend after a CONNACK held paho's and waited for that one:
both threads locked up for good.
"""

from __future__ import annotations

from typing import Any, Callable

from fogmesh.mqtt.wire import _Client


class Fence:
    def __init__(self, client: _Client, *, mqtt5: bool) -> None:
        self._paho = client
        self._mqtt5 = mqtt5
        # mid -> (tag, withdraw on a drop?) of a tagged publish the broker has not confirmed
        self._tracked: dict[int, tuple[Any, bool]] = {}
        # (at most, then): one call of ``then`` once unconfirmed messages are down to that many
        self._watch: tuple[int, Callable[[], None]] | None = None

    @property
    def lock(self) -> Any:
        """paho's out-message lock, looked up each time (a test replaces it)."""
        return self._paho._out_message_mutex

    def unconfirmed(self) -> int:
        return len(self._paho._out_messages)

    def track(self, mid: int, tag: Any, withdraw: bool) -> None:
        """A tagged message now in paho's queue (the caller holds the lock:
        its PUBACK, reported under it, cannot come before this)."""
        self._tracked[mid] = (tag, withdraw)

    def confirmed(self, mid: int) -> tuple[Any, Callable[[], None] | None]:
        """paho reports ``mid`` published (at its PUBACK, holding the lock, or
        for QoS 0 once written, not holding it): its tag (None if untagged)
        and the watch's ``then`` if it is due now, both to call after."""
        with self.lock:
            held = self._tracked.pop(mid, None)
            watch = self._watch
            out = self._paho._out_messages        # paho drops a QoS 1 message after this report
            if watch is not None and len(out) - (mid in out) <= watch[0]:
                self._watch = None
            else:
                watch = None
        return (held[0] if held else None), (watch[1] if watch else None)

    def watch(self, at_most: int, then: Callable[[], None]) -> bool:
        """Watch for at most ``at_most`` unconfirmed; True when that holds
        already (the caller calls ``then`` now, and no watch is left)."""
        with self.lock:
            now = self.unconfirmed() <= at_most
            self._watch = None if now else (at_most, then)
        return now

    def withdraw(self) -> list[Any]:
        """On a drop: take the unconfirmed messages tagged for withdrawal out
        of paho's resend queue (the others are queued again, in order, and
        their confirmation is no longer reported); their tags. Never inside
        paho's resend loop, which reads that queue."""
        with self.lock:
            if not any(withdraw for _, withdraw in self._tracked.values()):
                return []      # paho resends the rest with the same ids: their reports still come
            withdrawn: list[Any] = []
            for m in self._paho.drop_out_messages():
                tag, withdraw = self._tracked.pop(m.mid, (None, False))
                if withdraw:
                    withdrawn.append(tag)
                else:
                    self._paho.publish(m.topic, m.payload, qos=m.qos, retain=m.retain,
                                       properties=getattr(m, "properties", None) if self._mqtt5 else None)
            self._tracked.clear()
            return withdrawn
