"""The embedded broker's state on disk, as mosquitto's persistence file: the
persistent sessions (subscriptions, messages in flight and queued), the
retained messages and the shared-subscription groups, taken out of amqtt
(:func:`capture`) and put back (:func:`restore`) as the pure
:class:`~fogmesh.broker.session_state.BrokerState`, written whole to one file
(:class:`StateFile`: a new file renamed over the old, so a crash leaves one
or the other, never half of one), mode 0600: it holds every kept message.

Written when the broker stops and every ``autosave_s`` while something
changed; read when it starts. A SIGKILL loses what changed since the last
write, as mosquitto's ``autosave_interval`` does.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import IO, Any

from amqtt.broker import RetainedApplicationMessage
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.session import IncomingApplicationMessage, OutgoingApplicationMessage

from fogmesh.broker.embedded.inflight import SharedOutgoing, as_inflight
from fogmesh.broker.session_state import BrokerState, InFlight, Message, SessionState, decode, encode
from fogmesh.broker.shared import ShareFilter
from fogmesh.errors import BrokerError

log = logging.getLogger("fogmesh.broker.embedded")

SYS_PREFIX = "$SYS/"        # the broker's own, set again at every start
PRIVATE = 0o600             # the state file's mode: its sessions and messages are the broker user's only


def state_path(directory: str | Path, port: int) -> Path:
    """The state file of the broker on ``port`` in ``directory`` (one per
    port: two brokers sharing a state directory keep theirs apart)."""
    return Path(directory) / f"embedded-broker-{port}.state"


class StateFile:
    """One broker's state file, locked while the broker runs (a second broker
    on it is refused rather than let the two overwrite each other)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: IO[bytes] | None = None
        self._writing = threading.Lock()     # an autosave in its thread and the stop's save
        self._written = -1                   # the capture last written (an older one is not)

    def open(self) -> BrokerState | None:
        """Lock the file and read it (None: none yet)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = os.open(self.path.with_name(self.path.name + ".lock"), os.O_WRONLY | os.O_CREAT, PRIVATE)
            self._lock = open(lock, "ab")
        except OSError as exc:
            raise BrokerError(f"cannot use {self.path.parent} for the broker's state ({exc.strerror}): "
                              "make it writable, or pick another with --persistence DIR "
                              "(--no-persistence: keep nothing across a restart)") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise BrokerError(f"another broker uses {self.path}: stop it, or give this one another "
                              "--port or --persistence DIR") from None
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return decode(data)
        except ValueError as exc:
            self.close()
            raise BrokerError(f"cannot read the broker's state from {self.path}: {exc}. Move the file "
                              "away to start with nothing, or use --no-persistence") from None

    def save(self, data: bytes, capture_no: int) -> None:
        """Write ``data`` (the ``capture_no``-th capture) as the new state, whole
        or not at all; not when a later capture was written first."""
        tmp = self.path.with_name(self.path.name + ".new")
        with self._writing:
            if capture_no <= self._written:
                return
            self._written = capture_no
            # 0600 whatever the umask (it holds every kept message); fchmod for a
            # file a crash left behind with another mode
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
            with open(fd, "wb") as f:
                os.fchmod(fd, PRIVATE)
                f.write(data)
                f.flush()
                os.fsync(fd)
            os.replace(tmp, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def write(store: StateFile, state: BrokerState, capture_no: int) -> None:
    """``state`` (the ``capture_no``-th capture) encoded and saved: what an
    autosave does off the event loop."""
    store.save(encode(state), capture_no)


def _message(m: Any) -> Message:
    return Message(m.topic, bytes(m.data), m.qos or 0, False)


def capture(broker: Any) -> BrokerState:
    """What ``broker`` (a :class:`~fogmesh.broker.embedded.server.FogmeshBroker`)
    holds that outlives connections, as it is now."""
    keeps = {cid for cid, (s, _) in broker._sessions.items() if s.clean_session is False}
    sessions = {cid: SessionState(cid) for cid in keeps}
    for a_filter, subscribers in broker._subscriptions.items():
        for session, qos in subscribers:
            if session.client_id in sessions:
                sessions[session.client_id].subscriptions[a_filter] = qos
    for cid, state in sessions.items():
        session = broker._sessions[cid][0]
        state.outgoing = [as_inflight(m) for m in session.inflight_out.values()
                          if not isinstance(m, SharedOutgoing)]
        state.incoming = [as_inflight(m) for m in session.inflight_in.values()]
        state.queued = [_message(m) for m in list(session.retained_messages._queue)]
        state.last_packet_id = session._packet_id
    retained = [Message(t, bytes(m.data), m.qos or 0, True) for t, m in broker._retained_messages.items()
                if not t.startswith(SYS_PREFIX)]
    return BrokerState(list(sessions.values()), retained, broker.shared.snapshot(keeps.__contains__))


def _outgoing(e: InFlight) -> OutgoingApplicationMessage:
    m = e.message
    message = OutgoingApplicationMessage(e.packet_id, m.topic, m.qos, m.payload, m.retain)
    message.publish_packet = message.build_publish_packet()      # sent before: DUP when it goes again
    if e.released:
        message.pubrec_packet = PubrecPacket.build(e.packet_id)
    return message


def restore(broker: Any, state: BrokerState) -> None:
    """Put ``state`` into ``broker`` before it listens: every session offline."""
    for kept in state.sessions:
        handler, session = broker.create_offline_session(kept.client_id)
        session.clean_session = False
        session._packet_id = kept.last_packet_id
        for e in kept.outgoing:
            session.inflight_out[e.packet_id] = _outgoing(e)
        for e in kept.incoming:
            m = e.message
            session.inflight_in[e.packet_id] = IncomingApplicationMessage(e.packet_id, m.topic, m.qos,
                                                                          m.payload, m.retain)
        for m in kept.queued:
            session.retained_messages.put_nowait(RetainedApplicationMessage(None, m.topic, m.payload, m.qos))
        broker._sessions[kept.client_id] = (session, handler)
        for a_filter, qos in kept.subscriptions.items():
            if ShareFilter.parse(a_filter) is None:
                broker._subscriptions.setdefault(a_filter, []).append((session, qos))
    for m in state.retained:
        broker._retained_messages[m.topic] = RetainedApplicationMessage(None, m.topic, m.payload, m.qos)
    broker.shared.restore(state.groups)
