"""Telling systemd how a service is doing: the notify-socket protocol.

A ``Type=notify`` unit gives its process ``$NOTIFY_SOCKET`` (a datagram
socket; a leading ``@`` means the abstract namespace) and, with
``WatchdogSec=``, ``$WATCHDOG_USEC``. The process sends newline-separated
``KEY=VALUE`` lines: ``READY=1`` once it serves, ``WATCHDOG=1`` at least every
half period while it is healthy, ``STATUS=...`` for ``systemctl status``,
``EXTEND_TIMEOUT_USEC=`` while start-up waits for something legitimate (the
broker), ``STOPPING=1`` on the way out.

Whoever owns the dispatcher loop calls :meth:`ServiceNotifier.beat` from that
loop, never from a side thread: a hung loop must stop the pings, so systemd
restarts the process (and the broker publishes its will to the peers).

Without ``$NOTIFY_SOCKET`` (run by hand, in tests) every call does nothing.
The socket is the only IO here; a send that fails is logged once and then
ignored, because a service must not die of its supervisor's absence.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

__all__ = ["ServiceNotifier"]


class ServiceNotifier:
    def __init__(self, address: str | None, *, watchdog_s: float | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_s if address else None
        self._sock: socket.socket | None = None
        self._next_beat = 0.0
        self._status: str | None = None
        self._next_status = 0.0
        self._failed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, pid: int | None = None,
                 unset: bool = True) -> ServiceNotifier:
        """From the variables systemd sets. ``unset`` removes them from
        ``os.environ`` so worker processes do not inherit them (only the main
        process speaks for the service)."""
        source = os.environ if env is None else env
        address = source.get("NOTIFY_SOCKET") or None
        watchdog_s = None
        usec = source.get("WATCHDOG_USEC")
        owner = source.get("WATCHDOG_PID")
        if usec and (not owner or owner == str(pid if pid is not None else os.getpid())):
            try:
                watchdog_s = int(usec) / 1e6 or None
            except ValueError:
                watchdog_s = None
        if unset and env is None:
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(key, None)
        return cls(address, watchdog_s=watchdog_s)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def next_beat_at(self) -> float:
        """When the loop must call :meth:`beat` next (monotonic seconds; inf
        without a watchdog), so an idle loop wakes in time."""
        return self._next_beat if self.watchdog_s else float("inf")

    def ready(self, status: str) -> None:
        self._status = status
        self._send(f"READY=1\nSTATUS={status}")

    def waiting(self, status: str, *, extend_s: float) -> None:
        """Start-up is waiting for something outside (the broker): say what,
        and give it ``extend_s`` more seconds before systemd calls it hung."""
        self._status = status
        self._send(f"STATUS={status}\nEXTEND_TIMEOUT_USEC={int(extend_s * 1e6)}")

    def beat(self, now: float, status: Callable[[], str]) -> None:
        """From the dispatcher loop, each turn: a watchdog ping when half the
        period has passed, and the status line (``status()``, asked at most once
        a second, so the hot path pays nothing) when it changed."""
        if self.address is None or (now < self._next_status and now < self.next_beat_at):
            return
        lines = []
        if self.watchdog_s and now >= self._next_beat:
            lines.append("WATCHDOG=1")
            self._next_beat = now + self.watchdog_s / 2
        if now >= self._next_status:
            self._next_status = now + 1.0
            text = status()
            if text != self._status:
                self._status = text
                lines.append(f"STATUS={text}")
        if lines:
            self._send("\n".join(lines))

    def stopping(self, status: str) -> None:
        self._send(f"STOPPING=1\nSTATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, text: str) -> None:
        if self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(text.encode(), target)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd at %s: %s (further failures are not logged)",
                            self.address, exc)
                self._failed = True
