"""How an agent runs: one frozen value instead of two dozen keyword arguments.

Every field defaults to what ``fogmesh agent`` uses without flags, so
``AgentOptions(root=..., concurrency=1)`` says only what differs. Checked
when made, so a bad value fails where it was written, not at start-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from fogmesh.announcements import MAX_PERIOD_S, MIN_PERIOD_S
from fogmesh.edge_agent.host_monitor import HostMonitor
from fogmesh.edge_agent.pipelines import PipelineSpec
from fogmesh.edge_agent.placement import PlacementPolicy
from fogmesh.edge_agent.triggers import TriggerSpec
from fogmesh.messages import DEFAULT_LIMITS, Limits
from fogmesh.registry import Registry
from fogmesh.service_notify import ServiceNotifier
from fogmesh.task_queue import QueueFactory
from fogmesh.topics import DEFAULT_ROOT

DISPATCH_CHOICES = ("auto", "shared", "claim", "amqp")
MQTT_CHOICES = ("auto", "5", "3.1.1")


@dataclass(frozen=True)
class AgentOptions:
    """``registry``, ``monitor``, ``notifier``: None means the default one
    (entry-point kinds, psutil, no systemd). ``clock`` and ``wall_clock`` are
    injected for tests; ``journal=False`` keeps nothing on disk."""

    root: str = DEFAULT_ROOT
    concurrency: int = 2
    max_queue: int = 1000
    max_unconfirmed: int = 500              # answers awaiting the broker's PUBACK at which intake stops
    dispatch: str = "auto"                  # auto | shared | claim
    mqtt: str = "auto"                      # auto | 5 | 3.1.1
    registry: Registry | None = None
    presence_period: float = 5.0
    keepalive_s: int = 15                   # MQTT keep-alive: a frozen agent's will goes out within 1.5x
    limits: Limits = DEFAULT_LIMITS
    monitor: HostMonitor | None = None
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    state_dir: str | Path | None = None
    journal: bool = True
    policy: PlacementPolicy | None = None
    offer_lease_s: float = 1.0
    takeover_grace_s: float = 2.0
    pipelines: Sequence[PipelineSpec] | None = None
    triggers: Sequence[TriggerSpec] | None = None
    device_rate: float = 0.0
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    notifier: ServiceNotifier | None = None
    # Fleet deployment (fogmesh.deploy): what deployments address this agent by,
    # and the keys whose signatures it takes (none: it takes no deployment).
    site: str = "default"
    labels: Sequence[str] = ()
    trust_keys: Sequence[str] = ()
    timestamp_keys: Sequence[str] = ()      # trusted for the fleet's timestamp only (a renewer's key)
    max_bundle_mb: float = 100.0
    # RabbitMQ: take tasks from a quorum queue over AMQP at these nodes (a failover
    # list); presence, replies and the rest stay MQTT (fogmesh.amqp_queue).
    amqp: Sequence[str] = ()
    # What makes the task queue of ``amqp``'s nodes: None, pika's (fogmesh.amqp_queue);
    # tests inject an in-memory quorum queue (tests/fake_queue.py).
    amqp_queue: QueueFactory | None = None
    # Service container kinds (fogmesh.container_services): stopped after this long idle.
    service_idle_s: float = 60.0

    def __post_init__(self) -> None:
        if not MIN_PERIOD_S <= self.presence_period <= MAX_PERIOD_S:
            raise ValueError(f"presence_period must be {MIN_PERIOD_S:g}-{MAX_PERIOD_S:g} seconds (what consumers "
                             "of presence take: topics.md, Presence)")
        if self.max_unconfirmed < 2:
            raise ValueError("max_unconfirmed must be at least 2")
        if self.mqtt not in MQTT_CHOICES:
            raise ValueError(f"mqtt must be one of {MQTT_CHOICES}")
        if self.dispatch not in DISPATCH_CHOICES:
            raise ValueError(f"dispatch must be one of {DISPATCH_CHOICES}")
        if self.dispatch == "amqp" and not self.amqp:
            raise ValueError("dispatch amqp needs the RabbitMQ nodes' AMQP URLs (--amqp amqp://HOST:5672)")
        if self.max_bundle_mb <= 0:
            raise ValueError("max_bundle_mb must be positive")
        if not 1 <= self.keepalive_s <= 65535:
            raise ValueError("keepalive_s must be 1-65535 seconds")
