"""Logins and the ACL on the embedded broker (``fogmesh broker --auth DIR``):
``DIR/passwd`` and ``DIR/acl`` in mosquitto's formats
(:mod:`fogmesh.broker.logins`), read again whenever they change (checked
every :data:`RELOAD_S`), as mosquitto re-reads them on SIGHUP: a client
whose login no longer holds is disconnected at once (its will goes out), the
others go on undisturbed.

A CONNECT is judged from its bytes before amqtt takes it
(:mod:`fogmesh.broker.connect_gate`); a PUBLISH the ACL does not allow is
dropped (the client stays connected, as on mosquitto); one read from a client
dropped at a re-read is judged by the rights it had until then (it was sent
before: amqtt acknowledges a PUBLISH before the broker judges it); a message
is sent to a subscriber only when its login may read the topic; a shared
subscription is granted only for a filter its login may read whole (its
messages cannot be judged one by one without taking them from the group).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from amqtt.contexts import Action
from amqtt.session import Session

from fogmesh.broker.connect_gate import REFUSED, admit, connect_length, parse_connect, still_valid
from fogmesh.broker.embedded.liveness import close_now
from fogmesh.broker.logins import Acl, parse_acl, parse_passwd
from fogmesh.broker.packet_checks import refusal
from fogmesh.errors import BrokerError
from fogmesh.log_limit import LogLimit

log = logging.getLogger("fogmesh.broker.embedded")

RELOAD_S = 0.5            # how often the files are checked for a change
CONNECT_WAIT_S = 10.0     # how long a new connection may take to send its whole CONNECT


class LoginFiles:
    """``passwd`` and ``acl`` in one directory, read again when either changes."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.passwords: dict[str, str] = {}
        self.acl = Acl()
        self._seen: tuple[object, ...] | None = None
        if not (self.directory / "passwd").is_file():
            raise BrokerError(f"no password file {self.directory / 'passwd'}: make the site's logins first "
                              "(python -m fogmesh.broker.secure --out DIR --fleet --operator ops ...)")
        self.refresh()

    def _stamp(self) -> tuple[object, ...]:
        out: list[object] = []
        for name in ("passwd", "acl"):
            try:
                st = os.stat(self.directory / name)
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def refresh(self) -> bool:
        """Read the files again if they changed; True when they did."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        try:
            passwords = parse_passwd((self.directory / "passwd").read_text())
            acl_file = self.directory / "acl"
            acl = parse_acl(acl_file.read_text()) if acl_file.exists() else Acl()
        except OSError as exc:
            log.error("embedded broker: cannot read its logins in %s: %s (keeping the last ones)", self.directory, exc)
            return False
        self._seen, self.passwords, self.acl = stamp, passwords, acl
        return True


class LoginChecks:
    """A mixin for the embedded broker (``_sessions`` and the methods
    overridden here are amqtt's); ``logins`` None: every client is let in."""

    logins: LoginFiles | None
    _sessions: dict[str, Any]
    _refusal_lines: dict[str, LogLimit]

    async def _admit(self, reader: asyncio.StreamReader | None, head: bytes | None, writer: Any,
                     peer: Any) -> bool:
        """Whether the connection may go on to amqtt; a refused one gets CONNACK 5 and is closed."""
        if self.logins is None:
            return True
        packet = head if head is not None else await _whole_connect(reader)
        if packet is not None and refusal(packet, first=True) is not None:
            return True                     # a protocol violation: closed unanswered (framing.py)
        connect = parse_connect(packet or b"")
        if connect is None:
            return True                     # not a 3.1.1 CONNECT: amqtt refuses it itself
        self._apply_logins()
        why = admit(connect, self.logins.passwords, self.logins.acl)
        if why is None:
            return True
        host = peer[0] if peer else "?"
        if not hasattr(self, "_refusal_lines"):
            self._refusal_lines = {}
        limit = self._refusal_lines.setdefault(f"{host} {connect.username}", LogLimit(every_s=10.0))
        if len(self._refusal_lines) > 1000:
            self._refusal_lines.clear()
        left_out = limit.take(asyncio.get_running_loop().time())
        if left_out is not None:
            more = f" ({left_out} more refusals of it not logged)" if left_out else ""
            log.warning("embedded broker: refused client %r from %s: %s%s", connect.client_id, host, why, more)
        try:
            writer.write(REFUSED)
            await writer.drain()
            await writer.close()
        except Exception:                   # the client went first
            pass
        return False

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        if self.logins is None:
            return await super()._topic_filtering(session, topic, action)  # type: ignore[misc, no-any-return]
        if action == Action.SUBSCRIBE:
            return True                     # granted; each message is checked as it goes out (as mosquitto)
        access = "write" if action == Action.PUBLISH else "read"
        return self.logins.acl.allows(session.username, session.client_id or "", topic, access)

    async def _may_share(self, session: Session, topic_filter: str) -> bool:
        if self.logins is None:
            return await self._topic_filtering(session, topic_filter, Action.SUBSCRIBE)
        return self.logins.acl.allows_filter(session.username, session.client_id or "", topic_filter)

    async def _may_receive(self, session: Session, topic: str) -> bool:
        if self.logins is None:
            return True
        return self.logins.acl.allows(session.username, session.client_id or "", topic, "read")

    async def _may_publish(self, session: Session, handler: Any, topic: str) -> bool:
        """A PUBLISH read from a connection dropped because its login went is judged by the
        rights the login had until then: the client sent it before (mosquitto judges each as
        it reads it, and drops the client at the same reload)."""
        if self.logins is None:
            return await super()._may_publish(session, handler, topic)  # type: ignore[misc, no-any-return]
        acl = getattr(handler, "_fogmesh_rights", None) or self.logins.acl
        return acl.allows(session.username, session.client_id or "", topic, "write")

    def _apply_logins(self) -> None:
        """The files again if they changed, and, in the same step, the clients whose login no
        longer holds disconnected: none of them is judged by rights it lost while still connected."""
        assert self.logins is not None
        before = self.logins.acl
        if not self.logins.refresh():
            return
        log.info("embedded broker: logins re-read from %s", self.logins.directory)
        for session, handler in list(self._sessions.values()):
            if handler is None or not session.transitions.is_connected():
                continue
            if not still_valid(session.username, session.password, self.logins.passwords):
                log.warning("embedded broker: client %s (login %r) disconnected: its login is gone",
                            session.client_id, session.username)
                handler._fogmesh_rights = before
                close_now(handler.writer)

    async def _watch_logins(self) -> None:
        """Every :data:`RELOAD_S`: the files again (a CONNECT reads them too, :meth:`_admit`)."""
        while True:
            await asyncio.sleep(RELOAD_S)
            self._apply_logins()


async def _whole_connect(reader: asyncio.StreamReader | None) -> bytes | None:
    """The first packet in ``reader``'s buffer once it is all there, not consumed (None: too slow)."""
    if reader is None:
        return None
    buffered = reader._buffer
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECT_WAIT_S
    while True:
        n = connect_length(bytes(buffered[:5]))
        if n is not None and len(buffered) >= n:
            return bytes(buffered[:n])
        if reader.at_eof() or reader.exception() is not None or loop.time() > deadline:
            return None
        await asyncio.sleep(0.005)         # polled: StreamReader has no peek (as mqtt5.protocol_level)
