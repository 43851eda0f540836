"""When a client is overdue (pure): MQTT 3.1.1's keep-alive, as the broker keeps it.

A client that sets a keep-alive of K seconds promises to send something (a
PINGREQ if nothing else) at least every K seconds. If the broker hears
nothing from it for 1.5 x K, it must close the connection as for a network
failure, so the client's will goes out [MQTT-3.1.2-24]. That is how a device
frozen or cut off without a FIN or an RST (a Pi that lost power behind a
switch) is found out: its TCP connection looks alive for ever.

No clock and no sockets: the embedded broker (:mod:`fogmesh.broker.embedded`)
says when it heard the client and asks when to look again.
"""

from __future__ import annotations

GRACE = 1.5          # [MQTT-3.1.2-24]: one and a half times the keep-alive


class KeepAlive:
    """One connection's keep-alive. ``keep_alive_s`` as the client's CONNECT
    says it; 0 turns the mechanism off (MQTT 3.1.2.10)."""

    __slots__ = ("limit_s", "last_heard")

    def __init__(self, keep_alive_s: float, now: float) -> None:
        if keep_alive_s < 0:
            raise ValueError("keep_alive_s must be >= 0")
        self.limit_s: float | None = keep_alive_s * GRACE if keep_alive_s > 0 else None
        self.last_heard = now

    def heard(self, now: float) -> None:
        """Something arrived from the client."""
        self.last_heard = max(self.last_heard, now)

    def overdue(self, now: float) -> bool:
        """Nothing for 1.5 x the keep-alive: close the connection."""
        return self.limit_s is not None and now - self.last_heard >= self.limit_s

    def deadline(self) -> float | None:
        """When the client is overdue if nothing arrives before (None: never)."""
        return None if self.limit_s is None else self.last_heard + self.limit_s
