"""Login sessions. Pure: the clock is passed in (a fake one in the tests),
nothing here reads a socket or a file. Failed logins are limited in
:mod:`.attempts`.

A session remembers the user as it logged in (name, role, password hash):
when the users file changes, the sessions of a user removed, or whose role
or password changed, end at once (:meth:`Sessions.keep_only`)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Callable, Mapping

from fogmesh.dashboard.auth import User

SESSION_IDLE_S = 8 * 3600          # a session unused this long is over
SESSION_MAX_S = 24 * 3600          # ... and any session after this long
SESSIONS_PER_USER = 32             # a user's logins kept at once; a new one ends the oldest


@dataclass
class Session:
    token: str
    user: str
    role: str
    created: float
    used: float
    account: User | None = None       # the user as they logged in


class Sessions:
    """Login sessions by cookie token, in memory (a restart logs everyone out)."""

    def __init__(self, *, clock: Callable[[], float], idle_s: float = SESSION_IDLE_S,
                 max_s: float = SESSION_MAX_S, per_user: int = SESSIONS_PER_USER) -> None:
        self.clock = clock
        self.idle_s, self.max_s, self.per_user = idle_s, max_s, per_user
        self._sessions: dict[str, Session] = {}

    def open(self, user: User) -> Session:
        """A new session; the user's oldest ends if they have ``per_user``
        already (memory stays bounded however often one login logs in)."""
        now = self.clock()
        self._expire(now)
        theirs = sorted((s for s in self._sessions.values() if s.user == user.name), key=lambda s: s.created)
        for old in theirs[:max(0, len(theirs) - self.per_user + 1)]:
            self._sessions.pop(old.token, None)
        session = Session(secrets.token_urlsafe(32), user.name, user.role, now, now, user)
        self._sessions[session.token] = session
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

    def keep_only(self, users: Mapping[str, User]) -> list[Session]:
        """End every session whose user is not in ``users`` as they logged in
        (removed, or another role or password); returns the sessions ended."""
        ended = [s for s in list(self._sessions.values()) if users.get(s.user) != s.account]
        for s in ended:
            self._sessions.pop(s.token, None)
        return ended

    def _expire(self, now: float) -> None:
        for token, s in list(self._sessions.items()):
            if now - s.used > self.idle_s or now - s.created > self.max_s:
                self._sessions.pop(token, None)

    def __len__(self) -> int:
        return len(self._sessions)
