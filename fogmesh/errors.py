"""fogmesh's exceptions, one small tree.

Errors of the underlying libraries (paho, amqtt, OS sockets) are mapped to
these at the module boundary that uses the library, so callers catch one
family. Each also subclasses the built-in it behaves like, so generic code
(``except TimeoutError``) keeps working::

    FogmeshError
    ├── InvalidMessage (ValueError)      input that breaks the wire contract
    ├── TopicError (ValueError)          a topic MQTT would refuse
    ├── ConnectError (ConnectionError)   broker unreachable / refused us
    │   └── SubscriptionRefused          the broker answered a subscription with a failure code
    ├── SubmitTimeout (TimeoutError)     no reply before the deadline
    ├── TaskFailed                       the reply said status "error"
    ├── UnknownKind (LookupError)        no handler registered for a kind
    ├── BrokerError (RuntimeError)       an embedded/launched broker failed
    ├── DeviceError (RuntimeError)       a pin, camera or video source failed
    ├── AgentIdInUse (RuntimeError)      another live agent already runs with this id
    ├── ClaimOrderError (RuntimeError)   agents see claims in different orders (a cluster)
    ├── UnsupportedBroker (RuntimeError) the broker lacks what this set-up needs
    ├── BadArgs (ValueError)             a handler says the task's args are wrong (``bad_args``)
    ├── PublishError (OSError)           paho refused to queue a publish
    ├── ServiceError (ValueError)        a service unit cannot be made as asked
    ├── IllegalTransition (RuntimeError) the agent core moved a task to a state it may not reach
    ├── DeployRefused (ValueError)       a bundle or desired state not applied (``code``: why)
    ├── ContainerError (RuntimeError)    a container kind's container crashed, hung or answered garbage
    └── StorageError (OSError)           a journal or outbox on disk cannot be used
        ├── JournalLocked                another agent with the same id holds the journal
        └── StoreFull                    the bridge's outbox is at its bound (back-pressure)
            └── DiskLow                  its disk is down to the space it must leave free
"""

from __future__ import annotations

from typing import Any


class FogmeshError(Exception):
    """Base of every error fogmesh raises on purpose."""


class InvalidMessage(FogmeshError, ValueError):
    """A payload that does not follow the contract.

    ``code`` is the wire error code sent back to the submitter; ``task_id`` and
    ``reply_to`` are whatever could be salvaged from the payload, so the agent
    can still answer on the reply topic (or dead-letter when there is none).
    """

    def __init__(self, code: str, message: str, *, task_id: str | None = None,
                 reply_to: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.task_id = task_id
        self.reply_to = reply_to


class TopicError(FogmeshError, ValueError):
    """A topic, root or topic level that MQTT or fogmesh cannot use."""


class ConnectError(FogmeshError, ConnectionError):
    """The broker could not be reached or refused the connection."""


class LoginRefused(ConnectError):
    """The broker refused the login (not authorized, or a bad user name or
    password): retrying the same login does not help."""


def is_login_refusal(reason: str) -> bool:
    """Whether a CONNACK's reason (paho's text for it) refuses the login."""
    text = reason.lower()
    return "authori" in text or "password" in text


class SubscriptionRefused(ConnectError):
    """The broker answered a SUBSCRIBE with a failure code (not: no answer yet)."""


class SubmitTimeout(FogmeshError, TimeoutError):
    """No reply arrived for a submitted task within the timeout."""


class TaskFailed(FogmeshError):
    """A task ended with ``status: error``; ``reply`` holds the whole answer."""

    def __init__(self, reply: Any) -> None:
        err = reply.error
        super().__init__(f"task {reply.id} failed: {err.code}: {err.message}")
        self.reply = reply
        self.code = err.code


class UnknownKind(FogmeshError, LookupError):
    """No handler is registered for a task kind."""


class BrokerError(FogmeshError, RuntimeError):
    """An embedded or launched broker failed to start or stop."""


class DeviceError(FogmeshError, RuntimeError):
    """A GPIO pin, camera, video file or image folder could not be used."""


class StorageError(FogmeshError, OSError):
    """A journal or outbox on disk cannot be opened or written (read-only or
    full disk, missing permissions); the message names the path and the fix."""


class JournalLocked(StorageError):
    """Another agent process with the same id and root uses this journal."""


class AgentIdInUse(FogmeshError, RuntimeError):
    """Another agent with the same id (on another host, or another root's
    shell) is online: two agents under one id would answer tasks twice."""


class ClaimOrderError(FogmeshError, RuntimeError):
    """The broker does not give every agent the claims topic in one order (a
    cluster of nodes): claim dispatch would run tasks twice there."""


class UnsupportedBroker(FogmeshError, RuntimeError):
    """The broker cannot do what this configuration needs: shared
    subscriptions for a forced ``--dispatch shared``, or topics that carry an
    id's characters unchanged (RabbitMQ turns ``.`` into a level separator)."""


class BadArgs(FogmeshError, ValueError):
    """Raise from a handler when the task's args are wrong (wire code ``bad_args``)."""


class PublishError(FogmeshError, OSError):
    """paho refused to queue a publish (queue full, payload too large)."""


class ServiceError(FogmeshError, ValueError):
    """A service unit cannot be made as asked: the message says what to change."""


class StoreFull(StorageError):
    """The outbox is at its row or byte bound (back-pressure, not a fault)."""


class DiskLow(StoreFull):
    """The outbox's disk is down to the space it must leave free."""


class IllegalTransition(FogmeshError, RuntimeError):
    """The agent core tried to move a task between two states its transition
    table does not link: a bug, refused before it could answer a task twice."""


class ContainerError(FogmeshError, RuntimeError):
    """A container kind's container failed (it crashed, hung, or answered no
    JSON), or the container engine did (the message says which, and why)."""


class DeployRefused(FogmeshError, ValueError):
    """A bundle or desired-state document is not applied; ``code`` is the
    reason reported on the agent's deployment state (``bad_signature``,
    ``unknown_key``, ``digest_mismatch``, ``stale_serial``, ``downgrade``,
    ``incompatible``, ``too_large``, ``bad_bundle``, ...), the message says
    what to do about it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class JoinRefused(FogmeshError, ValueError):
    """A join token, join request or fleet request is refused; ``code`` says
    why on the wire (``bad_token``, ``unknown_key``, ``bad_signature``,
    ``expired``, ``used``, ``bad_request``, ``revoked``, ``no_registrar``...),
    the message what to do about it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
