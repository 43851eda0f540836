"""Login sessions and the slowing of failed logins. Pure: the clock is
passed in (a fake one in the tests), nothing here reads a socket or a file."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Callable

from fogmesh.dashboard.auth import User

SESSION_IDLE_S = 8 * 3600          # a session unused this long is over
SESSION_MAX_S = 24 * 3600          # ... and any session after this long


@dataclass
class Session:
    token: str
    user: str
    role: str
    created: float
    used: float


class Sessions:
    """Login sessions by cookie token, in memory (a restart logs everyone out)."""

    def __init__(self, *, clock: Callable[[], float], idle_s: float = SESSION_IDLE_S,
                 max_s: float = SESSION_MAX_S) -> None:
        self.clock = clock
        self.idle_s, self.max_s = idle_s, max_s
        self._sessions: dict[str, Session] = {}

    def open(self, user: User) -> Session:
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), user.name, user.role, now, now)
        self._sessions[session.token] = session
        self._expire(now)
        return session

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token`` (its use noted), or None."""
        if not token:
            return None
        session = self._sessions.get(token)
        now = self.clock()
        if session is None:
            return None
        if now - session.used > self.idle_s or now - session.created > self.max_s:
            del self._sessions[token]
            return None
        session.used = now
        return session

    def close(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def _expire(self, now: float) -> None:
        for token, s in list(self._sessions.items()):
            if now - s.used > self.idle_s or now - s.created > self.max_s:
                del self._sessions[token]

    def __len__(self) -> int:
        return len(self._sessions)


@dataclass
class LoginThrottle:
    """Failed logins slowed: after the ``free``-th failure in a row from one
    address, or for one user name, further tries wait 2, 4, 8 ... seconds
    (at most ``max_wait_s``); a success clears that address and name.
    Guessing passwords at a few tries a minute is hopeless; a user who
    mistyped waits seconds."""

    clock: Callable[[], float]
    free: int = 3
    max_wait_s: float = 300.0
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)   # key -> (count, last failure)

    def wait_s(self, address: str, name: str) -> float:
        """Seconds before a login from ``address`` for ``name`` is tried (0: now)."""
        now = self.clock()
        return max(self._wait(f"addr:{address}", now), self._wait(f"user:{name}", now))

    def _wait(self, key: str, now: float) -> float:
        count, last = self._failures.get(key, (0, 0.0))
        if count < self.free:
            return 0.0
        delay = min(self.max_wait_s, 2.0 ** (count - self.free + 1))
        return max(0.0, last + delay - now)

    def failed(self, address: str, name: str) -> int:
        """Note a failure; returns how many in a row from ``address``."""
        now = self.clock()
        for key in (f"addr:{address}", f"user:{name}"):
            count, _ = self._failures.get(key, (0, 0.0))
            self._failures[key] = (count + 1, now)
        if len(self._failures) > 10_000:           # bounded: drop the oldest
            for key, _ in sorted(self._failures.items(), key=lambda kv: kv[1][1])[:1000]:
                del self._failures[key]
        return self._failures[f"addr:{address}"][0]

    def succeeded(self, address: str, name: str) -> None:
        self._failures.pop(f"addr:{address}", None)
        self._failures.pop(f"user:{name}", None)
